package crypto

import "fmt"

// EndReason says why a recording ended. The last segment carries it in
// the signed trailer flags (bits 1–3), so the receiver learns it from the
// device itself and the stored segment keeps it.
type EndReason uint8

// The end reasons; their String forms are stable words shown to people
// and in JSON.
const (
	EndUnknown   EndReason = 0 // not given (a segment sealed before reasons existed)
	EndStopped   EndReason = 1 // someone stopped the session, or the daemon stopped cleanly
	EndTimeUp    EndReason = 2 // the session's time was up
	EndSpoolFull EndReason = 3 // the spool (or the disk reserve) had no room for the next segment
	EndDiskError EndReason = 4 // writing a segment failed (I/O error, disk full mid-segment)
	EndCrashed   EndReason = 5 // the box stopped without sealing its last segment (power cut, kill)
)

var endNames = [...]string{"unknown", "stopped", "session time up", "spool full", "disk error", "box crashed"}

func (r EndReason) valid() bool { return int(r) < len(endNames) }

func (r EndReason) String() string {
	if r.valid() {
		return endNames[r]
	}
	return fmt.Sprintf("end reason %d", uint8(r))
}

// ParseEndReason is the inverse of String.
func ParseEndReason(s string) (EndReason, error) {
	for i, n := range endNames {
		if n == s {
			return EndReason(i), nil
		}
	}
	return 0, fmt.Errorf("end reason %q: want one of stopped, session time up, spool full, disk error, box crashed, unknown", s)
}
