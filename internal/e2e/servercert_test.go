package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// servedTo makes a TLS handshake with addr asking (SNI and verification)
// for name, trusting only the CA in the receiver's data directory, and
// returns the certificate presented or the handshake's error.
func servedTo(t *testing.T, data, addr, name string) (*x509.Certificate, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(caCert(t, data))
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// caCert reads the CA certificate of the receiver whose data directory
// is data.
func caCert(t *testing.T, data string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		t.Fatalf("%s/ca.crt: no PEM block", data)
	}
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mustServe is servedTo that fails the test on a refused handshake.
func mustServe(t *testing.T, data, addr, name, when string) *x509.Certificate {
	t.Helper()
	c, err := servedTo(t, data, addr, name)
	if err != nil {
		t.Fatalf("%s: a client asking for %s: %v", when, name, err)
	}
	return c
}

type certShown struct {
	Role     string    `json:"role"`
	Path     string    `json:"path"`
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"`
}

// certsShow runs `certs show --json` with args and returns the
// certificates by role.
func certsShow(t *testing.T, args ...string) map[string]certShown {
	t.Helper()
	var list []certShown
	out := run(t, "uploadbox-receiver", append([]string{"certs", "show", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("certs show --json: %v\n%s", err, out)
	}
	m := map[string]certShown{}
	for _, c := range list {
		m[c.Role] = c
	}
	return m
}

// TestServerCertificateFollowsHostname (issue 14 observation 3): the
// package starts the receiver before the admin sets --hostname, so the
// server certificate is made for the listen address and localhost; a
// later --hostname (here two) reissues it from the same CA, so that a box
// reaching the receiver by that name verifies it. The reissue is logged
// with both lists of names and fingerprints, the old pair is kept as
// server.crt.old and still presented, until the restart, to a client that
// asks for a name only it covers; `certs show` prints what is held.
// On the code before the fix the restart kept the localhost certificate
// and the handshake for receiver.school.example failed.
func TestServerCertificateFollowsHostname(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	data := filepath.Join(t.TempDir(), "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0")
	first := mustServe(t, data, rcv.addr, "localhost", "first start")
	if _, err := servedTo(t, data, rcv.addr, "receiver.school.example"); err == nil {
		t.Fatal("first start: the certificate is valid for a name never given")
	}
	rcv.stop(t)
	// A restart without --hostname keeps the stored certificate.
	rcv = startReceiver(t, data, "127.0.0.1:0")
	if got := mustServe(t, data, rcv.addr, "localhost", "restart without --hostname"); !got.Equal(first) {
		t.Fatal("a restart without --hostname changed the server certificate")
	}
	rcv.stop(t)

	rcv = startReceiver(t, data, "127.0.0.1:0", "--hostname", "receiver.school.example", "--hostname", "127.0.0.1")
	got := mustServe(t, data, rcv.addr, "receiver.school.example", "after a restart with --hostname receiver.school.example")
	mustServe(t, data, rcv.addr, "127.0.0.1", "the second --hostname")
	if got.Equal(first) || got.Issuer.String() != first.Issuer.String() {
		t.Fatalf("the certificate was not reissued by the same CA: issuer %s, was %s", got.Issuer, first.Issuer)
	}
	log := rcv.stderr.String()
	for _, want := range []string{"server certificate reissued for new host names",
		"old_names=\"localhost, 127.0.0.1\"", "new_names=\"receiver.school.example, 127.0.0.1\"",
		"old_sha256=" + wire.Fingerprint(first), "new_sha256=" + wire.Fingerprint(got)} {
		if !strings.Contains(log, want) {
			t.Errorf("the receiver's log does not say %s:\n%s", want, log)
		}
	}
	if a := readFile(t, filepath.Join(data, "audit.jsonl")); !strings.Contains(a, `"event":"server.certificate"`) || !strings.Contains(a, wire.Fingerprint(got)) {
		t.Errorf("no server.certificate audit entry with the new fingerprint:\n%s", a)
	}
	// Until the restart, a client asking for the removed name gets the
	// old certificate.
	if old := mustServe(t, data, rcv.addr, "localhost", "after the reissue, the removed name"); !old.Equal(first) {
		t.Error("the removed name was not answered with the old certificate")
	}

	held := certsShow(t, "--data", data)
	if s := held["server"]; strings.Join(s.Names, " ") != "receiver.school.example 127.0.0.1" || s.SHA256 != wire.Fingerprint(got) || !s.NotAfter.Equal(got.NotAfter) {
		t.Errorf("certs show: server %+v, want the reissued certificate %s", s, wire.Fingerprint(got))
	}
	if p := held["server-previous"]; p.SHA256 != wire.Fingerprint(first) || p.Path != filepath.Join(data, "server.crt.old") {
		t.Errorf("certs show: server-previous %+v, want the first certificate in server.crt.old", p)
	}
	if ca := held["ca"]; ca.SHA256 != wire.Fingerprint(caCert(t, data)) || ca.Names == nil || len(ca.Names) != 0 {
		t.Errorf("certs show: ca %+v", ca)
	}
	text := run(t, "uploadbox-receiver", "certs", "show", "--data", data)
	for _, want := range []string{"server  " + filepath.Join(data, "server.crt"), "names      receiver.school.example, 127.0.0.1", "sha256     " + wire.Fingerprint(got), "not after  " + got.NotAfter.UTC().Format(time.RFC3339)} {
		if !strings.Contains(text, want) {
			t.Errorf("certs show does not print %q:\n%s", want, text)
		}
	}
	rcv.stop(t)

	// After the restart (same names): no reissue, the old name is gone.
	rcv = startReceiver(t, data, "127.0.0.1:0", "--hostname", "127.0.0.1,receiver.school.example")
	if strings.Contains(rcv.stderr.String(), "reissued") {
		t.Errorf("the same names in another order reissued the certificate:\n%s", rcv.stderr.String())
	}
	if _, err := servedTo(t, data, rcv.addr, "localhost"); err == nil {
		t.Error("after the restart the removed name localhost is still served")
	}
}

// TestServerCertificateRenewedBeforeExpiry: a server certificate that
// expires within 30 days is reissued at the next start for the same
// names, from the same CA, without any --hostname.
func TestServerCertificateRenewedBeforeExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	data := filepath.Join(t.TempDir(), "receiver")
	startReceiver(t, data, "127.0.0.1:0", "--hostname", "receiver.school.example,127.0.0.1").stop(t)
	// Replace the server certificate with one of the same CA that expires
	// in 10 days.
	ca, _, _, err := pki.LoadOrCreate(data, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	short, err := ca.IssueServer([]string{"receiver.school.example", "127.0.0.1"}, time.Now().Add(10*24*time.Hour-pki.ServerLifetime))
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteKeyPair(filepath.Join(data, pki.ServerCertFile), filepath.Join(data, pki.ServerKeyFile), short); err != nil {
		t.Fatal(err)
	}

	rcv := startReceiver(t, data, "127.0.0.1:0")
	got := mustServe(t, data, rcv.addr, "receiver.school.example", "after the renewal")
	if got.Equal(short.Leaf) || time.Until(got.NotAfter) < pki.ServerLifetime-24*time.Hour {
		t.Fatalf("the certificate expiring on %s was not renewed: serving one until %s", short.Leaf.NotAfter, got.NotAfter)
	}
	if strings.Join(got.DNSNames, " ") != "receiver.school.example" || len(got.IPAddresses) != 1 {
		t.Errorf("the renewed certificate names %v %v, want the same names", got.DNSNames, got.IPAddresses)
	}
	if !strings.Contains(rcv.stderr.String(), "server certificate reissued: it expires within 30 days") {
		t.Errorf("the renewal is not logged:\n%s", rcv.stderr.String())
	}
}

// TestServerCertificateReissueFails: a reissue that cannot be written
// (here server.crt.old is a directory) stops the start with the reason,
// audited as server.certificate failed, and the stored certificate stays.
func TestServerCertificateReissueFails(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	data := filepath.Join(t.TempDir(), "receiver")
	startReceiver(t, data, "127.0.0.1:0").stop(t)
	before := readFile(t, filepath.Join(data, pki.ServerCertFile))
	if err := os.MkdirAll(filepath.Join(data, pki.ServerCertFile+pki.OldSuffix, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	res := runExit(t, time.Minute, "uploadbox-receiver", "serve", "--data", data, "--listen", "127.0.0.1:0", "--hostname", "receiver.school.example")
	if res.code == 0 || !strings.Contains(res.stderr, "reissue the server certificate for receiver.school.example: keep the previous server certificate") {
		t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if readFile(t, filepath.Join(data, pki.ServerCertFile)) != before {
		t.Error("the failed reissue changed server.crt")
	}
	if a := readFile(t, filepath.Join(data, "audit.jsonl")); !strings.Contains(a, `"event":"server.certificate","source":"local","outcome":"failed"`) {
		t.Errorf("no server.certificate failed audit entry:\n%s", a)
	}
}
