// Package netfail names why a connection to the receiver failed, the same
// way for `uploadbox diag` (the receiver check's cause) and for the
// daemon's log and status, so that a person reads one cause and one remedy
// instead of a transport's raw error.
package netfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// Causes of a failed connection (docs/diag.md, "Receiver stages and causes").
const (
	Clock      = "clock"
	WrongName  = "wrong-name"
	UnknownCA  = "unknown-ca"
	TLSVersion = "tls-version"
	Refused    = "refused"
	Timeout    = "timeout"
	DNS        = "dns"
	Other      = "other"
)

// Classify names the cause of a connection failure.
func Classify(err error) string {
	var (
		hostErr    x509.HostnameError
		authErr    x509.UnknownAuthorityError
		invalidErr x509.CertificateInvalidError
		dnsErr     *net.DNSError
		netErr     net.Error
	)
	switch {
	case errors.As(err, &hostErr):
		return WrongName
	case errors.As(err, &authErr):
		return UnknownCA
	case errors.As(err, &invalidErr) && invalidErr.Reason == x509.Expired:
		return Clock
	case strings.Contains(err.Error(), "protocol version"):
		// A TLS alert 70 from the server, or a server that chose a
		// version the client refuses.
		return TLSVersion
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return Timeout
	case errors.As(err, &dnsErr):
		return DNS
	}
	return Other
}

// Is reports whether err is a failure of the connection itself (DNS, TCP,
// TLS, a transport error), not an answer of the receiver.
func Is(err error) bool {
	var (
		urlErr  *url.Error
		opErr   *net.OpError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		alert   tls.AlertError
	)
	return errors.As(err, &urlErr) || errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.As(err, &certErr) || errors.As(err, &alert) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET)
}

// Describe returns, for a connection failure, its cause and one sentence
// that says what happened and what to do, without the transport's own
// words; ok is false when err is not a connection failure.
func Describe(err error) (cause, text string, ok bool) {
	if err == nil || !Is(err) {
		return "", "", false
	}
	cause = Classify(err)
	switch cause {
	case DNS:
		text = "the receiver's name does not resolve: check the box's DNS and the receiver URL"
	case Refused:
		text = "the receiver refused the connection: check that it runs and the port in the receiver URL"
	case Timeout:
		text = "the receiver did not answer in time: check the network and any firewall or proxy on the way"
	case WrongName:
		text = "the receiver's certificate is not for the name in the receiver URL: check the URL"
	case UnknownCA:
		text = "the server's certificate is not from the CA this box enrolled with: a wrong receiver or an intercepting proxy"
	case Clock:
		text = "a certificate is expired or not yet valid at the box's time: check the clock"
	case TLSVersion:
		text = "the receiver offers neither TLS 1.2 nor 1.3: upgrade it or the proxy in front of it"
	default:
		text = "the connection to the receiver failed or broke off: check the network and that the receiver runs (`uploadbox diag`)"
	}
	return cause, text, true
}

// Attrs are the log attributes of err: for a connection failure its cause
// and Describe's sentence ("cause", "err"), otherwise "err" as it is.
func Attrs(err error) []any {
	if cause, text, ok := Describe(err); ok {
		return []any{"cause", cause, "err", text}
	}
	return []any{"err", err}
}

// Text is err in a person's words: Describe's sentence with its cause for a
// connection failure, otherwise err's own text.
func Text(err error) string {
	if cause, text, ok := Describe(err); ok {
		return text + " (" + cause + ")"
	}
	return err.Error()
}
