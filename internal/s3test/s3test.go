// Package s3test starts a real S3 server for tests: versitygw with its
// posix backend on a free loopback port, with a fresh root and one bucket,
// stopped when the test ends.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/uploadbox/uploadbox/internal/syncbuf"
)

// Region is the region clients must use.
const Region = "us-east-1"

// Server is a running versitygw.
type Server struct {
	Endpoint       string // http://127.0.0.1:PORT
	Access, Secret string // root credentials, made up for this test
	Bucket         string
}

// Env is the environment that gives an SDK client (or a child process)
// the server's credentials.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.Access, "AWS_SECRET_ACCESS_KEY=" + s.Secret, "AWS_REGION=" + Region}
}

// Client is an S3 client for the server (path-style addressing).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint), Region: Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
	})
}

// Binary finds versitygw in $UPLOADBOX_VERSITYGW, the module's .cache/bin
// or PATH.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UPLOADBOX_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("UPLOADBOX_VERSITYGW=%s: %v; unset it and run `make setup` to install versitygw into .cache/bin", p, err)
		}
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	if p := filepath.Join(filepath.Dir(file), "..", "..", ".cache", "bin", "versitygw"); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	t.Fatal("versitygw not found in $UPLOADBOX_VERSITYGW, .cache/bin or PATH: run `make setup` (or scripts/gotool.sh versitygw) to install it")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Start starts versitygw, waits until it serves requests, creates bucket
// and stops the server when the test ends.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	bin := Binary(t)
	s := &Server{Access: randomHex(10), Secret: randomHex(20), Bucket: bucket}
	// The free port may be taken between closing the probe listener and
	// versitygw binding it; then versitygw exits and we try another.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
		if lastErr = s.start(t, bin, port, t.TempDir()); lastErr == nil {
			return s
		}
		t.Logf("versitygw did not start: %v; retrying", lastErr)
	}
	t.Fatalf("start versitygw: %v", lastErr)
	return nil
}

func (s *Server) start(t testing.TB, bin string, port int, root string) error {
	var out syncbuf.Buffer
	cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.Access, "ROOT_SECRET_KEY="+s.Secret)
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
	client := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)},
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
