package receiver_test

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
)

// TestListRecordingsSaysWhyItEnded commits real segments to a real
// receiver: the end reason of the signed last segment is listed, and a
// recording stopped by a full spool is complete.
func TestListRecordingsSaysWhyItEnded(t *testing.T) {
	h := start(t)
	send := func(seg []byte) { h.send(t, seg) }
	seal := func(rec [16]byte, seq uint64, prev [32]byte, end crypto.EndReason, last bool) ([]byte, [32]byte) {
		t.Helper()
		var buf bytes.Buffer
		w, err := crypto.NewWriter(&buf, h.box.Recipients, h.box.Device, crypto.Params{RecordingID: rec, Sequence: seq, Prev: prev, Codec: "video/mp4"})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat([]byte{1}, 20_000))
		if last {
			w.SetEnd(end)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), w.Commitment()
	}
	full, recent := [16]byte{1}, [16]byte{2}
	s0, c0 := seal(full, 0, [32]byte{}, 0, false)
	s1, _ := seal(full, 1, c0, crypto.EndSpoolFull, true)
	send(s0)
	send(s1)
	r0, _ := seal(recent, 0, [32]byte{}, 0, false)
	send(r0)

	rs, err := h.admin.ListRecordings()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]receiver.Recording{}
	for _, r := range rs {
		got[r.ID] = r
	}
	if r := got[hex.EncodeToString(full[:])]; !r.Complete || r.Ended != "spool full" || r.Missing != 0 || r.Truncated != 0 {
		t.Errorf("recording stopped by a full spool: %+v, want complete, ended spool full", r)
	}
	if r := got[hex.EncodeToString(recent[:])]; r.Complete || r.Ended != receiver.EndedStillUploading {
		t.Errorf("recording without its end, committed just now: %+v, want still uploading", r)
	}
}
