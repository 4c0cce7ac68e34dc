package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// TestS3 runs the suite against a real S3 server: versitygw with its posix
// backend, started on loopback for this test.
func TestS3(t *testing.T) {
	gw := startVersityGW(t)
	s := gw.store(t, gw.bucket)
	runStoreSuite(t, s)

	t.Run("ServerVerifiesChecksum", func(t *testing.T) {
		// Bypass Store.Put's own checks to see that the server itself
		// refuses a body that does not match x-amz-checksum-sha256.
		data, other := []byte("the real body"), []byte("another body!")
		_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:         aws.String(gw.bucket),
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
			Bucket: aws.String(gw.bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
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
			Bucket:      aws.String(gw.bucket),
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
			Bucket: aws.String(gw.bucket),
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
			Bucket: gw.bucket, Endpoint: gw.endpoint, Region: "us-east-1", PathStyle: true,
			AccessKey: gw.access, SecretKey: "wrong" + gw.secret,
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

type versityGW struct {
	endpoint, access, secret, bucket string
}

func (gw *versityGW) store(t *testing.T, bucket string) *S3 {
	t.Helper()
	s, err := NewS3(t.Context(), S3Options{
		Bucket: bucket, Endpoint: gw.endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: gw.access, SecretKey: gw.secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// findVersityGW looks in $UPLOADBOX_VERSITYGW, the module's .cache/bin and
// PATH.
func findVersityGW(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("UPLOADBOX_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("UPLOADBOX_VERSITYGW=%s: %v; unset it and run `make setup` to install versitygw into .cache/bin", p, err)
		}
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", "..", ".cache", "bin", "versitygw")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	t.Fatal("versitygw not found in $UPLOADBOX_VERSITYGW, .cache/bin or PATH: run `make setup` (or scripts/versitygw.sh) to install it")
	return ""
}

// startVersityGW starts versitygw on a free loopback port with a fresh posix
// root, waits until it serves requests, creates a bucket and stops the
// server when the test ends.
func startVersityGW(t *testing.T) *versityGW {
	t.Helper()
	bin := findVersityGW(t)
	gw := &versityGW{access: randomHex(t, 10), secret: randomHex(t, 20), bucket: "uploadbox-test"}
	// The free port may be taken between closing the probe listener and
	// versitygw binding it; then versitygw exits and we try another.
	var lastErr error
	for range 5 {
		root := t.TempDir()
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		gw.endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
		if lastErr = gw.start(t, bin, port, root); lastErr == nil {
			return gw
		}
		t.Logf("versitygw did not start: %v; retrying", lastErr)
	}
	t.Fatalf("start versitygw: %v", lastErr)
	return nil
}

func (gw *versityGW) start(t *testing.T, bin string, port int, root string) error {
	var out lockedBuffer
	cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+gw.access, "ROOT_SECRET_KEY="+gw.secret)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	admin := gw.store(t, gw.bucket)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := admin.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(gw.bucket)},
			func(o *s3.Options) { o.RetryMaxAttempts = 1 })
		var owned *types.BucketAlreadyOwnedByYou
		if err == nil || errors.As(err, &owned) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("versitygw output:\n%s", out.String())
				}
			})
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited (%v): %s", waitErr, out.String())
		case <-ctx.Done():
			stop()
			return fmt.Errorf("versitygw not ready after 30s: last error %v; output:\n%s", err, out.String())
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func b64sum(data []byte) string {
	sum := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
