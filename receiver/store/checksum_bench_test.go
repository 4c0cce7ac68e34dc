package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/uploadbox/uploadbox/internal/s3test"
)

// BenchmarkS3Checksum compares, against a real S3 server on loopback, the
// store's Put (x-amz-checksum-sha256 and the SigV4 payload hash from the
// SHA-256 the receiver already has) with a PutObject whose integrity
// checksum the SDK computes, CRC64NVME (the same payload hash). Both run
// the store's own SHA-256 check over the body.
// Interleaved rounds of 64 MiB; it reports the median wall time and this
// process's CPU time per Put (the receiver's share; the server's is its
// own).
//
//	go test -run '^$' -bench S3Checksum -benchtime 8x ./receiver/store
func BenchmarkS3Checksum(b *testing.B) {
	gw := s3test.Start(b, "uploadbox-bench")
	s, err := NewS3(b.Context(), S3Options{Bucket: gw.Bucket, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true, AccessKey: gw.Access, SecretKey: gw.Secret})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	size := int64(len(data))
	ways := []struct {
		name string
		put  func(ctx context.Context, key string) error
	}{
		{"sha256 given", func(ctx context.Context, key string) error {
			return s.Put(ctx, key, bytes.NewReader(data), size, sum)
		}},
		{"crc64nvme by the SDK", func(ctx context.Context, key string) error {
			// The store's own check, done here on its own: over plain HTTP
			// the SDK computes a checksum only of a seekable body.
			if _, err := io.Copy(io.Discard, newVerifyingReader(ctx, bytes.NewReader(data), size, sum)); err != nil {
				return err
			}
			_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
				Bucket: aws.String(gw.Bucket), Key: aws.String(key),
				Body: bytes.NewReader(data), ContentLength: aws.Int64(size),
				ChecksumAlgorithm: types.ChecksumAlgorithmCrc64nvme, IfNoneMatch: aws.String("*"),
			}, func(o *s3.Options) {
				o.RetryMaxAttempts = 1
				o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
					return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("benchPayloadHash",
						func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
							return next.HandleFinalize(v4.SetPayloadHash(ctx, hex.EncodeToString(sum[:])), in)
						}), middleware.Before)
				})
			})
			return err
		}},
	}
	wall := make([][]time.Duration, len(ways))
	cpu := make([][]time.Duration, len(ways))
	n := 0
	for b.Loop() {
		for i := range ways {
			j := (i + n) % len(ways)
			w := ways[j]
			before := selfCPU()
			start := time.Now()
			if err := w.put(b.Context(), fmt.Sprintf("bench/%d/%d.ubx", j, n)); err != nil {
				b.Fatalf("%s: %v", w.name, err)
			}
			wall[j] = append(wall[j], time.Since(start))
			cpu[j] = append(cpu[j], selfCPU()-before)
		}
		n++
	}
	for j, w := range ways {
		slices.Sort(wall[j])
		slices.Sort(cpu[j])
		b.Logf("%-22s wall %6.1f ms [%.1f-%.1f], receiver CPU %6.1f ms [%.1f-%.1f] per 64 MiB Put (median [range] of %d)", w.name,
			msOf(wall[j][len(wall[j])/2]), msOf(wall[j][0]), msOf(wall[j][len(wall[j])-1]),
			msOf(cpu[j][len(cpu[j])/2]), msOf(cpu[j][0]), msOf(cpu[j][len(cpu[j])-1]), len(wall[j]))
	}
	b.ReportMetric(msOf(cpu[1][len(cpu[1])/2])/msOf(cpu[0][len(cpu[0])/2]), "cpu-crc64/sha256")
	b.ReportMetric(msOf(wall[1][len(wall[1])/2])/msOf(wall[0][len(wall[0])/2]), "wall-crc64/sha256")
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
