package receiver

import (
	"context"
	"time"

	"github.com/uploadbox/uploadbox/receiver/store"
)

// The commit's crash points (adopt.go), for SetCommitCrash.
const (
	CrashNoted    = crashNoted
	CrashAdopted  = crashAdopted
	CrashRecorded = crashRecorded
)

// SetCommitCrash makes s's commits stop where crash returns an error, as
// if the receiver died there.
func SetCommitCrash(s *Server, crash func(point string) error) { s.adoption.crash.Store(&crash) }

// ForceAdoption makes s's commits try to rename uploads into its fs store
// even when Open found them on another filesystem.
func ForceAdoption(s *Server) {
	s.adoption.fs.Store(s.store.(*store.FS))
	s.hashing.SetCopying(false)
}

// ExpireUploads runs one round of s's janitor with cutoff.
func ExpireUploads(ctx context.Context, s *Server, cutoff time.Time) (int, error) {
	return s.expireUploads(ctx, cutoff)
}
