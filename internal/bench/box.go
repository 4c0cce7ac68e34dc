package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/netns"
)

// benchBox is a receiver on loopback, an enrolled box and its daemon.
type benchBox struct {
	ub, state, sock string
	log             string // the daemon's stderr
	srv, daemon     *exec.Cmd
	data, addr      string // the receiver's data directory and address
}

// startBox starts `uploadbox-receiver serve`, enrolls a box in dir and
// starts `uploadbox run` with the test source (1280x720, 30 fps, 2.5
// Mbit/s), extra config lines and extra arguments to `run`.
func startBox(bin, dir, extra string, runArgs ...string) (*benchBox, error) {
	return startBoxOn(benchNet{listen: "127.0.0.1:0"}, bin, dir, extra, runArgs...)
}

// benchNet is where startBoxOn runs the receiver and the box: in the
// namespaces recv and box (nil: here), the receiver on listen with more
// serve flags.
type benchNet struct {
	recv, box *netns.NS
	listen    string
	serve     []string
}

// command runs name inside ns (nil: here).
func command(ns *netns.NS, name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(name, args...)
	}
	return ns.Command(name, args...)
}

// startBoxOn is startBox on the networks of n.
func startBoxOn(n benchNet, bin, dir, extra string, runArgs ...string) (*benchBox, error) {
	b := &benchBox{ub: filepath.Join(bin, "uploadbox"), state: filepath.Join(dir, "state"), sock: filepath.Join(dir, "run", "control.sock")}
	urcv := filepath.Join(bin, "uploadbox-receiver")
	data := filepath.Join(dir, "receiver")
	b.data = data
	b.srv = command(n.recv, urcv, append([]string{"serve", "--data", data, "--listen", n.listen}, n.serve...)...)
	stdout, _ := b.srv.StdoutPipe()
	if err := b.srv.Start(); err != nil {
		return nil, err
	}
	addr := ""
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			addr = a
			break
		}
	}
	b.addr = addr
	if addr == "" {
		b.stop()
		return nil, fmt.Errorf("receiver did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	out, err := exec.Command(urcv, "devices", "add", "bench", "--data", data, "--json").Output()
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("devices add: %v", err)
	}
	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	json.Unmarshal(out, &add)
	if out, err := command(n.box, b.ub, "enroll", "--receiver", "https://"+addr, "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", b.state).CombinedOutput(); err != nil {
		b.stop()
		return nil, fmt.Errorf("enroll: %v: %s", err, out)
	}
	cfg := fmt.Sprintf("state_dir: %s\nruntime_dir: %s\ncapture: {source: test, width: 1280, height: 720, fps: 30, bitrate: 2500k}\n"+
		"recording: {segment: 10s}\nspool: {dir: %s}\nmetrics: {listen: \"\"}\naudit: {path: %s}\n%s",
		b.state, filepath.Dir(b.sock), filepath.Join(dir, "spool"), filepath.Join(dir, "audit.jsonl"), extra)
	cfgPath := filepath.Join(dir, "box.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.stop()
		return nil, err
	}
	b.daemon = command(n.box, b.ub, append([]string{"run", "--config", cfgPath}, runArgs...)...)
	b.log = filepath.Join(dir, "daemon.log")
	logf, err := os.Create(b.log)
	if err != nil {
		b.stop()
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	b.daemon.Stderr = logf
	if err := b.daemon.Start(); err != nil {
		b.stop()
		return nil, err
	}
	for i := 0; ; i++ {
		if _, err := b.ctl("session", "status"); err == nil {
			return b, nil
		}
		if i > 100 {
			b.stop()
			log, _ := os.ReadFile(b.log)
			return nil, fmt.Errorf("the daemon did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctl runs a control command with --json.
func (b *benchBox) ctl(args ...string) ([]byte, error) {
	return exec.Command(b.ub, append(args, "--socket", b.sock, "--json")...).Output()
}

// stop kills what is still running.
func (b *benchBox) stop() {
	for _, c := range []*exec.Cmd{b.daemon, b.srv} {
		if c != nil && c.Process != nil && c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}
}

// freeLoopback returns a loopback address with a port free now, for a
// listener the daemon opens from its config.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
