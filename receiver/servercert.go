package receiver

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// serverCertFor is the main listener's certificate for a handshake: the
// current server certificate or, for a client that asks (by SNI) for a
// name that only the certificate it replaced covers, that one, until the
// receiver stops: boxes still set up with a removed name keep reaching it
// until the restart.
func (s *Server) serverCertFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := s.serverCert.Load()
	if old := s.oldCert.Load(); old != nil && hello.ServerName != "" &&
		cur.Leaf.VerifyHostname(hello.ServerName) != nil && old.Leaf.VerifyHostname(hello.ServerName) == nil {
		return old, nil
	}
	return cur, nil
}

// RenewServerBefore is how long before its expiry the server certificate
// is reissued (for the same names) at a start or a reload.
const RenewServerBefore = 30 * 24 * time.Hour

// followHosts makes the server certificate name exactly hosts (none: the
// names it has) and keeps it from expiring: when the stored one names
// others, or expires within RenewServerBefore, it is reissued from the CA
// (the old pair kept as server.crt.old and server.key.old), logged with
// both lists of names and fingerprints, and audited as
// server.certificate.
func (s *Server) followHosts(hosts []string, why string) error {
	if err := CheckHosts(hosts); err != nil {
		return err
	}
	cur := s.serverCert.Load()
	msg := "server certificate reissued for new host names"
	switch {
	case len(hosts) > 0 && !pki.SameNames(cur.Leaf, hosts):
	case time.Until(cur.Leaf.NotAfter) < RenewServerBefore:
		msg = "server certificate reissued: it expires within 30 days"
		why += ", expires " + cur.Leaf.NotAfter.UTC().Format(time.RFC3339)
		if len(hosts) == 0 {
			hosts = pki.Names(cur.Leaf)
		}
	default:
		return nil
	}
	c, err := s.ca.ReissueServer(s.cfg.Data, hosts, time.Now())
	if err != nil {
		if _, aerr := s.audit.Append(audit.Entry{Event: "server.certificate", Source: "local", Outcome: "failed",
			Detail: fmt.Sprintf("%s: reissue for %s: %v", why, strings.Join(hosts, ", "), err)}); aerr != nil {
			s.log.Error("audit", "err", aerr)
		}
		return fmt.Errorf("reissue the server certificate for %s: %w", strings.Join(hosts, ", "), err)
	}
	s.oldCert.Store(cur)
	s.serverCert.Store(&c)
	if s.cfg.WebListen != "" && s.cfg.WebCert == "" {
		s.webCert.Store(&c)
	}
	oldNames, newNames := strings.Join(pki.Names(cur.Leaf), ", "), strings.Join(pki.Names(c.Leaf), ", ")
	oldFP, newFP := wire.Fingerprint(cur.Leaf), wire.Fingerprint(c.Leaf)
	kept := filepath.Join(s.cfg.Data, pki.ServerCertFile+pki.OldSuffix)
	s.log.Info(msg, "reason", why,
		"old_names", oldNames, "old_sha256", oldFP, "new_names", newNames, "new_sha256", newFP,
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "old_kept", kept)
	_, err = s.audit.Append(audit.Entry{Event: "server.certificate", Source: "local", Outcome: "ok",
		Detail: fmt.Sprintf("%s: reissued for %s (sha256 %s), was %s (sha256 %s, kept as %s)", why, newNames, newFP, oldNames, oldFP, kept)})
	return err
}

// CheckHosts reports a --hostname that is neither a DNS name nor an IP
// address.
func CheckHosts(hosts []string) error {
	for _, h := range hosts {
		if err := pki.CheckHost(h); err != nil {
			return fmt.Errorf("--hostname: %w", err)
		}
	}
	return nil
}
