package crypto

import (
	"bytes"
	"testing"
)

// TestEndReasonRoundTrip seals an empty last segment with every end reason
// and reads the reason back, with and without the key.
func TestEndReasonRoundTrip(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	for r := EndUnknown; r <= EndCrashed; r++ {
		t.Run(r.String(), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, rcs, dev, testParams("end", 0, [CommitmentSize]byte{}))
			if err != nil {
				t.Fatal(err)
			}
			w.SetEnd(r)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			res := openSegment(buf.Bytes(), ids...)
			if res.err != nil {
				t.Fatalf("open: %v", res.err)
			}
			info, err := verifyBytes(buf.Bytes(), dev.Public())
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			for _, tr := range []*Trailer{res.reader.Trailer(), info.Trailer} {
				if !tr.Last() || tr.End() != r {
					t.Errorf("trailer flags %#02x: last %v end %v, want last and %v", tr.Flags, tr.Last(), tr.End(), r)
				}
			}
			back, err := ParseEndReason(r.String())
			if err != nil || back != r {
				t.Errorf("ParseEndReason(%q) = %v, %v", r.String(), back, err)
			}
		})
	}
	if _, err := ParseEndReason("exploded"); err == nil {
		t.Error("ParseEndReason accepted an undefined word")
	}
}
