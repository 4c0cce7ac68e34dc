package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// ErrNotAdopted means Adopt could not move the file into the store because
// it is on another filesystem; nothing changed, and the caller copies it
// with Put instead.
var ErrNotAdopted = errors.New("store: the file is on another filesystem than the store")

// Adopt makes the file at path the object key, without reading or copying
// it: it sets the file's mode to 0600, fsyncs it, checks it still has size
// bytes, renames it to the key's name (never replacing an object that is
// there: then, as for Put, nil if that object hashes to sum and
// ErrConflict if not, and the file stays where it was) and fsyncs the
// directories from the key's up to the store root (as Put does). The file's own
// directory is fsynced before the rename, so that names the caller made
// beside the file before (a note of where it goes) are durable first.
//
// Adopt does not hash the file: the caller vouches that its bytes hash to
// sum (it hashed them as they were written, or read them once) and that
// nothing writes to it any more. After Adopt returns nil no name but the
// key's is left for the file. ErrNotAdopted: path is on another
// filesystem; nothing changed.
func (s *FS) Adopt(ctx context.Context, key, path string, size int64, sum Sum) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := syncFile(path, size); err != nil {
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	// What the caller noted beside the file (where it is going) is durable
	// before the file moves.
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	if err := mkdirAllSync(dir); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%w: adopt %s: a shorter key is stored where this key needs a directory", ErrConflict, key)
		}
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	if err := adoptRename(path, final); err != nil {
		switch {
		case errors.Is(err, fs.ErrExist):
			return s.compareExisting(ctx, key, sum)
		case errors.Is(err, syscall.EXDEV):
			return fmt.Errorf("%w: adopt %s from %s", ErrNotAdopted, key, path)
		}
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	if err := s.syncPath(dir); err != nil {
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	return nil
}

// syncFile gives the file at path the objects' mode, fsyncs it and checks
// that it has size bytes.
func syncFile(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() != size {
		return fmt.Errorf("%w: %s has %d bytes, want %d", ErrHashMismatch, path, fi.Size(), size)
	}
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if err := syncData(f); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// The system calls Adopt makes that tests observe or make fail.
var (
	adoptRename = renameNoReplace
	syncDir     = atomicfile.SyncDir
	syncData    = (*os.File).Sync
)

// renameNoReplace renames oldpath to newpath unless newpath exists (an
// error wrapping fs.ErrExist). Where the filesystem cannot rename without
// replacing, it links the new name (link(2) never replaces one) and
// removes the old: a crash in between leaves both names, which a retried
// Adopt resolves (the key exists with the same bytes).
func renameNoReplace(oldpath, newpath string) error {
	return renameNoReplaceWith(oldpath, newpath, renameat2NoReplace)
}

func renameNoReplaceWith(oldpath, newpath string, rename func(string, string) error) error {
	err := rename(oldpath, newpath)
	if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOSYS) {
		return err
	}
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}
