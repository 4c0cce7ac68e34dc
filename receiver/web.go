package receiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/wire"
)

// webRoutes are the patterns of Handler's routes that the web listener
// (ServerConfig.WebListen) serves too: what a coach's browser needs. A
// request there that matches any other route (uploads, commit, control,
// enroll, audit checkpoints) is answered 404. Serving one more route to
// browsers is one more line here, with the pattern exactly as Handler
// registers it.
var webRoutes = []string{
	// The coach page and its assets, when Handler serves them
	// (internal/viewerweb.Patterns).
	"GET /{$}",
	"GET /viewer.js",
	"GET /viewer.css",
	"GET /teacher.js",
	"GET /",
	"/", // anything else: Handler's own 404
	"POST /v1/login",
	"GET /v1/rooms",
	"POST /v1/rooms/{device}/whep",
	"GET /v1/rooms/{device}/whep/{session}",
	"PATCH /v1/rooms/{device}/whep/{session}",
	"DELETE /v1/rooms/{device}/whep/{session}",
	"GET /v1/teacher/rooms",
	"GET /v1/teacher/events",
	"POST /v1/teacher/rooms/{device}/decision",
}

// CheckWebFlags reports a web listener configuration that cannot work:
// a certificate without its key (or the other way round), or either
// without a listener.
func CheckWebFlags(listen, cert, key string) error {
	switch {
	case (cert == "") != (key == ""):
		return errors.New("--web-cert and --web-key go together: give both files (the certificate chain and its private key), or neither to use the receiver's own certificate")
	case cert != "" && listen == "":
		return errors.New("--web-cert and --web-key need --web-listen ADDR (the address browsers connect to)")
	}
	return nil
}

// loadWebCertificate reads the administrator's web certificate chain and
// its private key (under the one rule for private key files: 0600, the
// error names the chmod to run) and refuses one that has expired.
func loadWebCertificate(certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	c, err := wire.LoadKeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("web certificate: %w", err)
	}
	if now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("web certificate %s expired on %s: renew it, then reload (SIGHUP) or restart the receiver", certPath, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// openWeb checks the web listener's settings and loads its certificate:
// the administrator's, or the receiver's own server certificate.
func (s *Server) openWeb() error {
	if err := CheckWebFlags(s.cfg.WebListen, s.cfg.WebCert, s.cfg.WebKey); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if s.cfg.WebListen == "" {
		return nil
	}
	if s.cfg.WebCert == "" {
		s.webCert.Store(s.serverCert.Load())
		return nil
	}
	c, err := loadWebCertificate(s.cfg.WebCert, s.cfg.WebKey, time.Now())
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	s.webCert.Store(c)
	return nil
}

// ReloadWebCertificate reads --web-cert and --web-key again (on SIGHUP).
// A good pair is used by every new handshake from now on; a bad one is
// logged and audited as web.certificate failed, and the previous pair
// stays in use. Without --web-cert there is nothing to reload.
func (s *Server) ReloadWebCertificate() error {
	if s.cfg.WebCert == "" {
		s.log.Info("no --web-cert: no web certificate to reload")
		return nil
	}
	c, err := loadWebCertificate(s.cfg.WebCert, s.cfg.WebKey, time.Now())
	if err != nil {
		s.log.Error("web certificate not reloaded: the previous one stays in use", "err", err)
		if _, aerr := s.audit.Append(audit.Entry{Event: "web.certificate", Source: "local", Outcome: "failed", Detail: "reload: " + err.Error() + "; the previous certificate stays in use"}); aerr != nil {
			s.log.Error("audit", "err", aerr)
		}
		return err
	}
	s.webCert.Store(c)
	s.logWebCertificate("web certificate reloaded", c)
	if _, aerr := s.audit.Append(audit.Entry{Event: "web.certificate", Source: "local", Outcome: "ok", Detail: "reloaded " + s.cfg.WebCert + ": " + webCertSummary(c)}); aerr != nil {
		s.log.Error("audit", "err", aerr)
	}
	return nil
}

func webCertSummary(c *tls.Certificate) string {
	return fmt.Sprintf("subject %q, serial %x, expires %s", c.Leaf.Subject.String(), c.Leaf.SerialNumber, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

func (s *Server) logWebCertificate(msg string, c *tls.Certificate) {
	s.log.Info(msg, "subject", c.Leaf.Subject.String(), "serial", fmt.Sprintf("%x", c.Leaf.SerialNumber),
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// WebAddr is the web listener's address once Run listens ("" without
// --web-listen).
func (s *Server) WebAddr() string { return s.webAddr }

// webHandler serves Handler's routes listed in webRoutes and answers
// everything else 404.
func (s *Server) webHandler() http.Handler {
	mux, ok := s.Handler().(*http.ServeMux)
	if !ok {
		panic("receiver: Handler is not a ServeMux")
	}
	allowed := make(map[string]bool, len(webRoutes))
	for _, p := range webRoutes {
		allowed[p] = true
	}
	notFound := s.bounded(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httpError(w, http.StatusNotFound, "no such endpoint")
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); allowed[pattern] {
			mux.ServeHTTP(w, r)
			return
		}
		notFound.ServeHTTP(w, r)
	})
}

// webTLS asks for no client certificate and presents the current web
// certificate, read at each handshake so that a reload applies to the
// next one.
func (s *Server) webTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: wire.TLS12Suites(),
		NextProtos:   []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.webCert.Load(), nil
		},
	}
}

// startWeb listens on --web-listen and serves the coach-facing routes
// there; it returns nil without --web-listen. The server's end is sent to
// errc.
func (s *Server) startWeb(ctx context.Context, errc chan<- error) (*http.Server, error) {
	if s.cfg.WebListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.WebListen)
	if err != nil {
		return nil, fmt.Errorf("serve: --web-listen %s: %w", s.cfg.WebListen, err)
	}
	s.webAddr = ln.Addr().String()
	srv := s.httpServer(ctx, s.webHandler(), s.webTLS())
	s.logWebCertificate("web listener (no client certificates)", s.webCert.Load())
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	return srv, nil
}

// httpServer is an HTTPS server of the receiver's (the main listener and
// the web listener): header and idle timeouts, errors to the debug log.
func (s *Server) httpServer(ctx context.Context, h http.Handler, tc *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
}
