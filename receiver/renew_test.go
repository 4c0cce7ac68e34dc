package receiver_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// TestRenewKeepsKey: POST /v1/renew gives the box a new certificate for
// the same key, valid for --device-cert-ttl; the box writes it (0600) and
// presents it in new handshakes, while connections made with the old one
// go on and the old certificate is still accepted until it expires. A
// revoked device cannot renew.
func TestRenewKeepsKey(t *testing.T) {
	h := startWith(t, receiver.ServerConfig{DeviceCertTTL: time.Hour})
	old := h.box.Certificate()
	if got := old.NotAfter.Sub(old.NotBefore); got != time.Hour+wire.DeviceCertBackdate {
		t.Fatalf("enrollment certificate valid for %s, want 1h after issue", got)
	}
	oldPair := h.box.DeviceCert
	if code, reason, _ := h.sendAs(t, h.box, sealBy(t, h.box, [16]byte{1})); code != http.StatusOK {
		t.Fatalf("before renewal: HTTP %d %s", code, reason)
	}

	cert, err := h.box.Renew(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cert.SerialNumber.Cmp(old.SerialNumber) == 0 || !cert.PublicKey.(ed25519.PublicKey).Equal(old.PublicKey) {
		t.Fatal("the renewed certificate is not a new certificate of the same key")
	}
	if h.box.Certificate() != cert {
		t.Fatal("the state does not present the renewed certificate")
	}
	path := filepath.Join(h.box.Dir, uploader.DeviceCertFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if b, _ := pem.Decode(data); b == nil || fi.Mode().Perm() != 0o600 || !mustCert(t, b.Bytes).Equal(cert) {
		t.Fatalf("%s (mode %v) does not hold the renewed certificate", path, fi.Mode().Perm())
	}
	// The registry lists the new serial; a fresh handshake presents it.
	ds, err := h.admin.ListDevices()
	if err != nil || len(ds) != 1 || ds[0].CertSerial != cert.SerialNumber.String() {
		t.Fatalf("devices list after renewal: %+v %v", ds, err)
	}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: h.box.TLSConfig()}}
	var presented *x509.Certificate
	gc := fresh.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate
	fresh.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := gc(i)
		presented = c.Leaf
		return c, err
	}
	if code, _, body := h.commit(t, fresh, receiver.CommitRequest{UploadID: "00000000000000000000000000000000", Size: 1, SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}); code != http.StatusNotFound {
		t.Fatalf("request over a new handshake: HTTP %d %s", code, body)
	}
	if presented == nil || !presented.Equal(cert) {
		t.Fatal("a new handshake does not present the renewed certificate")
	}
	// The box's kept-alive connection and a new one with the old
	// certificate both still work.
	if code, reason, _ := h.sendAs(t, h.box, sealBy(t, h.box, [16]byte{2})); code != http.StatusOK {
		t.Fatalf("after renewal, the kept connection: HTTP %d %s", code, reason)
	}
	pool := x509.NewCertPool()
	pool.AddCert(h.box.CA)
	oldClient := &http.Client{Transport: &http.Transport{TLSClientConfig: wire.ClientTLS(pool, "127.0.0.1", &oldPair)}}
	if code, _, body := h.commit(t, oldClient, receiver.CommitRequest{UploadID: "00000000000000000000000000000000", Size: 1, SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}); code != http.StatusNotFound {
		t.Fatalf("the old certificate before it expires: HTTP %d %s, want it accepted (404 for the unknown upload)", code, body)
	}

	if err := h.admin.RevokeDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.box.Renew(t.Context()); err == nil {
		t.Fatal("a revoked device renewed its certificate")
	}
}

func mustCert(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRenewKeepsUploads: an unfinished upload made under the certificate
// a renewal replaced is still the box's (resumed and committed under the
// new one), and it still counts against the box's upload quota.
func TestRenewKeepsUploads(t *testing.T) {
	h := startWith(t, receiver.ServerConfig{UploadQuota: 100_000})
	seg := sealBy(t, h.box, [16]byte{1})
	c := tus.NewClient(h.box.HTTPClient(), h.box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
	u, err := c.Create(t.Context(), int64(len(seg)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.box.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A new connection, so the new certificate is the one presented.
	renewed := &http.Client{Transport: &http.Transport{TLSClientConfig: h.box.TLSConfig()}}
	c2 := tus.NewClient(renewed, h.box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
	if _, err := c2.Create(t.Context(), 90_000, nil); err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("an upload past the quota with the open one made before the renewal: %v, want 413", err)
	}
	if err := c2.Upload(t.Context(), u, bytes.NewReader(seg), int64(len(seg)), nil); err != nil {
		t.Fatalf("resume under the renewed certificate: %v", err)
	}
	sum := sha256.Sum256(seg)
	if code, _, body := h.commit(t, renewed, receiver.CommitRequest{UploadID: path.Base(u), Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])}); code != http.StatusOK {
		t.Fatalf("commit under the renewed certificate: HTTP %d %s", code, body)
	}
}
