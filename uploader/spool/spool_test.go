package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/crypto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture makes real sealed segments with fresh keys.
type fixture struct {
	dev  *crypto.DeviceKey
	rcpt []*crypto.Recipient
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	id, err := crypto.GenerateIdentity(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dev: dev, rcpt: []*crypto.Recipient{id.Recipient()}}
}

// recording is one chain of segments.
type recording struct {
	f    *fixture
	id   [16]byte
	prev [crypto.CommitmentSize]byte
	seq  uint64
}

func (f *fixture) recording(t testing.TB) *recording {
	t.Helper()
	id, err := crypto.NewRecordingID()
	if err != nil {
		t.Fatal(err)
	}
	return &recording{f: f, id: id}
}

// next seals the next segment of n plaintext bytes and returns its sealed
// file name and bytes.
func (r *recording) next(t testing.TB, n int) (string, []byte) {
	t.Helper()
	return r.seal(t, n, nil)
}

// seal seals the next segment; end, if set, makes it the last one.
func (r *recording) seal(t testing.TB, n int, end *crypto.EndReason) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := crypto.NewWriter(&buf, r.f.rcpt, r.f.dev, crypto.Params{
		RecordingID: r.id, Sequence: r.seq, Prev: r.prev, Start: time.Unix(1_700_000_000, 0), Codec: "video/mp4",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte{byte(r.seq)}, n)); err != nil {
		w.Close()
		t.Fatal(err)
	}
	if end != nil {
		w.SetEnd(*end)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%x-%06d.ubx", r.id, r.seq)
	r.prev = w.Commitment()
	r.seq++
	return name, buf.Bytes()
}

func partial(name string) string { return name + ".partial" }

func writeFile(t testing.TB, dir, name string, b []byte, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

func (f *fixture) open(t testing.TB, dir string, opts Options) *Spool {
	t.Helper()
	opts.Device = f.dev.Public()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustGet(t testing.TB, s *Spool, name string) Record {
	t.Helper()
	r, err := s.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHappyPathDurable(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	rec := f.recording(t)
	name, seg := rec.next(t, 40_000)
	receipt := []byte("signed receipt")
	url := "https://receiver.test/files/abc"

	// Reopening while a segment is recording is a crash (reconcile
	// classifies the partial, see TestReconcileAfterCrash), and reopening a
	// committed segment finishes its wipe (TestCommittedIsWipedAfterReopen),
	// so those steps skip the reopen.
	steps := []struct {
		name  string
		do    func(s *Spool) error
		check func(t *testing.T, r Record)
	}{
		{"recording", func(s *Spool) error {
			if err := s.MarkRecording(partial(name)); err != nil {
				return err
			}
			writeFile(t, dir, partial(name), seg[:100], time.Time{})
			return nil
		}, func(t *testing.T, r Record) {
			if r.State != Recording || r.File != partial(name) || r.RecordingID != rec.id || r.Sequence != 0 {
				t.Errorf("record %+v", r)
			}
		}},
		{"sealed", func(s *Spool) error {
			writeFile(t, dir, partial(name), seg, time.Time{})
			if err := os.Rename(filepath.Join(dir, partial(name)), filepath.Join(dir, name)); err != nil {
				return err
			}
			return s.MarkSealed(name)
		}, func(t *testing.T, r Record) {
			if r.State != Sealed || r.File != name || r.Size != int64(len(seg)) || r.BLAKE3 != blake3.Sum256(seg) || r.SHA256 != ([32]byte{}) || r.SealedAt.IsZero() {
				t.Errorf("record %+v", r)
			}
		}},
		{"uploading", func(s *Spool) error { return s.StartUpload(name, url) }, func(t *testing.T, r Record) {
			if r.State != Uploading || r.UploadURL != url || r.Offset != 0 || r.Attempts != 1 {
				t.Errorf("record %+v", r)
			}
		}},
		{"offset", func(s *Spool) error { return s.SetOffset(name, 16_000) }, func(t *testing.T, r Record) {
			if r.Offset != 16_000 {
				t.Errorf("offset %d", r.Offset)
			}
		}},
		{"resume same URL keeps the offset", func(s *Spool) error { return s.StartUpload(name, url) }, func(t *testing.T, r Record) {
			if r.Offset != 16_000 || r.Attempts != 2 {
				t.Errorf("record %+v", r)
			}
		}},
		{"committed", func(s *Spool) error { return s.Commit(name, receipt) }, func(t *testing.T, r Record) {
			if r.State != Committed || !bytes.Equal(r.Receipt, receipt) || r.CommittedAt.IsZero() {
				t.Errorf("record %+v", r)
			}
		}},
		{"commit again with the same receipt", func(s *Spool) error { return s.Commit(name, receipt) }, func(t *testing.T, r Record) {
			if r.State != Committed {
				t.Errorf("state %s", r.State)
			}
		}},
		{"wiped", func(s *Spool) error { return s.Wipe(name) }, func(t *testing.T, r Record) {
			if r.State != Wiped || r.WipedAt.IsZero() || !bytes.Equal(r.Receipt, receipt) || exists(dir, name) {
				t.Errorf("record %+v, file exists %v", r, exists(dir, name))
			}
		}},
		{"wipe again", func(s *Spool) error { return s.Wipe(name) }, func(t *testing.T, r Record) {
			if r.State != Wiped {
				t.Errorf("state %s", r.State)
			}
		}},
	}
	var s *Spool
	t.Cleanup(func() {
		if s != nil {
			s.Close()
		}
	})
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if s == nil {
				s = f.open(t, dir, Options{})
			}
			if err := st.do(s); err != nil {
				t.Fatal(err)
			}
			st.check(t, mustGet(t, s, name))
			if st.name == "committed" {
				if _, ok, err := s.Next(); err != nil || ok {
					t.Errorf("Next returned a committed segment (%v)", err)
				}
			}
			if st.name == "recording" || st.name == "committed" || st.name == "commit again with the same receipt" {
				return // reopening would reconcile: see the comment above
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Durability: the state survives a close and reopen (with reconcile).
			s = f.open(t, dir, Options{})
			st.check(t, mustGet(t, s, name))
			if st.name == "sealed" {
				if r, ok, err := s.Next(); err != nil || !ok || r.Name != name {
					t.Errorf("Next = %v %v %v", r.Name, ok, err)
				}
			}
		})
	}
	if s == nil {
		t.FailNow()
	}
	if st, err := s.Stats(); err != nil || st.Count != 0 || st.Bytes != 0 || st.ByState[Wiped] != 1 {
		t.Errorf("stats %+v %v", st, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, IndexFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("index file: %v %v", fi.Mode(), err)
	}
}

// reach builds a spool in dir with one segment in state want and returns
// the open spool and the segment's name.
func (f *fixture) reach(t *testing.T, dir string, want State) (*Spool, string) {
	t.Helper()
	rec := f.recording(t)
	name, seg := rec.next(t, 20_000)
	switch want {
	case Truncated:
		writeFile(t, dir, partial(name), seg[:len(seg)-200], time.Time{})
		return f.open(t, dir, Options{}), name
	case Corrupt:
		bad := bytes.Clone(seg)
		bad[len(bad)-1] ^= 1 // the signature
		writeFile(t, dir, partial(name), bad, time.Time{})
		return f.open(t, dir, Options{}), name
	case Missing:
		writeFile(t, dir, name, seg, time.Time{})
		f.open(t, dir, Options{}).Close()
		os.Remove(filepath.Join(dir, name))
		return f.open(t, dir, Options{}), name
	}
	s := f.open(t, dir, Options{})
	if err := s.MarkRecording(name); err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { writeFile(t, dir, name, seg, time.Time{}); return s.MarkSealed(name) },
		func() error { return s.StartUpload(name, "https://r.test/u/1") },
		func() error { return s.Commit(name, []byte("receipt")) },
		func() error { return s.Wipe(name) },
	}
	order := []State{Recording, Sealed, Uploading, Committed, Wiped}
	for i := 0; order[i] != want; i++ {
		if err := steps[i](); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustGet(t, s, name).State; got != want {
		t.Fatalf("reached %s, want %s", got, want)
	}
	return s, name
}

func TestIllegalTransitions(t *testing.T) {
	f := newFixture(t)
	type op struct {
		name  string
		to    State
		do    func(s *Spool, name string) error
		legal []State
	}
	ops := []op{
		{"MarkRecording", Recording, func(s *Spool, n string) error { return s.MarkRecording(n) }, nil},
		{"MarkSealed", Sealed, func(s *Spool, n string) error { return s.MarkSealed(n) }, []State{Recording}},
		{"StartUpload", Uploading, func(s *Spool, n string) error { return s.StartUpload(n, "https://r.test/u/2") }, []State{Sealed, Truncated, Uploading}},
		{"SetOffset", Uploading, func(s *Spool, n string) error { return s.SetOffset(n, 1) }, []State{Uploading}},
		{"Commit", Committed, func(s *Spool, n string) error { return s.Commit(n, []byte("other receipt")) }, []State{Uploading}},
		{"Wipe", Wiped, func(s *Spool, n string) error { return s.Wipe(n) }, []State{Committed, Wiped}},
	}
	states := []State{Recording, Sealed, Truncated, Uploading, Committed, Wiped, Corrupt, Missing}
	n := 0
	for _, o := range ops {
		for _, from := range states {
			if slices.Contains(o.legal, from) {
				continue
			}
			n++
			t.Run(o.name+"/from "+string(from), func(t *testing.T) {
				dir := t.TempDir()
				s, name := f.reach(t, dir, from)
				defer s.Close()
				before := mustGet(t, s, name)
				hadFile := exists(dir, before.File)
				err := o.do(s, name)
				var te *TransitionError
				if !errors.As(err, &te) {
					t.Fatalf("err = %v, want a *TransitionError", err)
				}
				if te.Name != name || te.From != from || te.To != o.to {
					t.Errorf("TransitionError %+v, want %s %s → %s", te, name, from, o.to)
				}
				if o.name == "Wipe" && !errors.Is(err, ErrNoReceipt) {
					t.Errorf("Wipe err = %v, want ErrNoReceipt", err)
				}
				after := mustGet(t, s, name)
				if after.State != before.State || after.Offset != before.Offset || !bytes.Equal(after.Receipt, before.Receipt) {
					t.Errorf("record changed: %+v → %+v", before, after)
				}
				if hadFile && !exists(dir, before.File) {
					t.Error("the file was removed")
				}
			})
		}
	}
	t.Logf("%d illegal transitions checked", n)

	t.Run("unknown segment", func(t *testing.T) {
		s := f.open(t, t.TempDir(), Options{})
		defer s.Close()
		name := fmt.Sprintf("%032x-%06d.ubx", 7, 1)
		for _, o := range ops[2:] {
			if err := o.do(s, name); !errors.Is(err, ErrUnknownSegment) {
				t.Errorf("%s: err = %v, want ErrUnknownSegment", o.name, err)
			}
		}
		if err := s.MarkRecording("../etc/passwd"); !errors.Is(err, ErrUnknownSegment) {
			t.Errorf("bad name: err = %v", err)
		}
	})
}

func TestWipeWithoutReceiptKeepsFile(t *testing.T) {
	f := newFixture(t)
	for _, st := range []State{Sealed, Truncated, Uploading} {
		t.Run(string(st), func(t *testing.T) {
			dir := t.TempDir()
			s, name := f.reach(t, dir, st)
			defer s.Close()
			err := s.Wipe(name)
			if !errors.Is(err, ErrNoReceipt) {
				t.Fatalf("err = %v, want ErrNoReceipt", err)
			}
			if !exists(dir, name) {
				t.Fatal("file removed without a receipt")
			}
			if r := mustGet(t, s, name); r.State != st {
				t.Errorf("state %s", r.State)
			}
		})
	}
}

func TestMarkSealedRefusesIncompleteFile(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	rec := f.recording(t)
	name, seg := rec.next(t, 20_000)
	foreign, fseg := other.recording(t).next(t, 100)
	tests := []struct {
		name string
		file string
		data []byte
	}{
		{"truncated", name, seg[:len(seg)-50]},
		{"other device", foreign, fseg},
		{"header does not match the name", fmt.Sprintf("%x-%06d.ubx", rec.id, 5), seg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := f.open(t, dir, Options{})
			defer s.Close()
			writeFile(t, dir, tt.file, tt.data, time.Time{})
			if err := s.MarkSealed(tt.file); err == nil {
				t.Fatal("MarkSealed accepted it")
			}
			if _, err := s.Get(tt.file); !errors.Is(err, ErrUnknownSegment) {
				t.Errorf("Get err = %v, want it not indexed", err)
			}
		})
	}
}

func TestReconcileAfterCrash(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }

	// Recording A: 0..2 sealed in the index, 3 sealed on disk but not
	// indexed (crash before MarkSealed), 4 cut by the crash (.partial,
	// recording in the index).
	a := f.recording(t)
	var aNames []string
	var aSegs [][]byte
	for range 5 {
		// 40,000 bytes: half a segment still holds a full payload chunk.
		n, b := a.next(t, 40_000)
		aNames, aSegs = append(aNames, n), append(aSegs, b)
	}
	// Recording B: 0 complete but never renamed (crash between fsync and
	// rename), 1 corrupt partial, 2 indexed then lost.
	b := f.recording(t)
	var bNames []string
	var bSegs [][]byte
	for range 3 {
		n, s := b.next(t, 100)
		bNames, bSegs = append(bNames, n), append(bSegs, s)
	}

	s := f.open(t, dir, Options{})
	for i := range 3 {
		writeFile(t, dir, aNames[i], aSegs[i], time.Time{})
		if err := s.MarkSealed(aNames[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkRecording(aNames[4]); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, bNames[2], bSegs[2], time.Time{})
	if err := s.MarkSealed(bNames[2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The crash leaves:
	writeFile(t, dir, aNames[3], aSegs[3], at(3))
	writeFile(t, dir, partial(aNames[4]), aSegs[4][:len(aSegs[4])/2], at(4))
	writeFile(t, dir, partial(bNames[0]), bSegs[0], at(-10)) // older than everything
	corrupt := bytes.Clone(bSegs[1])
	corrupt[0] = 'X'
	writeFile(t, dir, partial(bNames[1]), corrupt, at(1))
	os.Remove(filepath.Join(dir, bNames[2]))
	writeFile(t, dir, "notes.txt", []byte("not a segment"), time.Time{})
	writeFile(t, dir, "0123-000001.ubx", []byte("odd name"), time.Time{})

	var logs bytes.Buffer
	s = f.open(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer s.Close()
	want := map[string]State{
		aNames[0]: Sealed, aNames[1]: Sealed, aNames[2]: Sealed, aNames[3]: Sealed, aNames[4]: Truncated,
		bNames[0]: Sealed, bNames[1]: Corrupt, bNames[2]: Missing,
	}
	all, err := s.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(want) {
		t.Errorf("%d records, want %d", len(all), len(want))
	}
	for _, r := range all {
		if r.State != want[r.Name] {
			t.Errorf("%s: %s (%s), want %s", r.Name, r.State, r.Reason, want[r.Name])
		}
	}
	// Truncated and OK partials are renamed; the corrupt one stays.
	for _, n := range []string{aNames[4], bNames[0]} {
		if !exists(dir, n) || exists(dir, partial(n)) {
			t.Errorf("%s was not renamed to its sealed name", n)
		}
		if r := mustGet(t, s, n); r.File != n {
			t.Errorf("%s: File %s", n, r.File)
		}
	}
	if r := mustGet(t, s, bNames[1]); r.File != partial(bNames[1]) || !exists(dir, partial(bNames[1])) || r.Reason == "" {
		t.Errorf("corrupt segment: %+v", r)
	}
	if r := mustGet(t, s, aNames[4]); r.Size != int64(len(aSegs[4])/2) || r.BLAKE3 != blake3.Sum256(aSegs[4][:len(aSegs[4])/2]) {
		t.Errorf("truncated segment size %d", r.Size)
	}
	if r := mustGet(t, s, bNames[2]); r.Before != Sealed {
		t.Errorf("missing segment: %+v", r)
	}
	if !exists(dir, "notes.txt") || !exists(dir, "0123-000001.ubx") {
		t.Error("other files were touched")
	}
	// Every decision is logged, with the segment and both states.
	for _, n := range []string{aNames[3], aNames[4], bNames[0], bNames[1], bNames[2]} {
		if !bytes.Contains(logs.Bytes(), []byte("segment="+n+" from=")) {
			t.Errorf("no reconcile log line for %s:\n%s", n, logs.String())
		}
	}

	// Next order: B0 (oldest mtime), then A0..A2 (sealed during the test,
	// after base), which sort before A3 and A4 only if their sealed time
	// is older: they were sealed now, later than at(3), so A3, A4 first.
	pending, err := s.Pending()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range pending {
		got = append(got, r.Name)
	}
	wantOrder := []string{bNames[0], aNames[3], aNames[4], aNames[0], aNames[1], aNames[2]}
	if !slices.Equal(got, wantOrder) {
		t.Errorf("pending order\n got %v\nwant %v", got, wantOrder)
	}
	if r, ok, err := s.Next(); err != nil || !ok || r.Name != bNames[0] {
		t.Errorf("Next = %s %v %v", r.Name, ok, err)
	}

	// Idempotent: a second run changes nothing.
	d, err := s.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range d {
		if x.From != x.To {
			t.Errorf("second reconcile changed %s: %s → %s", x.Name, x.From, x.To)
		}
	}
	again, _ := s.All()
	if !slices.EqualFunc(all, again, func(a, b Record) bool { return a.Name == b.Name && a.State == b.State && a.File == b.File }) {
		t.Error("second reconcile changed the index")
	}

	// The lost file comes back: the same bytes restore its state.
	writeFile(t, dir, bNames[2], bSegs[2], time.Time{})
	if _, err := s.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if r := mustGet(t, s, bNames[2]); r.State != Sealed {
		t.Errorf("returned file: %s", r.State)
	}
}

func TestCommittedIsWipedAfterReopen(t *testing.T) {
	f := newFixture(t)
	for _, fileLeft := range []bool{true, false} {
		t.Run(fmt.Sprintf("file left %v", fileLeft), func(t *testing.T) {
			dir := t.TempDir()
			s, name := f.reach(t, dir, Committed)
			s.Close()
			if !fileLeft {
				// The unlink happened; the crash came before the record.
				os.Remove(filepath.Join(dir, name))
			}
			s = f.open(t, dir, Options{})
			defer s.Close()
			r := mustGet(t, s, name)
			if r.State != Wiped || exists(dir, name) || len(r.Receipt) == 0 {
				t.Errorf("after reopen: %+v, file exists %v", r, exists(dir, name))
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	f := newFixture(t)
	rec := f.recording(t)
	name, seg := rec.next(t, 20_000)
	size := int64(len(seg))
	tests := []struct {
		name     string
		maxBytes int64
		minFree  int64
		free     int64
		request  int64
		want     error
	}{
		{"no limits", 0, 0, 0, 1 << 40, nil},
		{"under the cap", size + 1000, 0, 0, 1000, nil},
		{"over the cap", size + 1000, 0, 0, 1001, ErrSpoolFull},
		{"reserve kept", 0, 1 << 20, 2 << 20, 1 << 20, nil},
		{"reserve reached", 0, 1 << 20, 2 << 20, 1<<20 + 1, ErrDiskReserve},
		{"both: cap first", size, 1 << 20, 0, 1, ErrSpoolFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, name, seg, time.Time{})
			s := f.open(t, dir, Options{
				MaxBytes: tt.maxBytes, MinFree: tt.minFree,
				freeSpace: func(string) (int64, error) { return tt.free, nil },
			})
			defer s.Close()
			err := s.Admit(tt.request)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Admit(%d) = %v, want %v", tt.request, err, tt.want)
			}
			if err != nil {
				t.Log(err)
				if !exists(dir, name) {
					t.Error("a segment was deleted to make room")
				}
			}
		})
	}

	t.Run("statfs", func(t *testing.T) {
		s := f.open(t, t.TempDir(), Options{MinFree: 1})
		defer s.Close()
		if err := s.Admit(0); err != nil {
			t.Fatal(err)
		}
		if err := s.Admit(1 << 62); !errors.Is(err, ErrDiskReserve) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("wiped segments free the cap", func(t *testing.T) {
		dir := t.TempDir()
		s, name := f.reach(t, dir, Committed)
		defer s.Close()
		sz := mustGet(t, s, name).Size
		s.opts.MaxBytes = sz
		if err := s.Admit(1); !errors.Is(err, ErrSpoolFull) {
			t.Fatalf("committed bytes still on disk: err = %v", err)
		}
		if err := s.Wipe(name); err != nil {
			t.Fatal(err)
		}
		if err := s.Admit(sz); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStats(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	rec := f.recording(t)
	s := f.open(t, dir, Options{now: func() time.Time { return clock }})
	defer s.Close()
	var total int64
	for i := range 3 {
		name, seg := rec.next(t, 100)
		writeFile(t, dir, name, seg, time.Time{})
		clock = now.Add(time.Duration(i) * time.Minute)
		if err := s.MarkSealed(name); err != nil {
			t.Fatal(err)
		}
		total += int64(len(seg))
	}
	clock = now.Add(10 * time.Minute)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != 3 || st.Bytes != total || st.Age != 10*time.Minute || !st.Oldest.Equal(now) || st.ByState[Sealed] != 3 {
		t.Errorf("stats %+v, want 3 segments, %d bytes, age 10m", st, total)
	}
}

// TestConcurrent seals segments in one goroutine while another uploads
// and wipes them; every segment ends wiped exactly once.
func TestConcurrent(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s := f.open(t, dir, Options{MaxBytes: 1 << 30})
	defer s.Close()
	rec := f.recording(t)
	const n = 20
	names := make([]string, n)
	segs := make([][]byte, n)
	for i := range n {
		names[i], segs[i] = rec.next(t, 1000)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() {
		for i := range n {
			if err := s.Admit(int64(len(segs[i]))); err != nil {
				errc <- err
				return
			}
			if err := s.MarkRecording(names[i]); err != nil {
				errc <- err
				return
			}
			writeFile(t, dir, names[i], segs[i], time.Time{})
			if err := s.MarkSealed(names[i]); err != nil {
				errc <- err
				return
			}
		}
	})
	var uploaded []string
	wg.Go(func() {
		deadline := time.Now().Add(20 * time.Second)
		for len(uploaded) < n && time.Now().Before(deadline) {
			r, ok, err := s.Next()
			if err != nil {
				errc <- err
				return
			}
			if !ok {
				time.Sleep(time.Millisecond)
				continue
			}
			for _, step := range []func() error{
				func() error { return s.StartUpload(r.Name, "https://r.test/"+r.Name) },
				func() error { return s.SetOffset(r.Name, r.Size) },
				func() error { return s.Commit(r.Name, []byte("receipt "+r.Name)) },
				func() error { return s.Wipe(r.Name) },
			} {
				if err := step(); err != nil {
					errc <- err
					return
				}
			}
			uploaded = append(uploaded, r.Name)
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if !slices.Equal(uploaded, names) {
		t.Errorf("uploaded %v\nwant %v", uploaded, names)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != 0 || st.ByState[Wiped] != n {
		t.Errorf("stats %+v", st)
	}
}

func TestResumeAndRestart(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s, name := f.reach(t, dir, Uploading)
	defer s.Close()
	size := mustGet(t, s, name).Size
	tests := []struct {
		name       string
		do         func() error
		wantOffset int64
		wantErr    bool
	}{
		{"confirmed offset", func() error { return s.SetOffset(name, 500) }, 500, false},
		{"receiver lost bytes: offset goes down", func() error { return s.SetOffset(name, 100) }, 100, false},
		{"beyond the file", func() error { return s.SetOffset(name, size+1) }, 100, true},
		{"negative", func() error { return s.SetOffset(name, -1) }, 100, true},
		{"same URL resumes", func() error { return s.StartUpload(name, "https://r.test/u/1") }, 100, false},
		{"new URL restarts", func() error { return s.StartUpload(name, "https://r.test/u/9") }, 0, false},
		{"empty URL", func() error { return s.StartUpload(name, "") }, 0, true},
		{"empty receipt", func() error { return s.Commit(name, nil) }, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if r := mustGet(t, s, name); r.Offset != tt.wantOffset || r.State != Uploading {
				t.Errorf("offset %d state %s, want %d uploading", r.Offset, r.State, tt.wantOffset)
			}
		})
	}
}

func TestSecondOpenFails(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s := f.open(t, dir, Options{})
	defer s.Close()
	if s2, err := Open(dir, Options{}); err == nil {
		s2.Close()
		t.Fatal("a second Open of the same spool succeeded")
	}
}

func TestAdmitCountsRecordingFile(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	name, _ := f.recording(t).next(t, 10)
	s := f.open(t, dir, Options{MaxBytes: 1000})
	defer s.Close()
	if err := s.MarkRecording(name); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, partial(name), make([]byte, 900), time.Time{})
	if err := s.Admit(100); err != nil {
		t.Fatal(err)
	}
	if err := s.Admit(101); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("err = %v, want ErrSpoolFull", err)
	}
}

// TestQuarantine: a refused segment is kept on disk with the refusal,
// no longer blocks the segments after it, survives a reopen, and goes back
// to the queue on Retry; Discard deletes only a quarantined or corrupt file.
func TestQuarantine(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s := f.open(t, dir, Options{})
	rec := f.recording(t)
	var names []string
	for range 3 {
		name, seg := rec.next(t, 10_000)
		writeFile(t, dir, name, seg, time.Time{})
		if err := s.MarkRecording(name); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkSealed(name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	first := names[0]
	if err := s.StartUpload(first, "https://r.test/u/1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOffset(first, 400); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		n, err := s.FreshStart(first)
		if err != nil || n != want {
			t.Fatalf("FreshStart = %d, %v; want %d", n, err, want)
		}
	}
	if r := mustGet(t, s, first); r.UploadURL != "" || r.Offset != 0 || r.State != Uploading {
		t.Fatalf("after FreshStart: %+v", r)
	}
	if _, err := s.FreshStart(names[1]); err == nil {
		t.Error("FreshStart of a sealed segment (no upload yet) succeeded")
	}
	why := Refusal{Status: 409, Reason: "exists", Message: "already stored with other bytes"}
	if err := s.Quarantine(first, why); err != nil {
		t.Fatal(err)
	}
	if err := s.Quarantine(first, why); err == nil {
		t.Error("quarantining a quarantined segment succeeded")
	}
	if next, ok, err := s.Next(); err != nil || !ok || next.Name != names[1] {
		t.Fatalf("Next = %s, %v, %v; want %s behind the quarantined one", next.Name, ok, err, names[1])
	}
	st, err := s.Stats()
	if err != nil || st.Count != 3 || st.ByState[Quarantined] != 1 {
		t.Fatalf("stats %+v, %v", st, err)
	}

	// A reopen (reconcile) keeps the quarantine and its reason.
	s.Close()
	s = f.open(t, dir, Options{})
	defer s.Close()
	r := mustGet(t, s, first)
	if r.State != Quarantined || r.Refusal == nil || r.Refusal.Reason != "exists" || r.Refusal.Status != 409 || r.Refusal.At.IsZero() || !exists(dir, first) {
		t.Fatalf("after reopen: %+v (refusal %+v)", r, r.Refusal)
	}

	// Retry: verified again, back in the queue at its old place.
	if r, err = s.Retry(first); err != nil || r.State != Sealed || r.Refusal != nil || r.FreshStarts != 0 {
		t.Fatalf("Retry = %+v, %v", r, err)
	}
	if next, _, _ := s.Next(); next.Name != first {
		t.Fatalf("Next after retry = %s, want %s", next.Name, first)
	}
	if _, err := s.Retry(first); err == nil {
		t.Error("retrying a sealed segment succeeded")
	}

	// Discard refuses a segment that is not quarantined or corrupt.
	var te *TransitionError
	if _, err := s.Discard(first); !errors.As(err, &te) || !exists(dir, first) {
		t.Fatalf("Discard of a sealed segment: %v (file kept: %v)", err, exists(dir, first))
	}
	if err := s.Quarantine(first, why); err != nil {
		t.Fatal(err)
	}
	before, err := s.Discard(first)
	if err != nil || before.State != Quarantined || exists(dir, first) {
		t.Fatalf("Discard = %+v, %v (file still there: %v)", before, err, exists(dir, first))
	}
	if r := mustGet(t, s, first); r.State != Discarded || r.DiscardedAt.IsZero() {
		t.Fatalf("after discard: %+v", r)
	}
	if st, _ := s.Stats(); st.Count != 2 || st.ByState[Discarded] != 1 {
		t.Fatalf("stats after discard: %+v", st)
	}
	if _, err := s.Discard(first); err == nil {
		t.Error("discarding twice succeeded")
	}
	if _, err := s.Discard("nope.ubx"); !errors.Is(err, ErrUnknownSegment) {
		t.Errorf("Discard of a bad name: %v", err)
	}
}

// TestQuarantineReconcile: a quarantined file that vanishes becomes
// missing and comes back quarantined; a discarded file that reappears is
// left alone and never uploaded.
func TestQuarantineReconcile(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s, name := f.reach(t, dir, Uploading)
	if err := s.Quarantine(name, Refusal{Status: 403, Reason: "foreign-key", Message: "signed by another device"}); err != nil {
		t.Fatal(err)
	}
	seg, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.Rename(filepath.Join(dir, name), filepath.Join(dir, "aside"))
	s = f.open(t, dir, Options{})
	if r := mustGet(t, s, name); r.State != Missing || r.Before != Quarantined {
		t.Fatalf("vanished quarantined file: %+v", r)
	}
	s.Close()
	os.Rename(filepath.Join(dir, "aside"), filepath.Join(dir, name))
	s = f.open(t, dir, Options{})
	if r := mustGet(t, s, name); r.State != Quarantined || r.Refusal == nil || r.Refusal.Reason != "foreign-key" {
		t.Fatalf("quarantined file back: %+v", r)
	}
	if _, err := s.Discard(name); err != nil {
		t.Fatal(err)
	}
	s.Close()
	writeFile(t, dir, name, seg, time.Time{})
	s = f.open(t, dir, Options{})
	defer s.Close()
	if r := mustGet(t, s, name); r.State != Discarded {
		t.Fatalf("discarded file reappeared: %+v", r)
	}
	if _, ok, _ := s.Next(); ok {
		t.Fatal("a discarded segment is offered for upload again")
	}

	// A corrupt segment can be discarded too.
	dir2 := t.TempDir()
	c, cname := f.reach(t, dir2, Corrupt)
	defer c.Close()
	if _, err := c.Discard(cname); err != nil || exists(dir2, partial(cname)) {
		t.Fatalf("discard corrupt: %v", err)
	}
}

// headerOnly seals the next segment and returns its name, its bytes and
// how many of them a file holds when the box stopped right after writing
// its header (header, salt and commitment).
func (r *recording) headerOnly(t testing.TB) (string, []byte, int) {
	t.Helper()
	prev := r.prev
	name, seg := r.next(t, 40_000)
	w, err := crypto.NewWriter(io.Discard, r.f.rcpt, r.f.dev, crypto.Params{
		RecordingID: r.id, Sequence: r.seq - 1, Prev: prev, Start: time.Unix(1_700_000_000, 0), Codec: "video/mp4",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return name, seg, len(w.Header().Bytes()) + 56
}

// TestEmptyAfterCrash: a segment that ends before its first full payload
// chunk holds no media; it is recorded as empty, its file removed, and it
// is never uploaded. One that holds a full chunk stays truncated.
func TestEmptyAfterCrash(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		extra   int  // payload bytes after the header and prefix
		partial bool // left under the .partial name
		indexed bool // recording in the index
		want    State
	}{
		{"header only, recording", 0, true, true, Empty},
		{"inside the header", -400, true, true, Empty},
		{"zero bytes", -100_000, true, true, Empty},
		{"header only, not indexed", 0, true, false, Empty},
		{"inside the prefix", -20, true, true, Empty},
		{"part of a chunk", 9_000, true, true, Empty},
		{"renamed, not indexed", 100, false, false, Empty},
		{"one full chunk", 16_384 + 16 + 10, true, true, Truncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			rec := f.recording(t)
			name, seg, hdr := rec.headerOnly(t)
			b := seg[:max(0, hdr+tc.extra)]
			file := name
			if tc.partial {
				file = partial(name)
			}
			if tc.indexed {
				s := f.open(t, dir, Options{})
				if err := s.MarkRecording(partial(name)); err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
			writeFile(t, dir, file, b, time.Time{})
			s := f.open(t, dir, Options{})
			defer s.Close()
			r := mustGet(t, s, name)
			if r.State != tc.want {
				t.Fatalf("state %s (%s), want %s", r.State, r.Reason, tc.want)
			}
			if tc.want != Empty {
				return
			}
			if r.Reason != EmptyReason("a crash") || exists(dir, file) {
				t.Errorf("reason %q, file still there: %v", r.Reason, exists(dir, file))
			}
			var found bool
			for _, d := range s.Reconciled() {
				found = found || d.Name == name && d.To == Empty
			}
			if !found {
				t.Errorf("Reconciled() = %+v, want %s empty", s.Reconciled(), name)
			}
			if _, ok, err := s.Next(); err != nil || ok {
				t.Errorf("Next() = %v, %v: an empty segment is not uploaded", ok, err)
			}
			if err := s.StartUpload(name, "http://x/1"); err == nil {
				t.Error("StartUpload of an empty segment succeeded")
			}
			// A second reconcile decides nothing.
			if d, err := s.Reconcile(); err != nil || len(d) != 0 {
				t.Errorf("second reconcile: %+v, %v", d, err)
			}
		})
	}
}

// TestSettle: after a write error the segment the recorder was writing is
// classified at once, without an Open.
func TestSettle(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		cut   func(seg []byte, hdr int) []byte
		want  State
		file  func(name string) string
		queue bool
	}{
		{"truncated", func(seg []byte, _ int) []byte { return seg[:len(seg)/2] }, Truncated, func(n string) string { return n }, true},
		{"header only", func(seg []byte, hdr int) []byte { return seg[:hdr] }, Empty, nil, false},
		{"complete", func(seg []byte, _ int) []byte { return seg }, Sealed, func(n string) string { return n }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := f.open(t, dir, Options{})
			defer s.Close()
			rec := f.recording(t)
			name, seg, hdr := rec.headerOnly(t)
			if err := s.MarkRecording(partial(name)); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir, partial(name), tc.cut(seg, hdr), time.Time{})
			d, err := s.Settle(partial(name))
			if err != nil {
				t.Fatal(err)
			}
			r := mustGet(t, s, name)
			if r.State != tc.want || len(d) != 1 || d[0].To != tc.want {
				t.Fatalf("state %s, decisions %+v, want %s", r.State, d, tc.want)
			}
			if tc.want == Empty && (r.Reason != EmptyReason("a write error") || exists(dir, partial(name))) {
				t.Errorf("empty: reason %q, partial file there: %v", r.Reason, exists(dir, partial(name)))
			}
			if tc.file != nil && (r.File != tc.file(name) || !exists(dir, r.File)) {
				t.Errorf("file %s", r.File)
			}
			next, ok, err := s.Next()
			if err != nil || ok != tc.queue || (ok && next.Name != name) {
				t.Errorf("Next() = %s, %v, %v; want queued %v", next.Name, ok, err, tc.queue)
			}
			// Settling again (or a segment past recording) decides nothing.
			if d, err := s.Settle(name); err != nil || len(d) != 0 {
				t.Errorf("second Settle: %+v, %v", d, err)
			}
		})
	}
}

// TestOlderRecordKeepsSHA256: a record an older release wrote has the
// segment's SHA-256 and no segment hash. Its file gone and back with the
// same bytes, it is recognised by that SHA-256 and keeps it (its upload
// keeps the old protocol); back with other bytes, it is verified afresh
// and has the segment hash only.
func TestOlderRecordKeepsSHA256(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	s, name := f.reach(t, dir, Uploading)
	seg, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if r := mustGet(t, s, name); r.BLAKE3 != blake3.Sum256(seg) || r.SHA256 != ([32]byte{}) {
		t.Fatalf("a sealed segment: blake3 %x, sha256 %x", r.BLAKE3, r.SHA256)
	}
	if _, err := s.update(name, existing(name, func(r Record) (Record, error) {
		r.BLAKE3, r.SHA256 = [32]byte{}, sha256.Sum256(seg)
		return r, nil
	})); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.Rename(filepath.Join(dir, name), filepath.Join(dir, "aside"))
	s = f.open(t, dir, Options{})
	if r := mustGet(t, s, name); r.State != Missing {
		t.Fatalf("vanished file: %+v", r)
	}
	s.Close()
	os.Rename(filepath.Join(dir, "aside"), filepath.Join(dir, name))
	s = f.open(t, dir, Options{})
	r := mustGet(t, s, name)
	if r.State != Uploading || r.UploadURL == "" || r.SHA256 != sha256.Sum256(seg) || r.BLAKE3 != ([32]byte{}) {
		t.Fatalf("file back with the same bytes: %+v", r)
	}
	s.Close()
	os.Rename(filepath.Join(dir, name), filepath.Join(dir, "aside"))
	f.open(t, dir, Options{}).Close()
	writeFile(t, dir, name, seg[:len(seg)/2], time.Time{})
	s = f.open(t, dir, Options{})
	defer s.Close()
	r = mustGet(t, s, name)
	if r.State != Truncated || r.UploadURL != "" || r.BLAKE3 != blake3.Sum256(seg[:len(seg)/2]) || r.SHA256 != ([32]byte{}) {
		t.Fatalf("file back with other bytes: %+v", r)
	}
}
