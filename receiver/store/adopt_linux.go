package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameat2NoReplace is renameat2(2) with RENAME_NOREPLACE.
func renameat2NoReplace(oldpath, newpath string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}
