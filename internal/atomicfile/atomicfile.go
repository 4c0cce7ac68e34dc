// Package atomicfile replaces a file so that a crash leaves either the old
// or the new content, never a mix: a temporary file in the same directory
// with the final mode, written and fsynced, renamed over the path, and the
// directory fsynced.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with mode.
func Write(path string, data []byte, mode os.FileMode) error {
	return place(path, data, mode, os.Rename)
}

// Create is Write for a new file: it never replaces one, and fails with an
// error wrapping fs.ErrExist when path exists, also when it appeared while
// data was being written (the temporary file is linked, not renamed).
func Create(path string, data []byte, mode os.FileMode) error {
	return place(path, data, mode, os.Link)
}

// place writes data with mode to a temporary file next to path, fsyncs it,
// puts it at path with put (rename or link) and fsyncs the directory.
func place(path string, data []byte, mode os.FileMode, put func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := put(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs the directory dir, so that the names created, renamed or
// removed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, serr)
	}
	return cerr
}
