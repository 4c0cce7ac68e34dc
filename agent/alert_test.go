package agent

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// TestStopAlert: every way recording stops on its own gives one sentence
// with the cause and the remedy, no repeated words from the error chain
// and no promise that recording resumes by itself.
func TestStopAlert(t *testing.T) {
	c := config.Default()
	c.Spool.Dir = "/var/lib/uploadbox/spool"
	seg := &spool.Decision{Name: "00112233445566778899aabbccddeeff-000002.ubx", To: spool.Truncated}
	empty := &spool.Decision{Name: seg.Name, To: spool.Empty}
	write := func(errno syscall.Errno) error {
		return fmt.Errorf("record: recording stopped: segment 2: seal: write sealed chunks: %w",
			&fs.PathError{Op: "write", Path: c.Spool.Dir + "/00112233445566778899aabbccddeeff-000002.ubx.partial", Err: errno})
	}
	tests := []struct {
		name       string
		err        error
		seg        *spool.Decision
		pending    bool
		wantReason string
		want       []string // in the alert; "" alert when nil
	}{
		{"spool full", fmt.Errorf("record: recording stopped: open segment 2: segment 2 not started: %w: 10 bytes", spool.ErrSpoolFull), nil, false,
			StopSpoolFull, []string{"the spool is full", "spool.max_size", "start a new session"}},
		{"disk reserve", fmt.Errorf("record: recording stopped: open segment 2: segment 2 not started: %w: 10 bytes", spool.ErrDiskReserve), nil, false,
			StopSpoolFull, []string{"down to its reserve", "spool.min_free", "free space there"}},
		{"no space mid-segment", write(syscall.ENOSPC), seg, false,
			StopDiskError, []string{"is full", "segment 00112233445566778899aabbccddeeff-000002 was kept as far as it got and is uploaded", "free space there"}},
		{"no space, header only", write(syscall.ENOSPC), empty, false,
			StopDiskError, []string{"held no media yet and was dropped"}},
		{"no space, index full", write(syscall.ENOSPC), seg, true,
			StopDiskError, []string{"was kept as far as it got and is uploaded once there is room again"}},
		{"I/O error on fsync", fmt.Errorf("fsync segment 2: %w", &fs.PathError{Op: "sync", Path: c.Spool.Dir + "/x.ubx.partial", Err: syscall.EIO}), nil, false,
			StopDiskError, []string{"input/output error", "uploadbox diag"}},
		{"rename", &os.LinkError{Op: "rename", Old: c.Spool.Dir + "/a", New: c.Spool.Dir + "/b", Err: syscall.EIO}, nil, false,
			StopDiskError, []string{"writing to"}},
		{"camera error", &fs.PathError{Op: "read", Path: "/dev/video0", Err: syscall.EIO}, nil, false, StopError, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reason, alert := stopAlert(tc.err, c, tc.seg, tc.pending)
			if reason != tc.wantReason {
				t.Errorf("reason %q, want %q", reason, tc.wantReason)
			}
			if tc.want == nil {
				if alert != "" {
					t.Errorf("alert %q, want none", alert)
				}
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(alert, w) {
					t.Errorf("alert %q does not say %q", alert, w)
				}
			}
			if strings.Count(alert, "stopped") != 1 || strings.Contains(alert, "until") || strings.Contains(alert, "not started") ||
				strings.Count(alert, ". ") > 0 || strings.Contains(alert, "\n") {
				t.Errorf("alert is not one plain sentence: %q", alert)
			}
		})
	}
}
