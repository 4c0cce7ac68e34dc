package wire

import (
	stdcrypto "crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	ubxcrypto "github.com/uploadbox/uploadbox/crypto"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// TLS12Suites are the cipher suites the receiver and its clients allow
// under TLS 1.2: ECDHE key exchange with an AEAD (AES-GCM or
// ChaCha20-Poly1305), never CBC. TLS 1.3 suites are not configurable and
// all AEAD.
func TLS12Suites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// ClientTLS is a box's TLS configuration: it trusts only the pinned CA,
// never the system roots, and presents the device certificate if given.
func ClientTLS(caPool *x509.CertPool, serverName string, device *tls.Certificate) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: TLS12Suites(), RootCAs: caPool, ServerName: serverName}
	if device != nil {
		c.Certificates = []tls.Certificate{*device}
	}
	return c
}

// DeviceCertificate pairs a device certificate with the device's key for
// client authentication.
func DeviceCertificate(cert *x509.Certificate, key stdcrypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// Fingerprint returns the hex SHA-256 of a certificate's DER encoding:
// how an administrator names the receiver's CA to a box at enrollment,
// and how a viewer checks the box's live view certificate.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// SelfSigned makes a self-signed server certificate (ECDSA P-256) for the
// host names and IPs, valid for lifetime: for a server that nobody pins
// through a CA, such as the box's live view.
func SelfSigned(hosts []string, now time.Time, lifetime time.Duration) (tls.Certificate, error) {
	return ServerCertificate(hosts, now, lifetime, nil, nil)
}

// ServerCertificate makes a server certificate (ECDSA P-256) for the host
// names and IPs, valid for lifetime, signed by parent's key parentKey, or
// by its own key when parent is nil. The chain holds the parent too.
func ServerCertificate(hosts []string, now time.Time, lifetime time.Duration, parent *x509.Certificate, parentKey stdcrypto.Signer) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("server certificate: no host name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	signer := stdcrypto.Signer(key)
	if parent == nil {
		parent = tmpl
	} else {
		signer = parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	chain := [][]byte{der}
	if parent != tmpl {
		chain = append(chain, parent.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// WriteKeyPair stores a certificate's leaf and private key as PEM files,
// key first, each replaced atomically and fsynced with its directory; the
// key file is 0600.
func WriteKeyPair(certPath, keyPath string, c tls.Certificate) error {
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644)
}

// LoadKeyPair is tls.LoadX509KeyPair with the private key read under the
// one rule for private key files (regular, at most 64 KiB, not readable by
// group or others: the error names the chmod to run).
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := ubxcrypto.ReadPrivateFile(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(keyPEM)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s and %s: %w", certPath, keyPath, err)
	}
	return c, nil
}
