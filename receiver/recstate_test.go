package receiver

import (
	"testing"
	"time"
)

func TestRecordingState(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	recent := now.Add(-time.Minute)
	old := now.Add(-time.Hour)
	seg := func(seq uint64, at time.Time) SegmentRecord {
		return SegmentRecord{Sequence: seq, Outcome: "OK", Committed: at}
	}
	last := func(seq uint64, at time.Time, end string) SegmentRecord {
		s := seg(seq, at)
		s.Last, s.End = true, end
		return s
	}
	truncated := func(seq uint64, at time.Time) SegmentRecord {
		s := seg(seq, at)
		s.Outcome = "TRUNCATED"
		return s
	}
	tests := []struct {
		name string
		segs []SegmentRecord
		want RecordingStatus
	}{
		{"stopped", []SegmentRecord{seg(0, old), seg(1, old), last(2, old, "stopped")}, RecordingStatus{true, "stopped", 0}},
		{"session time up, arrived out of order", []SegmentRecord{last(2, old, "session time up"), seg(0, old), seg(1, old)}, RecordingStatus{true, "session time up", 0}},
		// A full spool seals the last segment it could: nothing is lost.
		{"spool full", []SegmentRecord{seg(0, old), last(1, old, "spool full")}, RecordingStatus{true, "spool full", 0}},
		{"disk error after a cut segment", []SegmentRecord{seg(0, old), truncated(1, old), last(2, old, "disk error")}, RecordingStatus{true, "disk error", 0}},
		{"box crashed", []SegmentRecord{seg(0, old), truncated(1, old), last(2, old, "box crashed")}, RecordingStatus{true, "box crashed", 0}},
		{"still recording", []SegmentRecord{seg(0, recent), seg(1, recent)}, RecordingStatus{false, "still uploading", 0}},
		{"last arrived, a segment still on its way", []SegmentRecord{seg(0, recent), last(2, recent, "stopped")}, RecordingStatus{false, "still uploading", 1}},
		{"last arrived long ago, a segment missing", []SegmentRecord{seg(0, old), last(2, old, "stopped")}, RecordingStatus{false, "stopped", 1}},
		{"the box never sent its end", []SegmentRecord{seg(0, old), seg(1, old)}, RecordingStatus{false, "unknown", 0}},
		{"gaps and no end", []SegmentRecord{seg(0, old), seg(3, old)}, RecordingStatus{false, "unknown", 2}},
		// Stored before the box sent end reasons: the flag alone.
		{"old recording, last flag without a reason", []SegmentRecord{seg(0, old), last(1, old, "")}, RecordingStatus{true, "unknown", 0}},
		{"last flag, reason not given", []SegmentRecord{last(0, old, "unknown")}, RecordingStatus{true, "unknown", 0}},
		{"no segments", nil, RecordingStatus{false, "unknown", 0}},
		{"window edge: exactly StillUploadingFor ago", []SegmentRecord{seg(0, now.Add(-StillUploadingFor))}, RecordingStatus{false, "unknown", 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := RecordingState(tc.segs, now); got != tc.want {
				t.Errorf("RecordingState = %+v, want %+v", got, tc.want)
			}
		})
	}
}
