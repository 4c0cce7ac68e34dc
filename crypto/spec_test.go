package crypto

// Tests for the points docs/format.md §9 and §2 state about key files,
// X-Wing, Ed25519 and HKDF, one test a point.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// Every key kind accepts only the canonical base64url of its bytes: no
// padding, no standard alphabet, no stray trailing bits, no CR, LF or
// space inside.
func TestKeyBase64Canonical(t *testing.T) {
	id, err := GenerateIdentity(SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	dev := newDevice(t)
	kinds := []struct {
		name  string
		line  string
		parse func(string) error
	}{
		{"organisation public", id.Recipient().String(), func(s string) error { _, err := ParseRecipient(s); return err }},
		{"organisation private", id.String(), func(s string) error { _, err := ParseIdentity(s); return err }},
		{"device public", dev.Public().String(), func(s string) error { _, err := ParseDevicePublicKey(s); return err }},
		{"device private", dev.String(), func(s string) error { _, err := ParseDeviceKey(s); return err }},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			if err := k.parse(k.line); err != nil {
				t.Fatalf("the canonical line is refused: %v", err)
			}
			prefix, data, _ := strings.Cut(k.line, ":")
			prefix += ":"
			raw, err := b64.DecodeString(data)
			if err != nil {
				t.Fatal(err)
			}
			// 32 bytes end in a digit carrying 4 bits and 2 zero bits.
			last := strings.IndexByte(b64Alphabet, data[len(data)-1])
			bad := map[string]string{
				"trailing bits set":   data[:len(data)-1] + string(b64Alphabet[last|1]),
				"padding":             data + "=",
				"standard alphabet":   strings.NewReplacer("-", "+", "_", "/").Replace(data) + "+/",
				"CR inside":           data[:10] + "\r" + data[10:],
				"LF inside":           data[:10] + "\n" + data[10:],
				"space inside":        data[:10] + " " + data[10:],
				"one character short": data[:len(data)-1],
				"std base64 of bytes": strings.TrimRight(stdB64(raw), "="),
			}
			for what, d := range bad {
				if d == data {
					continue // the key has no '-' or '_' to swap
				}
				if err := k.parse(prefix + d); err == nil {
					t.Errorf("%s: accepted", what)
				}
			}
		})
	}
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func stdB64(b []byte) string {
	return strings.NewReplacer("-", "+", "_", "/").Replace(b64.EncodeToString(b)) + strings.Repeat("=", (3-len(b)%3)%3)
}

// A key file of exactly 64 KiB is read; one byte more is refused whole
// (never truncated to its first 64 KiB), for every key file reader.
func TestKeyFile64KiB(t *testing.T) {
	id, err := GenerateIdentity(SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	dev := newDevice(t)
	dir := t.TempDir()
	// pad makes a file of exactly size bytes: the key line first, then
	// comment lines, so a reader that stopped at 64 KiB would find the key.
	pad := func(name, line string, size int) string {
		b := []byte(line + "\n")
		for len(b) < size {
			n := min(size-len(b), 100)
			b = append(b, '#')
			b = append(b, bytes.Repeat([]byte{'x'}, n-2)...)
			b = append(b, '\n')
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	readers := []struct {
		name string
		line string
		read func(string) error
	}{
		{"identity", id.String(), func(p string) error { _, err := ReadIdentityFile(p); return err }},
		{"recipients", id.Recipient().String(), func(p string) error { _, err := ReadRecipientsFile(p); return err }},
		{"device key", dev.String(), func(p string) error { _, err := ReadDeviceKeyFile(p); return err }},
		{"device public key", dev.Public().String(), func(p string) error { _, err := ReadDevicePublicKeyFile(p); return err }},
		{"key line", dev.String(), func(p string) error { _, err := ReadKeyLine(p, true); return err }},
		{"private file", dev.String(), func(p string) error { _, err := ReadPrivateFile(p); return err }},
	}
	for _, r := range readers {
		if err := r.read(pad(r.name+"-64k", r.line, 64<<10)); err != nil {
			t.Errorf("%s: a file of exactly 64 KiB is refused: %v", r.name, err)
		}
		p := pad(r.name+"-64k1", r.line, 64<<10+1)
		if err := r.read(p); err == nil || !strings.Contains(err.Error(), "larger than 64 KiB") {
			t.Errorf("%s: a file of 64 KiB + 1 byte: %v, want refused as larger than 64 KiB", r.name, err)
		}
	}
	// A stream (no size to stat) is cut off after 64 KiB + 1 byte and refused.
	big := strings.Repeat("#"+strings.Repeat("x", 98)+"\n", 700) + id.Recipient().String() + "\n"
	if _, err := ParseRecipients(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than 64 KiB") {
		t.Errorf("a 70 KB recipients stream: %v", err)
	}
}

// Symlinks are followed; the permission rule applies to the file they
// point to, and a dangling link is an error naming the path.
func TestKeyFileSymlinks(t *testing.T) {
	dev := newDevice(t)
	dir := t.TempDir()
	private := filepath.Join(dir, "dev.key")
	if err := os.WriteFile(private, []byte(dev.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	linkToLink := filepath.Join(dir, "link2.key")
	if err := os.Symlink(link, linkToLink); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, linkToLink} {
		if k, err := ReadDeviceKeyFile(p); err != nil || !k.Public().Equal(dev.Public()) {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := os.Chmod(private, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDeviceKeyFile(link); err == nil || !strings.Contains(err.Error(), "readable by group or others") {
		t.Errorf("a symlink (mode 0777 itself) to a 0640 key: %v, want the permission refusal", err)
	}
	dangling := filepath.Join(dir, "dangling.key")
	if err := os.Symlink(filepath.Join(dir, "nope"), dangling); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDeviceKeyFile(dangling); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), dangling) {
		t.Errorf("dangling symlink: %v", err)
	}
}

// X-Wing as docs/format.md §4.1 states it, computed here from the
// primitives alone: the 32-byte private seed is expanded with SHAKE256 into
// the 64-byte ML-KEM-768 seed (d || z) and then the 32-byte X25519 private
// key; the public key is the ML-KEM-768 encapsulation key followed by the
// X25519 public key; a stanza's enc is the ML-KEM ciphertext followed by
// the ephemeral X25519 key; the shared secret is
// SHA3-256(ss_MLKEM || ss_X25519 || enc_X25519 || pk_X25519 || "\.//^\"),
// used by the RFC 9180 key schedule (HKDF-SHA256, AES-256-GCM) with the
// info of §5.2. The segment key recovered this way opens the segment.
func TestXWingByHand(t *testing.T) {
	id, err := GenerateIdentity(SuiteXWing)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := id.sk.Bytes()
	if err != nil || len(seed) != 32 {
		t.Fatalf("seed: %d bytes, %v", len(seed), err)
	}
	xof := sha3.NewSHAKE256()
	xof.Write(seed)
	expanded := make([]byte, 96)
	xof.Read(expanded)
	dk, err := mlkem.NewDecapsulationKey768(expanded[:64])
	if err != nil {
		t.Fatal(err)
	}
	xsk, err := ecdh.X25519().NewPrivateKey(expanded[64:])
	if err != nil {
		t.Fatal(err)
	}
	wantPub := append(dk.EncapsulationKey().Bytes(), xsk.PublicKey().Bytes()...)
	if got := id.Recipient().pk.Bytes(); !bytes.Equal(got, wantPub) || len(got) != 1216 {
		t.Fatalf("public key (%d bytes) is not ek_MLKEM768 || pk_X25519 of the SHAKE256 expansion", len(got))
	}

	msg := plaintext(t.Name(), 1000)
	seg, _ := sealSegment(t, []*Recipient{id.Recipient()}, newDevice(t), testParams(t.Name(), 0, [CommitmentSize]byte{}), msg, sealOpts{})
	hdr, err := ReadHeader(bytes.NewReader(seg))
	if err != nil {
		t.Fatal(err)
	}
	st := hdr.stanzas[0]
	if len(st.enc) != 1120 {
		t.Fatalf("enc is %d bytes, want 1120", len(st.enc))
	}
	ssM, err := dk.Decapsulate(st.enc[:mlkem.CiphertextSize768])
	if err != nil {
		t.Fatal(err)
	}
	eph, err := ecdh.X25519().NewPublicKey(st.enc[mlkem.CiphertextSize768:])
	if err != nil {
		t.Fatal(err)
	}
	ssX, err := xsk.ECDH(eph)
	if err != nil {
		t.Fatal(err)
	}
	h := sha3.New256()
	for _, b := range [][]byte{ssM, ssX, st.enc[mlkem.CiphertextSize768:], xsk.PublicKey().Bytes(), []byte(`\.//^\`)} {
		h.Write(b)
	}
	shared := h.Sum(nil)

	// RFC 9180 §5.1, mode_base, KEM 0x647A, KDF 0x0001, AEAD 0x0002.
	suiteID := []byte("HPKE\x64\x7a\x00\x01\x00\x02")
	labeledExtract := func(salt []byte, label string, ikm []byte) []byte {
		prk, err := hkdf.Extract(sha256.New, slices.Concat([]byte("HPKE-v1"), suiteID, []byte(label), ikm), salt)
		if err != nil {
			t.Fatal(err)
		}
		return prk
	}
	labeledExpand := func(prk []byte, label string, info []byte, n int) []byte {
		out, err := hkdf.Expand(sha256.New, prk, string(slices.Concat(binary.BigEndian.AppendUint16(nil, uint16(n)), []byte("HPKE-v1"), suiteID, []byte(label), info)), n)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	info := slices.Concat([]byte("uploadbox.segment-key.v1"), hdr.raw[:len(hdr.raw)-len(hdr.stanzas)*(1120+48)])
	ctx := slices.Concat([]byte{0}, labeledExtract(nil, "psk_id_hash", nil), labeledExtract(nil, "info_hash", info))
	secret := labeledExtract(shared, "secret", nil)
	aead := newGCM(t, labeledExpand(secret, "key", ctx, 32))
	key, err := aead.Open(nil, labeledExpand(secret, "base_nonce", ctx, 12), st.wrapped, nil)
	if err != nil {
		t.Fatalf("the stanza does not open with the hand-made X-Wing secret: %v", err)
	}
	// An ephemeral X25519 key of low order (all zero) gives the all-zero
	// exchange, which fails: the stanza does not open.
	lowOrder := bytes.Clone(seg)
	encAt := len(hdr.raw) - len(st.enc) - len(st.wrapped)
	clear(lowOrder[encAt+mlkem.CiphertextSize768 : encAt+len(st.enc)])
	if res := openSegment(lowOrder, id); !errors.Is(res.err, ErrNoIdentity) {
		t.Errorf("a low-order ephemeral X25519 key: %v, want the stanza not to open", res.err)
	}
	// An ML-KEM encapsulation key out of range (coefficients ≥ q) is refused.
	badPub := slices.Concat(bytes.Repeat([]byte{0xff}, mlkem.EncapsulationKeySize768), xsk.PublicKey().Bytes())
	if _, err := ParseRecipient("ubx-org-pub-xwing:" + b64.EncodeToString(badPub)); err == nil {
		t.Error("an ML-KEM-768 encapsulation key failing the modulus check was accepted")
	}
	// K opens the payload: its derived commitment is the segment's.
	_, _, commitment := expandByHand(t, key, seg[len(hdr.raw):len(hdr.raw)+stream.SaltSize], hdr.raw)
	if !bytes.Equal(commitment, seg[len(hdr.raw)+stream.SaltSize:len(hdr.raw)+stream.PrefixSize]) {
		t.Fatal("the unwrapped key does not give the segment's commitment")
	}
}

// expandByHand is HKDF-Expand-SHA-512 (RFC 5869 §2.3) written out with
// HMAC: the PRK is the 32-byte segment key K itself (no Extract step),
// T(1) = HMAC(K, info || 0x01), T(2) = HMAC(K, T(1) || info || 0x02),
// and the 76 bytes of T(1) || T(2) are the AES key, base nonce and
// commitment of Cobblestone-256 (docs/format.md §5.3).
func expandByHand(t *testing.T, key, salt, context []byte) (aeadKey, nonce, commitment []byte) {
	t.Helper()
	if len(key) != 32 {
		t.Fatalf("PRK is %d bytes, want the 32-byte K", len(key))
	}
	info := slices.Concat([]byte("c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"), salt, context)
	m := hmac.New(sha512.New, key)
	m.Write(info)
	m.Write([]byte{1})
	t1 := m.Sum(nil)
	m.Reset()
	m.Write(t1)
	m.Write(info)
	m.Write([]byte{2})
	okm := append(t1, m.Sum(nil)...)[:76]
	return okm[:32], okm[32:44], okm[44:76]
}

// The HKDF-Expand PRK is the 32-byte K, used as is: for a real segment the
// payload's AES key, base nonce and the commitment stored after the salt
// equal the hand-written derivation above.
func TestHKDFExpandPRK(t *testing.T) {
	f := newX25519Fixture(t)
	hdr, err := ReadHeader(bytes.NewReader(f.seg))
	if err != nil {
		t.Fatal(err)
	}
	key, err := unwrap(hdr, f.ids)
	if err != nil {
		t.Fatal(err)
	}
	salt := f.seg[f.l.hdr : f.l.hdr+stream.SaltSize]
	aeadKey, nonce, commitment := expandByHand(t, key, salt, hdr.raw)
	gotKey, gotNonce, err := stream.DerivedForTest(key, salt, hdr.raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotKey, aeadKey) || !bytes.Equal(gotNonce, nonce) {
		t.Error("the payload's AES key or base nonce is not HKDF-Expand-SHA-512 with PRK = K")
	}
	if !bytes.Equal(commitment, f.seg[f.l.hdr+stream.SaltSize:f.l.chunks]) {
		t.Error("the stored commitment is not HKDF-Expand-SHA-512 with PRK = K")
	}
	// Chunk 0 opens with that key and nonce.
	c0 := f.seg[f.l.chunks : f.l.chunks+encChunk]
	if pt, err := newGCM(t, aeadKey).Open(nil, nonce, c0, nil); err != nil || !bytes.Equal(pt, f.msg[:chunk]) {
		t.Errorf("chunk 0 does not open with the hand-derived key and nonce: %v", err)
	}
}

func newGCM(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Small-order Ed25519 points (all eight, and their non-canonical
// encodings) are refused as device keys, in key files and in segment
// headers: Go's cofactorless ed25519.Verify would accept a signature made
// without any private key for them. The list is the one libsodium refuses
// (ge25519_has_small_order), with the sign bit both ways.
func TestSmallOrderDeviceKeys(t *testing.T) {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	le := func(v *big.Int) string {
		b := v.FillBytes(make([]byte, 32))
		slices.Reverse(b)
		return hex.EncodeToString(b)
	}
	withSign := func(h string) string {
		b, _ := hex.DecodeString(h)
		b[31] |= 0x80
		return hex.EncodeToString(b)
	}
	smallOrder := []string{
		"0100000000000000000000000000000000000000000000000000000000000000", // identity, order 1
		le(new(big.Int).Sub(p, big.NewInt(1))),                             // y = −1, order 2
		"0000000000000000000000000000000000000000000000000000000000000000", // y = 0, order 4
		withSign("0000000000000000000000000000000000000000000000000000000000000000"),
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
		withSign("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
		withSign("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
	}
	nonCanonical := []string{
		le(p),                                  // y = p ≡ 0
		le(new(big.Int).Add(p, big.NewInt(1))), // y = p + 1 ≡ 1
		withSign("0100000000000000000000000000000000000000000000000000000000000000"), // x = 0 with the sign bit
	}
	f := newX25519Fixture(t)
	check := func(h string, want error) {
		t.Helper()
		raw, _ := hex.DecodeString(h)
		if err := checkDevicePoint(raw); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", h, err, want)
		}
		if _, err := ParseDevicePublicKey(devPubPrefix + b64.EncodeToString(raw)); err == nil || !strings.Contains(err.Error(), want.Error()) {
			t.Errorf("ParseDevicePublicKey(%s): %v", h, err)
		}
		// A segment naming it, with a trailer signed "by" it: for the
		// small-order points R = B, S = 1 would verify under Go's rules.
		seg := bytes.Clone(f.seg)
		copy(seg[12:44], raw)
		copy(seg[len(seg)-64:], forgedSignature())
		if _, err := verifyBytes(seg, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "device key") {
			t.Errorf("a segment whose header names %s: Verify %v, want ErrCorrupt from the header", h, err)
		}
		if res := openSegment(seg, f.ids...); !errors.Is(res.err, ErrCorrupt) || len(res.released) != 0 {
			t.Errorf("a segment whose header names %s: open %v", h, res.err)
		}
	}
	for _, h := range smallOrder {
		check(h, errPointOrder)
	}
	for _, h := range nonCanonical {
		check(h, errPointEncoding)
	}
	// Why: under Go's cofactorless Verify the identity key accepts the
	// signature (R = B, S = 1) for any message.
	identity := make([]byte, 32)
	identity[0] = 1
	for _, m := range []string{"any message", "another one"} {
		if !ed25519.Verify(identity, []byte(m), forgedSignature()) {
			t.Fatal("Go's ed25519.Verify no longer accepts the forged signature for the identity key: update docs/format.md §6")
		}
	}
	// Real keys and points of large order pass.
	for range 200 {
		if err := checkDevicePoint(newDevice(t).Public().Bytes()); err != nil {
			t.Fatalf("a generated device key: %v", err)
		}
	}
	// A key of mixed order, the base point plus the point of order 2
	// (y = −4/5), is not refused (docs/format.md §6.1).
	yB := new(big.Int).Mul(big.NewInt(4), new(big.Int).ModInverse(big.NewInt(5), p))
	mixed, _ := hex.DecodeString(le(new(big.Int).Sub(p, yB.Mod(yB, p))))
	if err := checkDevicePoint(mixed); err != nil {
		t.Errorf("base point + order-2 point: %v, want accepted", err)
	}
	notOnCurve, _ := hex.DecodeString("0200000000000000000000000000000000000000000000000000000000000000")
	if err := checkDevicePoint(notOnCurve); !errors.Is(err, errPointCurve) {
		t.Errorf("y = 2: %v, want not on the curve", err)
	}
}

// forgedSignature is R = the base point's encoding, S = 1.
func forgedSignature() []byte {
	sig := make([]byte, 64)
	sig[0] = 0x58
	for i := 1; i < 32; i++ {
		sig[i] = 0x66
	}
	sig[32] = 1
	return sig
}

// Signature semantics the trailer check inherits from crypto/ed25519: S
// must be canonical (S + L is refused though [S+L]B = [S]B), and the
// check is cofactorless over the message of §6.
func TestEd25519Semantics(t *testing.T) {
	f := newX25519Fixture(t)
	if _, err := verifyBytes(f.seg, f.dev.Public()); err != nil {
		t.Fatal(err)
	}
	sig := f.seg[len(f.seg)-64:]
	L, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	sLE := slices.Clone(sig[32:])
	slices.Reverse(sLE)
	s := new(big.Int).SetBytes(sLE)
	s.Add(s, L)
	sPlusL := s.FillBytes(make([]byte, 32))
	slices.Reverse(sPlusL)
	seg := bytes.Clone(f.seg)
	copy(seg[len(seg)-32:], sPlusL)
	if _, err := verifyBytes(seg, f.dev.Public()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("S + L: Verify %v, want ErrCorrupt (non-canonical S)", err)
	}
}
