package wire

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A self-signed server certificate verifies for its hosts against itself
// only, and WriteKeyPair stores it with a 0600 key that loads back.
func TestSelfSigned(t *testing.T) {
	c, err := SelfSigned([]string{"localhost", "127.0.0.1"}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Leaf)
	for _, h := range []string{"localhost", "127.0.0.1"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example"}); err == nil {
		t.Error("verified for a host it does not name, or against the system roots")
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "live.crt"), filepath.Join(dir, "live.key")
	if err := WriteKeyPair(crt, key, c); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	back, err := tls.LoadX509KeyPair(crt, key)
	if err != nil || Fingerprint(back.Leaf) != Fingerprint(c.Leaf) {
		t.Fatalf("reload: %v", err)
	}
}

// A certificate signed by a parent chains to it; LoadKeyPair refuses a key
// file others can read, naming the chmod.
func TestServerCertificateAndKeyRule(t *testing.T) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ServerCertificate([]string{"receiver.example"}, now, time.Hour, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("chain of %d, want leaf and parent", len(c.Certificate))
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "receiver.example", Roots: roots}); err != nil {
		t.Fatal(err)
	}
	if _, err := ServerCertificate(nil, now, time.Hour, nil, nil); err == nil {
		t.Fatal("a certificate without a host name was made")
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	if err := WriteKeyPair(crt, key, c); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyPair(crt, key); err == nil || !strings.Contains(err.Error(), "chmod") {
		t.Fatalf("group-readable key: err = %v, want one naming chmod", err)
	}
}
