package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
)

// TestPeerLeaseBounds: serve refuses a --peer-lease outside 1s to 10m,
// naming the flag, before it opens anything.
func TestPeerLeaseBounds(t *testing.T) {
	for _, v := range []string{"0s", "500ms", "11m", "-5s"} {
		_, stderr, code := cpRun(t, "uploadbox-receiver", "serve", "--data", t.TempDir(), "--peer-lease", v)
		if code != 2 || !strings.Contains(stderr, "--peer-lease "+strings.TrimPrefix(v, "+")) || !strings.Contains(stderr, "give 1s to 10m") {
			t.Errorf("serve --peer-lease %s: exit %d, want 2 naming the flag and its bounds\n%s", v, code, stderr)
		}
	}
}

// waitControlOf waits (bounded) until what data's devices list says of
// room-7's control connection satisfies ok.
func waitControlOf(t *testing.T, data, what string, ok func(connected bool, via string) bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ok(controlOf(t, data, "room-7")) {
			return
		}
		if time.Now().After(deadline) {
			c, via := controlOf(t, data, "room-7")
			t.Fatalf("%s: room-7 still listed connected=%v via %q on %s", what, c, via, data)
		}
	}
}

// TestPeerLeaseExpiry (issue 15): two receivers on one PostgreSQL behind a
// round-robin proxy, the box's control connection on A. A is frozen
// (SIGSTOP): its holder row stays but is no longer renewed, and the proxy
// still sends the box to A, where its reconnects hang. A teacher's
// decision and a coach's offer made on B end as offline, not at their
// deadline: while A's lease runs, at the next lease check; after it, at
// once, B listing the box as not connected (A's row is not trusted). When
// the proxy sends the box to B instead, the box reconnects there and a
// coach's offer accepted by the teacher through B gets video. A resumed
// (SIGCONT) does not take the box back: it lists it as held by B, and a
// decision made on A reaches the box through B.
func TestPeerLeaseExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, two receivers and the daemon; skipped under -short")
	}
	pg := pgtest.Start(t)
	url := pg.NewDB(t)
	dir := t.TempDir()
	serve := []string{"--database", url, "--peer-lease", "2s"}
	var rB *receiverProc
	var proxy *rrproxy.Proxy
	b, lb, _ := startRelayBoxIn(t, dir, serve, func(addr string) string {
		dataB := filepath.Join(dir, "receiver-2")
		copyKeys(t, filepath.Join(dir, "receiver"), dataB)
		rB = startReceiver(t, dataB, "127.0.0.1:0", serve...)
		var err error
		// Only A at first: the box's control connection lands there.
		if proxy, err = rrproxy.Start(addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		return proxy.Addr()
	})
	rA := b.rcv
	waitControlOf(t, rB.data, "B never listed room-7 as held by A", func(c bool, via string) bool { return c && via != "" })

	viaB := enrolled{state: b.state, rcv: rB}
	c := receiverClient(t, viaB)
	coach := receiverLogin(t, viaB, "coach-c")
	receiverLogin(t, viaB, "tess")
	for _, name := range []string{"coach-c", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", rB.data)
	}

	// A freezes: the kernel still accepts connections for it, so the box's
	// reconnects through the proxy hang in their TLS handshake.
	if err := rA.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			rA.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	// A decision on B, made while A's row may still be within its lease,
	// is answered offline, by the lease check and not the call's deadline.
	offline := func(when string) {
		t.Helper()
		ans, stderr, ok := decide(t, rB.data, "", "room-7", "end_all", "--as", "tess")
		if ok || !strings.Contains(stderr+ans.Error, "offline") || strings.Contains(stderr+ans.Error, "deadline") {
			t.Fatalf("%s: end_all on B: ok=%v %+v\n%s\nwant an offline answer", when, ok, ans, stderr)
		}
		r := relayOffer(t, c, viaB, "room-7", coach, 0)
		if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "offline") {
			t.Fatalf("%s: coach's offer on B: HTTP %d %s, want 503 offline", when, r.Status, r.Body)
		}
	}
	offline("A just frozen")
	// Past the lease B no longer trusts A's row.
	waitControlOf(t, rB.data, "A's row trusted past its lease", func(c bool, _ string) bool { return !c })
	offline("A's lease over")

	// The load balancer takes A out: the box's next attempt reaches B.
	proxy.SetBackends(rB.addr)
	waitControlOf(t, rB.data, "the box never reconnected to B", func(c bool, via string) bool { return c && via == "" })
	acceptHeld(t, viaB, lb, c, coach)

	// A resumes: it finds the box held by B and leaves it there.
	resume()
	waitControlOf(t, rA.data, "A resumed does not list room-7 as held by B", func(c bool, via string) bool { return c && via != "" })
	if conn, via := controlOf(t, rB.data, "room-7"); !conn || via != "" {
		t.Fatalf("after A resumed, B lists room-7 connected=%v via %q: want held by B", conn, via)
	}
	ans, stderr, ok := decide(t, rA.data, "", "room-7", "end_all", "--as", "tess")
	if !ok || ans.Status != http.StatusOK {
		t.Fatalf("end_all on the resumed A: %+v %s", ans, stderr)
	}
}
