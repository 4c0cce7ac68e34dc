package receiver

import "time"

// StillUploadingFor is how long after its latest commit a recording that
// lacks segments (no last segment yet, or a gap) is shown as
// "still uploading": a recording box commits a segment every few seconds
// and, by default, retries a lost connection at least every 5 minutes
// (upload.retry_max), so a longer silence means it stopped sending.
const StillUploadingFor = 10 * time.Minute

// Ended words beside the box's own end reasons (crypto.EndReason).
const (
	EndedStillUploading = "still uploading"
	EndedUnknown        = "unknown"
)

// RecordingStatus is what the receiver can say about one recording.
type RecordingStatus struct {
	Complete bool   // every segment the box sealed is here
	Ended    string // see RecordingState
	Missing  int    // absent sequence numbers up to the highest known
}

// RecordingState derives a recording's state from its stored segments.
//
//   - Complete: segments 0..N are all stored and N carries the last flag.
//     The last segment's signed trailer says why the recording ended, and
//     Ended is that word: "stopped", "session time up", "spool full",
//     "disk error" or "box crashed" (the last two end with an empty
//     segment after the one that was cut), or "unknown" for a segment
//     sealed before the box sent reasons.
//   - Otherwise, when the latest commit is less than StillUploadingFor
//     before now: "still uploading".
//   - Otherwise the box's reason if its last segment arrived (segments
//     are missing), else "unknown": the box never sent the end of the
//     recording.
func RecordingState(segs []SegmentRecord, now time.Time) RecordingStatus {
	seen := map[uint64]bool{}
	var top uint64
	var latest time.Time
	var last *SegmentRecord
	for i := range segs {
		s := &segs[i]
		seen[s.Sequence] = true
		top = max(top, s.Sequence)
		if s.Committed.After(latest) {
			latest = s.Committed
		}
		if s.Last && (last == nil || s.Sequence < last.Sequence) {
			last = s
		}
	}
	st := RecordingStatus{Ended: EndedUnknown}
	if len(segs) == 0 {
		return st
	}
	if last != nil {
		top = last.Sequence // the recording ends at its last segment
		if last.End != "" {
			st.Ended = last.End
		}
	}
	for seq := uint64(0); seq <= top; seq++ {
		if !seen[seq] {
			st.Missing++
		}
	}
	st.Complete = last != nil && st.Missing == 0
	if !st.Complete && now.Sub(latest) < StillUploadingFor {
		st.Ended = EndedStillUploading
	}
	return st
}
