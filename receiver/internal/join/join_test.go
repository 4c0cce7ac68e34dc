package join

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	amp4 "github.com/abema/go-mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/capture/segment/segmenttest"
)

type memOutput struct{ bytes.Buffer }

func (*memOutput) Flush() error     { return nil }
func (*memOutput) Close(bool) error { return nil }

// segments is 12 s of real media cut into segments of 4 s (IDRs every
// 2 s), in plaintext, made once.
var segments = sync.OnceValues(func() ([][]byte, error) {
	frames, err := segmenttest.Frames(segmenttest.Options{Duration: 12 * time.Second, Audio: true, Width: 64, Height: 48, FPS: 10})
	if err != nil {
		return nil, err
	}
	var outs []*memOutput
	s := segment.New(segment.Config{SegmentLength: 4 * time.Second, Audio: true}, func(uint64, time.Duration) (segment.Output, error) {
		o := &memOutput{}
		outs = append(outs, o)
		return o, nil
	})
	for _, f := range frames {
		if err := s.Write(f); err != nil {
			return nil, err
		}
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	var segs [][]byte
	for _, o := range outs {
		segs = append(segs, o.Bytes())
	}
	return segs, nil
})

func testSegments(t testing.TB) [][]byte {
	t.Helper()
	segs, err := segments()
	if errors.Is(err, segmenttest.ErrNoEncoder) {
		t.Fatalf("these tests need the cgo encoders (build with CGO_ENABLED=1 and gcc): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 3 {
		t.Fatalf("%d segments", len(segs))
	}
	return segs
}

// units reads every unit of b; it returns the units' lengths and the
// error that ended the stream.
func units(b []byte, end error) ([]Unit, *Reader, error) {
	r := NewReader(io.MultiReader(bytes.NewReader(b), errReader{end}))
	var us []Unit
	for {
		u, err := r.Next()
		if err != nil {
			return us, r, err
		}
		u.Bytes = bytes.Clone(u.Bytes)
		us = append(us, u)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

var errCut = errors.New("segment is truncated")

func TestReaderSplits(t *testing.T) {
	seg := testSegments(t)[0]
	us, _, err := units(seg, io.EOF)
	if err != io.EOF {
		t.Fatal(err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(seg); err != nil {
		t.Fatal(err)
	}
	if len(us) != 1+len(parts) || us[0].Kind != Init {
		t.Fatalf("%d units for %d fragments", len(us), len(parts))
	}
	var joined []byte
	for i, u := range us {
		if i > 0 && u.Kind != Fragment {
			t.Fatalf("unit %d is %d", i, u.Kind)
		}
		joined = append(joined, u.Bytes...)
	}
	if !bytes.Equal(joined, seg) {
		t.Fatal("units do not add up to the segment")
	}
}

// Cut anywhere, the reader returns exactly the units that are whole and
// counts the rest as partial.
func TestReaderCut(t *testing.T) {
	seg := testSegments(t)[0]
	all, _, _ := units(seg, io.EOF)
	var ends []int
	pos := 0
	for _, u := range all {
		pos += len(u.Bytes)
		ends = append(ends, pos)
	}
	for n := 0; n <= len(seg); n += 1 + n%97 {
		for _, end := range []error{errCut, io.EOF} {
			us, r, err := units(seg[:n], end)
			whole := 0
			for _, e := range ends {
				if e <= n {
					whole++
				}
			}
			if len(us) != whole {
				t.Fatalf("cut at %d: %d units, want %d", n, len(us), whole)
			}
			done := 0
			if whole > 0 {
				done = ends[whole-1]
			}
			switch {
			case n == done && end == io.EOF && err != io.EOF,
				n == done && end == errCut && err != errCut,
				n != done && end == io.EOF && err != io.ErrUnexpectedEOF,
				n != done && end == errCut && err != errCut:
				t.Fatalf("cut at %d (%v): error %v", n, end, err)
			}
			if r.Partial != int64(n-done) {
				t.Fatalf("cut at %d: partial %d, want %d", n, r.Partial, n-done)
			}
		}
	}
}

func box(typ string, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(payload)))
	return append(append(b, typ...), payload...)
}

func TestReaderRejects(t *testing.T) {
	seg := testSegments(t)[0]
	all, _, _ := units(seg, io.EOF)
	init, frag := all[0].Bytes, all[1].Bytes
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	huge := binary.BigEndian.AppendUint32(nil, 1)
	huge = append(huge, "mdat"...)
	huge = binary.BigEndian.AppendUint64(huge, MaxBox+1)
	tests := []struct {
		name string
		in   []byte
	}{
		{"fragment first", frag},
		{"two inits", cat(init, init)},
		{"ftyp alone then moof", cat(box("ftyp", nil), frag)},
		{"moof without mdat", cat(init, frag[:binary.BigEndian.Uint32(frag)], box("free", nil))},
		{"unknown box", cat(init, box("wide", []byte{1, 2}))},
		{"size zero", cat(init, []byte{0, 0, 0, 0, 'm', 'd', 'a', 't'})},
		{"size below header", cat(init, []byte{0, 0, 0, 4, 'm', 'o', 'o', 'f'})},
		{"over MaxBox", cat(init, huge)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := units(tt.in, io.EOF)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v, want ErrFormat", err)
			}
		})
	}
	// Boxes that carry nothing for the joined file are passed over.
	us, _, err := units(cat(box("styp", nil), init, box("free", nil), frag, box("sidx", nil)), io.EOF)
	if err != io.EOF || len(us) != 2 {
		t.Fatalf("%d units, %v", len(us), err)
	}
}

func TestWriter(t *testing.T) {
	segs := testSegments(t)
	var inits [][]byte
	var frags [][][]byte
	for _, s := range segs {
		us, _, err := units(s, io.EOF)
		if err != io.EOF {
			t.Fatal(err)
		}
		inits = append(inits, us[0].Bytes)
		var f [][]byte
		for _, u := range us[1:] {
			f = append(f, u.Bytes)
		}
		frags = append(frags, f)
	}
	var out bytes.Buffer
	jw, err := NewWriter(&out, inits[0])
	if err != nil {
		t.Fatal(err)
	}
	placeholder := out.Len()
	for i, fs := range frags {
		if i > 0 {
			if w, err := jw.CheckInit(inits[i]); err != nil || w != "" {
				t.Fatalf("segment %d init: %q, %v", i, w, err)
			}
		}
		for j, f := range fs {
			if i == 1 && j == 1 {
				continue // a lost fragment: one fragment length missing
			}
			jumps, err := jw.WriteFragment(f)
			if err != nil {
				t.Fatal(err)
			}
			if (i == 1 && j == 2) != (len(jumps) > 0) {
				t.Fatalf("segment %d fragment %d: jumps %+v", i, j, jumps)
			}
			// The jump is the lost fragment's length, give or take one
			// frame or audio packet.
			for _, jp := range jumps {
				if d := jp.Delta - segment.DefaultFragmentLength; d < -110*time.Millisecond || d > 110*time.Millisecond {
					t.Errorf("jump %+v, want about %v (one fragment)", jp, segment.DefaultFragmentLength)
				}
			}
		}
	}
	if d := jw.Duration(); d != 12*time.Second {
		t.Errorf("duration %v", d)
	}
	init, err := jw.Init()
	if err != nil {
		t.Fatal(err)
	}
	if len(init) != placeholder {
		t.Fatalf("init is %d bytes, placeholder %d", len(init), placeholder)
	}
	b := out.Bytes()
	copy(b, init)
	var parsed fmp4.Init
	if err := parsed.Unmarshal(bytes.NewReader(b)); err != nil || len(parsed.Tracks) != 2 {
		t.Fatalf("joined init: %v", err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		if p.SequenceNumber != uint32(i+1) {
			t.Fatalf("fragment %d numbered %d", i, p.SequenceNumber)
		}
	}
	if jw.Fragments() != len(parts) || jw.Size() != int64(len(b)) {
		t.Errorf("writer counts %d fragments, %d bytes; file has %d, %d", jw.Fragments(), jw.Size(), len(parts), len(b))
	}
	// The durations a player reads before any fragment.
	mvhd, err := amp4.ExtractBoxWithPayload(bytes.NewReader(b), nil, amp4.BoxPath{amp4.BoxTypeMoov(), amp4.BoxTypeMvhd()})
	if err != nil || len(mvhd) != 1 {
		t.Fatalf("mvhd: %v", err)
	}
	mehd, err := amp4.ExtractBoxWithPayload(bytes.NewReader(b), nil, amp4.BoxPath{amp4.BoxTypeMoov(), amp4.BoxTypeMvex(), amp4.BoxTypeMehd()})
	if err != nil || len(mehd) != 1 {
		t.Fatalf("mehd: %v", err)
	}
	mv := mvhd[0].Payload.(*amp4.Mvhd)
	if mv.GetVersion() != 1 || mv.DurationV1 != 12*uint64(mv.Timescale) || mehd[0].Payload.(*amp4.Mehd).FragmentDurationV1 != 12*uint64(mv.Timescale) {
		t.Errorf("mvhd duration %d, mehd %d at %d/s", mv.DurationV1, mehd[0].Payload.(*amp4.Mehd).FragmentDurationV1, mv.Timescale)
	}
}

// The first fragment fixes time zero, whatever the recording's clock said.
func TestWriterRebases(t *testing.T) {
	segs := testSegments(t)
	us, _, _ := units(segs[1], io.EOF) // starts at 4 s
	var out bytes.Buffer
	jw, err := NewWriter(&out, us[0].Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us[1:] {
		if _, err := jw.WriteFragment(u.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	// The audio packet captured just before the IDR went into this
	// segment, so audio starts first and video 20 ms later: both keep
	// their distance.
	starts := map[int]uint64{}
	for _, tr := range parts[0].Tracks {
		starts[tr.ID] = tr.BaseTime
	}
	if starts[segment.AudioTrackID] != 0 || starts[segment.VideoTrackID] != 20*segment.VideoTimescale/1000 {
		t.Errorf("tracks start at %v", starts)
	}
	if d := jw.Duration(); d != 4*time.Second+20*time.Millisecond {
		t.Errorf("duration %v", d)
	}
}

func TestCheckInit(t *testing.T) {
	segs := testSegments(t)
	us, _, _ := units(segs[0], io.EOF)
	jw, err := NewWriter(io.Discard, us[0].Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// A video-only recording cannot follow one with audio.
	var o memOutput
	s := segment.New(segment.Config{}, func(uint64, time.Duration) (segment.Output, error) { return &o, nil })
	frames, _ := segmenttest.Frames(segmenttest.Options{Duration: time.Second, Width: 64, Height: 48, FPS: 10})
	for _, f := range frames {
		if f.Kind == capture.Video {
			s.Write(f)
		}
	}
	s.Close()
	vo, _, _ := units(o.Bytes(), io.EOF)
	if _, err := jw.CheckInit(vo[0].Bytes); !errors.Is(err, ErrFormat) {
		t.Errorf("video-only init after audio+video: %v", err)
	}
	// A change of picture size is a warning.
	big, _ := segmenttest.Frames(segmenttest.Options{Duration: time.Second, Audio: true, Width: 96, Height: 64, FPS: 10})
	var o2 memOutput
	s = segment.New(segment.Config{Audio: true}, func(uint64, time.Duration) (segment.Output, error) { return &o2, nil })
	for _, f := range big {
		s.Write(f)
	}
	s.Close()
	bu, _, _ := units(o2.Bytes(), io.EOF)
	if w, err := jw.CheckInit(bu[0].Bytes); err != nil || w == "" {
		t.Errorf("bigger picture: %q, %v", w, err)
	}
}

// FuzzReader feeds arbitrary media to the reader and the writer: they may
// refuse it, but never panic or hold more than the input.
func FuzzReader(f *testing.F) {
	// testdata/fuzz/FuzzReader holds a real segment and a cut one.
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		var jw *Writer
		for range 1000 {
			u, err := r.Next()
			if err != nil {
				break
			}
			if len(u.Bytes) > len(data) {
				t.Fatalf("unit of %d bytes from %d bytes of input", len(u.Bytes), len(data))
			}
			switch {
			case u.Kind == Init && jw == nil:
				jw, _ = NewWriter(io.Discard, u.Bytes)
			case u.Kind == Init:
				jw.CheckInit(u.Bytes)
			case jw != nil:
				jw.WriteFragment(u.Bytes)
			}
		}
		if jw != nil {
			jw.Init()
		}
	})
}
