package spool

import (
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
