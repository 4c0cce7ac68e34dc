package netns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func listNS(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// dial reports whether a TCP connection from n to addr is set up within 1.5 s.
func dial(n *NS, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	c, err := n.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// serve accepts (and closes) connections on a listener in n at ip:0.
func serve(t *testing.T, n *NS, ip netip.Addr) string {
	t.Helper()
	l, err := n.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatalf("listen in %s on %s: %v", n.Name, ip, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// TestCrossnet: the receiver's address answers from the box's and the
// coach's namespaces, the box and the coach cannot reach each other (the
// receiver's namespace does not forward), and the host's loopback is not
// theirs. Two topologies exist at once without clashing.
func TestCrossnet(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := NewCrossnet(t)
			if err != nil {
				t.Fatal(err)
			}
			if fwd, err := c.Recv.Forwarding(); err != nil || fwd {
				t.Fatalf("the receiver's namespace forwards (%v, %v): box and coach would reach each other", fwd, err)
			}
			rcv := serve(t, c.Recv, c.Service)
			for _, n := range []*NS{c.Box, c.Coach} {
				if err := dial(n, rcv); err != nil {
					t.Errorf("%s cannot reach the receiver at %s: %v", n.Name, rcv, err)
				}
			}
			box := serve(t, c.Box, c.BoxAddr)
			if err := dial(c.Coach, box); err == nil {
				t.Errorf("the coach reached the box at %s: there is a route between them", box)
			}
			coach := serve(t, c.Coach, c.CoachAddr)
			if err := dial(c.Box, coach); err == nil {
				t.Errorf("the box reached the coach at %s", coach)
			}
			// The receiver's side reaches both, so a failed dial above is
			// the missing route, not a listener that does not answer.
			for _, a := range []string{box, coach} {
				if err := dial(c.Recv, a); err != nil {
					t.Errorf("the receiver cannot reach %s: %v", a, err)
				}
			}
			// The host's own listeners are not in the namespaces.
			host, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer host.Close()
			if err := dial(c.Coach, host.Addr().String()); err == nil {
				t.Error("the coach's namespace reached the host's loopback")
			}
		})
	}
}

// TestCommandRunsInsideAndCleanupKills: a command runs in the namespace
// (it sees the namespace's address and no IPv6 one, and its process is
// the command, not a wrapper), and at the end of the test the namespaces are deleted and
// what still ran in them is killed.
func TestCommandRunsInsideAndCleanupKills(t *testing.T) {
	var names []string
	var sleeper *exec.Cmd
	t.Run("inner", func(t *testing.T) {
		c, err := NewCrossnet(t)
		if err != nil {
			t.Fatal(err)
		}
		names = []string{c.Recv.Name, c.Box.Name, c.Coach.Name}
		list := listNS(t)
		for _, n := range names {
			if !strings.HasPrefix(n, "ubx-") || !strings.Contains(list, n) {
				t.Fatalf("namespace %s not in ip netns list:\n%s", n, list)
			}
		}
		out, err := c.Box.Command("ip", "-o", "addr", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		// IPv4 only: no IPv6 address comes up late (a network change to
		// Chromium).
		if !strings.Contains(string(out), c.BoxAddr.String()+"/30") || strings.Contains(string(out), c.CoachAddr.String()) || strings.Contains(string(out), "inet6") {
			t.Fatalf("ip addr inside the box's namespace:\n%s", out)
		}
		sleeper = c.Coach.Command("sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		// ip enters the namespace, then execs sleep in its own process.
		var pids []int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(pids) == 0 && err == nil; time.Sleep(10 * time.Millisecond) {
			pids, err = c.Coach.Pids()
		}
		if err != nil || len(pids) != 1 || pids[0] != sleeper.Process.Pid {
			t.Fatalf("pids in %s: %v %v, want the command's own %d", c.Coach.Name, pids, err, sleeper.Process.Pid)
		}
	})
	list := listNS(t)
	for _, n := range names {
		if strings.Contains(list, n) {
			t.Errorf("namespace %s outlived its test", n)
		}
	}
	err := sleeper.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the process left in the namespace: %v, want killed", err)
	}
}

// TestWebRTCNet: pion's network inside the coach's namespace lists the
// namespace's interfaces and opens sockets there (the coach's address
// exists nowhere else).
func TestWebRTCNet(t *testing.T) {
	c, err := NewCrossnet(t)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Coach.WebRTCNet()
	if err != nil {
		t.Fatal(err)
	}
	ifs, err := w.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "lo,torecv" {
		t.Fatalf("interfaces seen by pion in the coach's namespace: %v, want lo,torecv", names)
	}
	u, err := w.ListenUDP("udp4", &net.UDPAddr{IP: c.CoachAddr.AsSlice()})
	if err != nil {
		t.Fatalf("UDP socket on the coach's address: %v", err)
	}
	u.Close()
	if _, err := net.ListenUDP("udp4", &net.UDPAddr{IP: c.CoachAddr.AsSlice()}); err == nil {
		t.Fatal("the coach's address exists outside its namespace")
	}
}

// TestUnavailableSaysWhy: without iproute2 (or without root) New fails
// with the reason, for the test to fail with it.
func TestUnavailableSaysWhy(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New(t, "ubx-none")
	if err == nil || !(strings.Contains(err.Error(), "iproute2") || strings.Contains(err.Error(), "root")) {
		t.Fatalf("New without ip: %v", err)
	}
	if os.Geteuid() == 0 && !strings.Contains(err.Error(), "apt-get install iproute2") {
		t.Fatalf("New without ip as root: %v, want the install hint", err)
	}
}
