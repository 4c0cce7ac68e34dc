// Package link is the box's control connection: one WebSocket the enrolled
// box opens to its receiver over the same mutual TLS as uploads, kept open
// with pings both ways and reopened with exponential backoff and jitter.
// The box needs no inbound port: whatever the receiver wants from the box
// comes back over this connection as a request.
package link

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/uploadbox/uploadbox/internal/netfail"
	"github.com/uploadbox/uploadbox/wire"
)

// Defaults of Options.
const (
	DefaultPingInterval = 10 * time.Second
	DefaultPingTimeout  = 10 * time.Second
	DefaultRetryMax     = 60 * time.Second
)

// Options configure a Client.
type Options struct {
	// Receiver is the receiver's base URL (https://host:port).
	Receiver *url.URL
	// TLS is the box's mutual TLS client config (uploader.State.TLSConfig).
	TLS *tls.Config
	// Hello is sent first on every connection.
	Hello wire.Hello
	// PingInterval is how often the box pings; a ping unanswered within
	// PingTimeout ends the connection, so a dead link is noticed within
	// their sum.
	PingInterval, PingTimeout time.Duration
	// RetryMax caps the wait between two attempts.
	RetryMax time.Duration
	// Classify names the cause of a failed connection (diag's causes);
	// nil: "other".
	Classify func(error) string
	// OnChange is called (from the client's goroutine) after every state
	// change.
	OnChange func(State)
	// Serve answers the receiver's requests, each in its own goroutine (a
	// relayed WHEP offer may wait for the teacher's decision); nil answers
	// every op 501. At most MaxRequests run at once; more get 503.
	Serve  func(ctx context.Context, op string, params json.RawMessage) wire.Response
	Logger *slog.Logger
}

// MaxRequests bounds the receiver's requests served at once.
const MaxRequests = 16

// State is the control connection's state, as status and diag show it.
type State struct {
	Connected bool `json:"connected"`
	// Since is when the connection opened, or when it was lost (or the
	// first attempt failed).
	Since time.Time `json:"since,omitzero"`
	// LastError and Cause say why the last attempt failed or the last
	// connection ended.
	LastError string `json:"last_error,omitempty"`
	Cause     string `json:"cause,omitempty"`
	// NextRetry is when the next attempt starts while disconnected.
	NextRetry time.Time `json:"next_retry,omitzero"`
	// Failures counts the attempts failed since the last connection.
	Failures int `json:"failures"`
	// Connects counts the connections opened since the daemon started.
	Connects int `json:"connects"`
}

// Client keeps the control connection open; Run drives it.
type Client struct {
	o    Options
	log  *slog.Logger
	http *http.Client

	mu sync.Mutex
	st State
	// conn is the open connection (nil while there is none), for the
	// box's own requests (request.go); calls pairs them with answers.
	conn  *websocket.Conn
	calls wire.Calls
}

// New returns a client; nothing connects until Run.
func New(o Options) *Client {
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = DefaultPingTimeout
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Classify == nil {
		o.Classify = func(error) string { return "other" }
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tc := o.TLS.Clone()
	// The upgrade is an HTTP/1.1 request: do not let ALPN pick h2.
	tc.NextProtos = []string{"http/1.1"}
	return &Client{
		o:   o,
		log: log.With("component", "link"),
		http: &http.Client{Transport: &http.Transport{
			TLSClientConfig:     tc,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			DisableKeepAlives:   true,
		}},
	}
}

// State returns the connection's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *Client) update(f func(*State)) {
	c.mu.Lock()
	f(&c.st)
	st := c.st
	c.mu.Unlock()
	if c.o.OnChange != nil {
		c.o.OnChange(st)
	}
}

// Backoff is the wait before attempt failures+1: 1 s doubled per failure,
// capped at limit, then jittered down by up to half (rnd(n) returns a
// number in [0, n)), so that boxes cut off together do not return together.
func Backoff(failures int, limit time.Duration, rnd func(n int64) int64) time.Duration {
	d := min(limit, time.Second<<min(max(failures-1, 0), 20))
	return d/2 + time.Duration(rnd(int64(d/2)+1))
}

// Run connects and reconnects until ctx ends; it returns nil then.
func (c *Client) Run(ctx context.Context) error {
	for {
		opened, err := c.session(ctx)
		if ctx.Err() != nil {
			c.update(func(s *State) { s.Connected, s.NextRetry = false, time.Time{} })
			return nil
		}
		var wait time.Duration
		c.update(func(s *State) {
			now := time.Now()
			if opened || s.Connected || s.Since.IsZero() {
				s.Since = now
			}
			if opened {
				s.Failures = 0
			}
			s.Connected = false
			s.Failures++
			s.LastError, s.Cause = netfail.Text(err), c.o.Classify(err)
			wait = Backoff(s.Failures, c.o.RetryMax, rand.Int64N)
			s.NextRetry = now.Add(wait)
		})
		c.log.Warn("control connection down; retrying", append([]any{"in", wait.Round(100 * time.Millisecond)}, netfail.Attrs(err)...)...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			c.update(func(s *State) { s.NextRetry = time.Time{} })
			return nil
		case <-t.C:
		}
	}
}

// session opens one connection and serves it until it ends; opened says
// whether the hello was welcomed.
func (c *Client) session(ctx context.Context) (opened bool, err error) {
	u := c.o.Receiver.JoinPath(wire.ControlPath)
	dctx, cancel := context.WithTimeout(ctx, 3*c.o.PingTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient:   c.http,
		Subprotocols: []string{wire.ControlSubprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return false, fmt.Errorf("control connection to %s: the receiver answered HTTP %d: %w", u.Redacted(), resp.StatusCode, err)
		}
		return false, fmt.Errorf("control connection to %s: %w", u.Redacted(), err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(wire.MaxControlMessage)
	if err := c.handshake(dctx, conn); err != nil {
		return false, err
	}
	cancel()
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	c.update(func(s *State) {
		s.Connected, s.Since, s.LastError, s.Cause, s.NextRetry, s.Failures = true, time.Now(), "", "", time.Time{}, 0
		s.Connects++
	})
	c.log.Info("control connection open", "receiver", c.o.Receiver.Redacted())

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- c.read(sctx, conn) }()
	go func() { errc <- c.ping(sctx, conn) }()
	err = <-errc
	stop()
	<-errc
	if ctx.Err() != nil {
		// A clean goodbye, bounded: the link may be the reason we stop.
		go conn.Close(websocket.StatusGoingAway, "box stopping")
		return true, ctx.Err()
	}
	return true, err
}

// handshake sends the hello and waits for the welcome.
func (c *Client) handshake(ctx context.Context, conn *websocket.Conn) error {
	if err := c.write(ctx, conn, wire.TypeHello, "", c.o.Hello); err != nil {
		return fmt.Errorf("control connection: send hello: %w", err)
	}
	_, data, err := conn.Read(ctx)
	if err != nil {
		return fmt.Errorf("control connection: no welcome: %w", err)
	}
	e, err := wire.ParseEnvelope(data)
	if err != nil {
		return fmt.Errorf("control connection: bad welcome: %w", err)
	}
	switch e.Type {
	case wire.TypeWelcome:
		return nil
	case wire.TypeError:
		var ce wire.ControlError
		if err := e.Decode(&ce); err != nil {
			return err
		}
		return fmt.Errorf("control connection: the receiver refused the hello: %w", &ce)
	}
	return fmt.Errorf("control connection: expected a welcome, got %q", e.Type)
}

// read serves what the receiver sends until the connection ends.
func (c *Client) read(ctx context.Context, conn *websocket.Conn) error {
	sem := make(chan struct{}, MaxRequests)
	var wg sync.WaitGroup
	// Served requests end with the connection: cancelled before the wait.
	rctx, cancel := context.WithCancel(ctx)
	defer wg.Wait()
	defer cancel()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != -1 {
				return fmt.Errorf("control connection closed by the receiver (%d): %w", st, err)
			}
			return fmt.Errorf("control connection lost: %w", err)
		}
		e, err := wire.ParseEnvelope(data)
		if err != nil {
			c.log.Warn("control message refused", "err", err)
			if werr := c.send(ctx, conn, wire.ErrorEnvelope(e.ID, err)); werr != nil {
				return werr
			}
			continue
		}
		switch e.Type {
		case wire.TypeRequest:
			// Every request is answered, so that the receiver never waits
			// for one.
			var r wire.Request
			if e.Decode(&r) != nil {
				if err := c.write(ctx, conn, wire.TypeResponse, e.ID, wire.Response{Status: http.StatusBadRequest, Error: "malformed request"}); err != nil {
					return err
				}
				continue
			}
			if c.o.Serve == nil {
				if err := c.write(ctx, conn, wire.TypeResponse, e.ID, wire.Response{Status: http.StatusNotImplemented, Error: fmt.Sprintf("op %q is not served by this box", r.Op)}); err != nil {
					return err
				}
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				if err := c.write(ctx, conn, wire.TypeResponse, e.ID, wire.Response{Status: http.StatusServiceUnavailable, Error: "the box is serving too many requests"}); err != nil {
					return err
				}
				continue
			}
			wg.Add(1)
			go func(id string) {
				defer func() { <-sem; wg.Done() }()
				resp := c.o.Serve(rctx, r.Op, r.Params)
				if err := c.write(rctx, conn, wire.TypeResponse, id, resp); err != nil {
					c.log.Warn("control response not sent", "op", r.Op, "err", err)
				}
			}(e.ID)
		case wire.TypeResponse:
			if !c.calls.Resolve(e) {
				c.log.Warn("a response to no request of the box", "id", e.ID)
			}
		case wire.TypeError:
			if e.ID != "" && c.calls.Resolve(e) {
				continue // the answer to one of the box's requests
			}
			var ce wire.ControlError
			e.Decode(&ce)
			c.log.Warn("the receiver refused a control message", "code", ce.Code, "message", ce.Message)
		default:
			c.send(ctx, conn, wire.ErrorEnvelope(e.ID, fmt.Errorf("%w: %q is not expected from the receiver", wire.ErrUnknownType, e.Type)))
		}
	}
}

// ping pings every PingInterval; an answer later than PingTimeout ends
// the connection.
func (c *Client) ping(ctx context.Context, conn *websocket.Conn) error {
	t := time.NewTicker(c.o.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, c.o.PingTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("control connection dead: no pong within %s: %w", c.o.PingTimeout, err)
			}
			return fmt.Errorf("control connection lost: ping: %w", err)
		}
	}
}

func (c *Client) write(ctx context.Context, conn *websocket.Conn, typ, id string, body any) error {
	e, err := wire.NewEnvelope(typ, id, body)
	if err != nil {
		return err
	}
	return c.send(ctx, conn, e)
}

func (c *Client) send(ctx context.Context, conn *websocket.Conn, e wire.Envelope) error {
	wctx, cancel := context.WithTimeout(ctx, c.o.PingTimeout)
	defer cancel()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := conn.Write(wctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("control connection: write: %w", err)
	}
	return nil
}
