package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
)

// controlOf is what `devices list --json` on data says of name's control
// connection.
func controlOf(t *testing.T, data, name string) (connected bool, receiver string) {
	t.Helper()
	var devs []struct {
		Name    string `json:"name"`
		Control struct {
			Connected bool   `json:"connected"`
			Receiver  string `json:"receiver"`
		} `json:"control"`
	}
	out := run(t, "uploadbox-receiver", "devices", "list", "--json", "--data", data)
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("devices list --json printed %q: %v", out, err)
	}
	for _, d := range devs {
		if d.Name == name {
			return d.Control.Connected, d.Control.Receiver
		}
	}
	t.Fatalf("devices list on %s has no %s", data, name)
	return false, ""
}

// TestLiveViewAcrossReceivers (issue 15, "The control connection across
// replicas"): two receiver processes on one PostgreSQL behind a round-robin
// proxy; the box's daemon connects through the proxy and lands on one of
// them. Both list it as connected (the other naming the holder). A coach's
// offer sent to the receiver that does not hold the box is held by the box
// for the teacher, whose decision, made through that receiver's admin socket
// too, reaches the box: the coach gets the answer and video. Then the
// holder is SIGKILLed: the box reconnects through the proxy to the one left,
// which then holds it and carries a decision to it.
func TestLiveViewAcrossReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, two receivers and the daemon; skipped under -short")
	}
	pg := pgtest.Start(t)
	url := pg.NewDB(t)
	dir := t.TempDir()
	var r2 *receiverProc
	var proxy *rrproxy.Proxy
	b, lb, _ := startRelayBoxIn(t, dir, []string{"--database", url}, func(addr string) string {
		data2 := filepath.Join(dir, "receiver-2")
		copyKeys(t, filepath.Join(dir, "receiver"), data2)
		r2 = startReceiver(t, data2, "127.0.0.1:0", "--database", url)
		var err error
		if proxy, err = rrproxy.Start(addr, r2.addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		return proxy.Addr()
	})
	r1 := b.rcv

	// Which receiver holds the box: the one that lists it with no other
	// receiver named. The other lists it as connected through the holder.
	var holder, other *receiverProc
	for deadline := time.Now().Add(30 * time.Second); holder == nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		c1, via1 := controlOf(t, r1.data, "room-7")
		c2, via2 := controlOf(t, r2.data, "room-7")
		switch {
		case c1 && via1 == "" && c2 && via2 != "":
			holder, other = r1, r2
		case c2 && via2 == "" && c1 && via1 != "":
			holder, other = r2, r1
		}
	}
	if holder == nil {
		t.Fatal("the two receivers never agreed that one of them holds room-7's control connection")
	}

	// The coach asks the receiver that does not hold the box; the teacher
	// decides through that receiver's admin socket.
	viaOther := enrolled{state: b.state, rcv: other}
	c := receiverClient(t, viaOther)
	coach := receiverLogin(t, viaOther, "coach-c")
	receiverLogin(t, viaOther, "tess")
	for _, name := range []string{"coach-c", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", other.data)
	}
	acceptHeld(t, viaOther, lb, c, coach)

	// The holder dies; the box comes back through the proxy to the other,
	// which holds it now and reaches it.
	holder.kill()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, via := controlOf(t, other.data, "room-7"); conn && via == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("room-7 never held by the receiver left after the other was killed")
		}
	}
	ans, stderr, ok := decide(t, other.data, "", "room-7", "end_all", "--as", "tess")
	if !ok || ans.Status != http.StatusOK {
		t.Fatalf("end_all through the receiver left: %+v %s", ans, stderr)
	}
}
