package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/live"
	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/wire"
)

// Files of the live view's TLS identity in the state directory.
const (
	LiveCertFile = "live.crt"
	LiveKeyFile  = "live.key"
)

// liveGate asks the consent ledger for every viewer, and refuses all of
// them while a configured privacy indicator cannot be driven.
type liveGate struct{ a *Agent }

func (g liveGate) Admit(viewer string, wantAudio bool) (live.Admission, error) {
	a := g.a
	if a.ind.Configured() {
		a.updateIndicator() // probes the indicator again
		if err := a.ind.Err(); err != nil {
			return live.Admission{}, &live.Refusal{Reason: "indicator"}
		}
	}
	grant, err := a.ledger.Ask(viewer, wantAudio)
	var d *consent.Denied
	if errors.As(err, &d) {
		a.updateIndicator()
		return live.Admission{}, &live.Refusal{Reason: d.Reason, Request: d.Request}
	}
	if err != nil {
		return live.Admission{}, err
	}
	ended, cancel := a.ledger.Watch(viewer)
	return live.Admission{Audio: grant.Audio, Talk: grant.Talk, Ended: ended, Cancel: cancel, Expires: grant.Expires}, nil
}

// AwaitDecision lets an offer sent with Prefer: wait=N wait for the
// teacher's decision instead of the viewer polling.
func (g liveGate) AwaitDecision(ctx context.Context, request string) error {
	return g.a.ledger.AwaitDecision(ctx, request)
}

var _ live.Waiter = liveGate{}

func (g liveGate) Joined(viewer, session string) { g.a.ledger.Joined(viewer, session) }

// Left audits the end of a viewer's session as the viewer's doing when the
// viewer left, asked again or dropped the connection, and as the daemon's
// when the daemon closed it (revoked, expired, session ended…: the consent
// entry before it names who decided).
func (g liveGate) Left(viewer, session, reason string) {
	by := consent.ByDaemon
	if reason == "viewer left" || reason == "replaced" || strings.HasPrefix(reason, "connection ") {
		by = consent.ByViewer(viewer)
	}
	g.a.ledger.Left(viewer, session, reason, by)
}

// liveAuth checks viewer tokens offline: signed by the receiver's token key
// (from enrollment) or by the box's local key (`uploadbox viewer token`).
type liveAuth struct{ stateDir string }

func (l liveAuth) Viewer(token string) (string, error) {
	return l.check(token, (*viewtoken.Verifier).Verify)
}

// Owner checks a token of a running session's viewer, which may have
// expired since: the session lasts as long as its grant.
func (l liveAuth) Owner(token string) (string, error) {
	return l.check(token, (*viewtoken.Verifier).VerifyIgnoringExpiry)
}

func (l liveAuth) check(token string, verify func(*viewtoken.Verifier, string, time.Time) (viewtoken.Claims, error)) (string, error) {
	v, err := viewtoken.LoadBoxVerifier(l.stateDir)
	if err != nil {
		return "", explainUnreadable(l.stateDir, err)
	}
	c, err := verify(v, token, time.Now())
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// liveAuthFailed audits a refused viewer token ("live.auth"), coalesced
// per source address so that a flood cannot fill the disk.
func (a *Agent) liveAuthFailed(remote string, err error) {
	detail := err.Error()
	if len(detail) > 256 {
		detail = detail[:256]
	}
	if _, aerr := a.authFails.Record(audit.Entry{Event: "live.auth", Source: remote, Outcome: "denied", Detail: detail}); aerr != nil {
		a.log.Error("audit of a refused live view token failed", "err", aerr)
	}
}

// liveSource hands the live view a subscription to the session's capture.
type liveSource struct{ a *Agent }

func (s liveSource) Subscribe() (*capture.Subscription, error) {
	c := s.a.Capture()
	if c == nil {
		return nil, errNoSession
	}
	return c.Subscribe(capture.SubscribeOptions{Mode: capture.Live}), nil
}

func iceServers(cfg *config.Config) ([]webrtc.ICEServer, error) {
	var out []webrtc.ICEServer
	if len(cfg.Live.STUN) > 0 {
		out = append(out, webrtc.ICEServer{URLs: cfg.Live.STUN})
	}
	for _, t := range cfg.Live.TURN {
		cred, err := os.ReadFile(t.CredentialFile)
		if err != nil {
			return nil, fmt.Errorf("live.turn %s: credential_file: %w", t.URL, err)
		}
		out = append(out, webrtc.ICEServer{URLs: []string{t.URL}, Username: t.Username, Credential: string(trimNL(cred))})
	}
	return out, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// serveLive runs the WHEP endpoint and viewer page over HTTPS until ctx
// ends; with live view off it does nothing.
func (a *Agent) serveLive(ctx context.Context) error {
	cfg := a.Config()
	if !cfg.Live.Enabled {
		return nil
	}
	ice, err := iceServers(cfg)
	if err != nil {
		return err
	}
	cert, fp, err := liveCertificate(cfg.StateDir, cfg.Live.Listen)
	if err != nil {
		return fmt.Errorf("live view certificate: %w", err)
	}
	dtls, err := a.dtlsIdentity()
	if err != nil {
		return err
	}
	talk, stopTalk, err := a.startTalkback(ctx, cfg.Live.TalkbackDevice)
	if err != nil {
		return err
	}
	defer stopTalk()
	srv, err := live.New(live.Config{
		MaxViewers: cfg.Live.MaxViewers, ICEServers: ice, Loopback: isLoopback(cfg.Live.Listen),
		Auth: liveAuth{cfg.StateDir}, Gate: liveGate{a}, Source: liveSource{a}, Logger: a.log,
		AuthFailed: a.liveAuthFailed,
		Identity:   dtls,
		Talk:       talk,
		Indicator: func(n int) {
			a.viewers.Store(int64(n))
			a.m.liveViewers.Set(float64(n))
			go a.updateIndicator()
		},
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.liveHandler = srv.Handler()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.liveHandler = nil
		a.mu.Unlock()
	}()
	ln, err := net.Listen("tcp", cfg.Live.Listen)
	if err != nil {
		return fmt.Errorf("live.listen %s: %w", cfg.Live.Listen, err)
	}
	ln = live.CapPerAddress(ln, cfg.Live.MaxConnsPerAddress, a.log.With("component", "live"))
	// No WriteTimeout: an offer may be held for the teacher's decision
	// (Prefer: wait, at most live.MaxWait). ReadTimeout does not cut it:
	// net/http clears the read deadline once the body is read.
	hs := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: min(10*time.Second, cfg.Live.ReadTimeout.D()),
		ReadTimeout:       cfg.Live.ReadTimeout.D(),
		IdleTimeout:       cfg.Live.IdleTimeout.D(),
	}
	a.log.Info("live view listening (HTTPS, consent-gated)", "addr", ln.Addr().String(), "certificate_sha256", fp)
	go func() {
		<-ctx.Done()
		srv.Close()
		hs.Close()
	}()
	if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("live view: %w", err)
	}
	return nil
}

func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// liveCertificate loads the live view's self-signed certificate from the
// state directory, making a new one (one year) when there is none or it
// expires within a week. It returns the certificate's SHA-256 fingerprint,
// which a viewer can compare with the one the daemon logs.
func liveCertificate(stateDir, listen string) (tls.Certificate, string, error) {
	certPath, keyPath := filepath.Join(stateDir, LiveCertFile), filepath.Join(stateDir, LiveKeyFile)
	c, err := wire.LoadKeyPair(certPath, keyPath)
	switch {
	case err == nil && time.Until(c.Leaf.NotAfter) > 7*24*time.Hour:
		return c, wire.Fingerprint(c.Leaf), nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		// A key others can read (or a FIFO, or garbage) is refused, not
		// silently replaced: the message names what to do.
		return tls.Certificate{}, "", fmt.Errorf("live view key: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host, err := os.Hostname(); err == nil && host != "" {
		hosts = append(hosts, host, host+".local")
	}
	if h, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			hosts = append(hosts, h)
		}
	}
	c, err = wire.SelfSigned(hosts, time.Now(), 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	if err := wire.WriteKeyPair(certPath, keyPath, c); err != nil {
		return tls.Certificate{}, "", err
	}
	return c, wire.Fingerprint(c.Leaf), nil
}
