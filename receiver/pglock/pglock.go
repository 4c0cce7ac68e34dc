// Package pglock holds tus upload locks in PostgreSQL, so that receivers
// sharing one database never write one upload at once.
//
// A lock is a session-level advisory lock (pg_try_advisory_lock) on a
// 64-bit hash of the upload id, taken on one connection the Locker keeps
// for itself: it is freed by Unlock, and by PostgreSQL when that
// connection ends (the receiver exited or was killed, or its host is gone
// and the server's TCP keepalives, set to 10 s + 3 × 5 s on the session,
// gave up on it). Within one process a map excludes contenders first, as
// tusd's memorylocker does, since advisory locks are re-entrant per
// session.
//
// tusd asks the holder of a busy lock to release it (a commit or a resumed
// PATCH wants an upload another request still holds). Across receivers
// the request travels by LISTEN/NOTIFY: a waiter that finds the lock taken
// sends NOTIFY uploadbox_tus_release with the upload id and tries again
// every PollInterval; Run listens on a second connection of its own and
// passes each request to the local holder of that id, whose PATCH then
// stops and saves its bytes.
//
// A frozen holder (SIGSTOP, a paused VM) answers nothing, but its kernel
// keeps its connections alive, so PostgreSQL would keep its locks until it
// resumes. Each Locker's lock session therefore runs a statement every
// third of Lease (Run's heartbeat) under the application_name AppName; a
// waiter that finds a lock held by such a session idle for longer than
// Lease ends that session (pg_terminate_backend), which frees every lock
// it held, and takes the lock. The resumed holder is fenced: Check, which
// the receiver calls before each write to a staged upload, fails once its
// session no longer holds the lock, and its first statement on the ended
// session asks every holder it had to stop.
package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/receiver/internal/pgsession"
)

// Channel is the NOTIFY channel of release requests; the payload is the
// upload id.
const Channel = "uploadbox_tus_release"

// DefaultPollInterval is how often a waiter tries a taken lock again (and
// repeats its release request).
const DefaultPollInterval = 100 * time.Millisecond

// DefaultLease is the default of Locker.Lease.
const DefaultLease = 15 * time.Second

// AppName is the application_name of lock sessions: only sessions that
// say it (and so run the heartbeat) are ever ended by a waiter.
const AppName = "uploadbox tus locks"

// ErrLockLost is returned by Check when this process's lock on an upload
// is gone: its session was ended (by a waiter that found it frozen, or by
// the server) and another receiver may hold the upload now.
var ErrLockLost = errors.New("tus lock lost")

// queryTimeout bounds one statement on the lock session. Statements on it
// never use a caller's context: a statement cut short ends the connection,
// and with it every lock it holds.
const queryTimeout = 10 * time.Second

// Locker is a tusd Locker backed by PostgreSQL advisory locks.
type Locker struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// PollInterval is how often a waiter tries again (default
	// DefaultPollInterval).
	PollInterval time.Duration
	// Lease is how long a lock session may stay silent before a waiter
	// ends it (default DefaultLease); Run's heartbeat speaks every third
	// of it.
	Lease time.Duration
	// Ended, if set, is called (with the ended session's backend pid and
	// the upload id waited for) when a waiter of this process ended a
	// frozen holder's session.
	Ended func(pid int32, id string)

	mu    sync.Mutex
	locks map[string]*entry

	// sessMu serialises the lock session's statements.
	sessMu sync.Mutex
	sess   *session
}

// entry is one id held, or being acquired, in this process.
type entry struct {
	released      chan struct{}
	requestUnlock func()
	// sess is the session holding the advisory lock, nil while it is
	// being acquired.
	sess *session
}

// session is the connection holding this process's advisory locks.
type session struct {
	conn *pgx.Conn
}

var _ tusd.Locker = (*Locker)(nil)

// New returns a Locker on pool's database. It takes two connections out of
// the pool for itself when first used: the lock session and, while Run
// runs, the listener.
func New(pool *pgxpool.Pool, log *slog.Logger) *Locker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Locker{pool: pool, log: log.With("component", "tus-locks"), PollInterval: DefaultPollInterval, locks: map[string]*entry{}}
}

// UseIn makes l the composer's locker.
func (l *Locker) UseIn(c *tusd.StoreComposer) { c.UseLocker(l) }

// NewLock implements tusd.Locker.
func (l *Locker) NewLock(id string) (tusd.Lock, error) { return &lock{l: l, id: id}, nil }

// key is the advisory lock key of an upload id.
func key(id string) int64 {
	h := sha256.Sum256([]byte("uploadbox tus lock\x00" + id))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

type lock struct {
	l  *Locker
	id string
	e  *entry // while held
}

// Lock takes the lock, asking its holder (here or in another receiver) to
// release it, until ctx is done: then it returns tusd.ErrLockTimeout.
func (k *lock) Lock(ctx context.Context, requestUnlock func()) error {
	l := k.l
	e, err := l.claimLocal(ctx, k.id, requestUnlock)
	if err != nil {
		return err
	}
	poll := l.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	// A holder that answers neither the release request nor its heartbeat
	// is looked for a few times a second at most.
	const staleEvery = 500 * time.Millisecond
	var lastStale time.Time
	for {
		s, ok, err := l.try(ctx, key(k.id))
		if err != nil {
			l.dropLocal(k.id, e)
			return fmt.Errorf("tus lock: %w", err)
		}
		if ok {
			l.mu.Lock()
			e.sess = s
			l.mu.Unlock()
			k.e = e
			return nil
		}
		l.requestRelease(ctx, k.id)
		if time.Since(lastStale) >= staleEvery {
			lastStale = time.Now()
			l.endFrozenHolder(ctx, k.id)
		}
		select {
		case <-ctx.Done():
			l.dropLocal(k.id, e)
			return tusd.ErrLockTimeout
		case <-time.After(poll):
		}
	}
}

// Unlock releases the lock. Unlocking a lock not held (or twice) is no
// error.
func (k *lock) Unlock() error {
	l := k.l
	e := k.e
	if e == nil {
		return nil
	}
	k.e = nil
	l.mu.Lock()
	s := e.sess
	l.mu.Unlock()
	var err error
	if s != nil {
		err = l.unlock(s, key(k.id))
	}
	l.dropLocal(k.id, e)
	return err
}

// claimLocal waits until no other request of this process holds id, asking
// the one that does to release it, and records the caller as its holder.
func (l *Locker) claimLocal(ctx context.Context, id string, requestUnlock func()) (*entry, error) {
	for {
		l.mu.Lock()
		held := l.locks[id]
		if held == nil {
			e := &entry{released: make(chan struct{}), requestUnlock: requestUnlock}
			l.locks[id] = e
			l.mu.Unlock()
			return e, nil
		}
		l.mu.Unlock()
		held.requestUnlock()
		select {
		case <-ctx.Done():
			return nil, tusd.ErrLockTimeout
		case <-held.released:
		}
	}
}

func (l *Locker) dropLocal(id string, e *entry) {
	l.mu.Lock()
	if l.locks[id] == e {
		delete(l.locks, id)
		close(e.released)
	}
	l.mu.Unlock()
}

// try runs pg_try_advisory_lock on the lock session, opening it first if
// need be. A session found broken is replaced once.
func (l *Locker) try(ctx context.Context, k int64) (*session, bool, error) {
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	var err error
	for range 2 {
		if l.sess == nil {
			if l.sess, err = l.open(ctx); err != nil {
				return nil, false, err
			}
		}
		s := l.sess
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
		var ok bool
		err = s.conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, k).Scan(&ok)
		cancel()
		if err == nil {
			return s, ok, nil
		}
		l.lost(s, err)
	}
	return nil, false, err
}

// open takes a connection out of the pool for the lock session.
// Like the statements, it does not stop when ctx does: it is the session
// of every lock of this process, not of one caller.
func (l *Locker) open(ctx context.Context) (*session, error) {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	c, err := l.pool.Acquire(qctx)
	if err != nil {
		return nil, fmt.Errorf("connect for the lock session: %w", err)
	}
	conn := c.Hijack()
	if _, err := conn.Exec(qctx, `SELECT set_config('application_name', $1, false)`, AppName); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("set up the lock session: %w", err)
	}
	// A receiver whose host vanishes holds its locks until the server
	// gives up on the connection: within about 25 s, not the kernel's
	// two hours. (Ignored on Unix sockets.)
	if _, err := conn.Exec(qctx, `SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3`); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("set up the lock session: %w", err)
	}
	return &session{conn: conn}, nil
}

// lost ends a session whose connection failed: PostgreSQL has dropped its
// locks (or will when it notices), so their holders are asked to stop.
// Called with sessMu held.
func (l *Locker) lost(s *session, err error) {
	if l.sess != s {
		return
	}
	l.sess = nil
	s.conn.Close(context.Background())
	l.mu.Lock()
	var stop []func()
	for _, e := range l.locks {
		if e.sess == s {
			stop = append(stop, e.requestUnlock)
		}
	}
	l.mu.Unlock()
	if len(stop) > 0 {
		l.log.Warn("tus lock session lost: stopping the uploads it held", "uploads", len(stop), "err", err)
	}
	for _, f := range stop {
		f()
	}
}

// unlock releases k on s, unless s is already gone (and its locks with it).
func (l *Locker) unlock(s *session, k int64) error {
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	if l.sess != s {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	var ok bool
	if err := s.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, k).Scan(&ok); err != nil {
		l.lost(s, err)
		return fmt.Errorf("tus unlock: %w", err)
	}
	if !ok {
		return errors.New("tus unlock: the lock session did not hold the lock")
	}
	return nil
}

func (l *Locker) lease() time.Duration {
	if l.Lease > 0 {
		return l.Lease
	}
	return DefaultLease
}

// endFrozenHolder ends the lock session holding id's lock if it is a lock
// session (AppName) whose heartbeat has been silent for longer than the
// lease: its process is frozen or cut off while its kernel keeps the
// connection open. PostgreSQL then frees every lock that session held.
func (l *Locker) endFrozenHolder(ctx context.Context, id string) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	e, err := pgsession.EndSilent(qctx, l.pool, key(id), AppName, l.lease())
	if errors.Is(err, pgsession.ErrNone) {
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("tus lock: a frozen holder's session could not be ended", "pid", e.PID, "err", err)
		}
		return
	}
	l.log.Warn("tus lock: ended the lock session of a frozen receiver (silent beyond the lease); every upload it held can continue here or elsewhere",
		"pid", e.PID, "silent", e.Silent, "lease", l.lease())
	if l.Ended != nil {
		l.Ended(e.PID, id)
	}
}

// heartbeat runs a statement on the lock session, if there is one, so
// that waiters see it alive; a failure ends the session (lost).
func (l *Locker) heartbeat() {
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	s := l.sess
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if _, err := s.conn.Exec(ctx, `SELECT 1`); err != nil {
		l.lost(s, err)
	}
}

// Check reports whether this process may still write upload id (which its
// error leaves out: upload ids are the devices' handles): nil when
// it holds id's lock on a session that still holds it in the database (or
// holds nothing for id: a creation, which takes no lock); ErrLockLost when
// the session it took the lock on was ended, in which case every holder on
// it is asked to stop. The receiver calls it before each write to a staged
// upload, so that a holder that was frozen and resumed writes nothing into
// an upload another receiver continued.
func (l *Locker) Check(ctx context.Context, id string) error {
	l.mu.Lock()
	e := l.locks[id]
	var s *session
	if e != nil {
		s = e.sess
	}
	l.mu.Unlock()
	if s == nil {
		return nil
	}
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	if l.sess != s {
		return fmt.Errorf("%w: its lock session ended", ErrLockLost)
	}
	classid, objid := pgsession.LockIDs(key(id))
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	var held bool
	err := s.conn.QueryRow(qctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND pid = pg_backend_pid() AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1)`, classid, objid).Scan(&held)
	if err != nil {
		l.lost(s, err)
		return fmt.Errorf("%w: %v", ErrLockLost, err)
	}
	if !held {
		return fmt.Errorf("%w: its session no longer holds it", ErrLockLost)
	}
	return nil
}

// requestRelease asks every receiver to release id.
func (l *Locker) requestRelease(ctx context.Context, id string) {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	if _, err := l.pool.Exec(qctx, `SELECT pg_notify($1, $2)`, Channel, id); err != nil {
		l.log.Warn("tus lock release request not sent", "err", err)
	}
}

// released is a release request for id: its local holder, if it holds the
// advisory lock, is asked to stop.
func (l *Locker) released(id string) {
	l.mu.Lock()
	e := l.locks[id]
	holds := e != nil && e.sess != nil
	l.mu.Unlock()
	if holds {
		e.requestUnlock()
	}
}

// Run delivers other receivers' release requests to this one's holders
// (listening again after a broken connection) and beats the lock
// session's heartbeat until ctx is done; then it ends the lock session,
// freeing whatever locks are left.
func (l *Locker) Run(ctx context.Context) error {
	defer l.Close()
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		t := time.NewTicker(l.lease() / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				l.heartbeat()
			}
		}
	}()
	defer func() { <-beat }()
	backoff := 100 * time.Millisecond
	for {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("tus lock release requests: listening failed, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (l *Locker) listen(ctx context.Context) error {
	c, err := l.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := c.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.released(n.Payload)
	}
}

// Close ends the lock session: PostgreSQL frees every lock it holds.
func (l *Locker) Close() error {
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	if l.sess == nil {
		return nil
	}
	s := l.sess
	l.sess = nil
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	return s.conn.Close(ctx)
}
