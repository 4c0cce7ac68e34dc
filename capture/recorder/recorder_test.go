package recorder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/crypto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testKeys struct {
	id  *crypto.Identity
	dev *crypto.DeviceKey
}

func newKeys(t *testing.T) testKeys {
	id, err := crypto.GenerateIdentity(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{id, dev}
}

func smallCapture() capture.Config {
	return capture.Config{Source: "test", Width: 320, Height: 240, FPS: 15, Bitrate: 300_000, Audio: true, KeyInterval: time.Second}
}

// record runs a real capture for d and returns what was sealed.
func record(t *testing.T, d time.Duration, cfg Config) ([]Sealed, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	return Record(ctx, smallCapture(), cfg, nil)
}

func TestSegmentsAreChainedAndSealed(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	var printed []Sealed
	sealed, err := record(t, 3500*time.Millisecond, Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment:  segment.Config{SegmentLength: time.Second},
		OnSealed: func(s Sealed) { printed = append(printed, s) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) < 3 || len(printed) != len(sealed) {
		t.Fatalf("sealed %d segments (reported %d), want at least 3 for 3.5 s at 1 s each", len(sealed), len(printed))
	}
	var prev [crypto.CommitmentSize]byte
	for i, s := range sealed {
		if s.Sequence != uint64(i) || !strings.HasSuffix(s.Path, SealedSuffix) {
			t.Fatalf("segment %d: %+v", i, s)
		}
		info, err := crypto.VerifyFile(s.Path, k.dev.Public())
		if err != nil {
			t.Fatalf("segment %d does not verify: %v", i, err)
		}
		h := info.Header
		if h.Sequence != uint64(i) || h.Prev != prev || info.Commitment != s.Commitment || h.RecordingID != sealed[0].RecordingID {
			t.Fatalf("segment %d: chain broken: seq %d prev %x", i, h.Sequence, h.Prev[:4])
		}
		if last := i == len(sealed)-1; info.Trailer.Last() != last || s.Last != last {
			t.Fatalf("segment %d: last flag %v, want %v", i, info.Trailer.Last(), last)
		}
		// The recording ran until its deadline: the time was up.
		if want := map[bool]crypto.EndReason{true: crypto.EndTimeUp}[s.Last]; info.Trailer.End() != want || s.End != want {
			t.Fatalf("segment %d: end reason %v (reported %v), want %v", i, info.Trailer.End(), s.End, want)
		}
		prev = info.Commitment
	}
	if partial, _ := filepath.Glob(filepath.Join(dir, "*"+PartialSuffix)); len(partial) != 0 {
		t.Fatalf("partial files left after a clean stop: %v", partial)
	}
}

// fullDisk fails every write once limit bytes were written in total.
type fullDisk struct {
	mu    sync.Mutex
	limit int64
}

type limitedFile struct {
	*os.File
	d *fullDisk
}

func (f *limitedFile) Write(p []byte) (int, error) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if int64(len(p)) > f.d.limit {
		n, _ := f.File.Write(p[:f.d.limit])
		f.d.limit = 0
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	f.d.limit -= int64(len(p))
	return f.File.Write(p)
}

func TestDiskFullStopsWithSealedSegmentsIntact(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	disk := &fullDisk{limit: 200_000}
	cfg := Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment: segment.Config{SegmentLength: time.Second},
	}
	cfg.create = func(path string) (file, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		return &limitedFile{File: f, d: disk}, nil
	}
	sealed, err := record(t, 20*time.Second, cfg)
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want the disk-full error", err)
	}
	partial, _ := filepath.Glob(filepath.Join(dir, "*"+PartialSuffix))
	if len(partial) != 1 {
		t.Fatalf("want the failing segment left as one partial file, got %v", partial)
	}
	// A cut segment without media gets no end from the recorder: the
	// daemon seals it in that segment's place (TestWriteErrorAtSegmentStart).
	empty := noMedia(partial[0])
	cut := len(sealed) - 1 // an empty end segment follows the cut one
	if empty {
		cut = len(sealed)
	}
	if !strings.Contains(err.Error(), "segment ") || strings.Count(err.Error(), "recording stopped") > 0 ||
		strings.Count(err.Error(), fmt.Sprintf("segment %d", cut)) != 1 {
		t.Errorf("error does not name the segment once: %v", err)
	}
	if len(sealed) == 0 {
		t.Fatal("no segment was sealed before the disk filled up; raise the limit")
	}
	for _, s := range sealed {
		if _, err := crypto.VerifyFile(s.Path, k.dev.Public()); err != nil {
			t.Errorf("sealed segment %d damaged by the disk-full stop: %v", s.Sequence, err)
		}
	}
	out := filepath.Join(t.TempDir(), "prefix")
	pinfo, err := crypto.OpenFile(partial[0], out, k.id)
	if crypto.OutcomeOf(err) == crypto.OK {
		t.Fatal("the segment cut by the full disk opened as complete")
	}
	if empty {
		for _, s := range sealed {
			if s.Last {
				t.Errorf("segment %d is marked last, but the cut segment %d held no media", s.Sequence, cut)
			}
		}
		return
	}
	// After the cut segment, an empty last segment says "disk error".
	end := sealed[len(sealed)-1]
	info, err := crypto.VerifyFile(end.Path, k.dev.Public())
	if err != nil {
		t.Fatalf("the end segment does not verify: %v", err)
	}
	if !end.Last || end.End != crypto.EndDiskError || !info.Trailer.Last() || info.Trailer.End() != crypto.EndDiskError {
		t.Fatalf("end segment %+v, trailer flags %#02x: want last with \"disk error\"", end, info.Trailer.Flags)
	}
	if end.Sequence != pinfo.Header.Sequence+1 || info.Header.Prev != pinfo.Commitment {
		t.Errorf("end segment %d does not link to the cut segment %d", end.Sequence, pinfo.Header.Sequence)
	}
	for _, s := range sealed[:len(sealed)-1] {
		if s.Last {
			t.Errorf("segment %d before the cut is marked last", s.Sequence)
		}
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{Dir: filepath.Join(t.TempDir(), "missing")})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"does not exist", "recipient", "device key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// A refused segment (the daemon's spool limit) stops the recording with
// the refusal; what was sealed before stays intact and no file of the
// refused segment exists.
func TestBeforeSegmentRefusalStops(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	errFull := errors.New("spool full")
	var asked []string
	sealed, err := record(t, 20*time.Second, Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment: segment.Config{SegmentLength: time.Second},
		BeforeSegment: func(p string) error {
			asked = append(asked, p)
			if len(asked) == 3 {
				return errFull
			}
			return nil
		},
	})
	if !errors.Is(err, errFull) || err.Error() != "open segment 2: spool full" {
		t.Fatalf("err = %v, want the refusal of segment 2", err)
	}
	if len(sealed) != 2 || len(asked) != 3 || !strings.HasSuffix(asked[2], "-000002"+PartialSuffix) {
		t.Fatalf("sealed %d, asked %v", len(sealed), asked)
	}
	for _, s := range sealed {
		info, err := crypto.VerifyFile(s.Path, k.dev.Public())
		if err != nil {
			t.Errorf("segment %d: %v", s.Sequence, err)
			continue
		}
		// Segment 2 was refused before segment 1 was sealed, so 1 is the
		// last one and says the spool was full: the recording is whole.
		want := map[bool]crypto.EndReason{true: crypto.EndSpoolFull}[s.Sequence == 1]
		if s.Last != (s.Sequence == 1) || info.Trailer.Last() != s.Last || info.Trailer.End() != want || s.End != want {
			t.Errorf("segment %d: last %v/%v end %v/%v, want end %v", s.Sequence, s.Last, info.Trailer.Last(), s.End, info.Trailer.End(), want)
		}
	}
	if _, err := os.Stat(asked[2]); !os.IsNotExist(err) {
		t.Errorf("the refused segment's file exists: %v", err)
	}
}

// failingSync is a spool file whose fsync fails (an I/O error).
type failingSync struct{ *os.File }

func (f failingSync) Sync() error {
	return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
}

// TestFailedFsyncStopsAtTheNextFragment: a failed fsync stops the
// recording at the next fragment boundary, not when the segment would
// close, and the error says what failed.
func TestFailedFsyncStopsAtTheNextFragment(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	cfg := Config{
		Dir: dir, Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		// The segment outlasts the recording: only a fragment can stop it early.
		Segment: segment.Config{SegmentLength: time.Minute},
	}
	cfg.create = func(path string) (file, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		return failingSync{f}, nil
	}
	_, err := record(t, 10*time.Second, cfg)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("err = %v, want the fsync error", err)
	}
	if !strings.Contains(err.Error(), "flush fragment") || strings.Count(err.Error(), "segment 0") != 1 {
		t.Errorf("err = %v: want the stop at a fragment of segment 0, named once", err)
	}
}

// The anonymisation mode rides in the header's codec field and reads back;
// a plain codec is an unfiltered recording.
func TestCodecFor(t *testing.T) {
	for _, tt := range []struct {
		mode anon.Mode
		want string
	}{
		{anon.Off, "video/mp4"},
		{"", "video/mp4"},
		{anon.Whole, "video/mp4; anonymise=whole"},
		{anon.Masks, "video/mp4; anonymise=masks"},
	} {
		got := CodecFor(tt.mode)
		if got != tt.want {
			t.Errorf("CodecFor(%q) = %q, want %q", tt.mode, got, tt.want)
		}
		if back := AnonymiseOf(got); back != tt.mode && !(tt.mode == "" && back == anon.Off) {
			t.Errorf("AnonymiseOf(%q) = %q, want %q", got, back, tt.mode)
		}
	}
}
