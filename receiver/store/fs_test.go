package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFS(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	runStoreSuite(t, s)

	t.Run("NoTemporaryFilesLeft", func(t *testing.T) {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if strings.HasPrefix(d.Name(), ".") {
				t.Errorf("left behind: %s", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Modes", func(t *testing.T) {
		mustPut(t, s, "modes/DEV1/REC1/000001.ubx", []byte("x"))
		for p, want := range map[string]fs.FileMode{
			"modes/DEV1/REC1/000001.ubx": 0o600,
			"modes/DEV1/REC1":            fs.ModeDir | 0o700,
			"modes":                      fs.ModeDir | 0o700,
		} {
			fi, err := os.Stat(filepath.Join(dir, "objects", p))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
			}
		}
	})
}

// TestFSCrashLeftovers checks that a temporary file left by a crash is not
// an object and does not block a later Put.
func TestFSCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "DEV1", "REC1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "DEV1", "REC1", ".tmp-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkList(t, s, "", nil)
	checkList(t, s, "DEV1/REC1/", nil)
	mustPut(t, s, "DEV1/REC1/000001.ubx", []byte("whole"))
	checkList(t, s, "", []string{"DEV1/REC1/000001.ubx"})
}

// TestFSDetectsCorruption checks that Stat recomputes the hash, so a
// re-put of the original data against a damaged file is a conflict rather
// than a silent success.
func TestFSDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("segment bytes")
	mustPut(t, s, "DEV1/REC1/000001.ubx", data)
	p := filepath.Join(dir, "DEV1", "REC1", "000001.ubx")
	if err := os.WriteFile(p, bytes.ToUpper(data), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(t.Context(), "DEV1/REC1/000001.ubx")
	if err != nil {
		t.Fatal(err)
	}
	if info.SHA256 == sha256.Sum256(data) {
		t.Fatal("Stat returned the original hash for changed bytes")
	}
	if err := put(t.Context(), s, "DEV1/REC1/000001.ubx", data); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-put: err = %v, want ErrConflict", err)
	}
}

func TestNewFSOnFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(f); err == nil {
		t.Fatal("NewFS on a regular file succeeded")
	}
}

// TestFSKeyClash checks that a key that would need an object as a directory,
// or a directory as an object, is a conflict.
func TestFSKeyClash(t *testing.T) {
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "a/b", []byte("x"))
	if err := put(t.Context(), s, "a/b/c", []byte("y")); !errors.Is(err, ErrConflict) {
		t.Errorf("Put(a/b/c) over object a/b: err = %v, want ErrConflict", err)
	}
	if err := put(t.Context(), s, "a", []byte("z")); !errors.Is(err, ErrConflict) {
		t.Errorf("Put(a) over directory a/: err = %v, want ErrConflict", err)
	}
	checkList(t, s, "", []string{"a/b"})
}
