package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The SDK's HTTP client keeps idle keep-alive connections.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func TestValidateKey(t *testing.T) {
	good := []string{
		"DEVICEID/RECORDINGID/000003.ubx",
		"a",
		"a.b",
		"a-b_c/D.9",
		"x/y./z",
		strings.Repeat("a", 1024),
	}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range badKeys {
		if err := ValidateKey(k); !errors.Is(err, ErrBadKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrBadKey", k, err)
		}
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, k := range badKeys {
		f.Add(k)
	}
	f.Add("DEVICEID/RECORDINGID/000003.ubx")
	f.Add("a/b.c/d-e_f")
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		// A valid key is a local path on every OS and a valid prefix.
		if !filepath.IsLocal(key) || filepath.Clean(key) != filepath.FromSlash(key) {
			t.Fatalf("valid key %q is not a clean local path", key)
		}
		if err := validatePrefix(key); err != nil {
			t.Fatalf("valid key %q is not a valid prefix: %v", key, err)
		}
	})
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"DEV", true},
		{"DEV/", true},
		{"DEV/REC/0000", true},
		{"DEV.", true},
		{"/", false},
		{"DEV//", false},
		{"DEV/.", false},
		{"..", false},
		{"a b", false},
	}
	for _, tt := range tests {
		err := validatePrefix(tt.prefix)
		if (err == nil) != tt.ok {
			t.Errorf("validatePrefix(%q) = %v, want ok=%v", tt.prefix, err, tt.ok)
		}
	}
}

// TestVerifyingReader checks, across sizes and read patterns, that the
// reader releases exactly the data when it matches and never the whole of
// it otherwise.
func TestVerifyingReader(t *testing.T) {
	for _, size := range []int{0, 1, 2, 100, 64<<10 - 1, 64 << 10, 64<<10 + 1, 300_000} {
		data := bytes.Repeat([]byte{0x5a}, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		sum := sha256.Sum256(data)
		for _, wrap := range []struct {
			name string
			fn   func(io.Reader) io.Reader
		}{
			{"plain", func(r io.Reader) io.Reader { return r }},
			{"onebyte", iotest.OneByteReader},
			{"dataerr", iotest.DataErrReader},
			{"half", iotest.HalfReader},
		} {
			t.Run(fmt.Sprintf("%d/%s", size, wrap.name), func(t *testing.T) {
				ctx := t.Context()
				// Good data passes unchanged.
				got, err := io.ReadAll(newVerifyingReader(ctx, wrap.fn(bytes.NewReader(data)), int64(size), sum))
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("good data: %d bytes, err %v", len(got), err)
				}
				bad := []struct {
					name string
					body []byte
					size int64
					sum  [32]byte
				}{
					{"wronghash", data, int64(size), sha256.Sum256(append(data, 1))},
					{"long", append(bytes.Clone(data), 1), int64(size), sum},
					{"long-hashofall", append(bytes.Clone(data), 1), int64(size), sha256.Sum256(append(bytes.Clone(data), 1))},
					{"short", data, int64(size) + 1, sha256.Sum256(append(bytes.Clone(data), 0))},
					{"short-hashofread", data, int64(size) + 1, sum},
				}
				for _, b := range bad {
					got, err := io.ReadAll(newVerifyingReader(ctx, wrap.fn(bytes.NewReader(b.body)), b.size, b.sum))
					if !errors.Is(err, ErrHashMismatch) {
						t.Errorf("%s: err = %v, want ErrHashMismatch", b.name, err)
					}
					if int64(len(got)) >= b.size && b.size > 0 || (size > 0 && bytes.Equal(got, data)) {
						t.Errorf("%s: released %d of %d bytes", b.name, len(got), b.size)
					}
				}
			})
		}
	}
}

func TestVerifyingReaderCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	data := []byte("data")
	_, err := io.ReadAll(newVerifyingReader(ctx, bytes.NewReader(data), 4, sha256.Sum256(data)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestVerifyingReaderStop(t *testing.T) {
	data := []byte("data")
	v := newVerifyingReader(t.Context(), bytes.NewReader(data), 4, sha256.Sum256(data))
	if err := v.stop(); err != nil {
		t.Fatalf("stop before any error = %v, want nil", err)
	}
	if _, err := v.Read(make([]byte, 4)); !errors.Is(err, errReaderStopped) {
		t.Fatalf("Read after stop: err = %v, want errReaderStopped", err)
	}
	v = newVerifyingReader(t.Context(), bytes.NewReader(data), 5, sha256.Sum256(data))
	io.ReadAll(v)
	if err := v.stop(); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("stop after a short read = %v, want ErrHashMismatch", err)
	}
}
