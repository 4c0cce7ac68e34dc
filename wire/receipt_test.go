package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

var algs = []HashAlg{HashBLAKE3, HashSHA256}

func sampleReceipt(t *testing.T, alg HashAlg) (ed25519.PublicKey, ed25519.PrivateKey, Receipt) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dev, _, _ := ed25519.GenerateKey(rand.Reader)
	r := Receipt{Device: dev, RecordingID: [16]byte{1, 2, 3}, Sequence: 7, Alg: alg, Hash: sha256.Sum256([]byte("segment")), Size: 1234, Committed: time.Unix(1_800_000_000, 5).UTC()}
	return pub, priv, r
}

func TestReceiptRoundTrip(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			pub, priv, r := sampleReceipt(t, alg)
			b, err := SignReceipt(priv, r)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != ReceiptSize {
				t.Fatalf("%d bytes, want %d", len(b), ReceiptSize)
			}
			got, err := VerifyReceipt(pub, b, alg)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Device.Equal(r.Device) || got.RecordingID != r.RecordingID || got.Sequence != 7 || got.Alg != alg || got.Hash != r.Hash || got.Size != 1234 || !got.Committed.Equal(r.Committed) {
				t.Fatalf("got %+v, want %+v", got, r)
			}
			if err := got.Matches(r.Device, r.RecordingID, 7, alg, r.Hash, 1234); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReceiptDomains checks that v1 and v2 are separate: the same
// content signed as one does not verify as the other, and an unknown hash
// is neither signed nor verified.
func TestReceiptDomains(t *testing.T) {
	for _, alg := range algs {
		other := HashSHA256
		if alg == HashSHA256 {
			other = HashBLAKE3
		}
		pub, priv, r := sampleReceipt(t, alg)
		b, err := SignReceipt(priv, r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyReceipt(pub, b, other); !errors.Is(err, ErrInvalidReceipt) {
			t.Errorf("a %s receipt verified as %s: %v", alg, other, err)
		}
		r.Alg = other
		if b2, _ := SignReceipt(priv, r); bytes.Equal(b2, b) || !bytes.Equal(b2[:receiptBody], b[:receiptBody]) {
			t.Errorf("%s and %s receipts of one content: bodies or signatures wrong", alg, other)
		}
	}
	pub, priv, r := sampleReceipt(t, "sha1")
	if _, err := SignReceipt(priv, r); err == nil {
		t.Error("a receipt with an unknown hash was signed")
	}
	r.Alg = HashBLAKE3
	b, _ := SignReceipt(priv, r)
	if _, err := VerifyReceipt(pub, b, ""); !errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("a receipt verified with no hash named: %v", err)
	}
}

func TestReceiptEveryBitFlipFails(t *testing.T) {
	for _, alg := range algs {
		pub, priv, r := sampleReceipt(t, alg)
		b, _ := SignReceipt(priv, r)
		for i := range len(b) * 8 {
			c := append([]byte(nil), b...)
			c[i/8] ^= 1 << (i % 8)
			if _, err := VerifyReceipt(pub, c, alg); !errors.Is(err, ErrInvalidReceipt) {
				t.Fatalf("%s: bit %d flipped: err = %v", alg, i, err)
			}
		}
		if _, err := VerifyReceipt(pub, b[:ReceiptSize-1], alg); !errors.Is(err, ErrInvalidReceipt) {
			t.Fatal("short receipt accepted")
		}
		other, _, _ := ed25519.GenerateKey(rand.Reader)
		if _, err := VerifyReceipt(other, b, alg); !errors.Is(err, ErrInvalidReceipt) {
			t.Fatal("receipt from another receiver key accepted")
		}
	}
}

func TestReceiptMatchesRefusesOtherSegments(t *testing.T) {
	pub, priv, r := sampleReceipt(t, HashBLAKE3)
	b, _ := SignReceipt(priv, r)
	got, err := VerifyReceipt(pub, b, HashBLAKE3)
	if err != nil {
		t.Fatal(err)
	}
	otherDev, _, _ := ed25519.GenerateKey(rand.Reader)
	cases := map[string]error{
		"device":   got.Matches(otherDev, r.RecordingID, 7, HashBLAKE3, r.Hash, 1234),
		"sequence": got.Matches(r.Device, r.RecordingID, 8, HashBLAKE3, r.Hash, 1234),
		"alg":      got.Matches(r.Device, r.RecordingID, 7, HashSHA256, r.Hash, 1234),
		"hash":     got.Matches(r.Device, r.RecordingID, 7, HashBLAKE3, sha256.Sum256([]byte("other")), 1234),
		"size":     got.Matches(r.Device, r.RecordingID, 7, HashBLAKE3, r.Hash, 1235),
	}
	for name, err := range cases {
		if !errors.Is(err, ErrInvalidReceipt) {
			t.Errorf("%s mismatch accepted: %v", name, err)
		}
	}
}

// TestReceiptVector pins the encoding: a receipt signed by the receiver
// must verify on every box already in the field. The vector was made by
// receiver/receipt before the receipt moved here.
func TestReceiptVector(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	dev := ed25519.NewKeyFromSeed(append(make([]byte, 31), 1)).Public().(ed25519.PublicKey)
	const want = "4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29010203000000000000000000000000000000000000000007090000000000000000000000000000000000000000000000000000000000000000000000000004d218fae27693b400055d4e18a80f077ec0b32bceaaf1b74f310efb75fbd240a2efea73d2fe298abe8aaae871d198ee252c59c83f6ff86a168fca0edf42d2d3d2267f66e53722093003"
	b, err := SignReceipt(priv, Receipt{Device: dev, RecordingID: [16]byte{1, 2, 3}, Sequence: 7, Alg: HashSHA256, Hash: [32]byte{9}, Size: 1234, Committed: time.Unix(1_800_000_000, 5).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("receipt encoding changed:\n got %s\nwant %s", got, want)
	}
	if _, err := VerifyReceipt(priv.Public().(ed25519.PublicKey), b, HashSHA256); err != nil {
		t.Fatal(err)
	}
}

// TestReceiptVectorV2 pins the v2 encoding (the BLAKE3 segment hash): the
// same body as v1's vector, signed under the v2 domain.
func TestReceiptVectorV2(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	dev := ed25519.NewKeyFromSeed(append(make([]byte, 31), 1)).Public().(ed25519.PublicKey)
	body := []byte("uploadbox.receipt.v2\x00")
	body = append(body, dev...)
	body = append(body, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	body = append(body, 0, 0, 0, 0, 0, 0, 0, 7, 9)
	body = append(body, make([]byte, 31)...)
	body = binary.BigEndian.AppendUint64(body, 1234)
	body = binary.BigEndian.AppendUint64(body, uint64(time.Unix(1_800_000_000, 5).UnixNano()))
	want := append(bytes.Clone(body[len("uploadbox.receipt.v2\x00"):]), ed25519.Sign(priv, body)...)
	b, err := SignReceipt(priv, Receipt{Device: dev, RecordingID: [16]byte{1, 2, 3}, Sequence: 7, Alg: HashBLAKE3, Hash: [32]byte{9}, Size: 1234, Committed: time.Unix(1_800_000_000, 5).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("v2 receipt encoding:\n got %x\nwant %x", b, want)
	}
}

func TestReceiptKeyFormat(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	got, err := ParseReceiptKey(" " + FormatReceiptKey(pub) + "\n")
	if err != nil || !got.Equal(pub) {
		t.Fatalf("round trip: %x, %v", got, err)
	}
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(pub[:31]), base64.RawStdEncoding.EncodeToString(pub)} {
		if _, err := ParseReceiptKey(bad); err == nil {
			t.Errorf("ParseReceiptKey(%q) accepted", bad)
		}
	}
}
