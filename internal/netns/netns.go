// Package netns makes Linux network namespaces for tests that need
// separate networks on one machine: a box and a coach that cannot reach
// each other, both reaching a receiver. It drives iproute2 (`ip netns`,
// `ip link`), so it needs root; where that is missing it returns an error
// that says so, and the test fails with it.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace made by a test and deleted at its end.
type NS struct {
	// Name is the namespace's name in `ip netns list` (prefix + random).
	Name string
}

// Available reports why namespaces cannot be made here, or nil.
func Available() error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("network namespaces need root (running as uid %d): run the test as root, as CI does", euid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("network namespaces need iproute2's ip command (apt-get install iproute2): %w", err)
	}
	return nil
}

// TB is what New needs of a test (testing.TB has it): a benchmark
// program provides its own.
type TB interface {
	Cleanup(func())
	Errorf(format string, args ...any)
}

// New makes a namespace named prefix-RANDOM with its loopback up. It is
// deleted when tb's test ends, after every process still in it is killed.
func New(tb TB, prefix string) (*NS, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var r [4]byte
	rand.Read(r[:])
	n := &NS{Name: prefix + "-" + hex.EncodeToString(r[:])}
	if err := ip("netns", "add", n.Name); err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		if err := n.remove(); err != nil {
			tb.Errorf("netns cleanup: %v", err)
		}
	})
	// IPv4 only: an IPv6 link-local address that turns usable a moment
	// after its link comes up is a network change, which makes Chromium
	// abort the page it is loading (ERR_NETWORK_CHANGED).
	if err := n.Do(func() error {
		for _, k := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1\n"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("turn IPv6 off in %s: %w", n.Name, err)
	}
	if err := n.IP("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// ip runs iproute2 and returns its stderr in the error.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// IP runs `ip -n NAME args...` (addresses, links, routes of n).
func (n *NS) IP(args ...string) error {
	return ip(append([]string{"-n", n.Name}, args...)...)
}

// Wrap is the command line that runs a command inside n: `ip netns exec
// NAME`. ip execs the command in place, so a process started this way is
// the command itself: signals and Wait reach it.
func (n *NS) Wrap() []string { return []string{"ip", "netns", "exec", n.Name} }

// Command is exec.Command run inside n.
func (n *NS) Command(name string, arg ...string) *exec.Cmd {
	return n.CommandContext(context.Background(), name, arg...)
}

// CommandContext is exec.CommandContext run inside n.
func (n *NS) CommandContext(ctx context.Context, name string, arg ...string) *exec.Cmd {
	w := n.Wrap()
	return exec.CommandContext(ctx, w[0], append(append(w[1:], name), arg...)...)
}

// Pids lists the processes inside n.
func (n *NS) Pids() ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", n.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", n.Name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// remove kills what still runs in n, waits for it to go and deletes n.
func (n *NS) remove() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := n.Pids()
		if err != nil || len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survived SIGKILL for 10 s", pids, n.Name)
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ip("netns", "del", n.Name)
}

// Do runs f on an OS thread that has entered n: sockets f opens belong to
// n for their whole life, whichever thread uses them later. f must open
// its sockets itself, not in goroutines it starts.
func (n *NS) Do(f func() error) error {
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", n.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := f()
		// A thread that cannot go home is left locked: it ends with this
		// goroutine instead of serving others inside n.
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext dials from inside n: the DialContext of an http.Transport
// whose client lives in n.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside n.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
