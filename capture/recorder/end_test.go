package recorder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// A session stopped by a command (a cancelled context whose cause is not a
// deadline) ends with "stopped".
func TestStopEndsWithStopped(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	ctx, cancel := context.WithCancelCause(t.Context())
	sealed, err := Record(ctx, smallCapture(), Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment: segment.Config{SegmentLength: time.Second},
		OnSealed: func(s Sealed) {
			if s.Sequence == 1 {
				cancel(errors.New("stopped"))
			}
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	end := sealed[len(sealed)-1]
	info, err := crypto.VerifyFile(end.Path, k.dev.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !end.Last || info.Trailer.End() != crypto.EndStopped {
		t.Fatalf("last segment %d: last %v, end %v, want stopped", end.Sequence, end.Last, info.Trailer.End())
	}
}

type reasonErr struct{ r crypto.EndReason }

func (e reasonErr) Error() string               { return "custom" }
func (e reasonErr) EndReason() crypto.EndReason { return e.r }

func TestEndReasonOf(t *testing.T) {
	tests := []struct {
		name  string
		cause error
		want  crypto.EndReason
	}{
		{"capture ended", nil, crypto.EndUnknown},
		{"stop command", errors.New("stopped"), crypto.EndStopped},
		{"signal", context.Canceled, crypto.EndStopped},
		{"daemon stopping", errors.New("daemon stopping"), crypto.EndStopped},
		{"deadline", context.DeadlineExceeded, crypto.EndTimeUp},
		{"daemon timer", errors.New("time is up"), crypto.EndTimeUp},
		{"new words", errors.New("session time up"), crypto.EndTimeUp},
		{"spool", fmt.Errorf("segment 3 not started: %w", errors.New("spool full: 3 MB of 2 MB")), crypto.EndSpoolFull},
		{"reserve", errors.New("disk reserve reached: 10 MB free"), crypto.EndSpoolFull},
		{"says itself", fmt.Errorf("wrapped: %w", reasonErr{crypto.EndDiskError}), crypto.EndDiskError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := EndReasonOf(tc.cause); got != tc.want {
				t.Errorf("EndReasonOf(%v) = %v, want %v", tc.cause, got, tc.want)
			}
		})
	}
}

// TestWriteErrorAtSegmentStart: a write error before the first payload
// chunk of segment 1 leaves it without media. The spool records it as
// empty and never uploads it, so the recorder seals no end linked to it;
// the daemon's end (spool.Unclosed, SealEnd) takes its number and links to
// segment 0, the last segment the receiver gets.
func TestWriteErrorAtSegmentStart(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	sp, err := spool.Open(dir, spool.Options{Device: k.dev.Public()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var writing string
	cfg := Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment: segment.Config{SegmentLength: time.Second},
		BeforeSegment: func(p string) error {
			writing = filepath.Base(p)
			return sp.MarkRecording(writing)
		},
		OnSealed: func(s Sealed) {
			if err := sp.MarkSealed(filepath.Base(s.Path)); err != nil {
				t.Errorf("segment %d not queued: %v", s.Sequence, err)
			}
		},
	}
	cfg.create = func(path string) (file, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil || !strings.HasSuffix(path, "-000001"+PartialSuffix) {
			return f, err
		}
		// Segment 1's header (about 1.3 KB) reaches the disk, no full
		// payload chunk (64 KiB) does.
		return &limitedFile{File: f, d: &fullDisk{limit: 4096}}, nil
	}
	sealed, err := record(t, 20*time.Second, cfg)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want the disk-full error", err)
	}
	if len(sealed) != 1 || sealed[0].Sequence != 0 || sealed[0].Last {
		t.Fatalf("the recorder sealed %+v; want only segment 0, no end linked to the empty segment 1", sealed)
	}
	if d, err := sp.Settle(writing); err != nil || len(d) != 1 || d[0].To != spool.Empty {
		t.Fatalf("Settle(%s) = %+v, %v; want empty", writing, d, err)
	}
	open, err := sp.Unclosed()
	if err != nil {
		t.Fatal(err)
	}
	want := spool.Unclosed{RecordingID: sealed[0].RecordingID, Next: 1, Prev: sealed[0].Commitment}
	if len(open) != 1 || open[0] != want {
		t.Fatalf("Unclosed() = %+v, want [%+v]", open, want)
	}
	end, err := SealEnd(cfg, want.RecordingID, want.Next, want.Prev, crypto.EndDiskError)
	if err != nil {
		t.Fatal(err)
	}
	info, err := crypto.VerifyFile(end.Path, k.dev.Public())
	if err != nil {
		t.Fatal(err)
	}
	if info.Header.Sequence != 1 || info.Header.Prev != sealed[0].Commitment || info.Trailer.End() != crypto.EndDiskError {
		t.Errorf("end: segment %d, links to segment 0: %v, end %v", info.Header.Sequence, info.Header.Prev == sealed[0].Commitment, info.Trailer.End())
	}
	if r, err := sp.Get(filepath.Base(end.Path)); err != nil || r.State != spool.Sealed || !r.Last {
		t.Errorf("spool has the end as %+v, %v; want sealed, last", r, err)
	}
	if open, err := sp.Unclosed(); err != nil || len(open) != 0 {
		t.Errorf("Unclosed() after the end = %+v, %v", open, err)
	}
}
