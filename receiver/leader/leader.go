// Package leader elects one receiver, among those sharing a PostgreSQL
// database, to run a periodic job (the recordings' lifecycle: retention,
// purge, scrub), so that the receivers run it once between them and not
// once each.
//
// The leader is whoever holds a session-level advisory lock on a hash of
// the job's name, taken with pg_try_advisory_lock on a connection kept for
// it alone. The lock lasts as long as that session: a leader that exits or
// is killed frees it at once (its connection closes), one whose host
// vanishes when the server's TCP keepalives give up on it (set to 10 s +
// 3 × 5 s on the session). The others try again every Retry, so one of
// them takes over within Retry of the lock's release. The leader checks
// its session every Retry too: if it fails, the job's context ends before
// the server can have given the lock to another (Retry plus the check's
// timeout stay below the keepalives' 25 s).
//
// A leader that freezes (SIGSTOP, a paused VM) keeps its connection open,
// and so its lock. Its session is named AppName and its check every Retry
// is a heartbeat: a follower that finds the lock held by such a session
// idle for longer than Lease (at least two Retry) ends that session and
// takes the lock at its next try. The resumed leader's first check, which
// its pending tick makes at once, fails, and its job stops.
package leader

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uploadbox/uploadbox/receiver/internal/pgsession"
)

// DefaultRetry is how often a follower tries to take the lock, and the
// leader checks that it still holds it.
const DefaultRetry = 3 * time.Second

// checkTimeout bounds one statement on the lock's session.
const checkTimeout = 5 * time.Second

// DefaultLease is the default of Elector.Lease.
const DefaultLease = 15 * time.Second

// AppName is the application_name of leaders' sessions: only sessions
// that say it (and so check in every Retry) are ever ended by a follower.
const AppName = "uploadbox leader"

// Elector campaigns for one job's lock.
type Elector struct {
	pool  *pgxpool.Pool
	name  string
	retry time.Duration
	log   *slog.Logger
	// leading is whether this process holds the lock now.
	leading atomic.Bool
	// Lease is how long the leader's session may stay silent before a
	// follower ends it (default DefaultLease; never less than two Retry).
	// Set it before Run.
	Lease time.Duration
}

// silentBound is how long a leader's session may stay idle before a
// follower ends it.
func (e *Elector) silentBound() time.Duration {
	l := e.Lease
	if l <= 0 {
		l = DefaultLease
	}
	return max(l, 2*e.retry)
}

// New returns an Elector for the job called name on pool's database
// (retry 0: DefaultRetry).
func New(pool *pgxpool.Pool, name string, retry time.Duration, log *slog.Logger) *Elector {
	if retry <= 0 {
		retry = DefaultRetry
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{pool: pool, name: name, retry: retry, log: log.With("component", "leader", "job", name)}
}

// Leading reports whether this process holds the job's lock now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// key is the advisory lock key of job name.
func key(name string) int64 {
	h := sha256.Sum256([]byte("uploadbox leader\x00" + name))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// Run campaigns until ctx ends. Each time it takes the lock it runs lead
// with a context that ends when ctx does or the lock is lost, and waits
// for lead to return before it campaigns again; it returns once lead has
// returned.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	for ctx.Err() == nil {
		if err := e.term(ctx, lead); err != nil && ctx.Err() == nil {
			e.log.Warn("campaign for the job's lock failed; trying again", "err", err, "in", e.retry)
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.retry):
		}
	}
}

// term opens the lock's session, waits until it holds the lock (trying
// every retry) and leads until the session fails or ctx ends.
func (e *Elector) term(ctx context.Context, lead func(ctx context.Context)) error {
	conn, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := e.exec(ctx, conn, `SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; SET application_name = '`+AppName+`'`); err != nil {
		return err
	}
	tick := time.NewTicker(e.retry)
	defer tick.Stop()
	for {
		var got bool
		qctx, cancel := context.WithTimeout(ctx, checkTimeout)
		err := conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, key(e.name)).Scan(&got)
		cancel()
		if err != nil {
			return fmt.Errorf("try the lock: %w", err)
		}
		if got {
			break
		}
		e.endFrozenLeader(ctx, conn)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	e.leading.Store(true)
	defer e.leading.Store(false)
	e.log.Info("this receiver runs the job now (it holds the job's lock in the database)")
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); lead(lctx) }()
	defer func() { stop(); <-done }()
	for {
		select {
		case <-ctx.Done():
			// The session's end lets the lock go for the next one.
			return nil
		case <-done:
			return fmt.Errorf("the job returned while leading")
		case <-tick.C:
			if err := e.exec(ctx, conn, `SELECT 1`); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				e.log.Warn("lost the job's lock (its database session failed): the job stops here, another receiver takes it over", "err", err)
				return nil
			}
		}
	}
}

// endFrozenLeader ends the leader's session if it has been silent beyond
// silentBound: the leader is frozen; the next try takes the lock.
func (e *Elector) endFrozenLeader(ctx context.Context, conn *pgx.Conn) {
	qctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	ended, err := pgsession.EndSilent(qctx, conn, key(e.name), AppName, e.silentBound())
	switch {
	case errors.Is(err, pgsession.ErrNone):
	case err != nil:
		if ctx.Err() == nil {
			e.log.Warn("a frozen leader's session could not be ended", "pid", ended.PID, "err", err)
		}
	default:
		e.log.Warn("ended the session of a frozen leader (silent beyond the lease): this receiver takes the job over",
			"pid", ended.PID, "silent", ended.Silent, "lease", e.silentBound())
	}
}

func (e *Elector) exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	qctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	_, err := conn.Exec(qctx, sql)
	return err
}
