package netfail

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestDescribe: real connection failures get diag's cause and a sentence
// without the transport's words; answers and other errors are not
// connection failures.
func TestDescribe(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, refused := http.Get("http://" + closed + "/")

	// A TLS server whose CA the client does not know.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, unknownCA := http.Get(srv.URL)

	// A server that holds the request past the client's deadline.
	hold := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hold }))
	defer slow.Close()
	defer close(hold)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, slow.URL, nil)
	_, timeout := http.DefaultClient.Do(req)

	tests := []struct {
		name  string
		err   error
		cause string // "" when not a connection failure
	}{
		{"refused", refused, Refused},
		{"unknown CA", unknownCA, UnknownCA},
		{"timeout", timeout, Timeout},
		{"dns", &url.Error{Op: "Post", URL: "https://receiver.invalid/v1/commit", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "receiver.invalid", IsNotFound: true}}}, DNS},
		{"http2 pool", &url.Error{Op: "Patch", URL: "https://127.0.0.1:1/v1/uploads/x", Err: errors.New("http2: client conn could not be established")}, Other},
		{"wrapped by the uploader", errors.Join(errors.New("upload a.ubx"), refused), Refused},
		{"a refusal", errors.New("commit: HTTP 409 exists: segment already stored"), ""},
		{"a spool error", errors.New("spool: segment x: illegal transition"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("the test did not get its error")
			}
			cause, text, ok := Describe(tc.err)
			if ok != (tc.cause != "") || cause != tc.cause {
				t.Fatalf("Describe(%v) = %q, %q, %v; want cause %q", tc.err, cause, text, ok, tc.cause)
			}
			attrs := Attrs(tc.err)
			if !ok {
				if len(attrs) != 2 || attrs[1] != tc.err || Text(tc.err) != tc.err.Error() {
					t.Errorf("a non-network error is not passed through: %v", attrs)
				}
				return
			}
			for _, raw := range []string{"http2", "dial tcp", "x509", "127.0.0.1", "context deadline"} {
				if strings.Contains(text, raw) || strings.Contains(Text(tc.err), raw) {
					t.Errorf("%q carries the transport's words (%s)", text, raw)
				}
			}
			if strings.Count(text, ": ") != 1 || !strings.Contains(Text(tc.err), "("+cause+")") {
				t.Errorf("%q is not one sentence: what happened: what to do", text)
			}
		})
	}
}
