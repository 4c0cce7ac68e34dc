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
// commitment is known. A highest segment that is empty (cut before any
// media reached the disk, never uploaded) is replaced by the end: Next is
// its number, linked to the segment before it, so that the receiver gets
// every segment the end links back to. Call it when no recording is being
// written (at daemon start): such a recording was cut by a crash.
// Recordings whose highest segment with media is corrupt, missing or
// discarded, or whose records predate kept commitments, are left out:
// nothing could link to them.
func (s *Spool) Unclosed() ([]Unclosed, error) {
	all, err := s.All()
	if err != nil {
		return nil, err
	}
	type rec struct {
		bySeq  map[uint64]Record
		top    uint64
		closed bool
		live   bool
	}
	byID := map[[16]byte]*rec{}
	var order [][16]byte
	for _, r := range all {
		x := byID[r.RecordingID]
		if x == nil {
			x = &rec{bySeq: map[uint64]Record{}, top: r.Sequence}
			byID[r.RecordingID] = x
			order = append(order, r.RecordingID)
		}
		x.bySeq[r.Sequence] = r
		x.top = max(x.top, r.Sequence)
		x.closed = x.closed || r.Last
		x.live = x.live || r.State == Recording
	}
	var out []Unclosed
	for _, id := range order {
		x := byID[id]
		if x.closed || x.live {
			continue
		}
		next, link := x.top+1, x.bySeq[x.top]
		if link.State == Empty {
			// The end takes the empty segment's number: it was never sent.
			if x.top == 0 {
				continue
			}
			link, next = x.bySeq[x.top-1], x.top
		}
		if !link.State.sent() || link.Commitment == ([crypto.CommitmentSize]byte{}) {
			continue
		}
		out = append(out, Unclosed{RecordingID: id, Next: next, Prev: link.Commitment})
	}
	slices.SortFunc(out, func(a, b Unclosed) int { return slices.Compare(a.RecordingID[:], b.RecordingID[:]) })
	return out, nil
}
