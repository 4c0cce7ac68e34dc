package crypto

import (
	"bytes"
	"io"
	"testing"
)

func TestSmoke(t *testing.T) {
	for _, s := range []Suite{SuiteXWing, SuiteX25519, SuiteP256} {
		id, err := GenerateIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		id2, err := ParseIdentity(id.String())
		if err != nil {
			t.Fatal(s, err, id.String()[:30])
		}
		rc, err := ParseRecipient(id.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		dev, _ := GenerateDeviceKey()
		var buf bytes.Buffer
		w, err := NewWriter(&buf, []*Recipient{rc}, dev, Params{Codec: "video/mp4"})
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte("hello"), 10000)
		w.Write(msg)
		w.SetLast()
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(bytes.NewReader(buf.Bytes()), id2)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatal(s, err)
		}
		if !r.Trailer().Last() || r.Commitment() != w.Commitment() {
			t.Fatal("trailer/commitment")
		}
		info, err := Verify(bytes.NewReader(buf.Bytes()), dev.Public())
		if err != nil || info.Commitment != w.Commitment() {
			t.Fatal(err)
		}
		t.Log(s, len(id.String()), len(rc.String()), len(w.Header().Bytes()))
	}
}
