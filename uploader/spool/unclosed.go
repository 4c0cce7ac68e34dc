package spool

import (
	"slices"

	"github.com/uploadbox/uploadbox/crypto"
)

// Unclosed is a recording in the index that has no last segment: its end
// is segment Next, linked to Prev (the commitment of segment Next-1).
type Unclosed struct {
	RecordingID [16]byte
	Next        uint64
	Prev        [crypto.CommitmentSize]byte
}

// sent reports whether a segment in state st was or will be uploaded,
// so that a segment after it can link to it.
func (st State) sent() bool {
	switch st {
	case Sealed, Truncated, Uploading, Committed, Wiped, Quarantined:
		return true
	}
	return false
}

// Unclosed lists the recordings that have no last segment and can be
// closed: their highest segment was (or will be) uploaded and its
// commitment is known. Call it when no recording is being written (at
// daemon start): such a recording was cut by a crash. Recordings whose
// highest segment is corrupt, missing or discarded, or whose records
// predate kept commitments, are left out: nothing could link to them.
func (s *Spool) Unclosed() ([]Unclosed, error) {
	all, err := s.All()
	if err != nil {
		return nil, err
	}
	type rec struct {
		top    Record
		closed bool
		live   bool
	}
	byID := map[[16]byte]*rec{}
	var order [][16]byte
	for _, r := range all {
		x := byID[r.RecordingID]
		if x == nil {
			x = &rec{top: r}
			byID[r.RecordingID] = x
			order = append(order, r.RecordingID)
		}
		if r.Sequence >= x.top.Sequence {
			x.top = r
		}
		x.closed = x.closed || r.Last
		x.live = x.live || r.State == Recording
	}
	var out []Unclosed
	for _, id := range order {
		x := byID[id]
		if x.closed || x.live || !x.top.State.sent() || x.top.Commitment == ([crypto.CommitmentSize]byte{}) {
			continue
		}
		out = append(out, Unclosed{RecordingID: id, Next: x.top.Sequence + 1, Prev: x.top.Commitment})
	}
	slices.SortFunc(out, func(a, b Unclosed) int { return slices.Compare(a.RecordingID[:], b.RecordingID[:]) })
	return out, nil
}
