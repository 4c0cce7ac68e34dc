package receipt

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func sample(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey, Receipt) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dev, _, _ := ed25519.GenerateKey(rand.Reader)
	r := Receipt{Device: dev, RecordingID: [16]byte{1, 2, 3}, Sequence: 7, SHA256: sha256.Sum256([]byte("segment")), Size: 1234, Committed: time.Unix(1_800_000_000, 5).UTC()}
	return pub, priv, r
}

func TestRoundTrip(t *testing.T) {
	pub, priv, r := sample(t)
	b, err := Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != Size {
		t.Fatalf("%d bytes, want %d", len(b), Size)
	}
	got, err := Verify(pub, b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Device.Equal(r.Device) || got.RecordingID != r.RecordingID || got.Sequence != 7 || got.SHA256 != r.SHA256 || got.Size != 1234 || !got.Committed.Equal(r.Committed) {
		t.Fatalf("got %+v, want %+v", got, r)
	}
	if err := got.Matches(r.Device, r.RecordingID, 7, r.SHA256, 1234); err != nil {
		t.Fatal(err)
	}
}

func TestEveryBitFlipFails(t *testing.T) {
	pub, priv, r := sample(t)
	b, _ := Sign(priv, r)
	for i := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, err := Verify(pub, c); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bit %d flipped: err = %v", i, err)
		}
	}
	if _, err := Verify(pub, b[:Size-1]); !errors.Is(err, ErrInvalid) {
		t.Fatal("short receipt accepted")
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := Verify(other, b); !errors.Is(err, ErrInvalid) {
		t.Fatal("receipt from another receiver key accepted")
	}
}

func TestMatchesRefusesOtherSegments(t *testing.T) {
	pub, priv, r := sample(t)
	b, _ := Sign(priv, r)
	got, err := Verify(pub, b)
	if err != nil {
		t.Fatal(err)
	}
	otherDev, _, _ := ed25519.GenerateKey(rand.Reader)
	cases := map[string]error{
		"device":   got.Matches(otherDev, r.RecordingID, 7, r.SHA256, 1234),
		"sequence": got.Matches(r.Device, r.RecordingID, 8, r.SHA256, 1234),
		"hash":     got.Matches(r.Device, r.RecordingID, 7, sha256.Sum256([]byte("other")), 1234),
		"size":     got.Matches(r.Device, r.RecordingID, 7, r.SHA256, 1235),
	}
	for name, err := range cases {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s mismatch accepted: %v", name, err)
		}
	}
}
