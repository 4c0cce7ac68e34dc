// Package pki is the receiver's small certificate authority: it makes the
// CA and the server certificate on first run, signs device client
// certificates at enrollment, and builds the receiver's TLS configuration,
// which accepts only TLS 1.2 and later. What a box needs too (its client
// TLS configuration, fingerprints, key pair files) is in package wire.
//
// The CA and server keys are ECDSA P-256 (every TLS stack speaks it: Go,
// OpenSSL, Node). Device certificates certify the device's own Ed25519
// key, made on the box; the receiver never sees a device private key.
package pki

import (
	stdcrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	ubxcrypto "github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/wire"
)

// File names inside the receiver's data directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Lifetimes of what the CA issues.
const (
	CALifetime     = 10 * 365 * 24 * time.Hour
	ServerLifetime = 825 * 24 * time.Hour
	DeviceLifetime = 2 * 365 * 24 * time.Hour
)

// CA signs server and device certificates.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Fingerprint is the SHA-256 of the CA certificate, in hex: what an
// administrator hands to a box at enrollment so it can pin the CA.
func (ca *CA) Fingerprint() string { return wire.Fingerprint(ca.Cert) }

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA makes a fresh CA named after the receiver.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "uploadbox receiver CA " + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// IssueServer makes a server certificate for the host names and IPs.
func (ca *CA) IssueServer(hosts []string, now time.Time) (tls.Certificate, error) {
	return wire.ServerCertificate(hosts, now, ServerLifetime, ca.Cert, ca.key)
}

// IssueDevice certifies a device's Ed25519 public key for client
// authentication. The certificate names the device; its serial number is
// what a revocation refers to.
func (ca *CA) IssueDevice(name string, pub ed25519.PublicKey, now time.Time) (*x509.Certificate, error) {
	return ca.IssueDeviceFor(name, pub, now, DeviceLifetime)
}

// IssueDeviceFor is IssueDevice with a certificate valid for lifetime from
// now (and wire.DeviceCertBackdate before it).
func (ca *CA) IssueDeviceFor(name string, pub ed25519.PublicKey, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("pki: device key must be an Ed25519 public key")
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{"uploadbox device"}},
		NotBefore:    now.Add(-wire.DeviceCertBackdate),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// VerifyDevice checks that a client certificate chains to the CA and is
// meant for client authentication.
func (ca *CA) VerifyDevice(c *x509.Certificate, now time.Time) error {
	_, err := c.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("device certificate %q: %w", c.Subject.CommonName, err)
	}
	return nil
}

// ServerTLS is the receiver's TLS configuration: TLS 1.2 minimum with
// TLS12Suites, client certificates requested (enrollment has none yet)
// and checked against the CA, and revoked reports whether a device
// certificate is revoked. The check is done in VerifyPeerCertificate
// rather than by crypto/tls itself so that a caller can wrap that
// function and see (and audit) every refused certificate, a foreign CA's
// included.
func ServerTLS(ca *CA, cert tls.Certificate, revoked func(*x509.Certificate) bool) *tls.Config {
	pool := ca.Pool()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: wire.TLS12Suites(),
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		ClientCAs:    pool, // named in the certificate request, so clients pick the right one
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("client certificate: %w", err)
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			leaf := certs[0]
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots: pool, Intermediates: inter, CurrentTime: time.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}); err != nil {
				return fmt.Errorf("client certificate %q (serial %x) is not valid for this receiver: %w", leaf.Subject.CommonName, leaf.SerialNumber, err)
			}
			if revoked != nil && revoked(leaf) {
				return fmt.Errorf("device certificate %q (serial %x) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
			}
			return nil
		},
	}
}

// ClientTLS is wire.ClientTLS, named here for the receiver's tests and
// tools that dial it as a box would.
func ClientTLS(caPool *x509.CertPool, serverName string, device *tls.Certificate) *tls.Config {
	return wire.ClientTLS(caPool, serverName, device)
}

// DeviceCertificate is wire.DeviceCertificate, named here beside
// IssueDevice.
func DeviceCertificate(cert *x509.Certificate, key stdcrypto.Signer) tls.Certificate {
	return wire.DeviceCertificate(cert, key)
}

// LoadOrCreate loads the CA and server certificate from dir or, on first
// run, makes them (keys 0600). hosts are the server's names and IPs.
func LoadOrCreate(dir string, hosts []string, now time.Time) (*CA, tls.Certificate, bool, error) {
	caPath := filepath.Join(dir, CACertFile)
	if _, err := os.Stat(caPath); errors.Is(err, os.ErrNotExist) {
		ca, err := NewCA(hosts[0], now)
		if err != nil {
			return nil, tls.Certificate{}, false, err
		}
		srv, err := ca.IssueServer(hosts, now)
		if err != nil {
			return nil, tls.Certificate{}, false, err
		}
		if err := ca.save(dir, srv); err != nil {
			return nil, tls.Certificate{}, false, err
		}
		return ca, srv, true, nil
	}
	ca, srv, err := load(dir)
	return ca, srv, false, err
}

func (ca *CA) save(dir string, srv tls.Certificate) error {
	if err := wire.WriteKeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile), srv); err != nil {
		return err
	}
	// The CA certificate last (WriteKeyPair writes the key first): its
	// presence marks a complete set.
	caPair := tls.Certificate{Certificate: [][]byte{ca.Cert.Raw}, PrivateKey: ca.key}
	return wire.WriteKeyPair(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile), caPair)
}

func readPEM(path, typ string) ([]byte, error) {
	var data []byte
	var err error
	if typ == "PRIVATE KEY" {
		data, err = ubxcrypto.ReadPrivateFile(path)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("%s: no %s PEM block", path, typ)
	}
	return b.Bytes, nil
}

func load(dir string) (*CA, tls.Certificate, error) {
	var srv tls.Certificate
	caDER, err := readPEM(filepath.Join(dir, CACertFile), "CERTIFICATE")
	if err != nil {
		return nil, srv, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, srv, fmt.Errorf("%s: %w", CACertFile, err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	keyDER, err := readPEM(keyPath, "PRIVATE KEY")
	if err != nil {
		return nil, srv, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, srv, fmt.Errorf("%s: %w", CAKeyFile, err)
	}
	caKey, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, srv, fmt.Errorf("%s: not an ECDSA key", CAKeyFile)
	}
	srv, err = wire.LoadKeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return nil, srv, fmt.Errorf("server certificate: %w", err)
	}
	srv.Certificate = append(srv.Certificate, caCert.Raw)
	return &CA{Cert: caCert, key: caKey}, srv, nil
}
