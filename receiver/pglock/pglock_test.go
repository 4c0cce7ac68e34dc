package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/subtest"
	"github.com/uploadbox/uploadbox/receiver/pglock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A Lock call that does not come back within this bounds a broken test,
// it is not a measured time.
const patience = 60 * time.Second

// replica is one receiver's locker on its own pool, listening for release
// requests until the test ends.
func replica(t *testing.T, dsn string) *pglock.Locker {
	t.Helper()
	return replicaWith(t, dsn, func(*pglock.Locker) {})
}

// replicaWith is replica with set applied to the locker before it runs.
func replicaWith(t *testing.T, dsn string, set func(*pglock.Locker)) *pglock.Locker {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	l := pglock.New(pool, nil)
	set(l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		pool.Close()
	})
	return l
}

func lockWithin(t *testing.T, l *pglock.Locker, id string, requestUnlock func()) tusd.Lock {
	t.Helper()
	k, err := l.NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if err := k.Lock(ctx, requestUnlock); err != nil {
		t.Fatalf("Lock(%s): %v", id, err)
	}
	return k
}

// lockAsync takes and releases id on l in a goroutine and sends the
// outcome.
func lockAsync(l *pglock.Locker, id string) <-chan error {
	got := make(chan error, 1)
	go func() {
		k, _ := l.NewLock(id)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		err := k.Lock(ctx, func() {})
		if err == nil {
			err = k.Unlock()
		}
		got <- err
	}()
	return got
}

// taken reports whether id is held elsewhere: one try, with a context
// that is already done.
func taken(t *testing.T, l *pglock.Locker, id string) bool {
	t.Helper()
	k, _ := l.NewLock(id)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := k.Lock(ctx, func() {})
	switch {
	case err == nil:
		k.Unlock()
		return false
	case errors.Is(err, tusd.ErrLockTimeout):
		return true
	}
	t.Fatalf("Lock(%s): %v", id, err)
	return false
}

// TestTwoReplicasNeverHoldOneID: goroutines on two lockers, each with its
// own pool (two receivers on one database), take the locks of two ids
// over and over; no id is ever held twice at once, and other ids are not
// held up by them.
func TestTwoReplicasNeverHoldOneID(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a, b := replica(t, dsn), replica(t, dsn)
	ids := []string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"}
	var inside [2]atomic.Int32
	var overlaps atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		l := a
		if w%2 == 1 {
			l = b
		}
		wg.Go(func() {
			for round := range 25 {
				i := (w + round) % 2
				k, _ := l.NewLock(ids[i])
				ctx, cancel := context.WithTimeout(context.Background(), patience)
				err := k.Lock(ctx, func() {})
				cancel()
				if err != nil {
					t.Errorf("Lock: %v", err)
					return
				}
				if inside[i].Add(1) != 1 {
					overlaps.Add(1)
				}
				runtime.Gosched() // let a wrongly admitted holder in
				inside[i].Add(-1)
				if err := k.Unlock(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d times an id was held by two holders at once", n)
	}
	// While a holds one id, b cannot take it but takes another.
	k := lockWithin(t, a, ids[0], func() {})
	if !taken(t, b, ids[0]) {
		t.Fatal("b took an id a holds")
	}
	if taken(t, b, ids[1]) {
		t.Fatal("b could not take an id nobody holds")
	}
	k.Unlock()
	if taken(t, b, ids[0]) {
		t.Fatal("b could not take the id a released")
	}
}

// TestReleaseRequestReachesOtherReplica: a waiter on b asks a's holder to
// release (NOTIFY); the holder, like a tusd PATCH, stops and unlocks, and
// the waiter gets the lock. The holder was asked while b still waited.
func TestReleaseRequestReachesOtherReplica(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a, b := replica(t, dsn), replica(t, dsn)
	const id = "00112233445566778899aabbccddeeff"
	asked := make(chan struct{})
	var once sync.Once
	held := lockWithin(t, a, id, func() { once.Do(func() { close(asked) }) })
	got := lockAsync(b, id)
	select {
	case <-asked:
	case err := <-got:
		t.Fatalf("b's Lock returned (%v) while a held the lock and before a was asked to release it", err)
	}
	select {
	case err := <-got:
		t.Fatalf("b's Lock returned (%v) before a unlocked", err)
	default:
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("b did not get the lock a released: %v", err)
	}
}

// TestLocalContenders: two requests of one receiver for one id (advisory
// locks are re-entrant per session, so the locker excludes them itself):
// the second asks the first to release and waits for it.
func TestLocalContenders(t *testing.T) {
	pg := pgtest.Start(t)
	a := replica(t, pg.NewDB(t))
	const id = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	asked := make(chan struct{}, 10)
	first := lockWithin(t, a, id, func() { asked <- struct{}{} })
	if !taken(t, a, id) {
		t.Fatal("a second request of one receiver took a held id")
	}
	<-asked // the probe asked the holder to release
	got := lockAsync(a, id)
	<-asked // so did the waiter; it still waits
	select {
	case err := <-got:
		t.Fatalf("the waiter's Lock returned (%v) before the holder unlocked", err)
	default:
	}
	first.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("the waiter did not get the released lock: %v", err)
	}
}

// holderEnv makes the test binary a receiver that takes one lock, says
// "locked" and waits to be killed (TestHolderProcess).
const holderEnv = "UPLOADBOX_TEST_PGLOCK_HOLD"

func TestHolderProcess(t *testing.T) {
	v := os.Getenv(holderEnv)
	if v == "" {
		return
	}
	dsn, id, _ := strings.Cut(v, " ")
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := pglock.New(pool, nil).NewLock(id)
	if err := k.Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	select {} // until killed
}

// TestKilledHolderFreesLock: a receiver process holding a lock is
// SIGKILLed; its connection ends and another receiver takes the lock.
func TestKilledHolderFreesLock(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	const id = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
	cmd, sc := subtest.Start(t, "TestHolderProcess", holderEnv+"="+dsn+" "+id)
	if !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("holder process: %q, %v", sc.Text(), sc.Err())
	}
	b := replica(t, dsn)
	if !taken(t, b, id) {
		t.Fatal("the lock a live process holds was free")
	}
	cmd.Process.Kill()
	cmd.Wait()
	k := lockWithin(t, b, id, func() {})
	k.Unlock()
}

// TestSessionLostStopsHolders: when the lock session's connection ends
// (here: terminated by the server), the locks it held are gone, so their
// holders are asked to stop; the locker opens a new session for the next
// lock.
func TestSessionLostStopsHolders(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a, b := replica(t, dsn), replica(t, dsn)
	const id = "5555555555555555555555555555aaaa"
	stopped := make(chan struct{})
	var once sync.Once
	k := lockWithin(t, a, id, func() { once.Do(func() { close(stopped) }) })
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Terminate every session holding an advisory lock: a's lock session.
	if _, err := pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted`); err != nil {
		t.Fatal(err)
	}
	// b can take the id now; a learns its session is gone at its next
	// statement, asks its holder to stop, and goes on with a new session.
	kb := lockWithin(t, b, id, func() {})
	if taken(t, a, "5555555555555555555555555555bbbb") {
		t.Fatal("a could not take an id nobody holds after losing its session")
	}
	<-stopped
	if err := k.Unlock(); err != nil {
		t.Fatalf("Unlock of a lock its lost session held: %v", err)
	}
	kb.Unlock()
	k2 := lockWithin(t, a, id, func() {})
	k2.Unlock()
}

// frozenEnv makes the test binary a receiver that takes one lock with a
// lease of one second, says "locked", and then checks the lock every 100
// ms until the check fails: it says "fenced" and exits
// (TestFrozenHolderProcess).
const frozenEnv = "UPLOADBOX_TEST_PGLOCK_FROZEN"

func TestFrozenHolderProcess(t *testing.T) {
	v := os.Getenv(frozenEnv)
	if v == "" {
		return
	}
	dsn, id, _ := strings.Cut(v, " ")
	l := replicaWith(t, dsn, func(l *pglock.Locker) { l.Lease = time.Second })
	k, _ := l.NewLock(id)
	if err := k.Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	for {
		if err := l.Check(context.Background(), id); err != nil {
			if !errors.Is(err, pglock.ErrLockLost) {
				t.Fatalf("Check: %v, want ErrLockLost", err)
			}
			fmt.Println("fenced")
			k.Unlock()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFrozenHolderLosesLock: a receiver process holding a lock (and
// ignoring release requests) keeps it while it lives, even against a
// waiter; frozen with SIGSTOP, its kernel keeps its connection open, and a
// waiter ends its lock session once its heartbeat has been silent beyond
// the lease, and takes the lock. Resumed, the holder's Check fails: it
// writes nothing more.
func TestFrozenHolderLosesLock(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	const id = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"
	cmd, sc := subtest.Start(t, "TestFrozenHolderProcess", frozenEnv+"="+dsn+" "+id)
	if !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("holder process: %q, %v", sc.Text(), sc.Err())
	}
	var ended atomic.Int32
	b := replicaWith(t, dsn, func(l *pglock.Locker) {
		l.Lease = time.Second
		l.Ended = func(pid int32, got string) {
			if got == id {
				ended.Add(1)
			}
		}
	})
	// Alive, the holder keeps its lock through three leases of waiting.
	k, _ := b.NewLock(id)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	err := k.Lock(ctx, func() {})
	cancel()
	if !errors.Is(err, tusd.ErrLockTimeout) {
		t.Fatalf("Lock of a live holder's id: %v, want a timeout", err)
	}
	if n := ended.Load(); n != 0 {
		t.Fatalf("a live holder's session was ended %d times", n)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	kb := lockWithin(t, b, id, func() {})
	if n := ended.Load(); n != 1 {
		t.Fatalf("the frozen holder's session was ended %d times, want once", n)
	}
	cmd.Process.Signal(syscall.SIGCONT)
	if !sc.Scan() || sc.Text() != "fenced" {
		t.Fatalf("resumed holder: %q, %v; want it fenced", sc.Text(), sc.Err())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resumed holder: %v", err)
	}
	if err := b.Check(t.Context(), id); err != nil {
		t.Fatalf("Check by the new holder: %v", err)
	}
	kb.Unlock()
}
