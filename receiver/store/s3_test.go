package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/uploadbox/uploadbox/internal/s3test"
)

// TestS3 runs the suite against a real S3 server: versitygw with its posix
// backend, started on loopback for this test.
func TestS3(t *testing.T) {
	gw := startVersityGW(t)
	s := gw.store(t, gw.Bucket)
	runStoreSuite(t, s)

	t.Run("ServerVerifiesChecksum", func(t *testing.T) {
		// Bypass Store.Put's own checks to see that the server itself
		// refuses a body that does not match x-amz-checksum-sha256.
		data, other := []byte("the real body"), []byte("another body!")
		_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:         aws.String(gw.Bucket),
			Key:            aws.String("raw/checksum.ubx"),
			Body:           bytes.NewReader(data),
			ChecksumSHA256: aws.String(b64sum(other)),
		})
		if err == nil {
			t.Fatal("server accepted a body with a wrong x-amz-checksum-sha256")
		}
		t.Logf("server refused a wrong checksum: %v", err)
		if _, err := s.Stat(t.Context(), "raw/checksum.ubx"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat after refused put: %v, want ErrNotFound", err)
		}
	})

	t.Run("ServerStoresChecksum", func(t *testing.T) {
		// Stat relies on HeadObject returning the SHA-256 given at Put,
		// not on reading the object back.
		key := "raw/stored-checksum.ubx"
		data := []byte("checksummed")
		mustPut(t, s, key, data)
		out, err := s.client.HeadObject(t.Context(), &s3.HeadObjectInput{
			Bucket: aws.String(gw.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(out.ChecksumSHA256); got != b64sum(data) {
			t.Fatalf("HeadObject ChecksumSHA256 = %q, want %q", got, b64sum(data))
		}
	})

	t.Run("ServerHonoursIfNoneMatch", func(t *testing.T) {
		key := "raw/ifnonematch.ubx"
		mustPut(t, s, key, []byte("first"))
		_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:      aws.String(gw.Bucket),
			Key:         aws.String(key),
			Body:        bytes.NewReader([]byte("second")),
			IfNoneMatch: aws.String("*"),
		})
		if got := httpStatus(err); got != 412 {
			t.Fatalf("PutObject If-None-Match: * on an existing key: status %d (err %v), want 412", got, err)
		}
		checkStat(t, s, key, []byte("first"))
	})

	t.Run("ForeignObjectWithoutChecksum", func(t *testing.T) {
		// An object stored without a SHA-256 checksum: Stat must hash it.
		key := "raw/nochecksum.ubx"
		data := []byte("stored by someone else")
		_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String(gw.Bucket),
			Key:    aws.String(key),
			Body:   bytes.NewReader(data),
		}, func(o *s3.Options) { o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired })
		if err != nil {
			t.Fatal(err)
		}
		checkStat(t, s, key, data)
		mustPut(t, s, key, data)
		if err := put(t.Context(), s, key, []byte("other")); !errors.Is(err, ErrConflict) {
			t.Fatalf("Put of other data: err = %v, want ErrConflict", err)
		}
	})

	t.Run("MissingBucket", func(t *testing.T) {
		missing := gw.store(t, "no-such-bucket")
		err := put(t.Context(), missing, "DEV1/REC1/000001.ubx", []byte("x"))
		if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			t.Fatalf("Put into a missing bucket: err = %v, want a plain error", err)
		}
	})

	t.Run("WrongCredentials", func(t *testing.T) {
		bad, err := NewS3(t.Context(), S3Options{
			Bucket: gw.Bucket, Endpoint: gw.Endpoint, Region: "us-east-1", PathStyle: true,
			AccessKey: gw.Access, SecretKey: "wrong" + gw.Secret,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := put(t.Context(), bad, "DEV1/REC1/000001.ubx", []byte("x")); err == nil {
			t.Fatal("Put with a wrong secret key succeeded")
		}
	})
}

func TestNewS3NoBucket(t *testing.T) {
	if _, err := NewS3(t.Context(), S3Options{}); err == nil {
		t.Fatal("NewS3 without a bucket succeeded")
	}
}

type versityGW struct{ *s3test.Server }

// startVersityGW starts a real S3 server with a fresh bucket for this test.
func startVersityGW(t *testing.T) versityGW {
	return versityGW{s3test.Start(t, "uploadbox-test")}
}

func (gw versityGW) store(t *testing.T, bucket string) *S3 {
	t.Helper()
	s, err := NewS3(t.Context(), S3Options{
		Bucket: bucket, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true,
		AccessKey: gw.Access, SecretKey: gw.Secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64sum(data []byte) string {
	sum := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}
