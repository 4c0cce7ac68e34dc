// Package pgaudit is the audit chain the receivers of one PostgreSQL
// database share: one hash chain for all of them, in the tables migration
// 0003 of package kv makes (audit_head, audit_entries, audit_checkpoints).
//
// Its entries are those of the file chain (internal/audit), hashed by the
// same rule, so an entry's hash is the same in a file and in the table and
// both are verified by the same code. Appends are serialised by the
// database: each one locks the head row for its transaction, so seq rises
// by one without gaps whichever receiver appends, and every entry names
// the receiver that wrote it (Entry.Receiver). Times come from the
// database's clock, so the chain has one clock, not one per receiver.
package pgaudit

import (
	"context"
	stdcrypto "crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Chain is the shared audit chain on one database.
type Chain struct {
	pool     *pgxpool.Pool
	receiver string
	// Timeout bounds one call (default one minute; Verify, Prune and
	// Import read or write the whole table and take ten times as long).
	Timeout time.Duration
}

// New is the chain on pool's database (whose schema kv.OpenPostgres
// brought up to date); receiver names this receiver in the entries it
// appends.
func New(pool *pgxpool.Pool, receiver string) *Chain {
	return &Chain{pool: pool, receiver: receiver, Timeout: time.Minute}
}

// Where says where the chain is, for messages.
const Where = "the audit_entries table of the PostgreSQL database"

// checkpointLock is the advisory lock key of the checkpoint writer.
const checkpointLock = 0x75626f78_61756469 // "uboxaudi"

func (c *Chain) ctx(long bool) (context.Context, context.CancelFunc) {
	d := c.Timeout
	if long {
		d *= 10
	}
	return context.WithTimeout(context.Background(), d)
}

// begin starts a transaction, passing over pooled connections found dead
// (the server restarted, or ended them).
func (c *Chain) begin(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	return kv.Begin(ctx, c.pool, opts)
}

// Append writes e as the next entry of the chain: seq, prev and hash are
// filled in, the time (if zero) from the database's clock, and Receiver
// (if empty) with this receiver's name. It returns once the entry is
// committed.
func (c *Chain) Append(e audit.Entry) (audit.Entry, error) {
	ctx, cancel := c.ctx(false)
	defer cancel()
	tx, err := c.begin(ctx, pgx.TxOptions{})
	if err != nil {
		return e, fmt.Errorf("audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	var seq uint64
	var prev string
	var now time.Time
	if err := tx.QueryRow(ctx, `SELECT seq, hash, clock_timestamp() FROM audit_head FOR UPDATE`).Scan(&seq, &prev, &now); err != nil {
		return e, fmt.Errorf("audit chain: lock the head: %w", err)
	}
	e.Seq, e.Prev = seq+1, prev
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
	if e.Receiver == "" {
		e.Receiver = c.receiver
	}
	if e.Hash, err = e.Digest(); err != nil {
		return e, err
	}
	line, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	b := &pgx.Batch{}
	queueInsert(b, e, len(line)+1)
	b.Queue(`UPDATE audit_head SET seq = $1, hash = $2, bytes = bytes + $3`, e.Seq, e.Hash, len(line)+1)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return e, fmt.Errorf("audit chain: append seq %d: %w", e.Seq, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return e, fmt.Errorf("audit chain: append seq %d: %w", e.Seq, err)
	}
	return e, nil
}

func queueInsert(b *pgx.Batch, e audit.Entry, bytes int) {
	b.Queue(`INSERT INTO audit_entries (seq, time, at, event, identity, source, by_, outcome, detail, receiver, prev, hash, bytes)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		e.Seq, e.Time.Format(time.RFC3339Nano), e.Time, e.Event, e.Identity, e.Source, e.By, e.Outcome, e.Detail, e.Receiver, e.Prev, e.Hash, bytes)
}

const columns = `seq, time, at, event, identity, source, by_, outcome, detail, receiver, prev, hash`

// scan reads one row of columns into an entry; at is the row's query time.
func scan(row pgx.Row) (audit.Entry, time.Time, error) {
	var e audit.Entry
	var t string
	var at time.Time
	err := row.Scan(&e.Seq, &t, &at, &e.Event, &e.Identity, &e.Source, &e.By, &e.Outcome, &e.Detail, &e.Receiver, &e.Prev, &e.Hash)
	if err != nil {
		return e, at, err
	}
	if e.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
		return e, at, &audit.VerifyError{Seq: e.Seq, Reason: fmt.Sprintf("time %q is not an RFC 3339 time", t)}
	}
	return e, at, nil
}

// Entries returns the entries f selects, oldest first.
func (c *Chain) Entries(f audit.Filter) ([]audit.Entry, error) {
	ctx, cancel := c.ctx(true)
	defer cancel()
	q := `SELECT ` + columns + ` FROM audit_entries
		WHERE ($1::timestamptz IS NULL OR at >= $1)
		AND (cardinality($2::text[]) = 0 OR event = ANY($2) OR string_to_array(event, '.') && $2)
		ORDER BY seq DESC`
	args := []any{nil, f.Types}
	if !f.Since.IsZero() {
		args[0] = f.Since
	}
	if f.Types == nil {
		args[1] = []string{}
	}
	if f.Last > 0 {
		q += ` LIMIT $3`
		args = append(args, f.Last)
	}
	rows, err := c.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit chain: list: %w", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		e, _, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("audit chain: list: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit chain: list: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Size is the bytes the entries take, counted as the file chain counts
// them (each entry's JSON line).
func (c *Chain) Size() (int64, error) {
	ctx, cancel := c.ctx(false)
	defer cancel()
	var n int64
	if err := c.pool.QueryRow(ctx, `SELECT bytes FROM audit_head`).Scan(&n); err != nil {
		return 0, fmt.Errorf("audit chain: size: %w", err)
	}
	return n, nil
}

// entries yields the entries from seq from on, in seq order, reading in
// tx; each row's at must be the instant of its time.
func entries(ctx context.Context, tx pgx.Tx, from, to uint64) iter.Seq2[audit.Entry, error] {
	return func(yield func(audit.Entry, error) bool) {
		rows, err := tx.Query(ctx, `SELECT `+columns+` FROM audit_entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq`, from, to)
		if err != nil {
			yield(audit.Entry{}, fmt.Errorf("audit chain: read: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			e, at, err := scan(rows)
			if err == nil && !at.Equal(e.Time.Truncate(time.Microsecond)) {
				err = &audit.VerifyError{Seq: e.Seq, Reason: fmt.Sprintf("its at column (%s) is not its time (%s): the row was edited", at.UTC().Format(time.RFC3339Nano), e.Time.Format(time.RFC3339Nano))}
			}
			if !yield(e, err) || err != nil {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(audit.Entry{}, fmt.Errorf("audit chain: read: %w", err))
		}
	}
}

// head reads the head row.
func head(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (seq uint64, hash string, err error) {
	err = q.QueryRow(ctx, `SELECT seq, hash FROM audit_head`).Scan(&seq, &hash)
	if err != nil {
		err = fmt.Errorf("audit chain: read the head: %w", err)
	}
	return seq, hash, err
}

// HeadError says that the head row names an entry the table does not end
// with: entries at the end were removed (or the head row was edited).
type HeadError struct {
	Head, Last uint64
}

func (e *HeadError) Error() string {
	return fmt.Sprintf("the chain's head row says seq %d, the table ends at seq %d: the entries after %d were removed (or the head row was edited)", e.Head, e.Last, e.Last)
}

// checkpoints reads every checkpoint, oldest first, checked as the file
// chain's checkpoints file is (form, signature by the key each names,
// seq and time never going back).
func checkpoints(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, last bool) ([]audit.Checkpoint, error) {
	sql := `SELECT line FROM audit_checkpoints ORDER BY n`
	if last {
		sql = `SELECT line FROM (SELECT n, line FROM audit_checkpoints ORDER BY n DESC LIMIT 1) l`
	}
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	return audit.ReadCheckpointsFrom(strings.NewReader(strings.Join(lines, "\n")), "table audit_checkpoints")
}

// VerifyAnchored verifies the whole chain (every entry's hash and link,
// seq without gaps, the head row at its last entry) and that it holds
// what the last checkpoint covers; with key not nil, that checkpoint must
// be signed by it. It reads one snapshot of the database.
func (c *Chain) VerifyAnchored(key ed25519.PublicKey) (audit.Report, error) {
	ctx, cancel := c.ctx(true)
	defer cancel()
	tx, err := c.begin(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return audit.Report{}, fmt.Errorf("audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	cps, err := checkpoints(ctx, tx, false)
	if err != nil {
		return audit.Report{}, err
	}
	if key != nil && len(cps) > 0 {
		if err := cps[len(cps)-1].Verify(key); err != nil {
			return audit.Report{}, fmt.Errorf("audit checkpoints: last checkpoint: %w", err)
		}
	}
	hseq, _, err := head(ctx, tx)
	if err != nil {
		return audit.Report{}, err
	}
	rep, err := audit.VerifyEntries(entries(ctx, tx, 0, 1<<63-1), cps)
	if err != nil {
		return rep, err
	}
	if rep.Last != hseq {
		return rep, &HeadError{Head: hseq, Last: rep.Last}
	}
	return rep, nil
}

// Checkpoint signs the chain's head with signer and stores the checkpoint,
// as the file chain's Checkpoint does: first it verifies the entries from
// the previous checkpoint's on (all of them if retention removed that
// one) against it, so a chain cut short or rebuilt is reported, never
// signed over. One receiver at a time writes (an advisory lock); if the
// head has not moved since the last checkpoint, nothing is written.
func (c *Chain) Checkpoint(signer stdcrypto.Signer) (cp audit.Checkpoint, written bool, err error) {
	ctx, cancel := c.ctx(true)
	defer cancel()
	tx, err := c.begin(ctx, pgx.TxOptions{})
	if err != nil {
		return cp, false, fmt.Errorf("audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(checkpointLock)); err != nil {
		return cp, false, fmt.Errorf("audit checkpoints: lock: %w", err)
	}
	last, err := checkpoints(ctx, tx, true)
	if err != nil {
		return cp, false, err
	}
	var prev *audit.Checkpoint
	if len(last) > 0 {
		prev = &last[0]
	}
	hseq, hhash, err := head(ctx, tx)
	if err != nil || hseq == 0 {
		return cp, false, err
	}
	from := uint64(0)
	if prev != nil {
		var first uint64
		if err := tx.QueryRow(ctx, `SELECT coalesce(min(seq), 0) FROM audit_entries`).Scan(&first); err != nil {
			return cp, false, fmt.Errorf("audit chain: %w", err)
		}
		if prev.Seq >= first {
			from = prev.Seq
		}
	}
	rep, err := audit.VerifyEntries(entries(ctx, tx, from, hseq), last)
	if err == nil && rep.Last != hseq {
		err = &HeadError{Head: hseq, Last: rep.Last}
	}
	if err != nil {
		return cp, false, fmt.Errorf("audit chain: not checkpointed: %w", err)
	}
	if prev != nil && prev.Seq == hseq && prev.Hash == hhash {
		return *prev, false, nil
	}
	t := time.Now()
	if prev != nil && t.Before(prev.Time) {
		t = prev.Time // a clock set back must not make the checkpoints go backwards
	}
	if cp, err = audit.SignCheckpoint(signer, hseq, hhash, t); err != nil {
		return cp, false, err
	}
	line, err := json.Marshal(cp)
	if err != nil {
		return cp, false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_checkpoints (seq, at, line) VALUES ($1, $2, $3)`, cp.Seq, cp.Time, string(line)); err != nil {
		return cp, false, fmt.Errorf("audit checkpoints: write: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return cp, false, fmt.Errorf("audit checkpoints: write: %w", err)
	}
	return cp, true, nil
}

// Prune removes the entries older than retention (by the database's
// clock) as the file chain's Prune does: the leading ones up to the first
// that is not, and always keeping the newest, so the first kept entry
// names the last removed one as its prev (the anchor) and Verify starts
// there. Checkpoints older than retention go too, except the newest. A
// broken chain is not pruned.
func (c *Chain) Prune(retention time.Duration) (removed int, err error) {
	if retention <= 0 {
		return 0, errors.New("audit chain: retention must be positive")
	}
	if _, err := c.VerifyAnchored(nil); err != nil {
		return 0, fmt.Errorf("audit chain: refusing to prune a broken chain: %w", err)
	}
	ctx, cancel := c.ctx(true)
	defer cancel()
	tx, err := c.begin(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	var cutoff time.Time
	if err := tx.QueryRow(ctx, `SELECT clock_timestamp() - make_interval(secs => $1)`, retention.Seconds()).Scan(&cutoff); err != nil {
		return 0, fmt.Errorf("audit chain: prune: %w", err)
	}
	// The first entry kept: the first not older than the cutoff, or the
	// newest if all are.
	var keep uint64
	if err := tx.QueryRow(ctx, `SELECT coalesce(
		(SELECT min(seq) FROM audit_entries WHERE at >= $1),
		(SELECT max(seq) FROM audit_entries), 0)`, cutoff).Scan(&keep); err != nil {
		return 0, fmt.Errorf("audit chain: prune: %w", err)
	}
	// The rows go first; the head row, which every append locks, is
	// locked only from the byte count's update to the commit.
	var n int
	var freed int64
	if err := tx.QueryRow(ctx, `WITH d AS (DELETE FROM audit_entries WHERE seq < $1 RETURNING bytes)
		SELECT count(*), coalesce(sum(bytes), 0) FROM d`, keep).Scan(&n, &freed); err != nil {
		return 0, fmt.Errorf("audit chain: prune: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE at < $1 AND n < (SELECT max(n) FROM audit_checkpoints)`, cutoff); err != nil {
		return 0, fmt.Errorf("audit checkpoints: prune: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_head SET bytes = bytes - $1`, freed); err != nil {
		return 0, fmt.Errorf("audit chain: prune: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("audit chain: prune: %w", err)
	}
	return n, nil
}

// ErrNotEmpty: Import into a database whose chain holds other entries.
var ErrNotEmpty = errors.New("the database already holds another audit chain: migrate into an empty database")

// Import copies a verified chain (entries in seq order, as a file holds
// them, and its checkpoints) into an empty table, keeping every entry as
// it is (so its hash), and makes its last entry the head: appends continue
// that chain. Importing the same chain again changes nothing (imported
// 0), so an interrupted migration can be run again; any other chain
// already there is refused with ErrNotEmpty.
func (c *Chain) Import(es []audit.Entry, cps []audit.Checkpoint) (imported int, err error) {
	if len(es) == 0 {
		return 0, nil
	}
	ctx, cancel := c.ctx(true)
	defer cancel()
	tx, err := c.begin(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	var hseq uint64
	var hhash string
	if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head FOR UPDATE`).Scan(&hseq, &hhash); err != nil {
		return 0, fmt.Errorf("audit chain: lock the head: %w", err)
	}
	last := es[len(es)-1]
	if hseq == last.Seq && hhash == last.Hash {
		return 0, nil
	}
	var rows int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_entries`).Scan(&rows); err != nil {
		return 0, fmt.Errorf("audit chain: %w", err)
	}
	if hseq != 0 || rows != 0 {
		return 0, fmt.Errorf("%w (its head is seq %d)", ErrNotEmpty, hseq)
	}
	var total int64
	src := make([][]any, len(es))
	for i, e := range es {
		line, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		total += int64(len(line) + 1)
		src[i] = []any{e.Seq, e.Time.Format(time.RFC3339Nano), e.Time, e.Event, e.Identity, e.Source, e.By, e.Outcome, e.Detail, e.Receiver, e.Prev, e.Hash, len(line) + 1}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_entries"},
		[]string{"seq", "time", "at", "event", "identity", "source", "by_", "outcome", "detail", "receiver", "prev", "hash", "bytes"},
		pgx.CopyFromRows(src)); err != nil {
		return 0, fmt.Errorf("audit chain: import: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2, bytes = $3`, last.Seq, last.Hash, total); err != nil {
		return 0, fmt.Errorf("audit chain: import: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints`); err != nil {
		return 0, fmt.Errorf("audit checkpoints: import: %w", err)
	}
	for _, cp := range cps {
		line, err := json.Marshal(cp)
		if err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_checkpoints (seq, at, line) VALUES ($1, $2, $3)`, cp.Seq, cp.Time, string(line)); err != nil {
			return 0, fmt.Errorf("audit checkpoints: import: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("audit chain: import: %w", err)
	}
	return len(es), nil
}
