package receiver

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// DefaultDrainGrace is the default of ServerConfig.DrainGrace.
const DefaultDrainGrace = 30 * time.Second

// readyTimeout bounds each check of GET /readyz.
const readyTimeout = 5 * time.Second

// drain is what the server knows about its own stopping.
type drain struct {
	// draining is set when the server stops accepting (SIGTERM).
	draining atomic.Bool
	// hard is cancelled when the drain's grace is over: the uploads and
	// commits still running are cut then, not before.
	hard       context.Context
	hardCancel context.CancelFunc
	// inFlight counts the data-path requests running (for /readyz).
	inFlight atomic.Int64
}

func (d *drain) init() {
	d.hard, d.hardCancel = context.WithCancel(context.Background())
}

// healthRoutes: GET /healthz answers 200 while the process serves; GET
// /readyz answers 200 when the database and the store answer, 503 naming
// what does not (or that the receiver is draining), for load balancers.
func (s *Server) healthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
}

// Readiness is the answer of GET /readyz.
type Readiness struct {
	Ready    bool   `json:"ready"`
	Draining bool   `json:"draining,omitempty"`
	Database string `json:"database"` // "ok" or what failed
	Store    string `json:"store"`    // "ok" or what failed
	// InFlight counts the uploads (tus requests) and commits running now.
	InFlight int64 `json:"in_flight"`
}

// Ready checks the database and the store now.
func (s *Server) Ready(ctx context.Context) Readiness {
	r := Readiness{Database: "ok", Store: "ok", Draining: s.drain.draining.Load(), InFlight: s.drain.inFlight.Load()}
	dctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := s.pingDB(dctx); err != nil {
		r.Database = err.Error()
	}
	sctx, cancel2 := context.WithTimeout(ctx, readyTimeout)
	defer cancel2()
	// Listing an unused prefix reaches the bucket (or directory) with the
	// receiver's credentials without reading any object.
	if _, err := s.store.List(sctx, "readyz/"); err != nil {
		r.Store = err.Error()
	}
	r.Ready = !r.Draining && r.Database == "ok" && r.Store == "ok"
	return r
}

// pingDB runs an empty read transaction (bounded by ctx: a database that
// does not answer is not ready).
func (s *Server) pingDB(ctx context.Context) error {
	if p, ok := s.db.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx) // PostgreSQL: a round trip to the server
	}
	done := make(chan error, 1)
	go func() { done <- s.db.View(func(kv.Tx) error { return nil }) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	rd := s.Ready(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rd)
}

// drainable keeps a request running through the drain: its context is not
// cancelled when the server starts stopping, only when the grace is over (a
// client that goes away ends its request through its body's read). For the data path (tus PATCH, commit), so that a
// SIGTERM lets the running uploads and commits finish.
func (s *Server) drainable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.drain.inFlight.Add(1)
		defer s.drain.inFlight.Add(-1)
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		stop := context.AfterFunc(s.drain.hard, cancel)
		defer stop()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
