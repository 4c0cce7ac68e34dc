package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// issue writes a server certificate for 127.0.0.1 signed by ca (made by
// the test, standing in for a public CA that browsers trust) to certPath
// and its key (0600) to keyPath, and returns the certificate.
func issue(t *testing.T, ca *pki.CA, certPath, keyPath string) *x509.Certificate {
	t.Helper()
	c, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteKeyPair(certPath, keyPath, c); err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

// servedSerial makes a new TLS handshake with addr, trusting only roots,
// and returns the serial of the certificate the server presented.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// waitLog waits until the receiver's log holds n occurrences of line.
func waitLog(t *testing.T, rcv *receiverProc, line string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(rcv.stderr.String(), line) >= n {
			return
		}
	}
	t.Fatalf("the receiver's log never said %q %d time(s):\n%s", line, n, rcv.stderr.String())
}

// TestWebListener: with --web-listen and an administrator's certificate
// (here from a CA made by the test, standing in for a public one), a
// browser that trusts only that CA reaches the coach-facing routes, and
// nothing else: device routes are 404 there while the main listener still
// serves them. SIGHUP swaps in a replaced certificate for new handshakes,
// keeps the old one when the replacement is broken, and a key others can
// read is refused at start.
func TestWebListener(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	ca, err := pki.NewCA("test public CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
	first := issue(t, ca, certPath, keyPath)

	rcv := startReceiver(t, data, "127.0.0.1:0", "--web-listen", "127.0.0.1:0", "--web-cert", certPath, "--web-key", keyPath)
	if rcv.webAddr == "" {
		t.Fatal("the receiver did not say where its web listener is")
	}
	const password = "Correct-Horse-Battery-9"
	addViewer(t, data, "coach-w", password)

	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	web := "https://" + rcv.webAddr
	body, _ := json.Marshal(map[string]string{"name": "coach-w", "password": password})
	resp, err := browser.Post(web+"/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login on the web listener with a client trusting only the public CA: %v", err)
	}
	var lr struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&lr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || lr.Token == "" {
		t.Fatalf("login on the web listener: HTTP %d", resp.StatusCode)
	}
	if got := servedSerial(t, rcv.webAddr, ca.Pool()); got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("web listener presents serial %x, want %x", got, first.SerialNumber)
	}
	// The main listener keeps the receiver's private CA: the browser's
	// trust does not reach it.
	if c, err := tls.Dial("tcp", rcv.addr, &tls.Config{RootCAs: ca.Pool()}); err == nil {
		c.Close()
		t.Fatal("the main listener presented a certificate from the web CA")
	}

	// The relay is served (and refuses a request without a token itself);
	// device routes are not, though the main listener serves each one.
	mainClient := authClient(t, data)
	for _, rt := range []struct {
		method, path string
		web          int
	}{
		{"POST", "/v1/rooms/room-7/whep", http.StatusUnauthorized},
		{"DELETE", "/v1/rooms/room-7/whep/abc", http.StatusUnauthorized},
		{"POST", "/v1/enroll", http.StatusNotFound},
		{"POST", "/v1/commit", http.StatusNotFound},
		{"GET", "/v1/control", http.StatusNotFound},
		{"POST", "/v1/audit/checkpoint", http.StatusNotFound},
		{"POST", "/v1/uploads/", http.StatusNotFound},
		{"HEAD", "/v1/uploads/0123456789abcdef0123456789abcdef", http.StatusNotFound},
		{"PATCH", "/v1/uploads/0123456789abcdef0123456789abcdef", http.StatusNotFound},
	} {
		status := func(c *http.Client, base string) int {
			req, _ := http.NewRequest(rt.method, base+rt.path, strings.NewReader("{}"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", rt.method, base+rt.path, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if got := status(browser, web); got != rt.web {
			t.Errorf("web listener: %s %s: HTTP %d, want %d", rt.method, rt.path, got, rt.web)
		}
		if rt.web == http.StatusNotFound {
			if got := status(mainClient, "https://"+rcv.addr); got == http.StatusNotFound {
				t.Errorf("main listener: %s %s: HTTP 404; it should serve the device route", rt.method, rt.path)
			}
		}
	}

	// Replace the files and SIGHUP: the next handshake sees the new
	// certificate, and the log names it (never the key).
	second := issue(t, ca, certPath, keyPath)
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "web certificate reloaded", 1)
	if got := servedSerial(t, rcv.webAddr, ca.Pool()); got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after SIGHUP the web listener presents serial %x, want the new %x", got, second.SerialNumber)
	}
	keyPEM, _ := os.ReadFile(keyPath)
	if keyLine := strings.Split(string(keyPEM), "\n")[1]; strings.Contains(rcv.stderr.String(), keyLine) {
		t.Fatal("the receiver's log holds the web key")
	}

	// A broken replacement (a truncated certificate) keeps the previous
	// one, and the log says why.
	pemCert, _ := os.ReadFile(certPath)
	if err := os.WriteFile(certPath, pemCert[:len(pemCert)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "web certificate not reloaded: the previous one stays in use", 1)
	if got := servedSerial(t, rcv.webAddr, ca.Pool()); got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a broken reload the web listener presents serial %x, want the previous %x", got, second.SerialNumber)
	}
	// A key that does not match the certificate is refused alike.
	os.WriteFile(certPath, pemCert, 0o644)
	other := filepath.Join(dir, "other")
	issue(t, ca, other+".crt", other+".key")
	otherKey, _ := os.ReadFile(other + ".key")
	os.WriteFile(keyPath, otherKey, 0o600)
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "web certificate not reloaded: the previous one stays in use", 2)
	if got := servedSerial(t, rcv.webAddr, ca.Pool()); got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a mismatched key the web listener presents serial %x, want %x", got, second.SerialNumber)
	}
	var ok, failed int
	for _, line := range strings.Split(stopAndReadAudit(t, rcv), "\n") {
		if strings.Contains(line, `"event":"web.certificate"`) {
			ok += strings.Count(line, `"outcome":"ok"`)
			failed += strings.Count(line, `"outcome":"failed"`)
		}
	}
	if ok != 1 || failed != 2 {
		t.Errorf("audit: %d web.certificate ok and %d failed entries, want 1 and 2", ok, failed)
	}

	// Without --web-cert the web listener presents the receiver's own
	// server certificate (private CA).
	rcv2 := startReceiver(t, data, "127.0.0.1:0", "--web-listen", "127.0.0.1:0")
	own := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.crt"))
	own.AppendCertsFromPEM(caPEM)
	if c, err := tls.Dial("tcp", rcv2.webAddr, &tls.Config{RootCAs: own, ServerName: "127.0.0.1"}); err != nil {
		t.Fatalf("web listener without --web-cert: %v", err)
	} else {
		c.Close()
	}
	rcv2.stop(t)

	// Bad flags and a key others can read are clear errors at start.
	issue(t, ca, certPath, keyPath)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--web-listen", "127.0.0.1:0", "--web-cert", certPath}, "--web-cert and --web-key go together"},
		{[]string{"--web-listen", "127.0.0.1:0", "--web-key", keyPath}, "--web-cert and --web-key go together"},
		{[]string{"--web-cert", certPath, "--web-key", keyPath}, "need --web-listen"},
		{[]string{"--web-listen", "127.0.0.1:0", "--web-cert", certPath, "--web-key", keyPath}, "chmod 600 " + keyPath},
	} {
		args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, c.args...)
		res := runExit(t, 20*time.Second, "uploadbox-receiver", args...)
		if res.code == 0 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("serve %s: exit %d, stderr %q; want an error naming %q", strings.Join(c.args, " "), res.code, res.stderr, c.want)
		}
	}
}
