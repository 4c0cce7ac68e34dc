package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/peer"
	"github.com/uploadbox/uploadbox/wire"
)

// DefaultControlPing is how often the receiver pings each box on its
// control connection; a ping unanswered within as long again ends it.
const DefaultControlPing = 10 * time.Second

// helloTimeout bounds the wait for a new connection's hello.
const helloTimeout = 10 * time.Second

// controlBucket keeps each device's last-seen time (RFC 3339), so that
// devices list shows it while the server is stopped too.
var controlBucket = []byte("control")

// ErrOffline is returned by Hub.Request for a device with no control
// connection.
var ErrOffline = errors.New("the box is offline (no control connection)")

var (
	errReplaced = errors.New("replaced by a newer connection of the same device")
	errMoved    = errors.New("replaced by a newer connection of the same device to another receiver")
	errRevoked  = errors.New("the device was revoked")
	errStopping = errors.New("the receiver is stopping")
)

// ControlStatus is a device's control connection as devices list shows it.
type ControlStatus struct {
	Connected bool `json:"connected"`
	// Since is when the open connection was made.
	Since  time.Time `json:"since,omitzero"`
	Source string    `json:"source,omitempty"`
	// Version is the box's software version from its hello.
	Version string `json:"version,omitempty"`
	// LastSeen is when the box was last connected (now, while connected).
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Receiver is the replica id of the other receiver holding the
	// connection (receivers on one PostgreSQL; empty: this one).
	Receiver string `json:"receiver,omitempty"`
}

// DeviceStatus is a device with its control connection.
type DeviceStatus struct {
	devices.Device
	Control ControlStatus `json:"control"`
	// Report is the box's last health report (fleet.go) and Reported
	// when it arrived; Health is the fleet view's judgement (HealthAlert,
	// …; empty for a device that is not active).
	Report   *wire.BoxReport `json:"report,omitempty"`
	Reported time.Time       `json:"reported,omitzero"`
	Health   string          `json:"health,omitempty"`
}

// controlConn is one box's open control connection.
type controlConn struct {
	device  string
	source  string
	version string
	since   time.Time
	// end closes the connection with a cause; done is closed once it has
	// ended, so that requests in flight fail at once.
	end   context.CancelCauseFunc
	done  <-chan struct{}
	conn  *websocket.Conn
	calls wire.Calls
}

// Hub holds the open control connections, one per device: a new
// connection of a device replaces (closes) the one it had.
type Hub struct {
	mu    sync.Mutex
	conns map[string]*controlConn
	wg    sync.WaitGroup
	// rooms keeps the consent state each box pushes (roomstate.go).
	rooms roomStates
	// peer reaches the boxes other receivers on the same PostgreSQL hold
	// (nil: this receiver alone).
	peer peerForwarder
}

// peerForwarder is what the hub needs from receiver/peer.
type peerForwarder interface {
	Request(ctx context.Context, device, op string, params json.RawMessage) (wire.Response, error)
	Claim(ctx context.Context, h peer.Holding) error
	Release(ctx context.Context, device string, since time.Time) error
	Holder(ctx context.Context, device string) (peer.Holding, bool, error)
	Holders(ctx context.Context) (map[string]peer.Holding, error)
	SetState(ctx context.Context, device string, since time.Time, state json.RawMessage) error
}

var _ peerForwarder = (*peer.Forwarder)(nil)

// peerTimeout bounds the database queries behind a status.
const peerTimeout = 5 * time.Second

// claim tells the other receivers that c's device is connected here.
func (h *Hub) claim(ctx context.Context, c *controlConn) error {
	if h.peer == nil {
		return nil
	}
	return h.peer.Claim(ctx, peer.Holding{Device: c.device, Since: c.since, Source: c.source, Version: c.version})
}

// release tells them c ended (unless a newer connection took over).
func (h *Hub) release(ctx context.Context, c *controlConn) error {
	if h.peer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peerTimeout)
	defer cancel()
	return h.peer.Release(ctx, c.device, c.since)
}

// remote is the status of every box another receiver holds (none without
// peers, or when the database does not answer).
func (h *Hub) remote() map[string]ControlStatus {
	if h.peer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	hs, err := h.peer.Holders(ctx)
	if err != nil {
		return nil
	}
	m := make(map[string]ControlStatus, len(hs))
	for d, ho := range hs {
		m[d] = remoteStatus(ho)
	}
	return m
}

func remoteStatus(ho peer.Holding) ControlStatus {
	return ControlStatus{Connected: true, Since: ho.Since, Source: ho.Source, Version: ho.Version, Receiver: ho.Replica, LastSeen: time.Now().UTC()}
}

// attach makes c its device's connection and ends the one it replaces.
func (h *Hub) attach(c *controlConn) (replaced *controlConn) {
	h.mu.Lock()
	if h.conns == nil {
		h.conns = map[string]*controlConn{}
	}
	replaced = h.conns[c.device]
	h.conns[c.device] = c
	h.mu.Unlock()
	if replaced != nil {
		replaced.end(errReplaced)
	}
	h.rooms.set(c.device, nil) // online; the box pushes its state next
	return replaced
}

// detach removes c if it is still its device's connection.
func (h *Hub) detach(c *controlConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[c.device] != c {
		return false
	}
	delete(h.conns, c.device)
	h.rooms.set(c.device, nil) // offline: its last state is not shown
	return true
}

// dropStale ends device's connection made at since (as PostgreSQL keeps
// it, to the microsecond), if it is still open: the box connected anew to
// another receiver.
func (h *Hub) dropStale(device string, since time.Time) {
	h.mu.Lock()
	c := h.conns[device]
	h.mu.Unlock()
	if c != nil && c.since.Truncate(time.Microsecond).Equal(since) {
		c.end(errMoved)
	}
}

// drop ends device's connection, if it has one.
func (h *Hub) drop(device string, cause error) {
	h.mu.Lock()
	c := h.conns[device]
	h.mu.Unlock()
	if c != nil {
		c.end(cause)
	}
}

// local reports device's open connection to this receiver.
func (h *Hub) local(device string) (ControlStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.conns[device]
	if !ok {
		return ControlStatus{}, false
	}
	return ControlStatus{Connected: true, Since: c.since, Source: c.source, Version: c.version, LastSeen: time.Now().UTC()}, true
}

// status reports device's open connection, here or on another receiver.
func (h *Hub) status(device string) (ControlStatus, bool) {
	if cs, ok := h.local(device); ok {
		return cs, true
	}
	if h.peer == nil {
		return ControlStatus{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	ho, ok, err := h.peer.Holder(ctx, device)
	if err != nil || !ok {
		return ControlStatus{}, false
	}
	return remoteStatus(ho), true
}

// Request sends op with params to device over its control connection and
// waits for the box's response (or ctx). A box connected to another
// receiver on the same PostgreSQL is reached through it (receiver/peer).
func (h *Hub) Request(ctx context.Context, device, op string, params any) (wire.Response, error) {
	h.mu.Lock()
	c := h.conns[device]
	h.mu.Unlock()
	if c == nil && h.peer != nil {
		p, err := json.Marshal(params)
		if err != nil {
			return wire.Response{}, err
		}
		resp, err := h.peer.Request(ctx, device, op, p)
		if errors.Is(err, peer.ErrOffline) {
			return resp, fmt.Errorf("%w: %s", ErrOffline, strings.TrimPrefix(err.Error(), peer.ErrOffline.Error()+": "))
		}
		return resp, err
	}
	return h.requestLocal(ctx, device, op, params)
}

// requestLocal is Request on this receiver's own connection only (what
// the other receivers' forwarded calls run).
func (h *Hub) requestLocal(ctx context.Context, device, op string, params any) (wire.Response, error) {
	h.mu.Lock()
	c := h.conns[device]
	h.mu.Unlock()
	if c == nil || c.conn == nil {
		return wire.Response{}, fmt.Errorf("%w: %s", ErrOffline, device)
	}
	p, err := json.Marshal(params)
	if err != nil {
		return wire.Response{}, err
	}
	id, ch := c.calls.Add()
	defer c.calls.Forget(id)
	if err := writeEnvelope(ctx, c.conn, wire.TypeRequest, id, wire.Request{Op: op, Params: p}); err != nil {
		return wire.Response{}, fmt.Errorf("%w: %s: %v", ErrOffline, device, err)
	}
	select {
	case <-ctx.Done():
		return wire.Response{}, ctx.Err()
	case <-c.done:
		return wire.Response{}, fmt.Errorf("%w: %s: the control connection closed before the box answered", ErrOffline, device)
	case e := <-ch:
		if e.Type == wire.TypeError {
			var ce wire.ControlError
			if err := e.Decode(&ce); err != nil {
				return wire.Response{}, err
			}
			return wire.Response{}, &ce
		}
		var r wire.Response
		return r, e.Decode(&r)
	}
}

func writeEnvelope(ctx context.Context, conn *websocket.Conn, typ, id string, body any) error {
	e, err := wire.NewEnvelope(typ, id, body)
	if err != nil {
		return err
	}
	return writeRaw(ctx, conn, e)
}

func writeRaw(ctx context.Context, conn *websocket.Conn, e wire.Envelope) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	return conn.Write(wctx, websocket.MessageText, b)
}

func initControl(db kv.DB) error {
	return db.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(controlBucket)
		return err
	})
}

func setLastSeen(db kv.DB, device string, t time.Time) error {
	return db.Update(func(tx kv.Tx) error {
		return tx.Bucket(controlBucket).Put([]byte(device), []byte(t.UTC().Format(time.RFC3339Nano)))
	})
}

func lastSeen(db kv.DB) (map[string]time.Time, error) {
	m := map[string]time.Time{}
	err := db.View(func(tx kv.Tx) error {
		b := tx.Bucket(controlBucket)
		if b == nil {
			return nil // a database from before the control connection
		}
		return b.ForEach(func(k, v []byte) error {
			if t, err := time.Parse(time.RFC3339Nano, string(v)); err == nil {
				m[string(k)] = t
			}
			return nil
		})
	})
	return m, err
}

// handleControl is GET /v1/control behind deviceOnly: the box's control
// connection, upgraded to a WebSocket. The box speaks first (hello, naming
// the device on its certificate); the receiver welcomes it, pings it, and
// audits device.control when it connects and disconnects. A failed
// upgrade or hello is a coalesced failure.
func (s *Server) handleControl(w http.ResponseWriter, r *http.Request) {
	d := r.Context().Value(deviceKey).(*devices.Device)
	src := r.RemoteAddr
	fail := func(detail string) {
		s.fails.Record(audit.Entry{Event: "device.control", Identity: d.Name, Source: src, Outcome: "failed", Detail: detail})
	}
	// Counted before the upgrade, while the server still tracks this
	// request: once Shutdown returns, Run's Wait sees every connection.
	s.hub.wg.Add(1)
	defer s.hub.wg.Done()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.ControlSubprotocol}})
	if err != nil {
		fail("upgrade: " + err.Error()) // Accept has answered the request
		return
	}
	defer conn.CloseNow()
	if conn.Subprotocol() != wire.ControlSubprotocol {
		fail("the client did not speak " + wire.ControlSubprotocol)
		conn.Close(websocket.StatusPolicyViolation, "subprotocol "+wire.ControlSubprotocol+" required")
		return
	}
	conn.SetReadLimit(wire.MaxControlMessage)
	ctx, end := context.WithCancelCause(r.Context())
	defer end(nil)

	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	hello, err := readHello(hctx, conn, d.Name)
	if err != nil {
		fail("hello: " + err.Error())
		writeRaw(hctx, conn, wire.ErrorEnvelope("", err))
		cancel()
		closeSoon(conn, websocket.StatusPolicyViolation, "bad hello")
		return
	}
	err = writeEnvelope(hctx, conn, wire.TypeWelcome, "", wire.Welcome{Device: d.Name, PingSeconds: int(s.cfg.ControlPing / time.Second)})
	cancel()
	if err != nil {
		fail("welcome: " + err.Error())
		return
	}

	c := &controlConn{device: d.Name, source: src, version: hello.Version, since: time.Now().UTC(), end: end, done: ctx.Done(), conn: conn}
	s.hub.attach(c)
	if err := s.hub.claim(ctx, c); err != nil {
		s.log.Warn("the other receivers were not told this box is connected here: their requests for it find it offline", "device", c.device, "err", err)
	}
	s.auditControl(c, "connected", fmt.Sprintf("connected from %s version=%s", src, hello.Version))
	cause := s.serveControl(ctx, c, func() bool { return r.Context().Err() != nil })
	end(cause) // requests in flight on c fail now, not at their deadline
	if s.hub.detach(c) {
		if err := s.hub.release(ctx, c); err != nil {
			s.log.Warn("the other receivers were not told this box disconnected: they count it connected until the lease runs out", "device", c.device, "err", err)
		}
	}
	s.auditControl(c, "disconnected", fmt.Sprintf("disconnected after %s: %v", time.Since(c.since).Round(time.Second), cause))
}

// auditControl records a connect or disconnect and the device's last-seen
// time.
func (s *Server) auditControl(c *controlConn, what, detail string) {
	if _, err := s.audit.Append(audit.Entry{Event: "device.control", Identity: c.device, Source: c.source, Outcome: "ok", Detail: detail}); err != nil {
		s.log.Error("audit", "event", "device.control", "err", err)
	}
	if err := setLastSeen(s.db, c.device, time.Now()); err != nil {
		s.log.Warn("last-seen time not stored", "device", c.device, "err", err)
	}
	s.log.Info("control connection "+what, "device", c.device, "source", c.source)
}

// readHello reads the first message, which must be a hello for device.
func readHello(ctx context.Context, conn *websocket.Conn, device string) (wire.Hello, error) {
	var h wire.Hello
	_, data, err := conn.Read(ctx)
	if err != nil {
		return h, err
	}
	e, err := wire.ParseEnvelope(data)
	if err != nil {
		return h, err
	}
	if e.Type != wire.TypeHello {
		return h, &wire.ControlError{Code: wire.CodeBadMessage, Message: fmt.Sprintf("the first message must be a hello, not %q", e.Type)}
	}
	if err := e.Decode(&h); err != nil {
		return h, err
	}
	if len(h.Version) > 64 {
		// It goes into the audit log: bounded.
		return h, &wire.ControlError{Code: wire.CodeBadMessage, Message: fmt.Sprintf("hello version is %d bytes, more than 64", len(h.Version))}
	}
	if h.Device != device {
		return h, &wire.ControlError{Code: wire.CodeRefused, Message: fmt.Sprintf("hello names device %q but the certificate is %q's", h.Device, device)}
	}
	return h, nil
}

// serveControl reads the box's messages and pings it until the
// connection fails or ctx ends (replaced, revoked, or the server stopping,
// as stopping says); then it closes the connection, telling the box why,
// and returns the cause.
func (s *Server) serveControl(ctx context.Context, c *controlConn, stopping func() bool) error {
	pctx, stopPing := context.WithCancel(ctx)
	defer stopPing()
	errc := make(chan error, 2)
	go func() {
		t := time.NewTicker(s.cfg.ControlPing)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				errc <- pctx.Err()
				return
			case <-t.C:
			}
			tctx, cancel := context.WithTimeout(pctx, s.cfg.ControlPing)
			err := c.conn.Ping(tctx)
			cancel()
			if err != nil {
				if pctx.Err() == nil {
					err = fmt.Errorf("no pong within %s: %w", s.cfg.ControlPing, err)
				}
				errc <- err
				return
			}
		}
	}()
	// The reader is not cancelled with ctx: ending a connection sends a
	// close frame with the reason first, which ends the read.
	rctx := context.WithoutCancel(ctx)
	go func() {
		for {
			_, data, err := c.conn.Read(rctx)
			if err != nil {
				errc <- err
				return
			}
			e, err := wire.ParseEnvelope(data)
			if err != nil {
				if werr := writeRaw(rctx, c.conn, wire.ErrorEnvelope(e.ID, err)); werr != nil {
					errc <- werr
					return
				}
				continue
			}
			switch e.Type {
			case wire.TypeResponse, wire.TypeError:
				c.calls.Resolve(e)
			case wire.TypeRequest:
				s.serveBoxRequest(rctx, c, e)
			default:
				writeRaw(rctx, c.conn, wire.ErrorEnvelope(e.ID, fmt.Errorf("%w: %q is not expected from a box", wire.ErrUnknownType, e.Type)))
			}
		}
	}()
	var cause error
	pending := 2
	select {
	case cause = <-errc:
		pending--
	case <-ctx.Done():
		cause = context.Cause(ctx)
		if stopping() {
			cause = errStopping
		}
	}
	code := websocket.StatusGoingAway
	if websocket.CloseStatus(cause) != -1 {
		code = websocket.CloseStatus(cause) // the box closed it: answer in kind
	}
	closeSoon(c.conn, code, cause.Error())
	stopPing()
	for ; pending > 0; pending-- {
		<-errc
	}
	return cause
}

// closeSoon sends a close frame but does not wait long for the answer.
func closeSoon(conn *websocket.Conn, code websocket.StatusCode, reason string) {
	if len(reason) > 120 {
		reason = reason[:120] // a close frame carries at most 123 bytes of reason
	}
	done := make(chan struct{})
	go func() { conn.Close(code, reason); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		conn.CloseNow()
	}
}
