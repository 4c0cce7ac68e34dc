// Command soak is the chaos run behind `make soak`: the real daemon
// (`uploadbox run`) records sessions and uploads them through a fault
// proxy to the real receiver (`uploadbox-receiver serve`), on loopback,
// while the soak kills the daemon (during sessions and in the commit
// window), kills the receiver mid-transfer, cuts and stalls the link, and
// fills the spool's own small filesystem. After a final quiet period with a
// healthy network it counts the segments the box sealed against those the
// receiver stored, exports and probes every recording, verifies both audit
// chains and prints one summary line. It exits 1 on any lost, duplicated
// or stuck segment (and on a recording that does not play or an audit
// chain that does not verify), 2 when the run itself could not be done.
//
// It is a main package, not a test: `go test ./...` does not run it. It
// needs root (mount) and ffprobe.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/internal/faultproxy"
)

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory with the built uploadbox and uploadbox-receiver")
	flag.IntVar(&o.rounds, "rounds", 20, "fault rounds (at least 6, one of each kind)")
	flag.DurationVar(&o.limit, "time", 14*time.Minute, "no round starts after this much time (the final drain and checks come on top, bounded by -drain)")
	flag.DurationVar(&o.drain, "drain", 4*time.Minute, "longest final quiet period for the box to upload what it holds")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed (0: from the clock)")
	flag.IntVar(&o.rate, "rate", 1<<20, "bytes per second the proxy passes each way")
	flag.Int64Var(&o.fsSize, "spool-size", 64<<20, "bytes of the spool's own filesystem")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, receiver data) instead of removing it")
	flag.Parse()
	if o.rounds < len(kinds) {
		fmt.Fprintf(os.Stderr, "soak: -rounds %d: at least %d, one round of each kind\n", o.rounds, len(kinds))
		os.Exit(2)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := soakRun(ctx, o)
	stop()
	os.Exit(code)
}

type options struct {
	bin          string
	rounds       int
	limit, drain time.Duration
	seed         uint64
	rate         int
	fsSize       int64
	keep         bool
}

// soak is one chaos run: the processes, the proxy and what happened.
type soak struct {
	o                   options
	bin, dir            string
	data, rcvAddr       string // the receiver's data directory and address
	config, sock, audit string
	spool, mnt, fsKind  string
	rng                 *rand.Rand
	proxy               *faultproxy.Proxy
	rcv, box            *proc
	rcvLog, boxLog      *os.File
	committed           chan string // the receiver's "segment committed" log lines
	probs               problems
	cleanups            []func()

	kills    []kill   // daemon kills during sessions
	window   [2]int   // commit-window kills: in the window, tried
	notes    []string // findings, in order
	sessions []string // every recording the soak started
}

// kill is one SIGKILL of the daemon during a session.
type kill struct {
	recording string
	at        time.Duration // from the session's start to the signal
	kind      string
}

func (s *soak) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.notes = append(s.notes, msg)
	fmt.Printf("  ! %s\n", msg)
}

func soakRun(ctx context.Context, o options) int {
	s := &soak{o: o, rng: rand.New(rand.NewPCG(o.seed, 11)), committed: make(chan string, 64)}
	defer s.cleanup()
	if err := s.setup(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "soak: setup:", err)
		return 2
	}
	began := time.Now()
	plan := s.plan()
	fmt.Printf("soak: %d rounds (seed %d), spool on %s, link %d KiB/s through a fault proxy, work dir %s\n", len(plan), o.seed, s.fsKind, o.rate>>10, s.dir)
	done := 0
	for i, k := range plan {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "soak: interrupted; cleaning up")
			return 2
		}
		if time.Since(began) > o.limit {
			s.note("time limit %s reached after %d of %d rounds", o.limit, done, len(plan))
			break
		}
		t0 := time.Now()
		detail, err := s.round(ctx, k)
		if err != nil {
			fmt.Fprintf(os.Stderr, "soak: round %d (%s): %v\n", i+1, k, err)
			if ctx.Err() != nil {
				return 2
			}
			s.note("round %d (%s) could not be run to its end: %v", i+1, k, err)
			if err := s.heal(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "soak: cannot bring the box and the receiver back:", err)
				return 2
			}
		}
		done++
		fmt.Printf("round %2d %-13s %5.1fs  %s\n", i+1, k, time.Since(t0).Seconds(), detail)
	}
	res, err := s.finish(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak: final count:", err)
		return 2
	}
	fmt.Println(res.line(done, time.Since(began), o.seed))
	if res.failed() {
		return 1
	}
	return 0
}

// setup builds the world: keys, receiver, proxy, enrolled box on its own
// filesystem, daemon.
func (s *soak) setup(ctx context.Context) error {
	var err error
	if s.bin, err = filepath.Abs(s.o.bin); err != nil {
		return err
	}
	for _, b := range []string{"uploadbox", "uploadbox-receiver"} {
		if _, err := os.Stat(filepath.Join(s.bin, b)); err != nil {
			return fmt.Errorf("%s not built (run `make build` or give -bin): %w", b, err)
		}
	}
	if s.dir, err = os.MkdirTemp("", "uploadbox-soak-"); err != nil {
		return err
	}
	s.cleanups = append(s.cleanups, func() {
		if s.o.keep {
			fmt.Printf("soak: kept %s\n", s.dir)
			return
		}
		os.RemoveAll(s.dir)
	})
	if s.rcvLog, err = os.Create(filepath.Join(s.dir, "receiver.log")); err != nil {
		return err
	}
	if s.boxLog, err = os.Create(filepath.Join(s.dir, "daemon.log")); err != nil {
		return err
	}
	s.cleanups = append(s.cleanups, func() { s.rcvLog.Close(); s.boxLog.Close() })
	if err := s.mountSpool(ctx, s.o.fsSize); err != nil {
		return err
	}
	s.spool = filepath.Join(s.mnt, "spool")
	s.data = filepath.Join(s.dir, "receiver")
	if s.rcvAddr, err = s.startReceiver(ctx, "127.0.0.1:0"); err != nil {
		return err
	}
	if s.proxy, err = faultproxy.Start(s.rcvAddr, faultproxy.Options{Rate: s.o.rate}); err != nil {
		return err
	}
	out, err := s.tool(ctx, "uploadbox-receiver", "devices", "add", "soak-box", "--data", s.data, "--json")
	if err != nil {
		return err
	}
	add, err := decode[struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}](out)
	if err != nil {
		return fmt.Errorf("devices add: %w", err)
	}
	state := filepath.Join(s.dir, "state")
	if _, err := s.tool(ctx, "uploadbox", "enroll", "--receiver", "https://"+s.proxy.Addr(), "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", state); err != nil {
		return err
	}
	s.config = filepath.Join(s.dir, "uploadbox.yaml")
	s.sock = filepath.Join(s.dir, "run", "control.sock")
	s.audit = filepath.Join(s.dir, "audit.jsonl")
	cfg := fmt.Sprintf(`state_dir: %s
runtime_dir: %s
capture:
  source: test
  width: 640
  height: 360
  fps: 25
  bitrate: 1500k
recording:
  segment: 2s
spool:
  dir: %s
  min_free: 0
upload:
  retry_max: 2s
metrics:
  listen: ""
audit:
  path: %s
`, state, filepath.Dir(s.sock), s.spool, s.audit)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		return err
	}
	return s.startDaemon(ctx)
}

func (s *soak) cleanup() {
	if s.box != nil {
		s.box.kill()
	}
	if s.rcv != nil {
		s.rcv.kill()
	}
	if s.proxy != nil {
		s.proxy.Close()
	}
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
}

// heal brings everything back to a healthy state: space freed, link open,
// receiver and daemon running.
func (s *soak) heal(ctx context.Context) error {
	if err := s.unfill(); err != nil {
		return err
	}
	s.proxy.Resume()
	if !s.rcv.running() {
		if _, err := s.startReceiver(ctx, s.rcvAddr); err != nil {
			return err
		}
	}
	if !s.box.running() {
		return s.startDaemon(ctx)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// between is a random duration in [lo, hi).
func (s *soak) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}
