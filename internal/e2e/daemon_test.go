package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/netns"
	spoolpkg "github.com/uploadbox/uploadbox/uploader/spool"
)

// daemonProc is a running `uploadbox run`.
type daemonProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

type boxDirs struct {
	config, state, spool, socket, audit, metrics string
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeBoxConfig writes a daemon config for the test source into dir.
func writeBoxConfig(t *testing.T, dir, state string, extra string) boxDirs {
	t.Helper()
	d := boxDirs{
		config: filepath.Join(dir, "uploadbox.yaml"), state: state, spool: filepath.Join(dir, "spool"),
		socket: filepath.Join(dir, "run", "control.sock"), audit: filepath.Join(dir, "audit.jsonl"), metrics: freePort(t),
	}
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
  listen: %s
audit:
  path: %s
%s`, state, filepath.Dir(d.socket), d.spool, d.metrics, d.audit, extra)
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// startDaemon runs `uploadbox run --config` and waits until its control
// socket answers.
func startDaemon(t *testing.T, d boxDirs, env ...string) *daemonProc {
	t.Helper()
	return startDaemonIn(t, nil, d, env...)
}

// startDaemonIn is startDaemon inside ns (nil: here).
func startDaemonIn(t *testing.T, ns *netns.NS, d boxDirs, env ...string) *daemonProc {
	t.Helper()
	return startDaemonCmd(t, binCommand(ns, "uploadbox", "run", "--config", d.config), d, env...)
}

// startDaemonCmd is startDaemon with cmd, an `uploadbox run` command.
func startDaemonCmd(t *testing.T, cmd *exec.Cmd, d boxDirs, env ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{cmd: cmd, done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="), env...)
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.log())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := exec.Command(filepath.Join(binDir, "uploadbox"), "session", "status", "--socket", d.socket).Run(); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("the daemon exited: %v\n%s", p.cmd.ProcessState, p.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("the daemon's control socket did not answer within 20 s\n%s", p.log())
	return nil
}

// ctl runs a control command and decodes its --json output.
func ctl(t *testing.T, d boxDirs, out any, args ...string) {
	t.Helper()
	s := run(t, "uploadbox", append(args, "--socket", d.socket, "--json")...)
	if out != nil {
		if err := json.Unmarshal([]byte(s), out); err != nil {
			t.Fatalf("%v: %q: %v", args, s, err)
		}
	}
}

type sessionStatus struct {
	Active     bool   `json:"active"`
	Recording  string `json:"recording"`
	Segments   int    `json:"segments"`
	StopReason string `json:"stop_reason"`
	Alert      string `json:"alert"`
	Error      string `json:"error"`
}

type queueStatus struct {
	Count       int   `json:"count"`
	Bytes       int64 `json:"bytes"`
	EndsPending int   `json:"ends_pending"`
}

// waitDrained waits until the daemon's queue is empty.
func waitDrained(t *testing.T, d boxDirs, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var q queueStatus
	for time.Now().Before(deadline) {
		ctl(t, d, &q, "queue")
		if q.Count == 0 && q.EndsPending == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("queue not drained within %s: %+v", within, q)
}

// metricsText is GET http://addr/metrics.
func metricsText(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return body
}

func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	body := metricsText(t, addr)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not exported:\n%s", name, body)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestDaemonSessionUploadWipe: nothing is recorded without a session; a
// session records, every segment is uploaded once and wiped; metrics,
// queue and status say so; a bad SIGHUP keeps the last good config; SIGTERM
// stops within 10 s.
func TestDaemonSessionUploadWipe(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	p := startDaemon(t, d)

	// No session, no recording.
	time.Sleep(1500 * time.Millisecond)
	if files := spoolSegments(t, d.spool); len(files) != 0 {
		t.Fatalf("segments recorded without a session: %v", files)
	}
	var st sessionStatus
	ctl(t, d, &st, "session", "status")
	if st.Active {
		t.Fatalf("a session runs at start: %+v", st)
	}
	if err := exec.Command(filepath.Join(binDir, "uploadbox"), "session", "stop", "--socket", d.socket).Run(); err == nil {
		t.Fatal("session stop without a session succeeded")
	}

	ctl(t, d, &st, "session", "start", "--for", "7s")
	if !st.Active || len(st.Recording) != 32 {
		t.Fatalf("session start: %+v", st)
	}
	if err := exec.Command(filepath.Join(binDir, "uploadbox"), "session", "start", "--socket", d.socket).Run(); err == nil {
		t.Fatal("a second session start succeeded while one runs")
	}
	// A bad config on SIGHUP is refused; the daemon keeps recording.
	good, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, append(good, []byte("capture:\n  fps: many\n")...), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.log(), "keeping the last good config") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.log(), "keeping the last good config") {
		t.Fatal("a bad config on SIGHUP was not reported")
	}
	os.WriteFile(d.config, good, 0o600)

	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
		if !st.Active {
			break
		}
	}
	if st.Active || st.StopReason != "session time up" || st.Segments < 3 {
		t.Fatalf("session after its time: %+v", st)
	}
	waitDrained(t, d, 60*time.Second)
	if left := spoolSegments(t, d.spool); len(left) != 0 {
		t.Fatalf("local copies left after upload: %v", left)
	}
	rs := recordings(t, b.rcv.data)
	if len(rs) != 1 || rs[0].ID != st.Recording || rs[0].Segments != st.Segments || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want the one complete recording %s of %d segments", rs, st.Recording, st.Segments)
	}
	if v := metricValue(t, d.metrics, "uploadbox_segments_sealed_total"); int(v) != st.Segments {
		t.Errorf("segments_sealed_total = %v, want %d", v, st.Segments)
	}
	if v := metricValue(t, d.metrics, "uploadbox_wipes_total"); int(v) != st.Segments {
		t.Errorf("wipes_total = %v, want %d", v, st.Segments)
	}
	if v := metricValue(t, d.metrics, `uploadbox_frames_captured_total{stream="video"}`); v < 150 {
		t.Errorf("video frames captured = %v, want about 175 for 7 s at 25 fps", v)
	}
	if v := metricValue(t, d.metrics, "uploadbox_config_reload_failures_total"); v != 1 {
		t.Errorf("config_reload_failures_total = %v, want 1", v)
	}

	// SIGTERM during a session: the current segment is sealed, the daemon
	// is gone within 10 s, and after a restart the rest is uploaded.
	ctl(t, d, &st, "session", "start", "--for", "60s")
	time.Sleep(3 * time.Second)
	began := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not exit within 10 s of SIGTERM")
	}
	t.Logf("SIGTERM during a session: exited after %s", time.Since(began).Round(time.Millisecond))
	if ps := p.cmd.ProcessState; !ps.Success() {
		t.Errorf("exit after SIGTERM: %v", ps)
	}
	if partial, _ := filepath.Glob(filepath.Join(d.spool, "*.partial")); len(partial) != 0 {
		t.Errorf("SIGTERM left partial segments: %v", partial)
	}
	startDaemon(t, d)
	waitDrained(t, d, 60*time.Second)
	rs = recordings(t, b.rcv.data)
	if len(rs) != 2 {
		t.Fatalf("receiver has %d recordings, want 2", len(rs))
	}
	for _, r := range rs {
		if !r.Complete {
			t.Errorf("recording %s incomplete after a SIGTERM stop: %+v", r.ID, r)
		}
	}
	rep := run(t, "uploadbox-receiver", "audit", "verify", "--data", b.rcv.data)
	if !strings.Contains(rep, "audit log OK") {
		t.Fatalf("receiver audit: %s", rep)
	}
	audit, _ := os.ReadFile(d.audit)
	for _, ev := range []string{`"session.start"`, `"session.stop"`, `"config.reload"`, `"daemon.stop"`} {
		if !bytes.Contains(audit, []byte(ev)) {
			t.Errorf("box audit log lacks %s", ev)
		}
	}
}

// TestDaemonKilledDuringSessions: the daemon is killed with SIGKILL at
// random moments during sessions and restarted; every sealed segment
// still arrives exactly once and nothing stays on the box.
func TestDaemonKilledDuringSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	const kills = 4
	var ids []string
	for i := range kills {
		p := startDaemon(t, d)
		var st sessionStatus
		ctl(t, d, &st, "session", "start", "--for", "60s")
		ids = append(ids, st.Recording)
		time.Sleep(time.Duration(2500+rng.IntN(3000)) * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		t.Logf("kill %d: %d local segment files", i, len(spoolSegments(t, d.spool)))
	}
	p := startDaemon(t, d)
	waitDrained(t, d, 90*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if left := spoolSegments(t, d.spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}
	rs := recordings(t, b.rcv.data)
	byID := map[string]recordingInfo{}
	for _, r := range rs {
		byID[r.ID] = r
	}
	for _, id := range ids {
		r, ok := byID[id]
		if !ok {
			t.Errorf("recording %s lost", id)
			continue
		}
		// Segment 0 is sealed before the kill; the one cut by it is
		// uploaded truncated, or not at all when it held only its header.
		if r.Segments < 1 || len(r.Keys) != r.Segments {
			t.Errorf("recording %s: %+v", id, r)
		}
	}
	// Every wipe came after a stored receipt; nothing is left to send.
	sp, err := spoolpkg.Open(d.spool, spoolpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	all, _ := sp.All()
	total := 0
	for _, r := range all {
		if r.State == spoolpkg.Empty && strings.HasPrefix(r.Reason, "empty after a crash") {
			continue // killed right after its header: no media, never uploaded
		}
		if r.State != spoolpkg.Wiped || len(r.Receipt) == 0 {
			t.Errorf("segment %s: state %s, receipt %d bytes", r.Name, r.State, len(r.Receipt))
		}
		total++
	}
	stored := 0
	for _, r := range rs {
		stored += r.Segments
	}
	if total != stored {
		t.Errorf("the box indexed %d segments, the receiver stored %d", total, stored)
	}
}

// runFails runs a command that must fail and returns its stderr.
func runFails(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err == nil {
		t.Fatalf("%s %s succeeded:\n%s", name, strings.Join(args, " "), out)
	}
	return stderr.String()
}

type daemonStatus struct {
	UploadError string        `json:"upload_error"`
	Session     sessionStatus `json:"session"`
}

// TestDaemonFaultsAreClear: a full spool stops recording with an alert and
// deletes nothing; an unreachable receiver keeps everything and says why;
// a missing camera refuses the session naming the device; a bad config is
// refused with every key named.
func TestDaemonFaultsAreClear(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	// The receiver is down: uploads fail and wait.
	b.rcv.kill()
	d := writeBoxConfig(t, dir, b.state, "")
	cfg, _ := os.ReadFile(d.config)
	cfg = bytes.Replace(cfg, []byte("  min_free: 0\n"), []byte("  min_free: 0\n  max_size: 2MiB\n"), 1)
	os.WriteFile(d.config, cfg, 0o600)
	p := startDaemon(t, d)

	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "60s")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctl(t, d, &st, "session", "status")
		if !st.Active {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Active || !strings.Contains(st.Alert, "the spool is full") || !strings.Contains(st.Error, "spool full") ||
		st.StopReason != "spool full" || st.Segments < 1 {
		t.Fatalf("a full spool did not stop the session with an alert: %+v", st)
	}
	out := run(t, "uploadbox", "session", "status", "--socket", d.socket)
	if strings.Count(out, "recording stopped on its own") != 1 || !strings.Contains(out, "ALERT: recording stopped on its own: the spool is full") ||
		strings.Contains(out, "until space") || strings.Contains(out, "not started") {
		t.Errorf("session status does not show the alert once, as one sentence:\n%s", out)
	}
	if v := metricValue(t, d.metrics, "uploadbox_alert"); v != 1 {
		t.Errorf("uploadbox_alert = %v, want 1", v)
	}
	onBox := spoolSegments(t, d.spool)
	if len(onBox) < st.Segments {
		t.Fatalf("%d segment files on the box, %d were sealed: something was deleted", len(onBox), st.Segments)
	}
	// Keep what the daemon wrote, to check below that it is ciphertext only.
	var kept []string
	for _, f := range onBox {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k := filepath.Join(dir, "kept-"+filepath.Base(f))
		os.WriteFile(k, data, 0o600)
		kept = append(kept, k)
	}
	var ds daemonStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && ds.UploadError == ""; time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &ds, "status")
	}
	if !strings.Contains(ds.UploadError, "refused") {
		t.Errorf("status upload_error = %q, want the refused connection", ds.UploadError)
	}
	// The log classifies the failure as diag does, in a person's words.
	if l := p.log(); !strings.Contains(l, "cause=refused") || strings.Contains(l, "http2:") || strings.Contains(l, "dial tcp") {
		t.Errorf("the daemon log does not classify the unreachable receiver, or carries raw transport errors")
	}

	// A missing camera: reload a config that names one, and the session is
	// refused with the device's name.
	cam := bytes.Replace(cfg, []byte("  source: test\n"), []byte("  source: camera\n  device: /dev/video-missing\n"), 1)
	os.WriteFile(d.config, cam, 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(p.log(), "config reloaded"); {
		time.Sleep(100 * time.Millisecond)
	}
	msg := runFails(t, "uploadbox", "session", "start", "--socket", d.socket)
	if !strings.Contains(msg, "/dev/video-missing") {
		t.Errorf("session start with a missing camera: %q does not name the device", msg)
	}

	// A bad config is refused at start, naming every key.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("capture:\n  fps: 0\n  sorce: test\nspool:\n  max_size: lots\n"), 0o600)
	msg = runFails(t, "uploadbox", "run", "--config", bad)
	for _, key := range []string{"capture.sorce", "spool.max_size"} {
		if !strings.Contains(msg, key) {
			t.Errorf("bad config: %q does not name %s", msg, key)
		}
	}

	// The receiver comes back: everything sealed is uploaded.
	os.WriteFile(d.config, cfg, 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	startReceiver(t, b.rcv.data, b.rcv.addr)
	waitDrained(t, d, 60*time.Second)
	rs := recordings(t, b.rcv.data)
	if len(rs) != 1 || rs[0].Segments != st.Segments {
		t.Fatalf("receiver has %+v, want the %d segments sealed before the spool filled", rs, st.Segments)
	}
	// No plaintext at rest: the daemon's spool files hold neither fMP4 box
	// names nor the recording's own SPS and PPS.
	mp4 := filepath.Join(dir, "faults.mp4")
	run(t, "uploadbox-receiver", "recordings", "export", rs[0].ID, "-o", mp4, "--identity", filepath.Join(b.rcv.data, "org.key"), "--data", b.rcv.data)
	sps, pps := paramSets(t, mp4)
	for _, k := range kept {
		assertNoPlaintext(t, k, sps, pps, "daemon spool")
	}
}

// TestDaemonNotifiesSystemd: with systemd's notify socket and watchdog set
// (as Type=notify with WatchdogSec does), the daemon says READY=1 once it
// answers, pings the watchdog, and says STOPPING=1 on SIGTERM.
func TestDaemonNotifiesSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	p := startDaemon(t, d, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=600000")
	want := func(prefix string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				for _, line := range strings.Split(m, "\n") {
					if strings.HasPrefix(line, prefix) {
						return
					}
				}
			case <-deadline:
				t.Fatalf("no %q from the daemon on its notify socket", prefix)
			}
		}
	}
	want("READY=1")
	want("WATCHDOG=1")
	want("WATCHDOG=1")
	p.cmd.Process.Signal(syscall.SIGTERM)
	want("STOPPING=1")
	<-p.done
}
