// Package peer carries control-connection requests between receivers that
// share one PostgreSQL database, so that a request landing on any receiver
// reaches the box whichever receiver holds its control connection.
//
// Nothing but the database joins the receivers: no extra listener, no
// membership protocol. Each receiver (a Forwarder) has a random replica id
// and a notification channel of its own. When a box connects, its receiver
// claims the device's row in peer_holders and renews that row's lease every
// third of the lease; when the box disconnects the row is released. A
// request for a device held elsewhere is written as a row of peer_calls and
// its holder woken with NOTIFY (the payload is the call id only); the holder
// runs it on its own connection, writes the answer into the row and
// notifies the caller, which reads and deletes it. A receiver that dies
// stops renewing: once its leases run out its boxes count as offline, and
// calls waiting on it end as offline at the next lease check.
package peer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uploadbox/uploadbox/wire"
)

// DefaultLease is how long a holder row stays valid without renewal: the
// longest a killed receiver's boxes still count as connected.
const DefaultLease = 15 * time.Second

// DefaultMaxWait bounds a forwarded request whose context has no deadline.
const DefaultMaxWait = 60 * time.Second

// ErrOffline is returned by Request when no live receiver holds the device,
// or the one that did stopped before it answered.
var ErrOffline = errors.New("offline")

// LocalFunc runs a request on this receiver's own control connection to
// device (never forwarding it again).
type LocalFunc func(ctx context.Context, device, op string, params json.RawMessage) (wire.Response, error)

// Config tunes a Forwarder; the zero value is the default.
type Config struct {
	// Lease is how long a holder row is valid unless renewed (default
	// DefaultLease); rows are renewed every third of it.
	Lease time.Duration
	// MaxWait bounds requests whose context has no deadline (default
	// DefaultMaxWait).
	MaxWait time.Duration
	// Changed, if set, is called with a device held by another receiver
	// when it connects, disconnects or pushes a new state there.
	Changed func(device string)
	// Lost, if set, is called when a device connected here at since was
	// claimed by a newer connection on another receiver: the connection
	// here is a stale one (its box has moved on) and should be closed.
	Lost   func(device string, since time.Time)
	Logger *slog.Logger
}

// Holding is a device's control connection as its holder claimed it.
type Holding struct {
	Device  string
	Replica string
	Since   time.Time
	Source  string
	Version string
	// State is the consent state the box last pushed (JSON; nil: none yet).
	State json.RawMessage
}

// Forwarder is one receiver's side of the shared table: it claims the
// devices connected here, answers calls for them, and forwards calls for
// devices held elsewhere.
type Forwarder struct {
	pool    *pgxpool.Pool
	id      string
	local   LocalFunc
	lease   time.Duration
	maxWait time.Duration
	changed func(device string)
	lost    func(device string, since time.Time)
	log     *slog.Logger

	mu sync.Mutex
	// held are the devices connected here, renewed by Run.
	held map[string]Holding
	// waiting are this receiver's calls in flight, by call id: a
	// notification with that id means the answer is there.
	waiting map[string]chan struct{}
	serving sync.WaitGroup
	// listening is closed once Run first listens for notifications.
	listening     chan struct{}
	listeningOnce sync.Once
}

// New returns a Forwarder with a fresh replica id on the database behind
// pool, whose tables (peer_holders, peer_calls) kv.OpenPostgres made; it
// runs local for calls addressed to it. Run must run for its claims to stay
// valid and for it to answer calls.
func New(pool *pgxpool.Pool, local LocalFunc, cfg Config) (*Forwarder, error) {
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 300*time.Millisecond {
		return nil, fmt.Errorf("peer lease %s is too short: give at least 300ms (default %s)", cfg.Lease, DefaultLease)
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	rand.Read(b[:])
	f := &Forwarder{
		pool: pool, id: hex.EncodeToString(b[:]), local: local,
		lease: cfg.Lease, maxWait: cfg.MaxWait, changed: cfg.Changed, lost: cfg.Lost,
		held: map[string]Holding{}, waiting: map[string]chan struct{}{},
		listening: make(chan struct{}),
	}
	f.log = cfg.Logger.With("component", "peer", "replica", f.id)
	return f, nil
}

// Listening is closed once Run listens for notifications: from then on
// no call addressed here and no other receiver's announcement is missed.
func (f *Forwarder) Listening() <-chan struct{} { return f.listening }

// ID is this receiver's replica id.
func (f *Forwarder) ID() string { return f.id }

func channel(replica string) string { return "uploadbox_peer_" + replica }

// roomsChannel is where holders announce a device's change to everyone
// (payload: the holder's replica id, a space, the device).
const roomsChannel = "uploadbox_peer_rooms"

// ms is d in milliseconds, for SQL intervals.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Claim records that h.Device's control connection is here now, taking the
// row over from any other receiver (the newest connection wins, as on one
// receiver).
func (f *Forwarder) Claim(ctx context.Context, h Holding) error {
	h.Replica = f.id
	h.Since = h.Since.Truncate(time.Microsecond) // what PostgreSQL keeps
	f.mu.Lock()
	f.held[h.Device] = h
	f.mu.Unlock()
	_, err := f.pool.Exec(ctx, `WITH c AS (INSERT INTO peer_holders (device, replica, since, source, version, state, expires)
			VALUES ($1, $2, $3, $4, $5, NULL, now() + $6 * interval '1 millisecond')
			ON CONFLICT (device) DO UPDATE SET replica = excluded.replica, since = excluded.since,
				source = excluded.source, version = excluded.version, state = NULL, expires = excluded.expires
			RETURNING device)
		SELECT pg_notify('`+roomsChannel+`', $2 || ' ' || device) FROM c`,
		h.Device, f.id, h.Since, h.Source, h.Version, ms(f.lease))
	if err != nil {
		return fmt.Errorf("claim %s's control connection: %w", h.Device, err)
	}
	return nil
}

// Release records that device's control connection made at since ended
// here; a row a newer connection claimed meanwhile (here or on another
// receiver) is left alone.
func (f *Forwarder) Release(ctx context.Context, device string, since time.Time) error {
	since = since.Truncate(time.Microsecond) // what PostgreSQL keeps
	f.mu.Lock()
	if f.held[device].Since.Equal(since) {
		delete(f.held, device)
	}
	f.mu.Unlock()
	if _, err := f.pool.Exec(ctx, `WITH d AS (DELETE FROM peer_holders WHERE device = $1 AND replica = $2 AND since = $3 RETURNING device)
		SELECT pg_notify('`+roomsChannel+`', $2 || ' ' || device) FROM d`, device, f.id, since); err != nil {
		return fmt.Errorf("release %s's control connection: %w", device, err)
	}
	return nil
}

// SetState records the consent state device's connection made at since
// pushed (JSON) and tells the other receivers.
func (f *Forwarder) SetState(ctx context.Context, device string, since time.Time, state json.RawMessage) error {
	_, err := f.pool.Exec(ctx, `WITH u AS (UPDATE peer_holders SET state = $4
			WHERE device = $1 AND replica = $2 AND since = $3 RETURNING device)
		SELECT pg_notify('`+roomsChannel+`', $2 || ' ' || device) FROM u`, device, f.id, since.Truncate(time.Microsecond), []byte(state))
	if err != nil {
		return fmt.Errorf("share %s's consent state: %w", device, err)
	}
	return nil
}

// Holders are the devices whose control connection another live receiver
// holds (this receiver's own are the caller's to know).
func (f *Forwarder) Holders(ctx context.Context) (map[string]Holding, error) {
	rows, err := f.pool.Query(ctx, `SELECT device, replica, since, source, version, state FROM peer_holders
		WHERE replica <> $1 AND expires > now()`, f.id)
	if err != nil {
		return nil, fmt.Errorf("read the control connections other receivers hold: %w", err)
	}
	defer rows.Close()
	m := map[string]Holding{}
	for rows.Next() {
		var h Holding
		if err := rows.Scan(&h.Device, &h.Replica, &h.Since, &h.Source, &h.Version, &h.State); err != nil {
			return nil, err
		}
		h.Since = h.Since.UTC()
		m[h.Device] = h
	}
	return m, rows.Err()
}

// Holder is device's control connection if another live receiver holds it.
func (f *Forwarder) Holder(ctx context.Context, device string) (Holding, bool, error) {
	h := Holding{Device: device}
	err := f.pool.QueryRow(ctx, `SELECT replica, since, source, version, state FROM peer_holders
		WHERE device = $1 AND replica <> $2 AND expires > now()`, device, f.id).Scan(&h.Replica, &h.Since, &h.Source, &h.Version, &h.State)
	if errors.Is(err, pgx.ErrNoRows) {
		return Holding{}, false, nil
	}
	if err != nil {
		return Holding{}, false, fmt.Errorf("read who holds %s's control connection: %w", device, err)
	}
	h.Since = h.Since.UTC()
	return h, true, nil
}

// answer is what the holder writes into a call's row.
type answer struct {
	Response *wire.Response     `json:"response,omitempty"`
	Error    *wire.ControlError `json:"error,omitempty"`
	// Offline is why the holder could not reach the box.
	Offline string `json:"offline,omitempty"`
}

// Request forwards op with params to the receiver holding device and waits
// for its answer, ctx, or the call's deadline (ctx's, or MaxWait from now).
// A device no live receiver holds is ErrOffline at once; so is a holder
// whose lease runs out while the call waits.
func (f *Forwarder) Request(ctx context.Context, device, op string, params json.RawMessage) (wire.Response, error) {
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > f.maxWait {
		deadline = time.Now().Add(f.maxWait)
	}
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	woken := make(chan struct{}, 1)
	f.mu.Lock()
	f.waiting[id] = woken
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := f.pool.Exec(dctx, `DELETE FROM peer_calls WHERE id = $1`, id); err != nil {
			f.log.Warn("forwarded call not deleted (the janitor removes it past its deadline)", "err", err)
		}
	}()
	// One statement: find a live holder elsewhere, write the call, wake the
	// holder (the notification leaves when the statement commits).
	var target string
	err := f.pool.QueryRow(ctx, `WITH h AS (
			SELECT replica FROM peer_holders WHERE device = $2 AND replica <> $5 AND expires > now()
		), c AS (
			INSERT INTO peer_calls (id, device, op, params, caller, target, deadline)
			SELECT $1::text, $2::text, $3::text, $4::bytea, $5::text, h.replica, $6::timestamptz FROM h RETURNING target
		)
		SELECT c.target, pg_notify('uploadbox_peer_' || c.target, $1::text) FROM c`,
		id, device, op, []byte(params), f.id, deadline).Scan(&target, nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return wire.Response{}, fmt.Errorf("%w: no receiver holds %s's control connection", ErrOffline, device)
	}
	if err != nil {
		if ctx.Err() != nil {
			return wire.Response{}, ctx.Err()
		}
		return wire.Response{}, fmt.Errorf("%w: forward to the receiver holding %s: %v", ErrOffline, device, err)
	}
	// The caller's own deadline ends the call as ctx does; MaxWait, when
	// it is shorter or the caller has none, as offline.
	var maxWait <-chan time.Time
	if ctxDeadline, ok := ctx.Deadline(); !ok || !ctxDeadline.Equal(deadline) {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		maxWait = timer.C
	}
	// Notifications can be lost while the listener reconnects: the lease
	// check reads the answer too.
	check := time.NewTicker(f.lease / 3)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return wire.Response{}, ctx.Err()
		case <-maxWait:
			return wire.Response{}, fmt.Errorf("%w: the receiver holding %s (%s) did not answer by the deadline", ErrOffline, device, target)
		case <-woken:
		case <-check.C:
			var alive bool
			err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM peer_holders
				WHERE device = $1 AND replica = $2 AND expires > now())`, device, target).Scan(&alive)
			if err == nil && !alive {
				// It may have answered just before it let go.
				if resp, done, err := f.read(ctx, id, device); done {
					return resp, err
				}
				return wire.Response{}, fmt.Errorf("%w: the receiver that held %s (%s) let go of it before answering", ErrOffline, device, target)
			}
		}
		if resp, done, err := f.read(ctx, id, device); done {
			return resp, err
		}
	}
}

// read reads call id's answer; done is false while there is none.
func (f *Forwarder) read(ctx context.Context, id, device string) (resp wire.Response, done bool, err error) {
	var raw []byte
	if err := f.pool.QueryRow(ctx, `SELECT answer FROM peer_calls WHERE id = $1`, id).Scan(&raw); err != nil {
		if ctx.Err() != nil {
			return wire.Response{}, true, ctx.Err()
		}
		return wire.Response{}, false, nil // read again at the next wake-up
	}
	if raw == nil {
		return wire.Response{}, false, nil
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return wire.Response{}, true, fmt.Errorf("%w: %s: unreadable answer from the receiver holding it: %v", ErrOffline, device, err)
	}
	switch {
	case a.Response != nil:
		return *a.Response, true, nil
	case a.Error != nil:
		return wire.Response{}, true, a.Error
	default:
		return wire.Response{}, true, fmt.Errorf("%w: %s: %s", ErrOffline, device, a.Offline)
	}
}

// Run listens for calls addressed to this receiver and answers them, and
// renews its holder rows, until ctx ends; it returns once the calls it
// was running have answered. It keeps trying while the database is away
// (its leases then run out and its boxes count as offline elsewhere).
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.serving.Wait()
	renewDone := make(chan struct{})
	go func() { defer close(renewDone); f.renewLoop(ctx) }()
	defer func() { <-renewDone }()
	for ctx.Err() == nil {
		err := f.listen(ctx)
		if ctx.Err() != nil {
			break
		}
		f.log.Warn("listening for forwarded calls failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(f.lease / 3):
		}
	}
	return nil
}

// listen holds one connection LISTENing on this receiver's channel.
func (f *Forwarder) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, f.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel(f.id)}.Sanitize()+"; LISTEN "+roomsChannel); err != nil {
		return err
	}
	f.listeningOnce.Do(func() { close(f.listening) })
	// Calls and answers notified before LISTEN (or while reconnecting).
	f.serveWaiting(ctx)
	f.wakeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == roomsChannel {
			// Our own announcements come back too: the hub knows those.
			replica, device, _ := strings.Cut(n.Payload, " ")
			if f.changed != nil && replica != f.id {
				f.changed(device)
			}
			continue
		}
		f.mu.Lock()
		w, mine := f.waiting[n.Payload]
		f.mu.Unlock()
		if mine {
			select {
			case w <- struct{}{}:
			default:
			}
			continue
		}
		f.serve(ctx, n.Payload)
	}
}

func (f *Forwarder) wakeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.waiting {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// serveWaiting serves the calls addressed here that nobody took yet.
func (f *Forwarder) serveWaiting(ctx context.Context) {
	rows, err := f.pool.Query(ctx, `SELECT id FROM peer_calls WHERE target = $1 AND answer IS NULL AND NOT taken`, f.id)
	if err != nil {
		return
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, id := range ids {
		f.serve(ctx, id)
	}
}

// serve takes call id (once: a notification and the catch-up scan may both
// name it) and runs it on the local connection in its own goroutine.
func (f *Forwarder) serve(ctx context.Context, id string) {
	var device, op string
	var params []byte
	var deadline time.Time
	err := f.pool.QueryRow(ctx, `UPDATE peer_calls SET taken = true
		WHERE id = $1 AND target = $2 AND NOT taken AND answer IS NULL
		RETURNING device, op, params, deadline`, id, f.id).Scan(&device, &op, &params, &deadline)
	if err != nil {
		if !errors.Is(err, pgx.ErrNoRows) && ctx.Err() == nil {
			f.log.Warn("forwarded call not taken", "call", id, "err", err)
		}
		return
	}
	f.serving.Add(1)
	go func() {
		defer f.serving.Done()
		cctx, cancel := context.WithDeadline(ctx, deadline)
		resp, err := f.local(cctx, device, op, params)
		cancel()
		var a answer
		var ce *wire.ControlError
		switch {
		case err == nil:
			a.Response = &resp
		case errors.As(err, &ce):
			a.Error = ce
		default:
			a.Offline = err.Error()
		}
		raw, _ := json.Marshal(a)
		// The answer is written even while this receiver stops: the
		// caller is waiting for it.
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer wcancel()
		_, err = f.pool.Exec(wctx, `WITH c AS (UPDATE peer_calls SET answer = $2 WHERE id = $1 RETURNING caller)
			SELECT pg_notify('uploadbox_peer_' || c.caller, $1::text) FROM c`, id, raw)
		if err != nil {
			f.log.Warn("forwarded call's answer not written", "call", id, "device", device, "err", err)
		}
	}()
}

// renewLoop renews this receiver's holder rows every third of the lease,
// removes calls long past their deadline, tells Lost of the boxes that
// connected anew elsewhere and Changed of the boxes other receivers stopped
// holding without a word.
func (f *Forwarder) renewLoop(ctx context.Context) {
	t := time.NewTicker(f.lease / 3)
	defer t.Stop()
	var before map[string]Holding
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.renew(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("control connection leases not renewed", "err", err)
		}
		if f.changed == nil {
			continue
		}
		// A receiver that died announced nothing: its boxes change (to
		// offline) when their leases run out.
		now, err := f.Holders(ctx)
		if err != nil {
			continue
		}
		for d, h := range before {
			if now[d].Replica != h.Replica {
				f.changed(d)
			}
		}
		before = now
	}
}

func (f *Forwarder) renew(ctx context.Context) error {
	f.mu.Lock()
	var devs, sources, versions []string
	var since []time.Time
	for _, h := range f.held {
		devs = append(devs, h.Device)
		since = append(since, h.Since)
		sources = append(sources, h.Source)
		versions = append(versions, h.Version)
	}
	f.mu.Unlock()
	// Re-inserting (not only updating) brings back rows lost while the
	// database was away, unless another receiver took the device meanwhile.
	_, err := f.pool.Exec(ctx, `INSERT INTO peer_holders (device, replica, since, source, version, expires)
		SELECT d, $1, s, src, v, now() + $2 * interval '1 millisecond'
		FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::text[]) AS u(d, s, src, v)
		ON CONFLICT (device) DO UPDATE SET replica = excluded.replica, since = excluded.since,
			source = excluded.source, version = excluded.version, expires = excluded.expires
		WHERE peer_holders.replica = excluded.replica OR peer_holders.expires < now()`,
		f.id, ms(f.lease), devs, since, sources, versions)
	if err != nil {
		return err
	}
	if _, err = f.pool.Exec(ctx, `DELETE FROM peer_calls WHERE deadline < now() - interval '1 minute'`); err != nil {
		return err
	}
	// The devices a newer connection on another receiver took over.
	rows, err := f.pool.Query(ctx, `SELECT device FROM peer_holders
		WHERE device = ANY($1::text[]) AND replica <> $2 AND expires > now()`, devs, f.id)
	if err != nil {
		return err
	}
	lost, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, d := range lost {
		f.mu.Lock()
		h, ok := f.held[d]
		delete(f.held, d)
		f.mu.Unlock()
		if ok && f.lost != nil {
			f.lost(d, h.Since)
		}
	}
	return nil
}
