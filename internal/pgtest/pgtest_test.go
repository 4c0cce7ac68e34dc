package pgtest

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestServer starts a real cluster and checks what the state backends will
// rely on: separate databases per test, a unique constraint refusing a second
// row, and the server gone (socket directory removed) after cleanup.
func TestServer(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	a, b := s.NewDB(t), s.NewDB(t)
	if a == b {
		t.Fatalf("NewDB gave the same database twice: %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, `CREATE TABLE seg (device text, rec text, seq int, UNIQUE (device, rec, seq))`); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Exec(ctx, `INSERT INTO seg VALUES ('box', 'r1', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err = ca.Exec(ctx, `INSERT INTO seg VALUES ('box', 'r1', 0)`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("second insert of one key: %v, want unique_violation (23505)", err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'seg'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the second database sees the first's table: n=%d err=%v", n, err)
	}
}
