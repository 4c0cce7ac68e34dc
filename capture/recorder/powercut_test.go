package recorder

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/capture/segment/segmenttest"
	"github.com/uploadbox/uploadbox/crypto"
)

// memFile is a spool file in memory that keeps a copy of its bytes at the
// start of every Sync: what a power cut right after that fsync leaves.
type memFile struct {
	mu    sync.Mutex
	cond  *sync.Cond
	buf   bytes.Buffer
	snaps [][]byte
}

func newMemFile() *memFile {
	f := &memFile{}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *memFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

func (f *memFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps = append(f.snaps, bytes.Clone(f.buf.Bytes()))
	f.cond.Broadcast()
	return nil
}

func (f *memFile) Close() error { return nil }
func (f *memFile) Name() string { return "memory" }

// syncs is the number of Syncs started so far.
func (f *memFile) syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.snaps)
}

// snapshot waits for Sync number i (counting from 0) and returns its copy.
func (f *memFile) snapshot(i int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.snaps) <= i {
		f.cond.Wait()
	}
	return f.snaps[i]
}

// cut is the state of a segment file at the first fsync after a fragment's
// flush returned.
type cut struct {
	onDisk   []byte // the file then
	plain    int    // media bytes the segmenter had written at the flush
	fragment int    // fragments flushed
}

// spy wraps the recorder's segment output and, after each flush, waits
// for the fsync that the flush asked for.
type spy struct {
	segment.Output
	f     *memFile
	plain int
	cuts  []cut
}

func (s *spy) Write(p []byte) (int, error) {
	n, err := s.Output.Write(p)
	s.plain += n
	return n, err
}

func (s *spy) Flush() error {
	// Count the syncs before the flush: its fsync may start, and even end,
	// before Flush returns. No request is pending here (each flush waits
	// for the sync it asked for), so the next sync is this flush's.
	next := s.f.syncs()
	if err := s.Output.Flush(); err != nil {
		return err
	}
	s.cuts = append(s.cuts, cut{onDisk: s.f.snapshot(next), plain: s.plain, fragment: len(s.cuts) + 1})
	return nil
}

// TestFragmentDurableAtItsFsync: at the first fsync after a fragment was
// flushed, the file on disk opens as TRUNCATED to media that holds that
// fragment whole, every sample of it, and every fragment before it. A
// power cut right after that fsync loses nothing of those fragments, nor
// does a cut inside the trailer.
func TestFragmentDurableAtItsFsync(t *testing.T) {
	frames, err := segmenttest.Frames(segmenttest.Options{Duration: 6 * time.Second, Width: 320, Height: 240, Bitrate: 1_000_000, Audio: true})
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	files := map[uint64]*memFile{}
	r, err := New(Config{
		Dir: t.TempDir(), Recipients: []*crypto.Recipient{k.id.Recipient()}, Device: k.dev,
		Segment: segment.Config{SegmentLength: 4 * time.Second, Audio: true, AudioChannels: 1},
		create: func(path string) (file, error) {
			// The bytes stay in memory; the empty file lets Close rename it.
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				return nil, err
			}
			f := newMemFile()
			files[uint64(len(files))] = f
			return f, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.wallStart = time.Now()
	var spies []*spy
	seg := segment.New(r.cfg.Segment, func(seq uint64, start time.Duration) (segment.Output, error) {
		o, err := r.open(seq, start)
		if err != nil {
			return nil, err
		}
		s := &spy{Output: o, f: files[seq]}
		spies = append(spies, s)
		return s, nil
	})
	for _, f := range frames {
		if err := seg.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := seg.Close(); err != nil {
		t.Fatal(err)
	}
	if len(spies) != 2 {
		t.Fatalf("%d segments, want 2 (6 s cut at 4 s)", len(spies))
	}
	for seq, s := range spies {
		full := open(t, k, files[uint64(seq)].buf.Bytes(), nil)
		whole := fragments(t, full)
		if len(s.cuts) != len(whole) || len(whole) < 4 {
			t.Fatalf("segment %d: %d flushes for %d fragments", seq, len(s.cuts), len(whole))
		}
		// A cut inside the trailer releases the full chunks only, not the
		// final one: the last fragment is padded too, so all media is there.
		sealed := files[uint64(seq)].buf.Bytes()
		if media := open(t, k, sealed[:len(sealed)-crypto.TrailerSize/2], crypto.ErrTruncated); !bytes.Equal(media, full) {
			t.Errorf("segment %d cut inside its trailer: %d of %d media bytes", seq, len(media), len(full))
		}
		for _, c := range s.cuts {
			media := open(t, k, c.onDisk, crypto.ErrTruncated)
			if len(media) < c.plain {
				t.Fatalf("segment %d, fsync after fragment %d: %d media bytes on disk, %d were flushed: the fragment's end is not durable",
					seq, c.fragment, len(media), c.plain)
			}
			if !bytes.Equal(media[:c.plain], full[:c.plain]) {
				t.Fatalf("segment %d, fsync after fragment %d: the media on disk differs from the sealed segment's", seq, c.fragment)
			}
			got := fragments(t, media[:c.plain])
			if len(got) != c.fragment {
				t.Fatalf("segment %d, fsync after fragment %d: %d whole fragments on disk", seq, c.fragment, len(got))
			}
			for i, p := range got {
				for j, tr := range p.Tracks {
					if len(tr.Samples) != len(whole[i].Tracks[j].Samples) {
						t.Errorf("segment %d, fsync after fragment %d: fragment %d track %d has %d of %d samples",
							seq, c.fragment, i+1, tr.ID, len(tr.Samples), len(whole[i].Tracks[j].Samples))
					}
				}
			}
		}
	}
}

// open decrypts a segment file and checks the outcome: want nil (OK) or
// crypto.ErrTruncated.
func open(t *testing.T, k testKeys, file []byte, want error) []byte {
	t.Helper()
	r, err := crypto.NewReader(bytes.NewReader(file), k.id)
	if err != nil {
		t.Fatalf("open a segment of %d bytes: %v", len(file), err)
	}
	defer r.Close()
	media, err := io.ReadAll(r)
	if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
		t.Fatalf("open a segment of %d bytes: %v, want %v", len(file), err, want)
	}
	return media
}

// fragments parses a segment's media, which must end at a box boundary.
func fragments(t *testing.T, media []byte) fmp4.Parts {
	t.Helper()
	var parts fmp4.Parts
	if err := parts.Unmarshal(media); err != nil {
		t.Fatalf("media of %d bytes: %v", len(media), err)
	}
	return parts
}
