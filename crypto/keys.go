package crypto

import (
	"bufio"
	"bytes"
	stdcrypto "crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// Suite is the HPKE suite that wraps segment keys for the organisation.
type Suite uint8

// The suites. X-Wing is the default: a post-quantum hybrid of ML-KEM-768
// and X25519, so a recording captured today stays confidential even if
// X25519 falls later.
const (
	SuiteXWing  Suite = 1
	SuiteX25519 Suite = 2
	SuiteP256   Suite = 3
)

// suiteInfo fixes every size the strict parser checks.
type suiteInfo struct {
	name    string
	kem     hpke.KEM
	pubSize int
	encSize int
}

var suites = map[Suite]suiteInfo{
	SuiteXWing:  {"xwing", hpke.MLKEM768X25519(), 1216, 1120},
	SuiteX25519: {"x25519", hpke.DHKEM(ecdh.X25519()), 32, 32},
	SuiteP256:   {"p256", hpke.DHKEM(ecdh.P256()), 65, 65},
}

// ParseSuite accepts the names used on the command line.
func ParseSuite(name string) (Suite, error) {
	for s, info := range suites {
		if info.name == strings.ToLower(name) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown suite %q: use xwing, x25519 or p256", name)
}

func (s Suite) String() string {
	if info, ok := suites[s]; ok {
		return info.name
	}
	return fmt.Sprintf("suite(%d)", uint8(s))
}

const (
	orgPubPrefix  = "ubx-org-pub-"
	orgKeyPrefix  = "UBX-ORG-KEY-"
	devPubPrefix  = "ubx-dev-pub-ed25519:"
	devKeyPrefix  = "UBX-DEV-KEY-ED25519:"
	privKeySize   = 32
	maxKeyFile    = 64 << 10
	maxRecipients = 4
)

// b64 is strict: non-canonical encodings (stray trailing bits) are refused.
var b64 = base64.RawURLEncoding.Strict()

// decodeKey decodes the base64 of a key line and accepts only the one
// canonical encoding: unpadded base64url, no stray trailing bits, and
// nothing the decoder would skip (Go's decoder ignores CR and LF inside).
func decodeKey(data string) ([]byte, error) {
	raw, err := b64.DecodeString(data)
	if err != nil {
		return nil, err
	}
	if b64.EncodeToString(raw) != data {
		clear(raw)
		return nil, errors.New("not the canonical base64url encoding")
	}
	return raw, nil
}

// Recipient is an organisation public key: segments sealed to it can be
// opened only by the matching Identity.
type Recipient struct {
	suite Suite
	pk    hpke.PublicKey
}

// Identity is an organisation private key. It never lives on a box.
type Identity struct {
	suite Suite
	sk    hpke.PrivateKey
}

// GenerateIdentity makes a new organisation key pair for suite.
func GenerateIdentity(suite Suite) (*Identity, error) {
	info, ok := suites[suite]
	if !ok {
		return nil, fmt.Errorf("unknown suite %d", suite)
	}
	sk, err := info.kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	return &Identity{suite: suite, sk: sk}, nil
}

// Suite returns the identity's HPKE suite.
func (id *Identity) Suite() Suite { return id.suite }

// Recipient returns the public half.
func (id *Identity) Recipient() *Recipient {
	return &Recipient{suite: id.suite, pk: id.sk.PublicKey()}
}

// String encodes the private key; it is what a key file holds.
func (id *Identity) String() string {
	b, err := id.sk.Bytes()
	if err != nil {
		panic("crypto: serialize private key: " + err.Error())
	}
	defer clear(b)
	return orgKeyPrefix + strings.ToUpper(id.suite.String()) + ":" + b64.EncodeToString(b)
}

// Suite returns the recipient's HPKE suite.
func (r *Recipient) Suite() Suite { return r.suite }

// String encodes the public key, e.g. "ubx-org-pub-xwing:…".
func (r *Recipient) String() string {
	return orgPubPrefix + r.suite.String() + ":" + b64.EncodeToString(r.pk.Bytes())
}

// ParseRecipient decodes one "ubx-org-pub-SUITE:…" line.
func ParseRecipient(s string) (*Recipient, error) {
	rest, ok := strings.CutPrefix(s, orgPubPrefix)
	if !ok {
		return nil, fmt.Errorf("not an organisation public key (want %sSUITE:…)", orgPubPrefix)
	}
	name, data, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, errors.New("public key has no ':' after the suite name")
	}
	suite, err := ParseSuite(name)
	if err != nil || suites[suite].name != name {
		return nil, fmt.Errorf("public key has unknown suite %q", name)
	}
	raw, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key is not valid base64url: %w", err)
	}
	info := suites[suite]
	if len(raw) != info.pubSize {
		return nil, fmt.Errorf("%s public key is %d bytes, want %d", name, len(raw), info.pubSize)
	}
	pk, err := info.kem.NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid %s public key: %w", name, err)
	}
	return &Recipient{suite: suite, pk: pk}, nil
}

// ParseIdentity decodes one "UBX-ORG-KEY-SUITE:…" line.
func ParseIdentity(s string) (*Identity, error) {
	rest, ok := strings.CutPrefix(s, orgKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("not an organisation private key (want %sSUITE:…)", orgKeyPrefix)
	}
	name, data, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, errors.New("private key has no ':' after the suite name")
	}
	suite, err := ParseSuite(name)
	if err != nil || strings.ToUpper(suites[suite].name) != name {
		return nil, fmt.Errorf("private key has unknown suite %q", name)
	}
	raw, err := decodeKey(data)
	if err != nil {
		return nil, errors.New("private key is not valid base64url")
	}
	defer clear(raw)
	if len(raw) != privKeySize {
		return nil, fmt.Errorf("%s private key is %d bytes, want %d", name, len(raw), privKeySize)
	}
	sk, err := suites[suite].kem.NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid %s private key: %w", name, err)
	}
	return &Identity{suite: suite, sk: sk}, nil
}

// DeviceKey is a box's Ed25519 signing key, made on the box.
type DeviceKey struct {
	priv ed25519.PrivateKey
}

// DevicePublicKey identifies a box and checks its segment signatures.
type DevicePublicKey struct {
	pub ed25519.PublicKey
}

// GenerateDeviceKey makes a new device signing key.
func GenerateDeviceKey() (*DeviceKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &DeviceKey{priv: priv}, nil
}

// Public returns the device's public key.
func (k *DeviceKey) Public() *DevicePublicKey {
	return &DevicePublicKey{pub: k.priv.Public().(ed25519.PublicKey)}
}

// String encodes the device private key (its 32-byte seed).
func (k *DeviceKey) String() string {
	return devKeyPrefix + b64.EncodeToString(k.priv.Seed())
}

// Destroy zeroes the private key.
func (k *DeviceKey) Destroy() { clear(k.priv) }

// String encodes the device public key, e.g. "ubx-dev-pub-ed25519:…".
func (p *DevicePublicKey) String() string { return devPubPrefix + b64.EncodeToString(p.pub) }

// Bytes returns the 32-byte Ed25519 public key, which is the device id.
func (p *DevicePublicKey) Bytes() []byte { return bytes.Clone(p.pub) }

// Equal reports whether two device keys are the same.
func (p *DevicePublicKey) Equal(q *DevicePublicKey) bool { return p.pub.Equal(q.pub) }

// ParseDevicePublicKey decodes a "ubx-dev-pub-ed25519:…" line.
func ParseDevicePublicKey(s string) (*DevicePublicKey, error) {
	data, ok := strings.CutPrefix(s, devPubPrefix)
	if !ok {
		return nil, fmt.Errorf("not a device public key (want %s…)", devPubPrefix)
	}
	raw, err := decodeKey(data)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("device public key must be 32 bytes of base64url")
	}
	if err := checkDevicePoint(raw); err != nil {
		return nil, fmt.Errorf("device public key %w", err)
	}
	return &DevicePublicKey{pub: raw}, nil
}

// ParseDeviceKey decodes a "UBX-DEV-KEY-ED25519:…" line.
func ParseDeviceKey(s string) (*DeviceKey, error) {
	data, ok := strings.CutPrefix(s, devKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("not a device private key (want %s…)", devKeyPrefix)
	}
	raw, err := decodeKey(data)
	if err != nil || len(raw) != ed25519.SeedSize {
		return nil, errors.New("device private key must be a 32-byte seed in base64url")
	}
	defer clear(raw)
	return &DeviceKey{priv: ed25519.NewKeyFromSeed(raw)}, nil
}

// keyLines returns the non-comment, non-blank lines of a key file.
func keyLines(r io.Reader) ([]string, error) {
	var lines []string
	lr := &io.LimitedReader{R: r, N: maxKeyFile + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 4096), maxKeyFile+1)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
	}
	if lr.N == 0 {
		return nil, fmt.Errorf("key file is larger than %d KiB: not a key file", maxKeyFile>>10)
	}
	return lines, sc.Err()
}

// ParseRecipients reads a recipients file: one to four public keys of one
// suite, one per line, with '#' comments.
func ParseRecipients(r io.Reader) ([]*Recipient, error) {
	lines, err := keyLines(r)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, errors.New("no public keys found: add one ubx-org-pub-… line (from uploadbox-receiver keys generate)")
	}
	if len(lines) > maxRecipients {
		return nil, fmt.Errorf("%d public keys, at most %d are allowed", len(lines), maxRecipients)
	}
	var rs []*Recipient
	for i, l := range lines {
		rc, err := ParseRecipient(l)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if len(rs) > 0 && rc.suite != rs[0].suite {
			return nil, fmt.Errorf("key %d is %s but key 1 is %s: all recipients of a segment share one suite", i+1, rc.suite, rs[0].suite)
		}
		rs = append(rs, rc)
	}
	return rs, nil
}

// ReadRecipientsFile reads and parses a recipients file.
func ReadRecipientsFile(path string) ([]*Recipient, error) {
	f, err := openKeyFile(path, false, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("recipients file: %w", err)
	}
	defer f.Close()
	rs, err := ParseRecipients(f)
	if err != nil {
		return nil, fmt.Errorf("recipients file %s: %w", path, err)
	}
	return rs, nil
}

// readPrivateFile reads the single key line of a private key file after
// checking that neither group nor others can read it.
func readPrivateFile(path string) (string, error) { return ReadKeyLine(path, true) }

// openKeyFile opens a key file without blocking (a FIFO or device given by
// mistake is refused, not waited on), follows symlinks, and refuses
// anything but a regular file of at most max bytes. With private set it
// also refuses a file group or others can read, naming the chmod to run.
func openKeyFile(path string, private bool, max int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s): give the path of the key file itself", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); private && perm&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("private key %s is readable by group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	if st.Size() > max {
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes, larger than %d KiB: not a key file", path, st.Size(), max>>10)
	}
	return f, nil
}

// ReadPrivateFile reads a whole private key file (PEM, key line or any
// other format) of at most 64 KiB under the one rule every private key of
// the box and the receiver follows: a regular file (symlinks followed),
// opened without blocking, that neither group nor others can read.
func ReadPrivateFile(path string) ([]byte, error) {
	f, err := openKeyFile(path, true, maxKeyFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than %d KiB: not a key file", path, maxKeyFile>>10)
	}
	return data, nil
}

// ReadKeyLine reads the single key line (comments and blank lines aside)
// of a key file of at most 64 KiB, which must be a regular file (opened
// without blocking, symlinks followed). With private set it first refuses
// a file that group or others can read, naming the chmod to run. Other
// packages' key formats use it too.
func ReadKeyLine(path string, private bool) (string, error) {
	f, err := openKeyFile(path, private, maxKeyFile)
	if err != nil {
		return "", err
	}
	defer f.Close()
	lines, err := keyLines(f)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(lines) != 1 {
		return "", fmt.Errorf("%s: want exactly one key line, found %d", path, len(lines))
	}
	return lines[0], nil
}

// ReadIdentityFile loads an organisation private key file.
func ReadIdentityFile(path string) (*Identity, error) {
	l, err := readPrivateFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	id, err := ParseIdentity(l)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	return id, nil
}

// ReadDeviceKeyFile loads a device private key file.
func ReadDeviceKeyFile(path string) (*DeviceKey, error) {
	l, err := readPrivateFile(path)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	k, err := ParseDeviceKey(l)
	if err != nil {
		return nil, fmt.Errorf("device key %s: %w", path, err)
	}
	return k, nil
}

// ReadDevicePublicKeyFile loads a device public key file (or a file whose
// single key line is a device public key).
func ReadDevicePublicKeyFile(path string) (*DevicePublicKey, error) {
	f, err := openKeyFile(path, false, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("device public key: %w", err)
	}
	defer f.Close()
	lines, err := keyLines(f)
	if err != nil || len(lines) != 1 {
		return nil, fmt.Errorf("device public key %s: want exactly one ubx-dev-pub-ed25519: line", path)
	}
	p, err := ParseDevicePublicKey(lines[0])
	if err != nil {
		return nil, fmt.Errorf("device public key %s: %w", path, err)
	}
	return p, nil
}

// WriteKeyFile writes content to path atomically with the given mode and
// never replaces an existing file: a key is never clobbered by accident.
func WriteKeyFile(path string, content string, perm os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists: refusing to overwrite a key file (move it away first)", path)
	}
	if err := atomicfile.Create(path, []byte(content), perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// NewRecordingID returns a random recording id.
func NewRecordingID() ([16]byte, error) {
	var id [16]byte
	_, err := rand.Read(id[:])
	return id, err
}

// GenerateDeviceKeyFile makes a device key, writes it to out (0600, never
// overwriting) and, if publicOut is set, the public key there too.
func GenerateDeviceKeyFile(out, publicOut string) (*DevicePublicKey, error) {
	k, err := GenerateDeviceKey()
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	pub := k.Public()
	content := "# uploadbox device signing key; it never leaves this box\n# public key: " + pub.String() + "\n" + k.String() + "\n"
	if err := WriteKeyFile(out, content, 0o600); err != nil {
		return nil, err
	}
	if publicOut != "" {
		if err := WriteKeyFile(publicOut, pub.String()+"\n", 0o644); err != nil {
			return nil, err
		}
	}
	return pub, nil
}

// GenerateIdentityFile makes an organisation key pair for suite, writes the
// private key to out (0600, never overwriting) and, if publicOut is set,
// the public key there too.
func GenerateIdentityFile(suite Suite, out, publicOut string) (*Recipient, error) {
	id, err := GenerateIdentity(suite)
	if err != nil {
		return nil, err
	}
	rc := id.Recipient()
	content := "# uploadbox organisation private key (" + suite.String() + "); keep it offline\n# public key: " + rc.String() + "\n" + id.String() + "\n"
	if err := WriteKeyFile(out, content, 0o600); err != nil {
		return nil, err
	}
	if publicOut != "" {
		if err := WriteKeyFile(publicOut, rc.String()+"\n", 0o644); err != nil {
			return nil, err
		}
	}
	return rc, nil
}

// Signer returns the key for TLS client authentication with the device
// certificate. It is the same key that signs segments.
func (k *DeviceKey) Signer() stdcrypto.Signer { return k.priv }

// Sign signs msg with the device key (Ed25519).
func (k *DeviceKey) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }
