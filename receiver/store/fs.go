package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/uploadbox/uploadbox/wire"
)

// FS is a Store in a local directory: the object with key "a/b/c" is the
// file DIR/a/b/c, mode 0600, in directories of mode 0700.
//
// Put writes to a temporary file named ".tmp-*" in the target directory
// while hashing, checks size and SHA-256, fsyncs it, hard-links it to the
// key's name (link(2) fails if the name exists, so an object is never
// overwritten and concurrent Puts of one key have exactly one winner),
// removes the temporary name and fsyncs the directory and its parents up to
// the store root (the parents only until this process has done so once for
// that directory). A crash can leave a ".tmp-*" file behind; it is never
// visible as an object (keys cannot start with ".") and may be deleted by an
// operator.
//
// Unlike S3, a filesystem cannot hold both "a/b" and "a/b/c": a Put of one
// when the other exists returns ErrConflict. The receiver's keys all have
// the same depth, so this does not arise there.
//
// No SHA-256 is stored beside an object: Stat, and Put when the key exists,
// recompute it from the file. Segments are a few megabytes, so this costs
// little, cannot disagree with the data, and detects on-disk corruption.
type FS struct {
	dir string
	// synced holds the directories whose name, and every ancestor's, this
	// process fsynced into their parents: syncPath stops at one.
	synced sync.Map
}

var _ Store = (*FS)(nil)

// NewFS returns a Store keeping objects under dir, creating dir (0700) if
// needed.
func NewFS(dir string) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open fs store %s: %w", dir, err)
	}
	if err := mkdirAllSync(abs); err != nil {
		return nil, fmt.Errorf("open fs store %s: %w", dir, err)
	}
	return &FS{dir: abs}, nil
}

func (s *FS) path(key string) string {
	return filepath.Join(s.dir, filepath.FromSlash(key))
}

// Put implements Store.
func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64, sum [32]byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: put %s: negative size %d", ErrHashMismatch, key, size)
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	if err := mkdirAllSync(dir); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%w: put %s: a shorter key is stored where this key needs a directory", ErrConflict, key)
		}
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful link only the temporary name goes
	// Copied in large pieces (os.File's ReadFrom would take 32 KiB at a
	// time): fewer read and write calls per segment.
	if _, err := io.CopyBuffer(fileWriter{tmp}, newVerifyingReader(ctx, r, size, sum), make([]byte, copyBuffer)); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: fsync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return s.compareExisting(ctx, key, Sum{Alg: wire.HashSHA256, Hash: sum})
		}
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := os.Remove(tmpName); err != nil {
		return fmt.Errorf("put %s: remove temporary file: %w", key, err)
	}
	if err := s.syncPath(dir); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// copyBuffer is the size of the pieces Put copies (and of the verifying
// reader's buffer).
const copyBuffer = 256 << 10

// fileWriter hides the file's ReadFrom, so that io.CopyBuffer uses the
// buffer it is given.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// syncPath fsyncs dir and its ancestors up to the store's root. A directory
// made by a concurrent Put may not have been fsynced into its parent yet,
// and an object must not be reported durable before its path is. Once a
// directory's path was fsynced up to the root, later calls fsync only the
// directories below it (Delete forgets the directories it removes).
func (s *FS) syncPath(dir string) error {
	var walked []string
	for d := dir; ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			return err
		}
		if d == s.dir || len(d) <= len(s.dir) {
			break
		}
		if _, ok := s.synced.Load(d); ok {
			break
		}
		walked = append(walked, d)
	}
	for _, d := range walked {
		s.synced.Store(d, struct{}{})
	}
	return nil
}

// compareExisting decides a Put or an Adopt that lost the race for key,
// or repeated it: the stored object must hash to sum.
func (s *FS) compareExisting(ctx context.Context, key string, sum Sum) error {
	f, _, err := s.open(key)
	if errors.Is(err, ErrNotFound) {
		// The name exists but is not an object: a directory of longer keys.
		return fmt.Errorf("%w: put %s: longer keys are stored under this name", ErrConflict, key)
	}
	if err != nil {
		return fmt.Errorf("put %s: key exists: %w", key, err)
	}
	got, err := sumReader(ctx, f, sum.Alg)
	f.Close()
	if err != nil {
		return fmt.Errorf("put %s: key exists: %w", key, err)
	}
	if got != sum {
		return fmt.Errorf("%w: put %s: stored %s %x, new %x", ErrConflict, key, sum.Alg, got.Hash, sum.Hash)
	}
	// The winner may not have fsynced the directory yet; make sure the
	// object we report as stored is durable.
	if err := s.syncPath(filepath.Dir(s.path(key))); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Get implements Store.
func (s *FS) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	f, size, err := s.open(key)
	if err != nil {
		return nil, 0, err
	}
	return f, size, nil
}

func (s *FS) open(key string) (*os.File, int64, error) {
	if err := ValidateKey(key); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s (a directory of keys)", ErrNotFound, key)
	}
	return f, fi.Size(), nil
}

// Stat implements Store. It reads the whole object to compute its SHA-256.
func (s *FS) Stat(ctx context.Context, key string) (Info, error) {
	f, _, err := s.open(key)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	info, err := hashReader(ctx, f)
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return info, nil
}

// List implements Store.
func (s *FS) List(ctx context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	// Walk only the deepest directory the prefix names.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
	}
	root := s.dir
	if base != "" {
		root = s.path(base)
	}
	var keys []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			if !d.IsDir() {
				return fs.SkipAll
			}
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Prune directories that cannot hold matching keys.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// mkdirAllSync creates dir and its missing parents (0700) and fsyncs the
// parent of every directory it creates, so a new key's path survives a
// crash together with the object.
func mkdirAllSync(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// A concurrent Put created it (and syncs it); check it is a directory.
			return mkdirAllSync(dir)
		}
		return err
	}
	return syncDir(parent)
}

// Dir is the directory the store keeps its objects in.
func (s *FS) Dir() string { return s.dir }
