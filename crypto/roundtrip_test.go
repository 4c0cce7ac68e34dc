package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// checkHeader compares a parsed header with what the Writer was given.
func checkHeader(t *testing.T, h *Header, suite Suite, dev *DeviceKey, p Params, recipients int) {
	t.Helper()
	if h.Suite != suite {
		t.Errorf("header suite %s, want %s", h.Suite, suite)
	}
	if h.Flags != 0 {
		t.Errorf("header flags %#x, want 0", h.Flags)
	}
	if !h.Device.Equal(dev.Public()) {
		t.Errorf("header device %s, want %s", h.Device, dev.Public())
	}
	if h.RecordingID != p.RecordingID {
		t.Errorf("header recording id %x, want %x", h.RecordingID, p.RecordingID)
	}
	if h.Sequence != p.Sequence {
		t.Errorf("header sequence %d, want %d", h.Sequence, p.Sequence)
	}
	if h.Prev != p.Prev {
		t.Errorf("header prev %x, want %x", h.Prev, p.Prev)
	}
	wantStart := int64(0)
	if !p.Start.IsZero() {
		wantStart = p.Start.UnixNano()
	}
	if h.StartUnixNs != wantStart {
		t.Errorf("header start %d, want %d", h.StartUnixNs, wantStart)
	}
	if h.Codec != p.Codec {
		t.Errorf("header codec %q, want %q", h.Codec, p.Codec)
	}
	if len(h.stanzas) != recipients {
		t.Errorf("header has %d stanzas, want %d", len(h.stanzas), recipients)
	}
}

// checkRoundTrip opens seg with every identity and checks plaintext,
// commitment, trailer, header, and keyless verification. Large messages are
// decrypted in full with one identity only; NewReader already proves that
// every other identity unwrapped the right key (the commitment matched).
func checkRoundTrip(t *testing.T, seg []byte, w *Writer, ids []*Identity, dev *DeviceKey, p Params, msg []byte, last bool) {
	t.Helper()
	suite := ids[0].Suite()
	for i, id := range ids {
		if len(msg) > 4*chunk && i != len(ids)-1 {
			r, err := NewReader(bytes.NewReader(seg), id)
			if err != nil {
				t.Fatalf("identity %d: NewReader: %v", i+1, err)
			}
			if r.Commitment() != w.Commitment() {
				t.Errorf("identity %d: reader commitment differs from the writer's", i+1)
			}
			r.Close()
			continue
		}
		res := openSegment(seg, id)
		if res.err != nil {
			t.Fatalf("identity %d: %v", i+1, res.err)
		}
		if res.sticky != nil {
			t.Errorf("identity %d: %v", i+1, res.sticky)
		}
		if !bytes.Equal(res.released, msg) {
			t.Fatalf("identity %d: plaintext of %d bytes differs from the %d bytes sealed", i+1, len(res.released), len(msg))
		}
		r := res.reader
		if r.Commitment() != w.Commitment() {
			t.Errorf("identity %d: reader commitment differs from the writer's", i+1)
		}
		if r.Trailer() == nil || r.Trailer().Last() != last {
			t.Errorf("identity %d: trailer %+v, want Last()=%v", i+1, r.Trailer(), last)
		}
		checkHeader(t, r.Header(), suite, dev, p, len(ids))
		if !bytes.Equal(r.Header().Bytes(), w.Header().Bytes()) {
			t.Errorf("identity %d: reader header bytes differ from the writer's", i+1)
		}
	}
	for _, want := range []*DevicePublicKey{dev.Public(), nil} {
		info, err := verifyBytes(seg, want)
		if err != nil {
			t.Fatalf("Verify(device=%v): %v", want, err)
		}
		if info.Commitment != w.Commitment() {
			t.Errorf("Verify commitment %x, writer %x", info.Commitment, w.Commitment())
		}
		if info.Size != int64(len(seg)) {
			t.Errorf("Verify size %d, segment has %d bytes", info.Size, len(seg))
		}
		if info.Trailer == nil || info.Trailer.Last() != last {
			t.Errorf("Verify trailer %+v, want Last()=%v", info.Trailer, last)
		}
		checkHeader(t, info.Header, suite, dev, p, len(ids))
	}
	wantLen := len(w.Header().Bytes()) + prefix + len(msg)/chunk*encChunk + len(msg)%chunk + tagSize + TrailerSize
	if len(seg) != wantLen {
		t.Errorf("segment is %d bytes, want %d", len(seg), wantLen)
	}
}

// TestRoundTripRecipients seals with every suite to one through four
// recipients and opens with each recipient's identity; a fifth is refused.
func TestRoundTripRecipients(t *testing.T) {
	for _, suite := range allSuites {
		ids, rcs := newIdentities(t, suite, 5)
		dev := newDevice(t)
		for n := 1; n <= 4; n++ {
			t.Run(fmt.Sprintf("%s/recipients=%d", suite, n), func(t *testing.T) {
				p := testParams(t.Name(), uint64(n), [CommitmentSize]byte{1, 2, 3})
				msg := plaintext(t.Name(), 2*chunk+77)
				seg, w := sealSegment(t, rcs[:n], dev, p, msg, sealOpts{writeSize: 5000, last: n%2 == 0})
				checkRoundTrip(t, seg, w, ids[:n], dev, p, msg, n%2 == 0)
				// All identities together open it too, whatever their order.
				rev := append([]*Identity(nil), ids[:n]...)
				for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
					rev[i], rev[j] = rev[j], rev[i]
				}
				if res := openSegment(seg, rev...); res.err != nil || !bytes.Equal(res.released, msg) {
					t.Errorf("opening with all %d identities: %v", n, res.err)
				}
			})
		}
		t.Run(fmt.Sprintf("%s/recipients=5", suite), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, rcs, dev, testParams("five", 0, [CommitmentSize]byte{}))
			if err == nil {
				w.Close()
				t.Fatal("NewWriter accepted 5 recipients")
			}
			if !strings.Contains(err.Error(), "5 recipients") {
				t.Errorf("error %q does not say how many recipients were given", err)
			}
			if buf.Len() != 0 {
				t.Errorf("NewWriter wrote %d bytes before refusing", buf.Len())
			}
		})
	}
}

// TestRoundTripSizes crosses plaintext sizes around the chunk size with
// write sizes around it, for every suite, with Flush in some cases.
func TestRoundTripSizes(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, chunk - 1, chunk, chunk + 1, 257*chunk + 5}
	writeSizes := []int{1, 7, 4096, chunk, chunk + 1, 1 << 20}
	for _, suite := range allSuites {
		ids, rcs := newIdentities(t, suite, 4)
		dev := newDevice(t)
		c := 0
		for _, size := range sizes {
			for _, ws := range writeSizes {
				if size > 1<<20 && ws == 1 {
					continue // 4 Mi single-byte writes add time, not coverage
				}
				if testing.Short() && size > 1<<20 && ws < 4096 {
					continue
				}
				c++
				n := 1 + c%4 // every suite sees every recipient count
				flushEvery := 0
				if c%3 == 0 {
					flushEvery = max(1, 3*chunk/(2*ws)) // about every 1.5 chunks
				}
				last := c%2 == 1
				t.Run(fmt.Sprintf("%s/size=%d/write=%d/flush=%d", suite, size, ws, flushEvery), func(t *testing.T) {
					p := testParams(t.Name(), uint64(c), [CommitmentSize]byte{byte(c)})
					msg := plaintext(t.Name(), size)
					seg, w := sealSegment(t, rcs[:n], dev, p, msg, sealOpts{writeSize: ws, flushEvery: flushEvery, last: last})
					checkRoundTrip(t, seg, w, ids[:n], dev, p, msg, last)
				})
			}
		}
	}
}

// TestFlushLeavesAuthenticPrefix simulates a power cut right after Flush:
// what reached the destination is a TRUNCATED segment whose released
// plaintext is exactly the flushed chunks.
func TestFlushLeavesAuthenticPrefix(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	msg := plaintext(t.Name(), 5*chunk+300)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, rcs, dev, testParams("flush", 0, [CommitmentSize]byte{}))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	written := 0
	for _, step := range []int{100, chunk - 100, chunk + 1, 3*chunk + 299} {
		if _, err := w.Write(msg[written : written+step]); err != nil {
			t.Fatal(err)
		}
		written += step
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		snapshot := bytes.Clone(buf.Bytes())
		full := written / chunk
		res := openSegment(snapshot, ids[0])
		if !errors.Is(res.err, ErrTruncated) {
			t.Fatalf("after %d bytes and Flush: %v, want ErrTruncated", written, res.err)
		}
		if !bytes.Equal(res.released, msg[:full*chunk]) {
			t.Fatalf("after %d bytes and Flush: released %d bytes, want %d", written, len(res.released), full*chunk)
		}
		if _, err := verifyBytes(snapshot, dev.Public()); !errors.Is(err, ErrTruncated) {
			t.Fatalf("Verify after Flush: %v, want ErrTruncated", err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if res := openSegment(buf.Bytes(), ids[0]); res.err != nil || !bytes.Equal(res.released, msg) {
		t.Fatalf("after Close: %v", res.err)
	}
}

// TestNewWriterRejects covers every argument NewWriter refuses.
func TestNewWriterRejects(t *testing.T) {
	_, x := newIdentities(t, SuiteX25519, 5)
	_, p := newIdentities(t, SuiteP256, 1)
	dev := newDevice(t)
	good := testParams("rejects", 0, [CommitmentSize]byte{})
	tests := []struct {
		name string
		rcs  []*Recipient
		dev  *DeviceKey
		p    Params
		want string
	}{
		{"no recipients", nil, dev, good, "0 recipients"},
		{"five recipients", x, dev, good, "5 recipients"},
		{"mixed suites", []*Recipient{x[0], p[0]}, dev, good, "one suite"},
		{"no device key", x[:1], nil, good, "device key"},
		{"codec not printable", x[:1], dev, Params{Codec: "video/mp4\n"}, "codec"},
		{"codec too long", x[:1], dev, Params{Codec: strings.Repeat("a", 65)}, "codec"},
		{"prev set for sequence 0", x[:1], dev, Params{Prev: [CommitmentSize]byte{1}}, "previous commitment"},
		{"prev missing for sequence 1", x[:1], dev, Params{Sequence: 1}, "previous commitment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, tc.rcs, tc.dev, tc.p)
			if err == nil {
				w.Close()
				t.Fatal("NewWriter succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written before the error", buf.Len())
			}
		})
	}
	t.Run("codec of 64 bytes and zero start are fine", func(t *testing.T) {
		ids, _ := newIdentities(t, SuiteX25519, 1)
		p := Params{Codec: strings.Repeat("~", 64)}
		seg, w := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, p, []byte("x"), sealOpts{})
		checkRoundTrip(t, seg, w, ids, dev, p, []byte("x"), false)
	})
}

// failAfter accepts limit bytes, then fails every write.
type failAfter struct {
	limit int
	n     int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n+len(p) > f.limit {
		return 0, errors.New("disk full")
	}
	f.n += len(p)
	return len(p), nil
}

// TestWriterDestinationErrors checks that a failing destination surfaces
// from NewWriter, Write, Flush or Close, and that the writer still shuts
// down its goroutine (goleak).
func TestWriterDestinationErrors(t *testing.T) {
	_, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	p := testParams("dst", 0, [CommitmentSize]byte{})
	for _, limit := range []int{0, 100, 300, 300 + encChunk, 300 + 3*encChunk} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			w, err := NewWriter(&failAfter{limit: limit}, rcs, dev, p)
			if err != nil {
				return // the header or prefix did not fit
			}
			_, werr := w.Write(make([]byte, 4*chunk))
			ferr := w.Flush()
			cerr := w.Close()
			if werr == nil && ferr == nil && cerr == nil {
				t.Fatal("no error although the destination failed")
			}
			if cerr == nil {
				t.Error("Close returned nil after the destination failed")
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
		})
	}
}

// TestParamsStart checks the start time survives to the nanosecond,
// including times before 1970.
func TestParamsStart(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	for _, start := range []time.Time{{}, time.Unix(0, 1), time.Unix(-86400, 5), time.Date(2200, 1, 2, 3, 4, 5, 6, time.UTC)} {
		t.Run(start.String(), func(t *testing.T) {
			p := Params{Start: start, Codec: "audio/opus"}
			seg, w := sealSegment(t, rcs, dev, p, []byte("media"), sealOpts{})
			checkRoundTrip(t, seg, w, ids, dev, p, []byte("media"), false)
		})
	}
}
