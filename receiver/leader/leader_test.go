package leader

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/subtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// next waits (bounded) for the next leader's name.
func next(t *testing.T, leaders <-chan string, what string) string {
	t.Helper()
	select {
	case n := <-leaders:
		return n
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nobody took the lead", what)
		return ""
	}
}

// Three electors on one database (each with its own pool, as three
// receivers): one leads at a time, never two; when the leader stops,
// another takes over; two jobs of different names have a leader each.
func TestOneLeaderAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	url := pgtest.Start(t).NewDB(t)
	var running atomic.Int32
	leaders := make(chan string, 10)
	lead := func(name string) func(context.Context) {
		return func(ctx context.Context) {
			if n := running.Add(1); n != 1 {
				t.Errorf("%d leaders at once", n)
			}
			leaders <- name
			<-ctx.Done()
			running.Add(-1)
		}
	}
	names := []string{"a", "b", "c"}
	stops := map[string]context.CancelFunc{}
	dones := map[string]chan struct{}{}
	electors := map[string]*Elector{}
	for _, n := range names {
		ctx, cancel := context.WithCancel(t.Context())
		e := New(pool(t, url), "lifecycle", 50*time.Millisecond, nil)
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx, lead(n)) }()
		stops[n], dones[n], electors[n] = cancel, done, e
	}
	t.Cleanup(func() {
		for _, n := range names {
			stops[n]()
			<-dones[n]
		}
	})
	// Another job's lock is not this one's.
	other := make(chan struct{}, 1)
	octx, ocancel := context.WithCancel(t.Context())
	odone := make(chan struct{})
	go func() {
		defer close(odone)
		New(pool(t, url), "other", 50*time.Millisecond, nil).Run(octx, func(ctx context.Context) { other <- struct{}{}; <-ctx.Done() })
	}()
	select {
	case <-other:
	case <-time.After(30 * time.Second):
		t.Fatal("the other job never had a leader")
	}
	ocancel()
	<-odone

	seen := map[string]bool{}
	for range 2 {
		first := next(t, leaders, "leader")
		if seen[first] {
			t.Fatalf("%s leads again after it stopped", first)
		}
		seen[first] = true
		for _, n := range names {
			if electors[n].Leading() != (n == first) {
				t.Errorf("%s: Leading() = %v while %s leads", n, electors[n].Leading(), first)
			}
		}
		stops[first]()
		<-dones[first]
		if electors[first].Leading() {
			t.Errorf("%s still says it leads after it stopped", first)
		}
	}
	next(t, leaders, "the last one after two stopped")
}

// A leader whose database session ends (here terminated by the server)
// stops its job, and takes the lock again on a new session.
func TestLeaderLosesItsSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	url := pgtest.Start(t).NewDB(t)
	p := pool(t, url)
	ended := make(chan struct{}, 2)
	leaders := make(chan string, 2)
	e := New(p, "lifecycle", 50*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx, func(ctx context.Context) { leaders <- "a"; <-ctx.Done(); ended <- struct{}{} })
	}()
	defer func() { cancel(); <-done }()
	next(t, leaders, "first term")
	tag, err := p.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate the leader's session: %v, %d rows", err, tag.RowsAffected())
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the job went on after its session ended")
	}
	next(t, leaders, "second term, on a new session")
}

// frozenEnv makes the test binary a receiver that campaigns for the job
// "lifecycle" (retry 100 ms), says "leading" when it leads and "stopped"
// when its job's context ends, then exits (TestFrozenLeaderProcess).
const frozenEnv = "UPLOADBOX_TEST_LEADER_FROZEN"

func TestFrozenLeaderProcess(t *testing.T) {
	url := os.Getenv(frozenEnv)
	if url == "" {
		return
	}
	e := New(pool(t, url), "lifecycle", 100*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	e.Run(ctx, func(lctx context.Context) {
		fmt.Println("leading")
		<-lctx.Done()
		fmt.Println("stopped")
		cancel()
	})
}

// TestFrozenLeaderLosesTheLead: a leader process frozen with SIGSTOP keeps
// its connection open; a follower (Lease 1 s) that finds the leader's
// session silent beyond the lease ends it and leads; while the leader
// lived it did not. Resumed, the old leader's job stops.
func TestFrozenLeaderLosesTheLead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	url := pgtest.Start(t).NewDB(t)
	cmd, sc := subtest.Start(t, "TestFrozenLeaderProcess", frozenEnv+"="+url)
	lines := make(chan string, 4)
	go func() {
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	if l := next(t, lines, "the leader process"); l != "leading" {
		t.Fatalf("leader process: %q", l)
	}
	leaders := make(chan string, 2)
	e := New(pool(t, url), "lifecycle", 100*time.Millisecond, nil)
	e.Lease = time.Second
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx, func(ctx context.Context) { leaders <- "b"; <-ctx.Done() })
	}()
	defer func() { cancel(); <-done }()
	// Alive, the leader keeps the lead through three leases.
	select {
	case <-leaders:
		t.Fatal("the follower took the lead of a live leader")
	case <-time.After(3 * time.Second):
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	next(t, leaders, "after the leader froze")
	cmd.Process.Signal(syscall.SIGCONT)
	if l := next(t, lines, "the resumed leader"); l != "stopped" {
		t.Fatalf("resumed leader: %q, want its job stopped", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resumed leader: %v", err)
	}
}
