package receiver_test

import (
	"crypto/tls"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// writePair issues a certificate for 127.0.0.1 from ca, valid from now
// for lifetime, and writes it to dir/name.crt and dir/name.key.
func writePair(t *testing.T, ca *pki.CA, dir, name string, now time.Time) (certPath, keyPath string, serial *big.Int) {
	t.Helper()
	c, err := ca.IssueServer([]string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := wire.WriteKeyPair(certPath, keyPath, c); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, c.Leaf.SerialNumber
}

// Reloads while handshakes run: each handshake gets a whole certificate
// (the old or the new one), and once the reload returned every new
// handshake gets the new one. Run with -race.
func TestWebCertificateReloadUnderHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("web test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, first := writePair(t, ca, dir, "web", time.Now())
	srv, _, stop := serve(t, receiver.ServerConfig{Data: filepath.Join(dir, "data"), Listen: "127.0.0.1:0",
		WebListen: "127.0.0.1:0", WebCert: certPath, WebKey: keyPath})
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	handshake := func() *big.Int {
		c, err := tls.Dial("tcp", srv.WebAddr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
		if err != nil {
			t.Error(err)
			return nil
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	if got := handshake(); got == nil || got.Cmp(first) != 0 {
		t.Fatalf("first handshake: serial %v, want %v", got, first)
	}

	serials := []*big.Int{first}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				handshake()
			}
		})
	}
	for i := range 5 {
		_, _, sn := writePair(t, ca, dir, "web", time.Now())
		if err := srv.ReloadWebCertificate(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		serials = append(serials, sn)
		if got := handshake(); got == nil || got.Cmp(sn) != 0 {
			t.Fatalf("after reload %d: serial %v, want %v", i, got, sn)
		}
	}
	close(done)
	wg.Wait()

	// A key that does not match keeps the last good certificate.
	last := serials[len(serials)-1]
	_, otherKey, _ := writePair(t, ca, dir, "other", time.Now())
	key, err := os.ReadFile(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.ReloadWebCertificate(); err == nil {
		t.Fatal("a key that does not match the certificate was accepted")
	}
	if got := handshake(); got == nil || got.Cmp(last) != 0 {
		t.Fatalf("after a bad reload: serial %v, want the last good %v", got, last)
	}
}

// Open refuses a web configuration that cannot work, each with a message
// that says what to give.
func TestWebConfigRefused(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("web test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := writePair(t, ca, dir, "web", time.Now())
	oldCert, oldKey, _ := writePair(t, ca, dir, "old", time.Now().Add(-pki.ServerLifetime-48*time.Hour))
	for _, tt := range []struct {
		name              string
		listen, cert, key string
		want              string
	}{
		{"cert without key", "127.0.0.1:0", cert, "", "--web-cert and --web-key go together"},
		{"key without cert", "127.0.0.1:0", "", key, "--web-cert and --web-key go together"},
		{"no listener", "", cert, key, "need --web-listen"},
		{"expired", "127.0.0.1:0", oldCert, oldKey, "expired on"},
		{"missing", "127.0.0.1:0", filepath.Join(dir, "none.crt"), key, "none.crt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := receiver.Open(receiver.ServerConfig{Data: filepath.Join(dir, "data"), Listen: "127.0.0.1:0",
				WebListen: tt.listen, WebCert: tt.cert, WebKey: tt.key})
			if err == nil {
				srv.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}
