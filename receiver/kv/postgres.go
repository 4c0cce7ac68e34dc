package kv

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the shared store: any number of receivers on one PostgreSQL
// database. Updates are SERIALIZABLE transactions, retried when they lose a
// conflict with another receiver's.
type Postgres struct {
	pool *pgxpool.Pool
	// TxTimeout bounds one transaction (each try of an Update).
	TxTimeout time.Duration
	// MaxRetries bounds the tries of an Update that keeps losing conflicts.
	MaxRetries int
}

//go:embed migrations/*.sql
var migrations embed.FS

// batch is how many rows ForEach and Cursor fetch at a time.
const batch = 512

// SchemaVersion is the schema version this code writes (the highest
// migration it carries).
func SchemaVersion() int {
	ms, _ := loadMigrations()
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// OpenPostgres connects to the database at dsn (postgres://… or key=value)
// and brings its schema to SchemaVersion, applying the migrations it lacks in
// order, in one transaction, under an advisory lock, so that receivers
// starting together migrate once. A database migrated by a newer receiver is
// refused.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database %s: %v (give postgres://USER@HOST/DB?sslmode=… or key=value pairs)", Redact(dsn), redactErr(err, dsn))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: %v", Redact(dsn), redactErr(err, dsn))
	}
	p := &Postgres{pool: pool, TxTimeout: time.Minute, MaxRetries: 30}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %v", Redact(dsn), redactErr(err, dsn))
	}
	return p, nil
}

// Ping checks that the database answers (for readiness).
func (p *Postgres) Ping(ctx context.Context) error {
	var err error
	for range staleTries {
		if err = p.pool.Ping(ctx); err == nil || !stale(err) {
			return err
		}
	}
	return err
}

// staleTries bounds how many pooled connections found dead (the server
// restarted, or ended them) are given up before a call fails: such a
// connection fails before sending anything, and the next one may be fresh.
const staleTries = 8

// stale: the pooled connection was dead before the statement ran (broken
// before anything was sent, or ended by the server while idle: its
// "terminating connection" notice is read as the answer), so the statement
// may run on another connection.
func stale(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" // admin_shutdown, crash_shutdown
	}
	return pgconn.SafeToRetry(err)
}

// begin starts a transaction, passing over pooled connections found dead.
func (p *Postgres) begin(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	return Begin(ctx, p.pool, opts)
}

// Begin starts a transaction on pool, passing over pooled connections
// found dead (the server restarted, or ended them), for the pieces of the
// receiver that use the database directly.
func Begin(ctx context.Context, pool *pgxpool.Pool, opts pgx.TxOptions) (pgx.Tx, error) {
	var err error
	for range staleTries {
		var tx pgx.Tx
		if tx, err = pool.BeginTx(ctx, opts); err == nil || !stale(err) {
			return tx, err
		}
	}
	return nil, err
}

// Pool is the connection pool, for the pieces of the receiver that use the
// database directly (locks, notifications).
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

func (p *Postgres) Close() error { p.pool.Close(); return nil }

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_what.sql", e.Name())
		}
		b, err := migrations.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: versions must run 1, 2, 3… without gaps", m.name)
		}
	}
	return ms, nil
}

// migrateLock is the advisory lock key receivers take while migrating.
const migrateLock = 0x75626f78 // "ubox"

func (p *Postgres) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS uploadbox_schema (
		version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM uploadbox_schema`).Scan(&have); err != nil {
		return err
	}
	if have > len(ms) {
		return fmt.Errorf("its schema is version %d, newer than this receiver's (%d): run the receiver that migrated it, or a newer one", have, len(ms))
	}
	for _, m := range ms[have:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO uploadbox_schema (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

func (p *Postgres) Update(fn func(Tx) error) error {
	for try := 1; ; try++ {
		err := p.run(pgx.TxOptions{IsoLevel: pgx.Serializable}, true, fn)
		if err == nil || !retryable(err) || try >= p.MaxRetries {
			return err
		}
		// Lost a conflict with another transaction: back off a little
		// (with jitter, so the two do not collide again) and run fn again.
		d := time.Duration(try) * time.Millisecond
		time.Sleep(d + rand.N(d+time.Millisecond))
	}
}

func (p *Postgres) View(fn func(Tx) error) error {
	return p.run(pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, false, fn)
}

func (p *Postgres) run(opts pgx.TxOptions, writable bool, fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.TxTimeout)
	defer cancel()
	tx, err := p.begin(ctx, opts)
	if err != nil {
		return err
	}
	t := &pgTx{ctx: ctx, tx: tx, writable: writable, known: map[string]bool{}}
	ferr := fn(t)
	if t.err != nil {
		// A failed statement is the cause of whatever fn made of it.
		ferr = t.err
	}
	if ferr != nil {
		tx.Rollback(ctx)
		return ferr
	}
	return tx.Commit(ctx)
}

// retryable: the transaction lost to a concurrent one and may succeed if run
// again (serialization failure, deadlock).
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

type pgTx struct {
	ctx      context.Context
	tx       pgx.Tx
	writable bool
	err      error
	known    map[string]bool // buckets seen to exist
}

func (t *pgTx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *pgTx) Bucket(name []byte) Bucket {
	// After a failed statement the bucket returned reads as empty and
	// refuses writes (every operation checks t.err), and the Update or
	// View returns the failure: callers that take a created bucket for
	// granted do not dereference nil over a database error.
	if t.err != nil {
		return &pgBucket{t: t, name: append([]byte(nil), name...)}
	}
	if !t.known[string(name)] {
		var ok bool
		if err := t.tx.QueryRow(t.ctx, `SELECT EXISTS (SELECT 1 FROM kv_buckets WHERE name = $1)`, name).Scan(&ok); err != nil {
			t.fail(err)
			return &pgBucket{t: t, name: append([]byte(nil), name...)}
		}
		if !ok {
			return nil
		}
		t.known[string(name)] = true
	}
	return &pgBucket{t: t, name: append([]byte(nil), name...)}
}

func (t *pgTx) CreateBucketIfNotExists(name []byte) (Bucket, error) {
	if !t.writable {
		return nil, ErrReadOnly
	}
	if t.err != nil {
		return nil, t.err
	}
	if _, err := t.tx.Exec(t.ctx, `INSERT INTO kv_buckets (name) VALUES ($1) ON CONFLICT DO NOTHING`, name); err != nil {
		t.fail(err)
		return nil, err
	}
	t.known[string(name)] = true
	return &pgBucket{t: t, name: append([]byte(nil), name...)}, nil
}

type pgBucket struct {
	t    *pgTx
	name []byte
}

func (b *pgBucket) Get(key []byte) []byte {
	if b.t.err != nil {
		return nil
	}
	var v []byte
	err := b.t.tx.QueryRow(b.t.ctx, `SELECT v FROM kv WHERE bucket = $1 AND k = $2`, b.name, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		b.t.fail(err)
		return nil
	}
	if v == nil {
		v = []byte{}
	}
	return v
}

func (b *pgBucket) Put(key, value []byte) error {
	if !b.t.writable {
		return ErrReadOnly
	}
	if b.t.err != nil {
		return b.t.err
	}
	if len(key) == 0 {
		return errors.New("kv: empty key")
	}
	if value == nil {
		value = []byte{}
	}
	_, err := b.t.tx.Exec(b.t.ctx, `INSERT INTO kv (bucket, k, v) VALUES ($1, $2, $3)
		ON CONFLICT (bucket, k) DO UPDATE SET v = excluded.v`, b.name, key, value)
	if err != nil {
		b.t.fail(err)
	}
	return err
}

func (b *pgBucket) Delete(key []byte) error {
	if !b.t.writable {
		return ErrReadOnly
	}
	if b.t.err != nil {
		return b.t.err
	}
	_, err := b.t.tx.Exec(b.t.ctx, `DELETE FROM kv WHERE bucket = $1 AND k = $2`, b.name, key)
	if err != nil {
		b.t.fail(err)
	}
	return err
}

func (b *pgBucket) KeyN() int {
	if b.t.err != nil {
		return 0
	}
	var n int
	if err := b.t.tx.QueryRow(b.t.ctx, `SELECT count(*) FROM kv WHERE bucket = $1`, b.name).Scan(&n); err != nil {
		b.t.fail(err)
	}
	return n
}

func (b *pgBucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return b.t.err
}

func (b *pgBucket) Cursor() Cursor { return &pgCursor{b: b} }

// pgCursor reads its bucket a batch of rows at a time, so that whoever
// walks it may run other statements between steps (a connection runs one
// at a time).
type pgCursor struct {
	b    *pgBucket
	rows [][2][]byte
	i    int
	more bool // the last fetch was full: more rows may follow
}

func (c *pgCursor) fetch(from []byte, inclusive bool) (k, v []byte) {
	c.rows, c.i, c.more = nil, 0, false
	t := c.b.t
	if t.err != nil {
		return nil, nil
	}
	op := ">"
	if inclusive {
		op = ">="
	}
	rows, err := t.tx.Query(t.ctx, `SELECT k, v FROM kv WHERE bucket = $1 AND k `+op+` $2 ORDER BY k LIMIT $3`, c.b.name, from, batch)
	if err != nil {
		t.fail(err)
		return nil, nil
	}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			t.fail(err)
			return nil, nil
		}
		if v == nil {
			v = []byte{}
		}
		c.rows = append(c.rows, [2][]byte{k, v})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.fail(err)
		return nil, nil
	}
	c.more = len(c.rows) == batch
	return c.at()
}

func (c *pgCursor) at() (k, v []byte) {
	if c.i >= len(c.rows) {
		return nil, nil
	}
	return c.rows[c.i][0], c.rows[c.i][1]
}

func (c *pgCursor) First() (k, v []byte) { return c.fetch([]byte{}, true) }

func (c *pgCursor) Seek(key []byte) (k, v []byte) {
	if key == nil {
		key = []byte{}
	}
	return c.fetch(key, true)
}

func (c *pgCursor) Next() (k, v []byte) {
	if c.i >= len(c.rows) {
		return nil, nil
	}
	c.i++
	if c.i < len(c.rows) {
		return c.at()
	}
	if !c.more {
		return nil, nil
	}
	return c.fetch(c.rows[len(c.rows)-1][0], false)
}

// Redact is dsn with any password replaced by "xxxxx", for messages.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		// libpq also takes the password as a query parameter.
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// key=value form: drop password=….
	var out []string
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(f, "password=") {
			f = "password=xxxxx"
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}

// redactErr keeps a driver error from echoing the password.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
		if pw := u.Query().Get("password"); pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	for _, f := range strings.Fields(dsn) {
		if pw, ok := strings.CutPrefix(f, "password="); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
