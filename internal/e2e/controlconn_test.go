package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/faultproxy"
)

// fastLink is the box's control connection with short pings and
// backoff, so that the tests see the mechanism at work quickly.
const fastLink = `link:
  ping_interval: 300ms
  ping_timeout: 700ms
  retry_max: 1s
`

// controlState is the control connection's part of `uploadbox status --json`.
type controlState = link.State

type boxStatus struct {
	Enrolled bool          `json:"enrolled"`
	Control  *controlState `json:"control"`
}

type deviceControl struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Control struct {
		Connected bool      `json:"connected"`
		Since     time.Time `json:"since"`
		Version   string    `json:"version"`
		LastSeen  time.Time `json:"last_seen"`
	} `json:"control"`
}

// waitControl polls the box's status until ok says yes.
func waitControl(t *testing.T, d boxDirs, what string, ok func(c controlState) bool) controlState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st boxStatus
	for time.Now().Before(deadline) {
		st = boxStatus{} // fields left out of the answer must not linger
		ctl(t, d, &st, "status")
		if st.Control != nil && ok(*st.Control) {
			return *st.Control
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the box's control connection never became %s: %+v", what, st.Control)
	return controlState{}
}

func listDevices(t *testing.T, data string) map[string]deviceControl {
	t.Helper()
	var ds []deviceControl
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "list", "--data", data, "--json")), &ds); err != nil {
		t.Fatal(err)
	}
	m := map[string]deviceControl{}
	for _, d := range ds {
		m[d.Name] = d
	}
	return m
}

// waitDevice polls devices list until ok says yes for name.
func waitDevice(t *testing.T, data, name, what string, ok func(d deviceControl) bool) deviceControl {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var d deviceControl
	for time.Now().Before(deadline) {
		d = listDevices(t, data)[name]
		if ok(d) {
			return d
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("devices list never showed %s %s: %+v", name, what, d)
	return d
}

// controlAudit returns the receiver's device.control entries' details.
func controlAudit(t *testing.T, data string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(data, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Event, Identity, Outcome, Detail string
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Event == "device.control" {
			out = append(out, e.Identity+" "+e.Outcome+" "+e.Detail)
		}
	}
	return out
}

func connected(c controlState) bool { return c.Connected }

// TestControlConnection (issue 12): the enrolled box opens a control
// connection to the receiver; devices list, status, diag and the metric
// show it; killing the receiver shows the box disconnected and retrying
// (classified like diag); a receiver restarted on the same address gets
// the box back; connects and disconnects are audited.
func TestControlConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--control-ping", "300ms")
	b := enrollBox(t, rcv, "room-7", rcv.addr, filepath.Join(dir, "state"))
	d := writeBoxConfig(t, dir, b.state, fastLink)
	startDaemon(t, d)

	c := waitControl(t, d, "connected", connected)
	if c.Connects != 1 || c.Since.IsZero() {
		t.Fatalf("connected: %+v", c)
	}
	dev := waitDevice(t, data, "room-7", "connected", func(d deviceControl) bool { return d.Control.Connected })
	if dev.Control.Since.IsZero() || dev.Control.Version == "" {
		t.Fatalf("devices list: %+v", dev)
	}
	if out := run(t, "uploadbox-receiver", "devices", "list", "--data", data); !strings.Contains(out, "connected (") {
		t.Fatalf("devices list does not say connected:\n%s", out)
	}
	if out := run(t, "uploadbox", "status", "--socket", d.socket); !strings.Contains(out, "control:   connected since") {
		t.Fatalf("status does not say connected:\n%s", out)
	}
	if v := metricValue(t, d.metrics, "uploadbox_control_connected"); v != 1 {
		t.Fatalf("uploadbox_control_connected = %v while connected", v)
	}
	if rep := diagDaemon(t, d); rep["control"] != "connected" {
		t.Fatalf("diag daemon check: %v", rep)
	}

	// The receiver dies: the box notices, says why and when it retries.
	rcv.kill()
	c = waitControl(t, d, "disconnected and retrying", func(c controlState) bool {
		return !c.Connected && c.Failures >= 2 && c.Cause == "refused"
	})
	if c.LastError == "" || c.NextRetry.IsZero() {
		t.Fatalf("disconnected: %+v", c)
	}
	if out := run(t, "uploadbox", "status", "--socket", d.socket); !strings.Contains(out, "control:   disconnected since") || !strings.Contains(out, "(refused)") || !strings.Contains(out, "next retry") {
		t.Fatalf("status while the receiver is down:\n%s", out)
	}
	if v := metricValue(t, d.metrics, "uploadbox_control_connected"); v != 0 {
		t.Fatalf("uploadbox_control_connected = %v while disconnected", v)
	}
	if rep := diagDaemon(t, d); rep["control"] != "disconnected" || rep["control_cause"] != "refused" {
		t.Fatalf("diag daemon check while down: %v", rep)
	}
	// With no server, devices list reads the database: last seen, not connected.
	dev = listDevices(t, data)["room-7"]
	if dev.Control.Connected || dev.Control.LastSeen.IsZero() {
		t.Fatalf("devices list with the receiver down: %+v", dev)
	}
	if out := run(t, "uploadbox-receiver", "devices", "list", "--data", data); !strings.Contains(out, "last seen") {
		t.Fatalf("devices list does not say last seen:\n%s", out)
	}

	// Back on the same address: the box reconnects by itself.
	rcv = startReceiver(t, data, rcv.addr, "--control-ping", "300ms")
	c = waitControl(t, d, "reconnected", connected)
	if c.Connects != 2 || c.Failures != 0 {
		t.Fatalf("reconnected: %+v", c)
	}
	waitDevice(t, data, "room-7", "connected again", func(d deviceControl) bool { return d.Control.Connected })

	// A clean stop audits the disconnect.
	rcv.cmd.Process.Signal(syscall.SIGTERM)
	rcv.cmd.Wait()
	var connects, disconnects int
	for _, e := range controlAudit(t, data) {
		switch {
		case strings.HasPrefix(e, "room-7 ok connected"):
			connects++
		case strings.HasPrefix(e, "room-7 ok disconnected") && strings.Contains(e, "stopping"):
			disconnects++
		}
	}
	if connects != 2 || disconnects != 1 {
		t.Fatalf("audit: %d connects, %d disconnects at stop, want 2 and 1:\n%s", connects, disconnects, strings.Join(controlAudit(t, data), "\n"))
	}
}

// TestControlConnectionNoticesAStalledLink (issue 12): a link that stops
// carrying bytes without a reset is noticed by the pings on both sides
// (within ping_interval + ping_timeout), and the box reconnects when it
// carries bytes again.
func TestControlConnectionNoticesAStalledLink(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	var p *faultproxy.Proxy
	b := setupBoxWith(t, dir, []string{"--control-ping", "300ms"}, func(addr string) string {
		var err error
		if p, err = faultproxy.Start(addr, faultproxy.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p.Addr()
	})
	d := writeBoxConfig(t, dir, b.state, fastLink)
	startDaemon(t, d)
	waitControl(t, d, "connected", connected)
	waitDevice(t, b.rcv.data, "room-7", "connected", func(d deviceControl) bool { return d.Control.Connected })

	p.Stall()
	c := waitControl(t, d, "dead (no pong)", func(c controlState) bool { return !c.Connected })
	if !strings.Contains(c.LastError, "no pong within 700ms") || c.Cause != "timeout" {
		t.Fatalf("a stalled link was not noticed by the box's pings: %+v", c)
	}
	dev := waitDevice(t, b.rcv.data, "room-7", "disconnected", func(d deviceControl) bool { return !d.Control.Connected })
	if dev.Control.LastSeen.IsZero() {
		t.Fatalf("devices list after the stall: %+v", dev)
	}
	found := false
	for _, e := range controlAudit(t, b.rcv.data) {
		found = found || strings.HasPrefix(e, "room-7 ok disconnected") && strings.Contains(e, "no pong")
	}
	if !found {
		t.Fatalf("the receiver did not audit a disconnect for no pong:\n%s", strings.Join(controlAudit(t, b.rcv.data), "\n"))
	}

	p.Resume()
	c = waitControl(t, d, "reconnected", connected)
	if c.Connects < 2 {
		t.Fatalf("after the stall: %+v", c)
	}
}

// TestControlConnectionRefusedToRevokedDevice (issue 12): revoking a box
// ends its control connection and every new attempt is refused.
func TestControlConnectionRefusedToRevokedDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, fastLink)
	startDaemon(t, d)
	waitControl(t, d, "connected", connected)
	waitDevice(t, b.rcv.data, "room-7", "connected", func(d deviceControl) bool { return d.Control.Connected })

	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", b.rcv.data)
	c := waitControl(t, d, "refused after revoke", func(c controlState) bool { return !c.Connected && c.Failures >= 2 })
	if c.Connects != 1 || !strings.Contains(c.LastError, "certificate") {
		t.Fatalf("revoked box: %+v", c)
	}
	dev := listDevices(t, b.rcv.data)["room-7"]
	if dev.Control.Connected || dev.State != "revoked" {
		t.Fatalf("devices list after revoke: %+v", dev)
	}
	found := false
	for _, e := range controlAudit(t, b.rcv.data) {
		found = found || strings.HasPrefix(e, "room-7 ok disconnected") && strings.Contains(e, "revoked")
	}
	if !found {
		t.Fatalf("no disconnect audited for the revoke:\n%s", strings.Join(controlAudit(t, b.rcv.data), "\n"))
	}
}

// diagDaemon runs `uploadbox diag --check daemon --json` and returns the
// check's metrics (a warning exits 1: not a failure here).
func diagDaemon(t *testing.T, d boxDirs) map[string]any {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "uploadbox"), "diag", "--config", d.config, "--check", "daemon", "--json")
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() > 1) {
		t.Fatalf("diag: %v\n%s", err, out)
	}
	var rep struct {
		Checks []struct {
			Name    string         `json:"name"`
			Metrics map[string]any `json:"metrics"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Checks) != 1 {
		t.Fatalf("diag --json: %v\n%s", err, out)
	}
	return rep.Checks[0].Metrics
}
