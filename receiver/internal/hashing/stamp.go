package hashing

import (
	"os"
	"syscall"
)

// stamp identifies a file's content as last changed: any write, truncate
// or replacement by anyone changes its inode, size or change time.
type stamp struct {
	ino, dev     uint64
	size         int64
	mtime, ctime int64 // nanoseconds
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	st := stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev = uint64(sys.Ino), uint64(sys.Dev)
		st.ctime = changeTime(sys)
	}
	return st, nil
}
