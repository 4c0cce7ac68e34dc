// Package pgsession ends the PostgreSQL session of a frozen receiver that
// holds a session-level advisory lock.
//
// A receiver frozen by SIGSTOP or a paused VM answers nothing, but its
// kernel keeps its connections open, so PostgreSQL keeps its sessions and
// their advisory locks until it resumes. The lock holders this project
// runs name their sessions (application_name) and run a statement on them
// at a known interval, a heartbeat; a session of that name that has been
// idle for longer than the caller's bound belongs to a process that
// stopped, and ending it (pg_terminate_backend) frees its locks.
package pgsession

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier runs one statement (a pool or a connection).
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// LockIDs are the pg_locks columns of advisory lock key (a bigint key:
// classid its high 32 bits, objid its low 32 bits, objsubid 1).
func LockIDs(key int64) (classid, objid int64) {
	return int64(uint64(key) >> 32), int64(uint64(key) & 0xffffffff)
}

// Ended is a session EndSilent ended.
type Ended struct {
	PID    int32
	Silent time.Duration // how long it had been idle
}

// ErrNone means no session of that name holding the lock was idle for
// longer than the bound.
var ErrNone = errors.New("no silent holder")

// EndSilent ends the session holding advisory lock key if its
// application_name is app and it has been idle for longer than silent
// (waiting at most 5 s for it to end). ErrNone: there was none.
func EndSilent(ctx context.Context, q Querier, key int64, app string, silent time.Duration) (Ended, error) {
	classid, objid := LockIDs(key)
	var e Ended
	var secs float64
	err := q.QueryRow(ctx, `SELECT a.pid, extract(epoch FROM now() - a.state_change)::float8 FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
		WHERE k.locktype = 'advisory' AND k.granted AND k.classid = $1::bigint::oid AND k.objid = $2::bigint::oid AND k.objsubid = 1
		AND a.application_name = $3 AND a.state = 'idle' AND a.state_change < now() - $4 * interval '1 millisecond'`,
		classid, objid, app, float64(silent)/float64(time.Millisecond)).Scan(&e.PID, &secs)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNone
	}
	if err != nil {
		return e, err
	}
	e.Silent = time.Duration(secs * float64(time.Second)).Round(time.Millisecond)
	var ended bool
	if err := q.QueryRow(ctx, `SELECT pg_terminate_backend($1, 5000)`, e.PID).Scan(&ended); err != nil {
		return e, err
	}
	if !ended {
		return e, errors.New("pg_terminate_backend did not end the session in 5 s")
	}
	return e, nil
}
