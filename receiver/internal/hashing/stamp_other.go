//go:build !linux

package hashing

import "syscall"

// changeTime is not read here: inode, size and modification time decide.
func changeTime(*syscall.Stat_t) int64 { return 0 }
