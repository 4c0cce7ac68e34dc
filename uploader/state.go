// Package uploader is the box's side of upload: enrollment with the
// receiver, the TLS client that trusts only the enrolled CA, and the loop
// that drains the spool (upload, commit, check the receipt, wipe).
package uploader

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/wire"
)

// Files in the box's state directory, all 0600.
const (
	DeviceKeyFile  = "device.key"
	DeviceCertFile = "device.crt"
	CAFile         = "ca.crt"
	ReceiptKeyFile = "receipt.pub"
	RecipientsFile = "org.pub"
	ReceiverFile   = "receiver"
	// TokenKeyFile is the receiver's viewer-token public key; a state from
	// a receiver older than viewer accounts has none.
	TokenKeyFile = viewtoken.ReceiverKeyFile
)

// State is what enrollment left on the box.
type State struct {
	Dir        string
	Receiver   *url.URL
	Device     *crypto.DeviceKey
	DeviceCert tls.Certificate // as loaded; after a renewal see Certificate (renew.go)
	CA         *x509.Certificate
	ReceiptKey ed25519.PublicKey
	Recipients []*crypto.Recipient
	// TokenKey verifies viewer tokens the receiver issues; nil if the
	// receiver sent none at enrollment.
	TokenKey ed25519.PublicKey

	clientOnce sync.Once
	client     *http.Client
	// cert is the device certificate presented in new handshakes; a
	// renewal replaces it without touching open connections.
	cert atomic.Pointer[tls.Certificate]
}

// TLSConfig trusts only the enrolled CA and presents the device
// certificate; TLS 1.2 is the minimum.
func (s *State) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.CA)
	c := wire.ClientTLS(pool, s.Receiver.Hostname(), nil)
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }
	return c
}

// HTTPClient is the client for the receiver with the state's TLS
// settings. It is made on the first call and shared by every later one, so
// the uploads after each sealed segment reuse one kept-alive connection
// instead of each opening (and leaving idle) its own; a drain with more
// than one segment keeps a second one for the commit that runs while the
// next segment is sent, and a third for the creation of the upload after
// it (a new connection costs a handshake and the receiver's audited,
// fsynced device.connect). It speaks HTTP/1.1: the box sends one upload at a
// time, and HTTP/2 buffers each request body
// in frames of up to 512 KiB (the receiver accepts 1 MiB frames), which
// cost the daemon about 1.3 MiB of peak RSS during a session (`make bench`).
func (s *State) HTTPClient() *http.Client {
	s.clientOnce.Do(func() {
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		s.client = &http.Client{Transport: &http.Transport{
			TLSClientConfig:     s.TLSConfig(),
			DialContext:         dialCapped,
			TLSHandshakeTimeout: 10 * time.Second,
			Protocols:           protos,
			IdleConnTimeout:     90 * time.Second,
			MaxIdleConnsPerHost: 3,
		}}
	})
	return s.client
}

// SendBuffer caps the kernel's send buffer (SO_SNDBUF) of the box's
// connections to the receiver. Bytes the kernel holds when a connection
// dies are sent again, and on a fast link Linux grows the buffer to
// megabytes: uncapped, each cut cost about 1.8 MB in `make bench` (10
// cuts, 1 GiB), capped about 0.3 MB. Linux doubles the value for its own
// bookkeeping; the few hundred KiB it lets in flight bound a connection to
// that much per round trip: some 3 MB/s at 100 ms, ten times a 2.5 Mbit/s
// recording.
const SendBuffer = 256 << 10

// dialCapped dials like net.Dialer and caps the send buffer (SendBuffer).
func dialCapped(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(SendBuffer) // a refusal only costs more bytes after a cut
	}
	return c, err
}

// LoadState reads an enrolled state directory.
func LoadState(dir string) (*State, error) {
	s := &State{Dir: dir}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("state %s: %w (is the box enrolled? run uploadbox enroll)", dir, err)
		}
		return b, nil
	}
	u, err := read(ReceiverFile)
	if err != nil {
		return nil, err
	}
	if s.Receiver, err = url.Parse(strings.TrimSpace(string(u))); err != nil {
		return nil, fmt.Errorf("state %s: receiver URL: %w", dir, err)
	}
	if s.Device, err = crypto.ReadDeviceKeyFile(filepath.Join(dir, DeviceKeyFile)); err != nil {
		return nil, err
	}
	certPEM, err := read(DeviceCertFile)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, fmt.Errorf("state %s: %s is not PEM", dir, DeviceCertFile)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	s.DeviceCert = wire.DeviceCertificate(cert, s.Device.Signer())
	s.cert.Store(&s.DeviceCert)
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	if b, _ = pem.Decode(caPEM); b == nil {
		return nil, fmt.Errorf("state %s: %s is not PEM", dir, CAFile)
	}
	if s.CA, err = x509.ParseCertificate(b.Bytes); err != nil {
		return nil, err
	}
	rk, err := read(ReceiptKeyFile)
	if err != nil {
		return nil, err
	}
	if s.ReceiptKey, err = wire.ParseReceiptKey(string(rk)); err != nil {
		return nil, fmt.Errorf("state %s: %s: %w", dir, ReceiptKeyFile, err)
	}
	if s.Recipients, err = crypto.ReadRecipientsFile(filepath.Join(dir, RecipientsFile)); err != nil {
		return nil, err
	}
	if k, err := viewtoken.ReadPublicKeyFile(filepath.Join(dir, TokenKeyFile)); err == nil {
		s.TokenKey = k
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state %s: %w", dir, err)
	}
	return s, nil
}

// Enroll makes the device key on the box, proves it to the receiver with
// the one-time token over TLS pinned to the CA fingerprint, and stores the
// device certificate, CA, receipt key and organisation recipients in dir.
func Enroll(ctx context.Context, receiverURL, token, caFingerprint, dir string) (*State, error) {
	u, err := url.Parse(receiverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("enroll: --receiver %q must be an https:// URL", receiverURL)
	}
	caFingerprint = strings.ToLower(strings.ReplaceAll(caFingerprint, ":", ""))
	if len(caFingerprint) != 64 {
		return nil, errors.New("enroll: --ca-fingerprint must be the 64 hex digits printed by uploadbox-receiver devices add")
	}
	if _, err := os.Stat(filepath.Join(dir, DeviceKeyFile)); err == nil {
		return nil, fmt.Errorf("enroll: %s already holds a device key: this box is enrolled (use a new --state directory to enroll again)", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		return nil, err
	}
	// Before enrollment nothing is trusted: the server must present a chain
	// whose CA has the fingerprint the administrator gave us.
	var pinned *x509.Certificate
	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       wire.TLS12Suites(),
		InsecureSkipVerify: true, // replaced by the pinned verification below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
				if wire.Fingerprint(c) == caFingerprint {
					pinned = c
				}
			}
			if pinned == nil || len(certs) == 0 {
				return fmt.Errorf("the receiver's CA does not have fingerprint %s", caFingerprint)
			}
			pool := x509.NewCertPool()
			pool.AddCert(pinned)
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: u.Hostname()})
			return err
		},
	}
	body, _ := json.Marshal(wire.EnrollRequest{
		Token:     token,
		DeviceKey: dev.Public().String(),
		Proof:     base64.StdEncoding.EncodeToString(dev.Sign(wire.EnrollProof(token))),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath("/v1/enroll").String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll: the receiver refused (HTTP %d): %s; check the token (one use, 24 h) or ask the administrator (devices unlock)", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil {
		return nil, fmt.Errorf("enroll: bad response: %w", err)
	}
	b, _ := pem.Decode([]byte(er.Certificate))
	if b == nil {
		return nil, errors.New("enroll: the receiver sent no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	if pk, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !pk.Equal(ed25519.PublicKey(dev.Public().Bytes())) {
		return nil, errors.New("enroll: the certificate is not for this device's key")
	}
	if cb, _ := pem.Decode([]byte(er.CA)); cb == nil || wire.Fingerprint(mustParse(cb.Bytes)) != caFingerprint {
		return nil, errors.New("enroll: the receiver sent another CA than the pinned one")
	}
	if _, err := wire.ParseReceiptKey(er.ReceiptKey); err != nil {
		return nil, fmt.Errorf("enroll: the receiver sent no valid receipt key: %w", err)
	}
	var rs []*crypto.Recipient
	for _, line := range er.Recipients {
		rc, err := crypto.ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("enroll: recipient from the receiver: %w", err)
		}
		rs = append(rs, rc)
	}
	if len(rs) == 0 {
		return nil, errors.New("enroll: the receiver sent no organisation recipients")
	}
	if er.TokenKey != "" {
		if _, err := viewtoken.ParsePublicKey(er.TokenKey); err != nil {
			return nil, fmt.Errorf("enroll: token key from the receiver: %w", err)
		}
	}
	files := []struct{ name, content string }{
		{ReceiverFile, u.String() + "\n"},
		{DeviceCertFile, er.Certificate},
		{CAFile, er.CA},
		{ReceiptKeyFile, er.ReceiptKey + "\n"},
		{RecipientsFile, strings.Join(er.Recipients, "\n") + "\n"},
		{TokenKeyFile, er.TokenKey + "\n"},
		// The key last: its presence marks a complete enrollment.
		{DeviceKeyFile, "# uploadbox device signing key; it never leaves this box\n" + dev.String() + "\n"},
	}
	for _, f := range files {
		if f.name == TokenKeyFile && er.TokenKey == "" {
			continue
		}
		if err := crypto.WriteKeyFile(filepath.Join(dir, f.name), f.content, 0o600); err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
	}
	return LoadState(dir)
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return &x509.Certificate{}
	}
	return c
}
