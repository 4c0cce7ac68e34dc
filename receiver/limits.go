package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/limit"
)

// Defaults of the limits on the authentication endpoints and the audit log.
const (
	DefaultAuthRate       = 10.0 / 60 // per second: 10 a minute
	DefaultAuthBurst      = 5
	DefaultAuditMaxBytes  = 1 << 30
	DefaultRequestTimeout = 10 * time.Second
	// maxSmallBody bounds the bodies of the non-upload endpoints (login,
	// enroll, commit), which are read whole within the request timeout.
	maxSmallBody = 64 << 10
)

// ParseRate reads a rate such as "10/min" (also N/s, N/h) as a rate per second.
func ParseRate(s string) (float64, error) { return limit.ParseRate(s) }

// auditGuard bounds the audit log: failed-authentication entries go
// through audit.Failures (one entry per event and source per window), and
// once the log reaches maxBytes they are dropped (counted) while every
// other entry (successes, locks, administration) is still written. At 90 %
// it raises an alert: an audit entry and an error in the log.
//
// Why drop only failures: refusing logins or device handshakes because the
// audit log is full would let anyone who can reach the receiver stop it by
// failing to log in; failures are the only entries an outsider can make
// at will, while successes come from enrolled devices and known accounts.
type auditGuard struct {
	log   auditChain
	fails *audit.Failures
	max   int64
	slog  *slog.Logger

	mu      sync.Mutex
	warned  bool
	full    bool
	dropped int64
}

var _ devices.FailureLog = (*auditGuard)(nil)

// Record writes (coalesced) or, with the log full, drops one failure.
func (g *auditGuard) Record(e audit.Entry) (bool, error) {
	if !g.check() {
		return false, nil
	}
	return g.fails.Record(e)
}

// check compares the log's size with the cap, raises or clears the alerts,
// and reports whether failures may still be written.
func (g *auditGuard) check() bool {
	size, err := g.log.Size()
	if err != nil {
		return true // the append will report the problem
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case size >= g.max:
		if g.full {
			g.dropped++
			return false
		}
		g.full, g.warned = true, true
		g.alert("audit.full", fmt.Sprintf("audit log is %d bytes, at --audit-max-bytes %d: failed-authentication entries are dropped (counted) until it is smaller; successes and administration are still written; lower --audit-retention or raise --audit-max-bytes", size, g.max))
		g.dropped++
		return false
	case size >= g.max/10*9:
		if !g.warned {
			g.warned = true
			g.alert("audit.size", fmt.Sprintf("audit log is %d bytes, 90%% of --audit-max-bytes %d: at the cap, failed-authentication entries will be dropped; lower --audit-retention or raise --audit-max-bytes", size, g.max))
		}
	default:
		g.warned = false
	}
	if g.full {
		g.full = false
		g.alert("audit.resumed", fmt.Sprintf("audit log is %d bytes, below --audit-max-bytes %d again: %d failed-authentication entries were dropped", size, g.max, g.dropped))
		g.dropped = 0
	}
	return true
}

func (g *auditGuard) alert(event, detail string) {
	g.slog.Error("audit log size", "event", event, "detail", detail)
	if _, err := g.log.Append(audit.Entry{Event: event, Source: "local", Outcome: "alert", Detail: detail}); err != nil {
		g.slog.Error("audit log size alert not written", "err", err)
	}
}

// tooMany answers 429 with Retry-After and audits the refusal (coalesced).
func (s *Server) tooMany(w http.ResponseWriter, r *http.Request, event, name, what string, retry time.Duration) {
	s.fails.Record(audit.Entry{Event: event, Identity: name, Source: r.RemoteAddr, Outcome: "rate-limited", Detail: "too many attempts " + what})
	w.Header().Set("Retry-After", limit.RetryAfter(retry))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	json.NewEncoder(w).Encode(map[string]string{"error": "too many attempts " + what + ": retry after " + limit.RetryAfter(retry) + " s", "reason": "rate-limited"})
}

// perAddress applies the source address's token bucket of the endpoint
// (login and enrollment have one each) before anything else is read.
func (s *Server) perAddress(event string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, retry := s.byAddress.Allow(event + "\x00" + audit.SourceOf(r.RemoteAddr)); !ok {
			s.tooMany(w, r, event, "", "from this address", retry)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// perAccount applies the token bucket of the account the (already read)
// body names, whether or not that account exists.
func (s *Server) perAccount(event string, nameOf func([]byte) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if name := nameOf(body); name != "" {
			if ok, retry := s.byAccount.Allow(event + "\x00" + name); !ok {
				s.tooMany(w, r, event, name, "for this name", retry)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func loginName(body []byte) string {
	var v struct{ Name string }
	json.Unmarshal(body, &v)
	return v.Name
}

func enrollName(body []byte) string {
	var v struct{ Token string }
	json.Unmarshal(body, &v)
	name, _ := devices.TokenName(v.Token)
	return name
}

// bounded gives a non-upload request the request timeout: its body is read
// whole (at most maxSmallBody) under a read deadline, and its answer is
// written under a write deadline that starts with the first byte. Both
// deadlines are cleared afterwards, so a kept-alive connection's next
// request (an upload) is not cut by them.
func (s *Server) bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := s.cfg.RequestTimeout
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(t))
		body, err := io.ReadAll(io.LimitReader(r.Body, maxSmallBody+1))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			httpError(w, http.StatusRequestTimeout, fmt.Sprintf("the request body did not arrive within %s", t))
			return
		case err != nil:
			w.Header().Set("Connection", "close")
			httpError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
			return
		case len(body) > maxSmallBody:
			w.Header().Set("Connection", "close")
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d KiB", maxSmallBody>>10))
			return
		}
		// Only now: after a refusal above, the passed deadline also stops
		// the server from reading the rest of the body to discard it.
		rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(body))
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, t: t}
		next.ServeHTTP(dw, r)
		if dw.armed {
			rc.Flush() // the buffered answer goes out under the deadline
			rc.SetWriteDeadline(time.Time{})
		}
	})
}

// deadlineWriter sets the write deadline at the answer's first byte.
type deadlineWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	t     time.Duration
	armed bool
}

func (d *deadlineWriter) arm() {
	if !d.armed {
		d.armed = true
		d.rc.SetWriteDeadline(time.Now().Add(d.t))
	}
}

func (d *deadlineWriter) WriteHeader(code int) { d.arm(); d.ResponseWriter.WriteHeader(code) }

func (d *deadlineWriter) Write(b []byte) (int, error) { d.arm(); return d.ResponseWriter.Write(b) }

// Flush sends what is buffered, under the deadline.
func (d *deadlineWriter) Flush() { d.arm(); d.rc.Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
