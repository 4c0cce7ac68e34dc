package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lines is an io.Writer that hands each complete line to fn and copies
// everything to a log file.
type lines struct {
	mu  sync.Mutex
	buf []byte
	log io.Writer
	fn  func(string)
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log.Write(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.fn(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}

// proc is a running binary of ours.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs cmd in its own process group and makes it die with the soak.
func start(cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	if p != nil {
		<-p.done
	}
}

// term sends SIGTERM and waits up to within; false if it had to be killed.
func (p *proc) term(within time.Duration) bool {
	if !p.running() {
		return true
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.cmd.ProcessState.Success()
	case <-time.After(within):
		p.kill()
		return false
	}
}

var levelMsg = regexp.MustCompile(`level=(ERROR|WARN) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// problems counts the daemon's and the receiver's warnings and errors by
// message, for the report.
type problems struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *problems) note(who, line string) {
	m := levelMsg.FindStringSubmatch(line)
	if m == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]int{}
	}
	p.n[who+" "+m[1]+" "+m[2]]++
}

// startReceiver runs `uploadbox-receiver serve` on listen and returns the
// address it listens on.
func (s *soak) startReceiver(ctx context.Context, listen string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, "uploadbox-receiver"), "serve", "--data", s.data, "--listen", listen)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	cmd.Stderr = &lines{log: s.rcvLog, fn: func(l string) {
		s.probs.note("receiver", l)
		if strings.Contains(l, "segment committed") {
			select {
			case s.committed <- l:
			default:
			}
		}
	}}
	p, err := start(cmd)
	if err != nil {
		return "", fmt.Errorf("start receiver: %w", err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		s.rcv = p
		return a, nil
	case <-p.done:
		return "", fmt.Errorf("the receiver exited before it listened on %s (see %s)", listen, s.rcvLog.Name())
	case <-time.After(30 * time.Second):
		p.kill()
		return "", fmt.Errorf("the receiver did not listen on %s within 30 s", listen)
	case <-ctx.Done():
		p.kill()
		return "", ctx.Err()
	}
}

// startDaemon runs `uploadbox run` and waits until its control socket
// answers.
func (s *soak) startDaemon(ctx context.Context) error {
	cmd := exec.Command(filepath.Join(s.bin, "uploadbox"), "run", "--config", s.config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	fmt.Fprintf(s.boxLog, "---- soak: daemon start at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stderr = &lines{log: s.boxLog, fn: func(l string) { s.probs.note("daemon", l) }}
	p, err := start(cmd)
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	s.box = p
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s.ctl(ctx, "session", "status"); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("the daemon exited at start: %v (see %s)", p.cmd.ProcessState, s.boxLog.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the daemon's control socket did not answer within 30 s (see %s)", s.boxLog.Name())
}

// ctl runs a control command with --json and returns what it printed.
func (s *soak) ctl(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "uploadbox"), append(args, "--socket", s.sock, "--json")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("uploadbox %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// tool runs one of our binaries to completion and returns its output.
func (s *soak) tool(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

type session struct {
	Active     bool      `json:"active"`
	Recording  string    `json:"recording"`
	Started    time.Time `json:"started"`
	Segments   int       `json:"segments"`
	StopReason string    `json:"stop_reason"`
	Error      string    `json:"error"`
	Alert      string    `json:"alert"`
}

func (s *soak) sessionStatus(ctx context.Context) (session, error) {
	var st session
	out, err := s.ctl(ctx, "session", "status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

type queue struct {
	Count   int            `json:"count"`
	ByState map[string]int `json:"by_state"`
}

func (s *soak) queue(ctx context.Context) (queue, error) {
	var q queue
	out, err := s.ctl(ctx, "queue")
	if err != nil {
		return q, err
	}
	return q, json.Unmarshal(out, &q)
}

// mountSpool gives the spool a small filesystem of its own: an ext4 image
// on a loop device, or tmpfs with a size limit where loop devices fail.
func (s *soak) mountSpool(ctx context.Context, size int64) error {
	mnt := filepath.Join(s.dir, "spoolfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return err
	}
	img := filepath.Join(s.dir, "spool.img")
	var errs []error
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err == nil {
		err = run(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", img)
	}
	if err == nil {
		err = run(ctx, "mount", "-o", "loop", img, mnt)
	}
	if err == nil {
		s.fsKind = fmt.Sprintf("ext4 image of %d MiB on a loop device", size>>20)
	} else {
		errs = append(errs, err)
		os.Remove(img)
		if err := run(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "soak-spool", mnt); err != nil {
			errs = append(errs, err)
			return fmt.Errorf("the spool needs a small filesystem of its own and neither worked (run the soak as root): %w", errors.Join(errs...))
		}
		s.fsKind = fmt.Sprintf("tmpfs of %d MiB (loop device failed: %v)", size>>20, errs[0])
	}
	s.cleanups = append(s.cleanups, func() {
		for i := range 10 {
			if run(context.Background(), "umount", mnt) == nil {
				return
			}
			time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
		}
		if err := run(context.Background(), "umount", "-l", mnt); err != nil {
			fmt.Fprintf(os.Stderr, "soak: could not unmount %s: %v\n", mnt, err)
		}
	})
	s.mnt = mnt
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fill writes a filler file on the spool's filesystem until it is full,
// then frees leave bytes of it again.
func (s *soak) fill(leave int64) (int64, error) {
	f, err := os.OpenFile(s.filler(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return n, fmt.Errorf("fill %s: %w", s.filler(), err)
				}
				break
			}
		}
	}
	f.Sync()
	if leave > 0 && leave < n {
		n -= leave
		if err := f.Truncate(n); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *soak) filler() string { return filepath.Join(s.mnt, "filler") }

func (s *soak) unfill() error {
	err := os.Remove(s.filler())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
