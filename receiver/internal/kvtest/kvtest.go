// Package kvtest opens the receiver's state store (package kv) for a test:
// a bbolt file in the test's temporary directory, or, when the environment
// sets UPLOADBOX_TEST_DATABASE=postgres, a fresh database on a real
// PostgreSQL server (internal/pgtest) started once for the test binary.
// `make test-postgres` runs the receiver's packages that way.
package kvtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Env is the environment variable choosing the backend: "postgres", or
// empty for bbolt.
const Env = "UPLOADBOX_TEST_DATABASE"

// Postgres reports whether tests run on PostgreSQL.
func Postgres() bool { return os.Getenv(Env) == "postgres" }

var (
	mu       sync.Mutex
	server   *pgtest.Server
	shared   = &mainTB{}
	startErr error
)

// Open is a new, empty state store, closed when t ends.
func Open(t testing.TB) kv.DB {
	t.Helper()
	if !Postgres() {
		db, err := kv.OpenBolt(filepath.Join(t.TempDir(), "state.db"), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db, err := kv.OpenPostgres(context.Background(), URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// URL is the connection string of a new, empty PostgreSQL database on the
// binary's shared server (started on first use; the package's TestMain must
// wrap its run with Wrap so that it is stopped).
func URL(t testing.TB) string {
	t.Helper()
	mu.Lock()
	if server == nil && startErr == nil {
		startErr = start()
	}
	s, err := server, startErr
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return s.NewDB(t)
}

func start() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kvtest: start PostgreSQL: %v", r)
		}
	}()
	server = pgtest.Start(shared)
	return nil
}

// Wrap runs m's tests, then stops the shared PostgreSQL server if one was
// started: func TestMain(m *testing.M) { goleak.VerifyTestMain(kvtest.Wrap(m)) }.
func Wrap(m *testing.M) interface{ Run() int } { return wrapped{m} }

type wrapped struct{ m *testing.M }

func (w wrapped) Run() int {
	code := w.m.Run()
	shared.cleanup()
	if shared.failed && code == 0 {
		code = 1
	}
	return code
}

// mainTB lets pgtest.Start run outside any one test: its server lives as
// long as the test binary.
type mainTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (m *mainTB) Helper() {}
func (m *mainTB) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}
func (m *mainTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }
func (m *mainTB) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
func (m *mainTB) Errorf(format string, args ...any) {
	m.failed = true
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (m *mainTB) cleanup() {
	m.mu.Lock()
	fs := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
