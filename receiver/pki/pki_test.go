package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, srv, created, err := LoadOrCreate(dir, []string{"127.0.0.1", "receiver.test"}, now)
	if err != nil || !created {
		t.Fatalf("first run: created=%v err=%v", created, err)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, ServerKeyFile: 0o600, CACertFile: 0o644, ServerCertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", name, st.Mode().Perm(), want, err)
		}
	}
	ca2, srv2, created, err := LoadOrCreate(dir, []string{"127.0.0.1"}, now)
	if err != nil || created {
		t.Fatalf("second run: created=%v err=%v", created, err)
	}
	if ca2.Fingerprint() != ca.Fingerprint() || !srv2.Leaf.Equal(srv.Leaf) {
		t.Fatal("reload gave another CA or server certificate")
	}
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	if _, _, _, err := LoadOrCreate(dir, []string{"127.0.0.1"}, now); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable CA key accepted: %v", err)
	}
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o600)
	srvKey := filepath.Join(dir, ServerKeyFile)
	os.Chmod(srvKey, 0o644)
	if _, _, _, err := LoadOrCreate(dir, []string{"127.0.0.1"}, now); err == nil || !strings.Contains(err.Error(), "chmod 600 "+srvKey) {
		t.Fatalf("world-readable server key accepted: %v", err)
	}
	os.Chmod(srvKey, 0o600)
	if _, _, _, err := LoadOrCreate(dir, []string{"127.0.0.1"}, now); err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
}

type fixture struct {
	ca      *CA
	srv     tls.Certificate
	addr    string
	revoked map[string]bool
	seen    chan string // client certificate CN of each accepted connection
}

// serve runs a TLS echo server on loopback with the receiver's config.
func serve(t *testing.T) *fixture {
	t.Helper()
	ca, err := NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ca: ca, srv: srv, revoked: map[string]bool{}, seen: make(chan string, 16)}
	cfg := ServerTLS(ca, srv, func(c *x509.Certificate) bool { return f.revoked[c.SerialNumber.String()] })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				cn := ""
				if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
					cn = pcs[0].Subject.CommonName
				}
				f.seen <- cn
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return f
}

func device(t *testing.T, ca *CA, name string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueDevice(name, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return DeviceCertificate(cert, priv), cert
}

// dial does a full round trip so that a rejected client certificate (which
// TLS 1.3 reports only after the handshake) surfaces as an error.
func dial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	return err
}

func TestMutualTLS(t *testing.T) {
	f := serve(t)
	good, _ := device(t, f.ca, "box-1")
	revokedCert, revokedX509 := device(t, f.ca, "box-2")
	f.revoked[revokedX509.SerialNumber.String()] = true
	other, err := NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := device(t, other, "box-3")

	tests := []struct {
		name   string
		cfg    *tls.Config
		wantOK bool
		wantCN string // the identity the server sees
	}{
		{"enrolled device", ClientTLS(f.ca.Pool(), "127.0.0.1", &good), true, "box-1"},
		{"no certificate (enrollment)", ClientTLS(f.ca.Pool(), "127.0.0.1", nil), true, ""},
		{"revoked device", ClientTLS(f.ca.Pool(), "127.0.0.1", &revokedCert), false, ""},
		// The server lists only its CA as acceptable, so a client holding a
		// certificate from another CA sends none: it is anonymous, never
		// authenticated as that device.
		{"device certificate from another CA", ClientTLS(f.ca.Pool(), "127.0.0.1", &foreign), true, ""},
		{"box pins another CA", ClientTLS(other.Pool(), "127.0.0.1", &good), false, ""},
		{"TLS 1.1 client", func() *tls.Config {
			c := ClientTLS(f.ca.Pool(), "127.0.0.1", &good)
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}(), false, ""},
		{"TLS 1.0 client", func() *tls.Config {
			c := ClientTLS(f.ca.Pool(), "127.0.0.1", &good)
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
			return c
		}(), false, ""},
		{"TLS 1.2 client", func() *tls.Config {
			c := ClientTLS(f.ca.Pool(), "127.0.0.1", &good)
			c.MaxVersion = tls.VersionTLS12
			return c
		}(), true, "box-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dial(f.addr, tc.cfg)
			if (err == nil) != tc.wantOK {
				t.Fatalf("err = %v, want ok=%v", err, tc.wantOK)
			}
			if tc.wantOK {
				if cn := <-f.seen; cn != tc.wantCN {
					t.Fatalf("server saw identity %q, want %q", cn, tc.wantCN)
				}
			}
		})
	}
}

// TestClientTrustsOnlyPinnedCA: a server with a certificate from another CA
// (say, a public one) is refused even though its name matches.
func TestClientTrustsOnlyPinnedCA(t *testing.T) {
	f := serve(t)
	other, _ := NewCA("impostor", time.Now())
	err := dial(f.addr, ClientTLS(other.Pool(), "127.0.0.1", nil))
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("err = %v, want an unknown-authority error", err)
	}
}

// TestOpenSSLOldVersionsRefused uses openssl s_client, a real peer.
func TestOpenSSLOldVersionsRefused(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required (apt-get install openssl): %v", err)
	}
	f := serve(t)
	for _, v := range []string{"-tls1", "-tls1_1", "-tls1_2", "-tls1_3"} {
		cmd := exec.Command(openssl, "s_client", "-connect", f.addr, v, "-cipher", "DEFAULT@SECLEVEL=0", "-brief")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		ok := err == nil && strings.Contains(string(out), "Protocol version")
		wantOK := v == "-tls1_2" || v == "-tls1_3"
		if ok != wantOK {
			t.Errorf("openssl s_client %s: handshake ok=%v, want %v\n%s", v, ok, wantOK, out)
		}
	}
}
