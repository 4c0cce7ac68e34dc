package recorder

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/crypto"
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
