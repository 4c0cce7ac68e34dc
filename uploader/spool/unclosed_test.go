package spool

import (
	"errors"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
)

// TestUnclosed: after a crash, the recording cut in the middle of a
// segment is listed with the link its end must carry; a closed recording
// and one whose highest segment is corrupt are not.
func TestUnclosed(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s := f.open(t, dir, Options{})
	sealed := func(name string, b []byte) {
		t.Helper()
		writeFile(t, dir, name, b, time.Time{})
		if err := s.MarkSealed(name); err != nil {
			t.Fatal(err)
		}
	}
	// cut: 0 and 1 sealed, 2 cut by the crash.
	cut := f.recording(t)
	for range 2 {
		sealed(cut.next(t, 30_000))
	}
	cutName, cutSeg := cut.next(t, 60_000)
	if err := s.MarkRecording(cutName); err != nil {
		t.Fatal(err)
	}
	// closed: 0 sealed, 1 the last.
	closed := f.recording(t)
	sealed(closed.next(t, 100))
	stopped := crypto.EndStopped
	sealed(closed.seal(t, 100, &stopped))
	// broken: its highest segment is corrupt, nothing can link to it.
	broken := f.recording(t)
	sealed(broken.next(t, 100))
	bName, bSeg := broken.next(t, 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, partial(cutName), cutSeg[:len(cutSeg)/2], time.Time{})
	bSeg[0] = 'X'
	writeFile(t, dir, partial(bName), bSeg, time.Time{})

	s = f.open(t, dir, Options{})
	defer s.Close()
	if r := mustGet(t, s, cutName); r.State != Truncated || r.Commitment != cut.prev {
		t.Fatalf("cut segment: state %s, commitment %x; want truncated with its commitment %x", r.State, r.Commitment[:4], cut.prev[:4])
	}
	got, err := s.Unclosed()
	if err != nil {
		t.Fatal(err)
	}
	want := []Unclosed{{RecordingID: cut.id, Next: 3, Prev: cut.prev}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("Unclosed() = %+v, want %+v", got, want)
	}
}

// TestUnclosedEmptyTop: a recording whose highest segment is empty (cut
// right at its start by a crash or a write error, never uploaded) is closed
// under that segment's number, linked to the segment before it; the spool
// takes the end in place of the empty segment, and nothing else.
func TestUnclosedEmptyTop(t *testing.T) {
	f := newFixture(t)
	for _, cause := range []string{"a crash", "a write error"} {
		t.Run(cause, func(t *testing.T) {
			dir := t.TempDir()
			s := f.open(t, dir, Options{})
			rec := f.recording(t)
			name0, seg0 := rec.next(t, 30_000)
			writeFile(t, dir, name0, seg0, time.Time{})
			if err := s.MarkSealed(name0); err != nil {
				t.Fatal(err)
			}
			prev0 := rec.prev
			name1, seg1, hdr := rec.headerOnly(t)
			if err := s.MarkRecording(partial(name1)); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir, partial(name1), seg1[:hdr], time.Time{})
			if cause == "a crash" {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = f.open(t, dir, Options{})
			} else if _, err := s.Settle(partial(name1)); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if r := mustGet(t, s, name1); r.State != Empty || r.Reason != EmptyReason(cause) {
				t.Fatalf("segment 1: %s %q, want empty after %s", r.State, r.Reason, cause)
			}
			got, err := s.Unclosed()
			if err != nil {
				t.Fatal(err)
			}
			want := Unclosed{RecordingID: rec.id, Next: 1, Prev: prev0}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("Unclosed() = %+v, want [%+v]", got, want)
			}

			// A segment with media under the empty one's number is refused.
			rec.seq, rec.prev = 1, prev0
			n, b := rec.next(t, 30_000)
			writeFile(t, dir, n, b, time.Time{})
			var te *TransitionError
			if err := s.MarkSealed(n); !errors.As(err, &te) || te.From != Empty {
				t.Fatalf("MarkSealed of a non-last segment over an empty one: %v, want an illegal transition from empty", err)
			}
			// The end in its place is taken and queued.
			rec.seq, rec.prev = 1, prev0
			crashed := crypto.EndCrashed
			n, b = rec.seal(t, 0, &crashed)
			writeFile(t, dir, n, b, time.Time{})
			if err := s.MarkSealed(n); err != nil {
				t.Fatal(err)
			}
			if r := mustGet(t, s, n); r.State != Sealed || !r.Last || r.File != n || r.Commitment != rec.prev {
				t.Fatalf("end: %+v; want sealed, last, its own file and commitment", r)
			}
			var queued []string
			for {
				r, ok, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				queued = append(queued, r.Name)
				if err := s.StartUpload(r.Name, "https://r/"+r.Name); err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(r.Name, []byte("receipt")); err != nil {
					t.Fatal(err)
				}
			}
			if len(queued) != 2 || queued[0] != name0 || queued[1] != n {
				t.Errorf("queued %v, want %s then the end %s", queued, name0, n)
			}
			if got, err := s.Unclosed(); err != nil || len(got) != 0 {
				t.Errorf("Unclosed() after the end = %+v, %v; want none", got, err)
			}
		})
	}
}
