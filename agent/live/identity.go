package live

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/wire"
)

// Files of the box's DTLS identity in its state directory.
const (
	DTLSCertFile = "live-dtls.crt"
	DTLSKeyFile  = "live-dtls.key" // 0600
)

// dtlsLifetime is long: pion refuses an expired certificate, and a new one
// has a new fingerprint that everyone who noted the old one must learn.
const dtlsLifetime = 10 * 365 * 24 * time.Hour

// Identity is the box's DTLS certificate, the same for every live session
// and across restarts, so that the fingerprint a viewer's browser receives
// in the SDP answer (a=fingerprint) can be compared with the one the box
// shows: DTLS-SRTP ends at the box, whatever relays the signalling.
type Identity struct {
	cert webrtc.Certificate
	// Fingerprint is the certificate's SHA-256 fingerprint as SDP carries
	// it (upper-case hex): "sha-256 AB:CD:…".
	Fingerprint string
	// NotAfter is when the certificate expires (and is replaced).
	NotAfter time.Time
}

// LoadOrCreateIdentity loads the box's DTLS identity from dir, or makes one
// (ECDSA P-256, self-signed; the key written 0600 and both files replaced
// atomically) when there is none or it has expired; created says so. A key
// file that group or others can read is an error naming the chmod to run.
func LoadOrCreateIdentity(dir string, now time.Time) (id *Identity, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, DTLSCertFile), filepath.Join(dir, DTLSKeyFile)
	c, err := wire.LoadKeyPair(certPath, keyPath)
	switch {
	case err == nil && now.Before(c.Leaf.NotAfter):
		id, err := identity(c)
		return id, false, err
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, false, fmt.Errorf("live view DTLS identity: %w", err)
	}
	if c, err = wire.SelfSigned([]string{"uploadbox-live"}, now, dtlsLifetime); err != nil {
		return nil, false, fmt.Errorf("live view DTLS identity: %w", err)
	}
	if err := wire.WriteKeyPair(certPath, keyPath, c); err != nil {
		return nil, false, fmt.Errorf("live view DTLS identity: %w", err)
	}
	id, err = identity(c)
	return id, err == nil, err
}

func identity(c tls.Certificate) (*Identity, error) {
	cert := webrtc.CertificateFromX509(c.PrivateKey, c.Leaf)
	fps, err := cert.GetFingerprints()
	if err != nil || len(fps) == 0 {
		return nil, fmt.Errorf("live view DTLS identity: no fingerprint: %v", err)
	}
	return &Identity{cert: cert, Fingerprint: fps[0].Algorithm + " " + strings.ToUpper(fps[0].Value), NotAfter: cert.Expires()}, nil
}

// configure makes every peer connection of cfg use the identity; without
// one, pion makes a fresh certificate per peer connection.
func (id *Identity) configure(cfg webrtc.Configuration) webrtc.Configuration {
	if id != nil {
		cfg.Certificates = []webrtc.Certificate{id.cert}
	}
	return cfg
}
