package uploader

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/wire"
)

// Certificate is the device certificate the box presents now.
func (s *State) Certificate() *x509.Certificate { return s.cert.Load().Leaf }

// useCertificate makes cert the one presented in new handshakes.
func (s *State) useCertificate(cert *x509.Certificate) {
	c := wire.DeviceCertificate(cert, s.Device.Signer())
	s.cert.Store(&c)
}

// checkCertificate accepts cert as a replacement of the current one: for
// this device's key and name, from the enrolled CA, for client auth.
func (s *State) checkCertificate(cert *x509.Certificate) error {
	if pk, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !pk.Equal(ed25519.PublicKey(s.Device.Public().Bytes())) {
		return errors.New("the certificate is not for this device's key")
	}
	if cert.Subject.CommonName != s.Certificate().Subject.CommonName {
		return fmt.Errorf("the certificate names %q, not %q", cert.Subject.CommonName, s.Certificate().Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.CA)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the certificate does not verify against the enrolled CA: %w", err)
	}
	return nil
}

// ReloadCertificate adopts the device certificate in the state directory
// if it is a valid later one for this key (written by `uploadbox enroll
// --renew` while the daemon runs). It reports whether it changed.
func (s *State) ReloadCertificate() (bool, error) {
	data, err := os.ReadFile(filepath.Join(s.Dir, DeviceCertFile))
	if err != nil {
		return false, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return false, fmt.Errorf("%s is not PEM", filepath.Join(s.Dir, DeviceCertFile))
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return false, err
	}
	if !cert.NotAfter.After(s.Certificate().NotAfter) {
		return false, nil
	}
	if err := s.checkCertificate(cert); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(s.Dir, DeviceCertFile), err)
	}
	s.useCertificate(cert)
	return true, nil
}

// Renew asks the receiver, over the box's mutual TLS, for a new
// certificate of the same device key, writes it to the state directory
// atomically (owned like the file it replaces) and presents it in every
// new handshake from then on. Open connections go on with the old one,
// which the receiver accepts until it expires.
func (s *State) Renew(ctx context.Context) (*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Receiver.JoinPath(wire.RenewPath).String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("renew: the receiver refused (HTTP %d): %s; check the box's enrollment (uploadbox-receiver devices list)", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var rr wire.RenewResponse
	if err := json.Unmarshal(data, &rr); err != nil {
		return nil, fmt.Errorf("renew: bad response: %w", err)
	}
	b, _ := pem.Decode([]byte(rr.Certificate))
	if b == nil {
		return nil, errors.New("renew: the receiver sent no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if err := s.checkCertificate(cert); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	path := filepath.Join(s.Dir, DeviceCertFile)
	if err := replaceOwned(path, []byte(rr.Certificate)); err != nil {
		return nil, fmt.Errorf("renew: write %s: %w (the receiver issued the certificate; run uploadbox enroll --renew again)", path, err)
	}
	s.useCertificate(cert)
	return cert, nil
}

// RenewState renews the certificate of the box enrolled in dir (`uploadbox
// enroll --renew`).
func RenewState(ctx context.Context, dir string) (*State, *x509.Certificate, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, nil, err
	}
	cert, err := st.Renew(ctx)
	return st, cert, err
}

// replaceOwned replaces path atomically with mode 0600 and, when run as
// root, the owner of the file it replaces, so that a renewal by hand
// leaves nothing the daemon's user cannot read.
func replaceOwned(path string, data []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path+".new", data, 0o600); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := os.Chown(path+".new", int(st.Uid), int(st.Gid)); err != nil {
			os.Remove(path + ".new")
			return err
		}
	}
	if err := os.Rename(path+".new", path); err != nil {
		os.Remove(path + ".new")
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}
