package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the segment vectors in ../testdata/segments and the fuzz seed corpus")

const (
	vectorsDir      = "../testdata/segments"
	vectorsManifest = "vectors.json"
	vectorsMaxBytes = 300 << 10
	// Seeds made from the vectors; files with this prefix are rewritten by -update.
	vectorSeedPrefix = "vector-"
)

// The test keys the vectors are made with. They protect nothing.
const (
	keyX25519   = "test-org-x25519.key"
	keyXWing    = "test-org-xwing.key"
	keyP256     = "test-org-p256.key"
	keyStranger = "test-org-x25519-stranger.key"
	keyDevice   = "test-device.key"
	keyDevice2  = "test-device-other.key"
)

// vectorManifest is testdata/segments/vectors.json.
type vectorManifest struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

type vector struct {
	File        string `json:"file"`
	Description string `json:"description"`
	// Identity is the key file the segment is opened with.
	Identity string `json:"identity"`
	// Device is the key file whose public key Verify is given.
	Device string `json:"device"`
	// Expect is the outcome of reading with Identity:
	// ok, truncated, corrupt or no-identity.
	Expect string `json:"expect"`
	// Verify is the outcome of keyless Verify with Device's public key.
	Verify string `json:"verify"`
	// For ok and truncated: the plaintext released before the end.
	PlaintextSize   *int   `json:"plaintext_size,omitempty"`
	PlaintextSHA256 string `json:"plaintext_sha256,omitempty"`
	// For ok: the commitment, and whether the trailer marks the last segment.
	Commitment string `json:"commitment,omitempty"`
	Last       bool   `json:"last,omitempty"`
	// Sequence and PrevVector (the file whose commitment is this header's
	// Prev) pin the chain link.
	Sequence   uint64 `json:"sequence"`
	PrevVector string `json:"prev_vector,omitempty"`
	// SealedTo, for no-identity vectors, is the key file that does open it.
	SealedTo string `json:"sealed_to,omitempty"`
}

// TestVectors checks every committed vector against its expected outcome.
// With -update it first regenerates them:
//
//	go test ./crypto -run TestVectors -update
func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	data, err := os.ReadFile(filepath.Join(vectorsDir, vectorsManifest))
	if err != nil {
		t.Fatalf("read the manifest (regenerate with -update): %v", err)
	}
	var m vectorManifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("parse %s: %v", vectorsManifest, err)
	}
	if len(m.Vectors) < 10 {
		t.Fatalf("manifest lists %d vectors, want at least 10", len(m.Vectors))
	}
	keys := loadVectorKeys(t)
	byFile := map[string]vector{}
	outcomes := map[string]int{}
	for _, v := range m.Vectors {
		byFile[v.File] = v
		outcomes[v.Expect]++
	}
	for _, want := range []string{"ok", "truncated", "corrupt", "no-identity"} {
		if outcomes[want] == 0 {
			t.Errorf("no vector expects %s", want)
		}
	}
	for _, v := range m.Vectors {
		t.Run(strings.TrimSuffix(v.File, ".seg"), func(t *testing.T) {
			seg, err := os.ReadFile(filepath.Join(vectorsDir, v.File))
			if err != nil {
				t.Fatal(err)
			}
			checkVector(t, v, seg, keys, byFile)
		})
	}
	t.Run("size", func(t *testing.T) {
		entries, err := os.ReadDir(vectorsDir)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		listed := 0
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			total += info.Size()
			switch {
			case strings.HasSuffix(e.Name(), ".seg"):
				if _, ok := byFile[e.Name()]; !ok {
					t.Errorf("%s is not in the manifest", e.Name())
				}
				listed++
			case strings.HasSuffix(e.Name(), ".key"):
				t.Errorf("key file %s is committed: test keys are derived by the test (testKeyLine)", e.Name())
			}
		}
		if listed != len(m.Vectors) {
			t.Errorf("%d .seg files, manifest lists %d", listed, len(m.Vectors))
		}
		if total > vectorsMaxBytes {
			t.Errorf("testdata/segments holds %d bytes, keep it under %d", total, vectorsMaxBytes)
		}
	})
}

// vectorKeys holds the test keys, loaded through the key-file functions.
type vectorKeys struct {
	ids     map[string]*Identity
	devices map[string]*DeviceKey
}

// loadVectorKeys writes the derived test keys into a private directory
// with mode 0600 and reads them back through the real key-file readers.
func loadVectorKeys(t *testing.T) vectorKeys {
	t.Helper()
	dir := t.TempDir()
	k := vectorKeys{ids: map[string]*Identity{}, devices: map[string]*DeviceKey{}}
	for _, name := range []string{keyX25519, keyXWing, keyP256, keyStranger, keyDevice, keyDevice2} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(testKeyLine(t, name)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, "test-device") {
			dk, err := ReadDeviceKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			k.devices[name] = dk
			continue
		}
		id, err := ReadIdentityFile(path)
		if err != nil {
			t.Fatal(err)
		}
		k.ids[name] = id
	}
	return k
}

func checkVector(t *testing.T, v vector, seg []byte, keys vectorKeys, byFile map[string]vector) {
	t.Helper()
	id, ok := keys.ids[v.Identity]
	if !ok {
		t.Fatalf("unknown identity %q", v.Identity)
	}
	dev, ok := keys.devices[v.Device]
	if !ok {
		t.Fatalf("unknown device %q", v.Device)
	}
	res := openSegment(seg, id)
	if got := outcome(res.err); got != v.Expect {
		t.Fatalf("outcome %s (%v), want %s", got, res.err, v.Expect)
	}
	if res.sticky != nil {
		t.Error(res.sticky)
	}
	switch v.Expect {
	case "ok", "truncated":
		if v.PlaintextSize == nil || len(res.released) != *v.PlaintextSize {
			t.Errorf("released %d bytes, manifest says %v", len(res.released), v.PlaintextSize)
		}
		sum := sha256.Sum256(res.released)
		if hex.EncodeToString(sum[:]) != v.PlaintextSHA256 {
			t.Errorf("released plaintext SHA-256 %x, want %s", sum, v.PlaintextSHA256)
		}
	case "no-identity":
		if res.newErr == nil || len(res.released) != 0 {
			t.Errorf("released %d bytes without the key", len(res.released))
		}
		if v.SealedTo != "" {
			if r := openSegment(seg, keys.ids[v.SealedTo]); r.err != nil {
				t.Errorf("the recipient key %s does not open it: %v", v.SealedTo, r.err)
			}
		}
	}
	info, verr := verifyBytes(seg, dev.Public())
	if got := outcome(verr); got != v.Verify {
		t.Errorf("Verify outcome %s (%v), want %s", got, verr, v.Verify)
	}
	if v.Expect != "ok" {
		return
	}
	r := res.reader
	if c := r.Commitment(); hex.EncodeToString(c[:]) != v.Commitment || hex.EncodeToString(info.Commitment[:]) != v.Commitment {
		t.Errorf("commitment %x (Verify %x), want %s", r.Commitment(), info.Commitment, v.Commitment)
	}
	if r.Trailer().Last() != v.Last {
		t.Errorf("Last() = %v, want %v", r.Trailer().Last(), v.Last)
	}
	h := r.Header()
	if h.Sequence != v.Sequence {
		t.Errorf("sequence %d, want %d", h.Sequence, v.Sequence)
	}
	if !h.Device.Equal(dev.Public()) {
		t.Errorf("header device %s, want %s", h.Device, dev.Public())
	}
	if v.PrevVector != "" {
		prev, ok := byFile[v.PrevVector]
		if !ok || hex.EncodeToString(h.Prev[:]) != prev.Commitment {
			t.Errorf("header prev %x is not the commitment of %s", h.Prev, v.PrevVector)
		}
	}
}

// vectorGen builds the vectors from the test keys.
type vectorGen struct {
	t    *testing.T
	keys vectorKeys
}

// seal makes a complete segment of size plaintext bytes for the vector
// named file and returns it with its plaintext and commitment.
func (g *vectorGen) seal(file string, rcs []*Recipient, dev string, seq uint64, prev [CommitmentSize]byte, size int, last bool) ([]byte, []byte, [CommitmentSize]byte) {
	msg := plaintext("vector "+file, size)
	p := testParams("vector "+file, seq, prev)
	p.Start = time.Date(2025, 9, 1, 8, 0, int(seq)*10, 0, time.UTC)
	seg, w := sealSegment(g.t, rcs, g.keys.devices[dev], p, msg, sealOpts{writeSize: 4096, last: last})
	return seg, msg, w.Commitment()
}

func (g *vectorGen) rc(name string) *Recipient { return g.keys.ids[name].Recipient() }

// built is one generated vector: the file, and what reading must release.
type built struct {
	v        vector
	seg      []byte
	released []byte
}

func generateVectors(t *testing.T) {
	if err := os.MkdirAll(vectorsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	g := &vectorGen{t: t, keys: loadVectorKeys(t)}
	var out []built
	add := func(v vector, seg, released []byte) {
		if v.Identity == "" {
			v.Identity = keyX25519
		}
		if v.Device == "" {
			v.Device = keyDevice
		}
		out = append(out, built{v, seg, released})
	}
	var zero [CommitmentSize]byte
	x := []*Recipient{g.rc(keyX25519)}

	seg, msg, c0 := g.seal("ok-x25519-empty.seg", x, keyDevice, 0, zero, 0, false)
	add(vector{File: "ok-x25519-empty.seg", Description: "first segment of a recording, no media: a lone empty final chunk", Expect: "ok", Verify: "ok", Commitment: hex.EncodeToString(c0[:])}, seg, msg)

	seg, msg, c := g.seal("ok-x25519-chain-last.seg", x, keyDevice, 1, c0, 1000, true)
	add(vector{File: "ok-x25519-chain-last.seg", Description: "second and last segment of the same recording: Prev is the first one's commitment, the trailer has FlagLast", Expect: "ok", Verify: "ok", Sequence: 1, PrevVector: "ok-x25519-empty.seg", Last: true, Commitment: hex.EncodeToString(c[:])}, seg, msg)

	other, err := GenerateIdentity(SuiteXWing)
	if err != nil {
		t.Fatal(err)
	}
	seg, msg, c = g.seal("ok-xwing-two-recipients.seg", []*Recipient{other.Recipient(), g.rc(keyXWing)}, keyDevice, 0, zero, chunk+100, false)
	add(vector{File: "ok-xwing-two-recipients.seg", Description: "X-Wing, two recipients; the test key is the second stanza", Identity: keyXWing, Expect: "ok", Verify: "ok", Commitment: hex.EncodeToString(c[:])}, seg, msg)

	seg, msg, c = g.seal("ok-p256-one-full-chunk.seg", []*Recipient{g.rc(keyP256)}, keyDevice, 0, zero, chunk, false)
	add(vector{File: "ok-p256-one-full-chunk.seg", Description: "P-256, exactly one full chunk followed by an empty final chunk", Identity: keyP256, Expect: "ok", Verify: "ok", Commitment: hex.EncodeToString(c[:])}, seg, msg)

	seg, msg, c = g.seal("ok-x25519-one-byte-final.seg", x, keyDevice, 0, zero, chunk+1, false)
	add(vector{File: "ok-x25519-one-byte-final.seg", Description: "one full chunk and a final chunk of one byte", Expect: "ok", Verify: "ok", Commitment: hex.EncodeToString(c[:])}, seg, msg)

	seg, _, _ = g.seal("truncated-in-header.seg", x, keyDevice, 0, zero, 1000, false)
	add(vector{File: "truncated-in-header.seg", Description: "cut 50 bytes into the header", Expect: "truncated", Verify: "truncated"}, seg[:50], nil)

	seg, msg, _ = g.seal("truncated-at-chunk-boundary.seg", x, keyDevice, 0, zero, chunk+500, false)
	l := layoutOf(t, seg)
	add(vector{File: "truncated-at-chunk-boundary.seg", Description: "cut right after the first full chunk: that chunk is released", Expect: "truncated", Verify: "truncated"}, seg[:l.final], msg[:chunk])

	seg, msg, _ = g.seal("truncated-in-final-chunk.seg", x, keyDevice, 0, zero, chunk+9000, false)
	l = layoutOf(t, seg)
	add(vector{File: "truncated-in-final-chunk.seg", Description: "cut in the middle of the final chunk: the full chunk before it is released", Expect: "truncated", Verify: "truncated"}, seg[:(l.final+l.trailer)/2], msg[:chunk])

	seg, msg, _ = g.seal("truncated-in-trailer.seg", x, keyDevice, 0, zero, chunk+10, false)
	l = layoutOf(t, seg)
	add(vector{File: "truncated-in-trailer.seg", Description: "cut 40 bytes into the trailer (its magic survives): the final chunk is not released without a trailer", Expect: "truncated", Verify: "truncated"}, seg[:l.trailer+40], msg[:chunk])

	seg, msg, _ = g.seal("truncated-in-trailer-long-final.seg", x, keyDevice, 0, zero, 2*chunk-1, false)
	l = layoutOf(t, seg)
	add(vector{File: "truncated-in-trailer-long-final.seg", Description: "a final chunk of 16399 bytes cut 10 bytes into the trailer: the last 16400-byte piece fails as a full chunk but is a final chunk and a trailer cut short, so the full chunk before it is released", Expect: "truncated", Verify: "truncated"}, seg[:l.trailer+10], msg[:chunk])

	seg, _, _ = g.seal("corrupt-cut-trailer-damaged.seg", x, keyDevice, 0, zero, 2*chunk-1, false)
	l = layoutOf(t, seg)
	add(vector{File: "corrupt-cut-trailer-damaged.seg", Description: "as truncated-in-trailer-long-final, but the second byte of the cut trailer is damaged: the last 16400-byte piece is neither a full chunk nor a final chunk and a trailer cut short; without the key it reads as a cut", Expect: "corrupt", Verify: "truncated"}, setByte(seg[:l.trailer+10], l.trailer+1, 'X'), nil)

	seg, _, _ = g.seal("corrupt-small-order-device.seg", x, keyDevice, 0, zero, 1000, false)
	seg = bytes.Clone(seg)
	copy(seg[12:44], append([]byte{1}, make([]byte, 31)...))
	copy(seg[len(seg)-64:], forgedSignature())
	add(vector{File: "corrupt-small-order-device.seg", Description: "the header's device is the identity point 01 00…00 and the trailer holds R = base point, S = 1, which Go's cofactorless Ed25519 accepts for any message: a small-order device key is refused when the header is parsed", Expect: "corrupt", Verify: "corrupt"}, seg, nil)

	seg, _, _ = g.seal("corrupt-chunk-bit-flip.seg", x, keyDevice, 0, zero, chunk+10, false)
	l = layoutOf(t, seg)
	add(vector{File: "corrupt-chunk-bit-flip.seg", Description: "one bit flipped in the first chunk", Expect: "corrupt", Verify: "corrupt"}, flipBit(seg, (l.chunks+1234)*8+5), nil)

	seg, _, _ = g.seal("corrupt-chunks-swapped.seg", x, keyDevice, 0, zero, 2*chunk+10, false)
	l = layoutOf(t, seg)
	s0, e0 := l.chunk(0)
	s1, e1 := l.chunk(1)
	add(vector{File: "corrupt-chunks-swapped.seg", Description: "the two full chunks swapped", Expect: "corrupt", Verify: "corrupt"}, concat(seg[:s0], seg[s1:e1], seg[s0:e0], seg[e1:]), nil)

	seg, _, _ = g.seal("corrupt-trailing-bytes.seg", x, keyDevice, 0, zero, 1000, false)
	add(vector{File: "corrupt-trailing-bytes.seg", Description: "100 bytes appended after a complete segment; without the key, Verify sees no trailer at the end and cannot tell this from a cut", Expect: "corrupt", Verify: "truncated"}, concat(seg, plaintext("trailing", 100)), nil)

	seg, _, _ = g.seal("corrupt-bad-signature.seg", x, keyDevice, 0, zero, 1000, false)
	add(vector{File: "corrupt-bad-signature.seg", Description: "one bit flipped in the trailer's signature", Expect: "corrupt", Verify: "corrupt"}, flipBit(seg, (len(seg)-20)*8), nil)

	seg, _, _ = g.seal("corrupt-foreign-trailer.seg", x, keyDevice, 0, zero, 1000, false)
	foreign, _, _ := g.seal("corrupt-foreign-trailer.seg/other", x, keyDevice2, 0, zero, 1000, false)
	add(vector{File: "corrupt-foreign-trailer.seg", Description: "the trailer of another device's segment", Expect: "corrupt", Verify: "corrupt"}, concat(seg[:len(seg)-TrailerSize], foreign[len(foreign)-TrailerSize:]), nil)

	seg, _, _ = g.seal("corrupt-header-flags.seg", x, keyDevice, 0, zero, 1000, false)
	add(vector{File: "corrupt-header-flags.seg", Description: "an undefined header flag set (the strict parser refuses it)", Expect: "corrupt", Verify: "corrupt"}, flipBit(seg, 9*8), nil)

	seg, _, _ = g.seal("no-identity.seg", []*Recipient{g.rc(keyStranger)}, keyDevice, 0, zero, 1000, false)
	add(vector{File: "no-identity.seg", Description: "sealed to another organisation key; the signature is still valid", Expect: "no-identity", Verify: "ok", SealedTo: keyStranger}, seg, nil)

	// Replace the old files, then write the manifest.
	old, _ := filepath.Glob(filepath.Join(vectorsDir, "*.seg"))
	for _, f := range old {
		os.Remove(f)
	}
	m := vectorManifest{Comment: "uploadbox segment vectors: each file, opened with identity, gives expect; Verify with the device's public key gives verify. Keys are derived by testKeyLine in crypto/vectors_test.go from the names given here: SHA-256(\"uploadbox segment test vectors: \" + name) as the Ed25519 seed or the HPKE DeriveKeyPair input (test only, public by construction). Regenerate: go test ./crypto -run TestVectors -update"}
	for _, b := range out {
		v := b.v
		if v.Expect == "ok" || v.Expect == "truncated" {
			n := len(b.released)
			sum := sha256.Sum256(b.released)
			v.PlaintextSize, v.PlaintextSHA256 = &n, hex.EncodeToString(sum[:])
		}
		if err := os.WriteFile(filepath.Join(vectorsDir, v.File), b.seg, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Vectors = append(m.Vectors, v)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorsDir, vectorsManifest), append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFuzzSeeds(t, out)
}

// testKeyLine derives the named test key from its name alone, so no key
// file is committed: the vectors' keys are public by construction and must
// never protect anything.
func testKeyLine(tb testing.TB, name string) string {
	ikm := sha256.Sum256([]byte("uploadbox segment test vectors: " + name))
	switch name {
	case keyDevice, keyDevice2:
		return (&DeviceKey{priv: ed25519.NewKeyFromSeed(ikm[:])}).String()
	}
	suite, ok := map[string]Suite{keyX25519: SuiteX25519, keyXWing: SuiteXWing, keyP256: SuiteP256, keyStranger: SuiteX25519}[name]
	if !ok {
		tb.Fatalf("unknown test key %q", name)
	}
	sk, err := suites[suite].kem.DeriveKeyPair(ikm[:])
	if err != nil {
		tb.Fatal(err)
	}
	return (&Identity{suite: suite, sk: sk}).String()
}

// fuzzSeed encodes one []byte argument in the `go test fuzz v1` format.
func fuzzSeed(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
}

// writeFuzzSeeds refreshes the seeds that come from the vectors: small
// segments for FuzzReader (all opened with keyX25519) and every header for
// FuzzParseHeader. Hand-written seeds (other names) are left alone.
func writeFuzzSeeds(t *testing.T, out []built) {
	for _, target := range []string{"FuzzReader", "FuzzParseHeader"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(dir, vectorSeedPrefix+"*"))
		for _, f := range old {
			os.Remove(f)
		}
	}
	headers := map[Suite]bool{}
	for _, b := range out {
		name := vectorSeedPrefix + strings.TrimSuffix(b.v.File, ".seg")
		if b.v.Identity == keyX25519 && len(b.seg) <= 4096 {
			if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzReader", name), fuzzSeed(b.seg), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		h, err := ReadHeader(bytes.NewReader(b.seg))
		if err != nil || headers[h.Suite] {
			continue
		}
		headers[h.Suite] = true
		if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzParseHeader", name), fuzzSeed(h.Bytes()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readVectorSegments returns the vector files that open OK with keyX25519,
// for the fuzz targets' seeds and their set of exactly valid inputs.
func readVectorSegments(tb testing.TB) (all [][]byte, valid [][]byte) {
	data, err := os.ReadFile(filepath.Join(vectorsDir, vectorsManifest))
	if err != nil {
		tb.Fatal(err)
	}
	var m vectorManifest
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatal(err)
	}
	for _, v := range m.Vectors {
		seg, err := os.ReadFile(filepath.Join(vectorsDir, v.File))
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, seg)
		if v.Identity == keyX25519 && v.Expect == "ok" {
			valid = append(valid, seg)
		}
	}
	return all, valid
}
