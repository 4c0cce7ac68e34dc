//go:build !linux

package store

import "syscall"

// renameat2NoReplace is not available: renameNoReplace links instead.
func renameat2NoReplace(oldpath, newpath string) error { return syscall.ENOSYS }
