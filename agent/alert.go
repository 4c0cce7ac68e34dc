package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// stopAlert maps the error that stopped a recording to the session's stop
// reason and, when recording stopped on its own for lack of room or a
// failing disk, to the alert: one sentence with what happened and what to
// do. seg is what became of the segment being written (Settle), if known;
// pending says the spool could not record it yet.
func stopAlert(err error, c *config.Config, seg *spool.Decision, pending bool) (reason, alert string) {
	const stopped = "recording stopped on its own: "
	switch {
	case errors.Is(err, spool.ErrSpoolFull):
		return StopSpoolFull, stopped + fmt.Sprintf("the spool is full (the segments not yet uploaded reach spool.max_size, %s); "+
			"check the uploads with `uploadbox status` and start a new session once the queue has drained", c.Spool.MaxSize)
	case errors.Is(err, spool.ErrDiskReserve):
		return StopSpoolFull, stopped + fmt.Sprintf("the filesystem of %s is down to its reserve (spool.min_free, %s); "+
			"free space there and start a new session", c.Spool.Dir, c.Spool.MinFree)
	}
	errno, ok := spoolWriteError(err, c.Spool.Dir)
	if !ok {
		return StopError, ""
	}
	kept := "the segments sealed before are kept and uploaded"
	if seg != nil {
		name := strings.TrimSuffix(seg.Name, spool.SealedSuffix)
		switch {
		case (seg.To == spool.Truncated || seg.To == spool.Sealed) && pending:
			kept = fmt.Sprintf("segment %s was kept as far as it got and is uploaded once there is room again", name)
		case seg.To == spool.Truncated || seg.To == spool.Sealed:
			kept = fmt.Sprintf("segment %s was kept as far as it got and is uploaded", name)
		case seg.To == spool.Empty && pending:
			kept = fmt.Sprintf("segment %s held no media yet and is dropped once there is room again", name)
		case seg.To == spool.Empty:
			kept = fmt.Sprintf("segment %s held no media yet and was dropped", name)
		}
	}
	if errno == syscall.ENOSPC || errno == syscall.EDQUOT {
		return StopDiskError, stopped + fmt.Sprintf("the disk of %s is full and %s; free space there and start a new session", c.Spool.Dir, kept)
	}
	return StopDiskError, stopped + fmt.Sprintf("writing to %s failed (%v) and %s; check the storage with `uploadbox diag` and start a new session", c.Spool.Dir, errno, kept)
}

// spoolWriteError reports whether err is a failure to create, write, sync
// or rename a file in the spool directory dir, and its errno.
func spoolWriteError(err error, dir string) (syscall.Errno, bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return 0, false
	}
	in := func(p string) bool {
		rel, err := filepath.Rel(dir, p)
		return err == nil && !strings.HasPrefix(rel, "..")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && in(pe.Path) {
		return errno, true
	}
	var le *os.LinkError
	if errors.As(err, &le) && in(le.New) {
		return errno, true
	}
	return 0, false
}

// settle classifies the segment name (spool key or partial name) that a
// session was writing when it ended, so that a segment cut by a write
// error is uploaded (or dropped when it holds no media) at once. It
// returns what became of it, or nil when it was sealed as usual. When the
// spool index cannot be written (a full disk), pending is true and the
// upload loop tries again.
func (a *Agent) settle(name string) (seg *spool.Decision, pending bool) {
	if name == "" {
		return nil, false
	}
	d, err := a.spool.Settle(name)
	if len(d) > 0 {
		seg = &d[len(d)-1]
	}
	if err != nil {
		a.log.Error("segment cut short not recorded in the spool index yet; retrying with the uploads", "segment", name, "err", err)
		a.mu.Lock()
		a.unsettled = append(a.unsettled, name)
		a.mu.Unlock()
		return seg, true
	}
	for _, x := range d {
		a.auditSegment(x)
	}
	a.kickUpload()
	return seg, false
}

// settlePending retries the segments settle could not classify.
func (a *Agent) settlePending() {
	a.mu.Lock()
	names := a.unsettled
	a.unsettled = nil
	a.mu.Unlock()
	for _, n := range names {
		a.settle(n)
	}
}

// auditSegment records a segment that was cut short: truncated (uploaded
// as far as it got) or empty (no media, removed).
func (a *Agent) auditSegment(d spool.Decision) {
	switch d.To {
	case spool.Truncated:
		a.auditEvent("segment.truncated", "", "ok", fmt.Sprintf("segment=%s reason=%q", d.Name, d.Reason))
	case spool.Empty:
		a.auditEvent("segment.empty", "", "ok", fmt.Sprintf("segment=%s reason=%q", d.Name, d.Reason))
	}
}
