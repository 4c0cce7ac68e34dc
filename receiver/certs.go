package receiver

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// CertInfo describes one certificate the receiver holds, as `certs show`
// prints it.
type CertInfo struct {
	// Role is ca, server, server-previous (kept by the last reissue) or web.
	Role      string    `json:"role"`
	Path      string    `json:"path"`
	Subject   string    `json:"subject"`
	Names     []string  `json:"names"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

// Certificates reads the certificates in the data directory (the CA, the
// server certificate and, after a reissue, the previous one) and the web
// listener's certificate webCert when given. It reads no private key.
func Certificates(data, webCert string) ([]CertInfo, error) {
	type file struct{ role, path string }
	files := []file{
		{"ca", filepath.Join(data, pki.CACertFile)},
		{"server", filepath.Join(data, pki.ServerCertFile)},
		{"server-previous", filepath.Join(data, pki.ServerCertFile+pki.OldSuffix)},
	}
	if webCert != "" {
		files = append(files, file{"web", webCert})
	}
	var out []CertInfo
	for _, f := range files {
		c, err := readCertificate(f.path)
		switch {
		case errors.Is(err, os.ErrNotExist) && f.role == "server-previous":
			continue // no reissue yet
		case errors.Is(err, os.ErrNotExist) && f.role != "web":
			return nil, fmt.Errorf("%s: no such file: is %s the receiver's data directory? The receiver makes its certificates at its first start", f.path, data)
		case err != nil:
			return nil, err
		}
		out = append(out, CertInfo{Role: f.role, Path: f.path, Subject: c.Subject.String(), Names: pki.Names(c),
			Serial: fmt.Sprintf("%x", c.SerialNumber), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SHA256: wire.Fingerprint(c)})
	}
	return out, nil
}

// readCertificate parses the first certificate of a PEM file (a chain's
// leaf).
func readCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no CERTIFICATE PEM block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
