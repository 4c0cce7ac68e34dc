package receiver_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
)

// newData makes a receiver data directory (serve's first run) with one
// device, and returns it.
func newData(t *testing.T) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	a, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.AddDevice("room-1"); err != nil {
		t.Fatal(err)
	}
	return data
}

func deviceNames(t *testing.T, data string) []string {
	t.Helper()
	a, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ds, err := a.ListDevices()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

// TestBackupRestoreWhileServing: a backup taken while the server runs
// copies the database through it (not the file the server holds), as it
// was at that moment; the restored directory holds the same keys and
// certificates byte for byte, with their modes.
func TestBackupRestoreWhileServing(t *testing.T) {
	data := newData(t)
	_, _, stop := serve(t, receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	bak := filepath.Join(t.TempDir(), "r.bak")
	rep, err := receiver.Backup(t.Context(), data, bak)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Live || len(rep.OrgKeys) != 1 || rep.OrgKeys[0] != "org.key" {
		t.Fatalf("report: live %v, org keys %v", rep.Live, rep.OrgKeys)
	}
	// Changed after the backup: not in it.
	a, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddDevice("room-2"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := receiver.Restore(bak, restored); err != nil {
		t.Fatal(err)
	}
	if got := deviceNames(t, restored); len(got) != 1 || got[0] != "room-1" {
		t.Fatalf("restored devices %v, want room-1 only", got)
	}
	for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "receipt.key", "token.key", "org.key", "org.pub"} {
		want, err1 := os.ReadFile(filepath.Join(data, f))
		got, err2 := os.ReadFile(filepath.Join(restored, f))
		stw, _ := os.Stat(filepath.Join(data, f))
		stg, _ := os.Stat(filepath.Join(restored, f))
		if err1 != nil || err2 != nil || !bytes.Equal(want, got) || stw.Mode() != stg.Mode() {
			t.Errorf("%s: restored differs (%v %v, mode %v want %v)", f, err1, err2, stg.Mode(), stw.Mode())
		}
	}
	if _, err := receiver.VerifyAudit(restored, ""); err != nil {
		t.Errorf("restored audit log: %v", err)
	}
}

// rewrite copies the backup at from to a new file, passing every entry
// through edit (which may change its name and content).
func rewrite(t *testing.T, from string, edit func(h *tar.Header, body []byte) []byte) string {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gw)
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body = edit(h, body)
		h.Size = int64(len(body))
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	gw.Close()
	out := filepath.Join(t.TempDir(), "edited.bak")
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestRestoreRefuses: a restore into a non-empty directory changes
// nothing there; a damaged, cut or foreign backup is refused, and what the
// restore wrote is removed again.
func TestRestoreRefuses(t *testing.T) {
	data := newData(t)
	bak := filepath.Join(t.TempDir(), "r.bak")
	if _, err := receiver.Backup(t.Context(), data, bak); err != nil {
		t.Fatal(err)
	}
	if _, err := receiver.Backup(t.Context(), data, filepath.Join(data, "inside.bak")); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a backup into the data directory: %v", err)
	}

	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "keep"), []byte("mine"), 0o600)
	if _, err := receiver.Restore(bak, full); !errors.Is(err, receiver.ErrNotEmpty) || !strings.Contains(err.Error(), full) {
		t.Fatalf("restore into a non-empty directory: %v", err)
	}
	if names, _ := os.ReadDir(full); len(names) != 1 {
		t.Fatalf("the non-empty directory was changed: %v", names)
	}

	raw, _ := os.ReadFile(bak)
	// Cut in the middle of a file's content and between files alike.
	var cuts []string
	for _, at := range []int{len(raw) / 3, len(raw) / 2, len(raw) * 2 / 3, len(raw) - 100} {
		p := filepath.Join(t.TempDir(), "cut.bak")
		os.WriteFile(p, raw[:at], 0o600)
		cuts = append(cuts, p)
	}
	flipped := rewrite(t, bak, func(h *tar.Header, body []byte) []byte {
		if h.Name == "token.key" {
			body[len(body)/2] ^= 1
		}
		return body
	})
	escape := rewrite(t, bak, func(h *tar.Header, body []byte) []byte {
		if h.Name == "token.key" {
			h.Name = "../token.key"
		}
		return body
	})
	noManifest := rewrite(t, bak, func(h *tar.Header, body []byte) []byte {
		if h.Name == "MANIFEST.json" {
			h.Name = "other.json"
		}
		return body
	})
	// A database damaged before it was backed up (the manifest matches it).
	var oldSum, newSum string
	badDB := rewrite(t, bak, func(h *tar.Header, body []byte) []byte {
		switch h.Name {
		case "receiver.db":
			oldSum = sha256Hex(body)
			for i := 2 * 4096; i < len(body); i++ {
				body[i] = 0xff
			}
			newSum = sha256Hex(body)
		case "MANIFEST.json":
			body = bytes.Replace(body, []byte(oldSum), []byte(newSum), 1)
		}
		return body
	})
	for _, tc := range []struct{ name, file, want string }{
		{"a damaged database", badDB, "the restored database"},
		{"cut at a third", cuts[0], "damaged or cut short"},
		{"cut in half", cuts[1], "damaged or cut short"},
		{"cut at two thirds", cuts[2], "damaged or cut short"},
		{"cut near the end", cuts[3], "damaged or cut short"},
		{"a flipped byte", flipped, "token.key does not match the manifest"},
		{"a path out of the directory", escape, `refusing entry "../token.key"`},
		{"no manifest", noManifest, "no manifest"},
		{"not a backup", filepath.Join(data, "ca.crt"), "not a receiver backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			into := filepath.Join(t.TempDir(), "new")
			_, err := receiver.Restore(tc.file, into)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(into); !os.IsNotExist(err) {
				t.Fatalf("the failed restore left %s: %v", into, err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(into), "token.key")); !os.IsNotExist(err) {
				t.Fatalf("a file was written outside the directory")
			}
		})
	}
}
