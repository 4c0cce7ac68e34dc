package live

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sdpFingerprint is the a=fingerprint value of an SDP ("sha-256 AB:…").
func sdpFingerprint(t *testing.T, sdp string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^a=fingerprint:(\S+ \S+)\r?$`).FindAllStringSubmatch(sdp, -1)
	if len(m) == 0 {
		t.Fatalf("no a=fingerprint in the SDP:\n%s", sdp)
	}
	for _, x := range m[1:] {
		if x[1] != m[0][1] {
			t.Fatalf("the SDP has two fingerprints: %s and %s", m[0][1], x[1])
		}
	}
	return m[0][1]
}

// The identity is made once, kept across loads, in the SDP form of the
// certificate file's SHA-256; an expired one is replaced, and a key others
// can read is refused naming the chmod.
func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	id, created, err := LoadOrCreateIdentity(dir, now)
	if err != nil || !created {
		t.Fatalf("first load: created %v, err %v", created, err)
	}
	st, err := os.Stat(filepath.Join(dir, DTLSKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", st.Mode().Perm(), err)
	}
	pemCert, _ := os.ReadFile(filepath.Join(dir, DTLSCertFile))
	b, _ := pem.Decode(pemCert)
	sum := sha256.Sum256(b.Bytes)
	var hex []string
	for _, x := range sum {
		hex = append(hex, fmt.Sprintf("%02X", x))
	}
	if want := "sha-256 " + strings.Join(hex, ":"); id.Fingerprint != want {
		t.Fatalf("fingerprint %q, want the certificate file's %q", id.Fingerprint, want)
	}
	if c, _ := x509.ParseCertificate(b.Bytes); c == nil || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatal("the certificate is not an ECDSA one")
	}

	again, created, err := LoadOrCreateIdentity(dir, now.Add(24*time.Hour))
	if err != nil || created || again.Fingerprint != id.Fingerprint {
		t.Fatalf("second load: created %v, err %v, fingerprint %q, want %q", created, err, again.Fingerprint, id.Fingerprint)
	}
	later, created, err := LoadOrCreateIdentity(dir, id.NotAfter.Add(time.Second))
	if err != nil || !created || later.Fingerprint == id.Fingerprint {
		t.Fatalf("past expiry: created %v, err %v; want a new identity", created, err)
	}

	key := filepath.Join(dir, DTLSKeyFile)
	os.Chmod(key, 0o644)
	if _, _, err := LoadOrCreateIdentity(dir, now); err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Fatalf("key readable by others: %v, want an error naming chmod 600", err)
	}
}

// Every session's answer carries the identity's fingerprint, and the
// viewer's DTLS handshake (which checks the certificate against it) works.
func TestIdentityInAnswers(t *testing.T) {
	id, _, err := LoadOrCreateIdentity(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, func(c *Config) { c.Identity = id })
	r.gate.grant("alice", false)
	r.gate.grant("bob", false)
	for _, tok := range []string{"tok-alice", "tok-bob"} {
		v := r.watch(t, tok, false)
		if got := sdpFingerprint(t, v.Answer); got != id.Fingerprint {
			t.Errorf("%s: answer fingerprint %q, want the box's %q", tok, got, id.Fingerprint)
		}
		remote := v.PC.SCTP().Transport().GetRemoteCertificate()
		if len(remote) == 0 {
			t.Fatalf("%s: no remote DTLS certificate", tok)
		}
		sum := sha256.Sum256(remote)
		if !strings.Contains(strings.ReplaceAll(id.Fingerprint, ":", ""), fmt.Sprintf("%X", sum)) {
			t.Errorf("%s: the DTLS peer's certificate is not the box's", tok)
		}
	}
}
