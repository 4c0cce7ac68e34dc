package cli

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartProfiles(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	stop, err := StartProfiles(cpu, mem)
	if err != nil {
		t.Fatal(err)
	}
	var sink [][]byte
	for i := range 1000 {
		sink = append(sink, make([]byte, 1024+i))
	}
	_ = sink
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cpu, mem} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// A pprof profile is a gzipped protobuf.
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s is not a pprof profile: %v", p, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil || len(raw) == 0 {
			t.Fatalf("%s: empty or bad profile (%d bytes, %v)", p, len(raw), err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
}

func TestStartProfilesBadPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "p.pprof")
	for _, tc := range []struct{ name, cpu, mem string }{
		{"cpu", missing, ""},
		{"mem", "", missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop, err := StartProfiles(tc.cpu, tc.mem)
			if err == nil {
				stop()
				t.Fatal("no error for a profile in a missing directory")
			}
			if !strings.Contains(err.Error(), "no/such/dir") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
	// A failed start leaves no CPU profile running: the next one starts.
	stop, err := StartProfiles(filepath.Join(t.TempDir(), "cpu.pprof"), "")
	if err != nil {
		t.Fatal(err)
	}
	stop()
}
