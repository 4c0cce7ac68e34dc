// Package pgtest starts a real PostgreSQL server for a test: a cluster made
// with initdb in a temporary directory, reached only through a Unix socket in
// that directory (no TCP port at all), stopped and removed when the test ends.
//
// PostgreSQL refuses to run as root, so when the test runs as root the
// cluster belongs to, and runs as, the unprivileged user nobody. The server
// binaries come from $UPLOADBOX_PG_BIN or the newest /usr/lib/postgresql/*/bin
// (Debian's postgresql package, installed by scripts/setup.sh).
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uploadbox/uploadbox/internal/syncbuf"
)

// Server is one running PostgreSQL cluster.
type Server struct {
	// Socket is the directory holding the server's Unix socket.
	Socket string
	dir    string
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
	done   chan struct{} // closed when the server process has exited
	mu     sync.Mutex
	dbs    int
}

// BinDir finds the PostgreSQL server binaries.
func BinDir() (string, error) {
	if d := os.Getenv("UPLOADBOX_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("UPLOADBOX_PG_BIN=%s: no initdb there: %w", d, err)
		}
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return "", fmt.Errorf("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/setup.sh, or set UPLOADBOX_PG_BIN to the directory holding initdb and postgres")
	}
	sort.Slice(found, func(i, j int) bool { return major(found[i]) > major(found[j]) })
	return filepath.Dir(found[0]), nil
}

func major(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// Start makes and starts a cluster; it is stopped and removed when t ends.
// It runs without fsync (tests need no durability); settings, name=value
// each, are passed to the server after the defaults and win over them
// (e.g. "fsync=on" for a benchmark of durable commits).
func Start(t testing.TB, settings ...string) *Server {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: the socket path must fit in sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "ubpg")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Socket: dir, dir: dir, log: &syncbuf.Buffer{}}
	t.Cleanup(func() { s.stop(t) })
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	args := []string{"-D", data, "-k", dir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB"}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	s.done = make(chan struct{})
	var waitErr error
	go func() { waitErr = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			c.Close(ctx)
			cancel()
			break
		}
		cancel()
		select {
		case <-s.done:
			t.Fatalf("postgres exited before it was ready: %v\n%s", waitErr, s.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres not ready within 60 s: %v\n%s", err, s.log.String())
		}
	}
	return s
}

// URL is the connection string of database name on this server.
func (s *Server) URL(name string) string {
	q := url.Values{"host": {s.Socket}, "user": {"postgres"}, "sslmode": {"disable"}}
	return "postgres:///" + url.PathEscape(name) + "?" + q.Encode()
}

// NewDB creates an empty database and returns its connection string, so that
// tests on one server do not see each other's tables.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.dbs++
	name := fmt.Sprintf("t%d", s.dbs)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return s.URL(name)
}

// Log is what the server wrote so far (for a failing test's message).
func (s *Server) Log() string { return s.log.String() }

func (s *Server) stop(t testing.TB) {
	if s.cmd != nil && s.cmd.Process != nil {
		// SIGINT: PostgreSQL's fast shutdown (ends sessions, then exits).
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			t.Errorf("pgtest: postgres did not stop within 30 s after SIGINT; killed\n%s", s.log.String())
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Errorf("pgtest: remove %s: %v", s.dir, err)
	}
}
