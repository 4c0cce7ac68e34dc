package tus

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestCertificateRefused: a server that refuses the client's certificate in
// the handshake (as the receiver refuses a revoked box) is recognised, over
// TLS 1.2 and 1.3, and the refusal is not retried; other errors are not.
func TestCertificateRefused(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
			srv.TLS = &tls.Config{MinVersion: v, MaxVersion: v, ClientAuth: tls.RequestClientCert,
				VerifyConnection: func(tls.ConnectionState) error { return errors.New("device is not active") }}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			defer srv.Close()
			ep, _ := url.Parse(srv.URL + "/files/")
			c := NewClient(srv.Client(), ep, Options{})
			_, err := c.Create(t.Context(), 10, nil)
			if err == nil || !CertificateRefused(err) {
				t.Fatalf("Create against a server refusing the certificate: %v; CertificateRefused false", err)
			}
			if retryable(err) {
				t.Errorf("a refused certificate is retried: %v", err)
			}
		})
	}
	for _, err := range []error{
		errors.New("tls: bad certificate"),
		&net.OpError{Op: "read", Err: errors.New("connection reset by peer")},
		&net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")},
		context.Canceled,
	} {
		if CertificateRefused(err) {
			t.Errorf("CertificateRefused(%v) = true", err)
		}
	}
}
