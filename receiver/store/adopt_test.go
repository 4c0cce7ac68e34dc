package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/wire"
)

// staged writes data to a new file in dir, as tusd's filestore does (mode
// 0664), and returns its path.
func staged(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o664); err != nil {
		t.Fatal(err)
	}
	return p
}

// adoptStore is an FS in DIR/objects and an uploads directory DIR/uploads.
func adoptStore(t *testing.T) (s *FS, dir, uploads string) {
	t.Helper()
	dir = t.TempDir()
	s, err := NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	uploads = filepath.Join(dir, "uploads")
	if err := os.Mkdir(uploads, 0o700); err != nil {
		t.Fatal(err)
	}
	return s, dir, uploads
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestFSAdopt: the file becomes the object (the same inode, no copy), its
// old name is gone, and it gets the objects' mode; a key that holds the
// same bytes is kept (the file stays), other bytes are a conflict, a file
// of another size is refused, and nothing is left behind.
// The hash the caller vouches for is either kind a commit carries.
func TestFSAdopt(t *testing.T) {
	for _, alg := range []wire.HashAlg{wire.HashBLAKE3, wire.HashSHA256} {
		t.Run(string(alg), func(t *testing.T) { testFSAdopt(t, alg) })
	}
}

// sumOf is the hash alg of data, computed here.
func sumOf(alg wire.HashAlg, data []byte) Sum {
	if alg == wire.HashBLAKE3 {
		return Sum{Alg: alg, Hash: blake3.Sum256(data)}
	}
	return Sum{Alg: alg, Hash: sha256.Sum256(data)}
}

func testFSAdopt(t *testing.T, alg wire.HashAlg) {
	s, dir, uploads := adoptStore(t)
	data := bytes.Repeat([]byte("segment "), 5000)
	sum := sumOf(alg, data)
	const key = "DEV1/REC1/000001.ubx"

	p := staged(t, uploads, "a", data)
	ino := inode(t, p)
	if err := s.Adopt(t.Context(), key, p, int64(len(data)), sum); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the adopted file still has its old name: %v", err)
	}
	if got := mustGet(t, s, key); !bytes.Equal(got, data) {
		t.Fatal("the object is not the adopted bytes")
	}
	final := filepath.Join(dir, "objects", filepath.FromSlash(key))
	if inode(t, final) != ino {
		t.Fatal("the object is a copy, not the adopted file")
	}
	if fi, _ := os.Stat(final); fi.Mode() != 0o600 {
		t.Fatalf("object mode %v, want 0600", fi.Mode())
	}

	// The same bytes again: stored already; the file is left to the caller.
	again := staged(t, uploads, "b", data)
	if err := s.Adopt(t.Context(), key, again, int64(len(data)), sum); err != nil {
		t.Fatalf("adopting the same bytes again: %v", err)
	}
	if _, err := os.Stat(again); err != nil {
		t.Fatalf("a file whose bytes were stored already was moved: %v", err)
	}
	// Other bytes under the key: a conflict, the object unchanged.
	other := bytes.Repeat([]byte("other   "), 5000)
	op := staged(t, uploads, "c", other)
	if err := s.Adopt(t.Context(), key, op, int64(len(other)), sumOf(alg, other)); !errors.Is(err, ErrConflict) {
		t.Fatalf("other bytes under a stored key: %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, key); !bytes.Equal(got, data) {
		t.Fatal("a conflicting Adopt changed the object")
	}
	// A file that is not the announced size: nothing stored.
	short := staged(t, uploads, "d", data[:100])
	if err := s.Adopt(t.Context(), "DEV1/REC1/000002.ubx", short, int64(len(data)), sum); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("short file: %v, want ErrHashMismatch", err)
	}
	if _, err := os.Stat(short); err != nil {
		t.Fatalf("a refused file was moved: %v", err)
	}
	if keys, _ := s.List(t.Context(), ""); !slices.Equal(keys, []string{key}) {
		t.Fatalf("store holds %v, want only %s", keys, key)
	}
	if err := s.Adopt(t.Context(), "../x", short, 100, sum); !errors.Is(err, ErrBadKey) {
		t.Fatalf("bad key: %v", err)
	}
}

// TestFSAdoptOrder: the file's data and its directory are fsynced before
// the rename, the key's directories up to the root after it.
func TestFSAdoptOrder(t *testing.T) {
	s, dir, uploads := adoptStore(t)
	data := []byte("bytes")
	p := staged(t, uploads, "a", data)

	var ops []string
	defer func(r func(string, string) error, d func(string) error, f func(*os.File) error) {
		adoptRename, syncDir, syncData = r, d, f
	}(adoptRename, syncDir, syncData)
	adoptRename = func(o, n string) error { ops = append(ops, "rename "+o); return renameNoReplace(o, n) }
	syncDir = func(d string) error { ops = append(ops, "syncdir "+d); return nil }
	syncData = func(f *os.File) error { ops = append(ops, "sync "+f.Name()); return nil }

	if err := s.Adopt(t.Context(), "D/R/000001.ubx", p, int64(len(data)), sumOf(wire.HashBLAKE3, data)); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "objects")
	// A first Adopt into D/R: the whole path.
	whole := func(p string) []string {
		return []string{
			"sync " + p, "syncdir " + uploads,
			// mkdirAllSync: each new directory into its parent
			"syncdir " + root, "syncdir " + filepath.Join(root, "D"),
			"rename " + p,
			"syncdir " + filepath.Join(root, "D", "R"), "syncdir " + filepath.Join(root, "D"), "syncdir " + root,
		}
	}
	want := whole(p)
	if !slices.Equal(ops, want) {
		t.Fatalf("operations:\n%q\nwant\n%q", ops, want)
	}

	// Into the same directory again: its path is durable already.
	ops = nil
	p = staged(t, uploads, "b", data)
	if err := s.Adopt(t.Context(), "D/R/000002.ubx", p, int64(len(data)), sumOf(wire.HashBLAKE3, data)); err != nil {
		t.Fatal(err)
	}
	want = []string{"sync " + p, "syncdir " + uploads, "rename " + p, "syncdir " + filepath.Join(root, "D", "R")}
	if !slices.Equal(ops, want) {
		t.Fatalf("operations, second time:\n%q\nwant\n%q", ops, want)
	}

	// Deleted with their directories and made again: the whole path again.
	for _, k := range []string{"D/R/000001.ubx", "D/R/000002.ubx"} {
		if err := s.Delete(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	ops = nil
	p = staged(t, uploads, "c", data)
	if err := s.Adopt(t.Context(), "D/R/000003.ubx", p, int64(len(data)), sumOf(wire.HashBLAKE3, data)); err != nil {
		t.Fatal(err)
	}
	want = whole(p)
	if !slices.Equal(ops, want) {
		t.Fatalf("operations after the directories were deleted:\n%q\nwant\n%q", ops, want)
	}
}

// TestFSAdoptElsewhere: a file on another filesystem is not adopted and
// stays; a filesystem without rename-without-replace gets a link and the
// old name removed.
func TestFSAdoptElsewhere(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("bytes")
	sum := sumOf(wire.HashBLAKE3, data)
	defer func(r func(string, string) error) { adoptRename = r }(adoptRename)

	adoptRename = func(o, n string) error { return &os.LinkError{Op: "rename", Old: o, New: n, Err: syscall.EXDEV} }
	p := staged(t, dir, "a", data)
	if err := s.Adopt(t.Context(), "D/R/000001.ubx", p, 5, sum); !errors.Is(err, ErrNotAdopted) {
		t.Fatalf("across filesystems: %v, want ErrNotAdopted", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("a file not adopted was moved: %v", err)
	}
	if keys, _ := s.List(t.Context(), ""); len(keys) != 0 {
		t.Fatalf("stored %v", keys)
	}

	adoptRename = func(o, n string) error {
		return renameNoReplaceWith(o, n, func(string, string) error { return syscall.EINVAL })
	}
	if err := s.Adopt(t.Context(), "D/R/000001.ubx", p, 5, sum); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("linked, but the old name is still there: %v", err)
	}
	if got := mustGet(t, s, "D/R/000001.ubx"); !bytes.Equal(got, data) {
		t.Fatal("linked object differs")
	}
}
