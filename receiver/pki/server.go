package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	ubxcrypto "github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/wire"
)

// OldSuffix names the previous server certificate and key that a reissue
// keeps beside the new ones (server.crt.old, server.key.old).
const OldSuffix = ".old"

// Names lists the host names and then the IP addresses a certificate is
// valid for.
func Names(c *x509.Certificate) []string {
	names := append([]string{}, c.DNSNames...) // [] rather than null in JSON
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// CheckHost reports a server name that is neither an IP address nor a
// DNS name (letters, digits and hyphens in dot-separated labels).
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	bad := h == "" || len(h) > 253
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			bad = true
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				bad = true
			}
		}
	}
	if bad {
		return fmt.Errorf("%q is neither a host name (letters, digits, hyphens and dots) nor an IP address", h)
	}
	return nil
}

// normalize lower-cases host names and writes IPs in their canonical
// form, sorted, so that two lists of the same names compare equal.
func normalize(hosts []string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			out = append(out, ip.String())
		} else {
			out = append(out, strings.ToLower(h))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// SameNames reports whether c is valid for exactly hosts, in any order.
func SameNames(c *x509.Certificate, hosts []string) bool {
	return slices.Equal(normalize(Names(c)), normalize(hosts))
}

// ReissueServer makes a new server certificate and key for hosts, signed
// by the CA, and stores them in dir in place of the current pair, which
// is kept as server.crt.old and server.key.old (replacing older ones).
// Every file is replaced atomically, the copies of the old pair first.
func (ca *CA) ReissueServer(dir string, hosts []string, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	oldCert, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	oldKey, err := ubxcrypto.ReadPrivateFile(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(oldKey)
	if err := atomicfile.Write(keyPath+OldSuffix, oldKey, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("keep the previous server key: %w", err)
	}
	if err := atomicfile.Write(certPath+OldSuffix, oldCert, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("keep the previous server certificate: %w", err)
	}
	srv, err := ca.IssueServer(hosts, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := wire.WriteKeyPair(certPath, keyPath, srv); err != nil {
		return tls.Certificate{}, err
	}
	return srv, nil
}
