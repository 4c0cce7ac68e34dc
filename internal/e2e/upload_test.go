package e2e

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/faultproxy"
	"github.com/uploadbox/uploadbox/internal/netns"
	"github.com/uploadbox/uploadbox/internal/syncbuf"
	spoolpkg "github.com/uploadbox/uploadbox/uploader/spool"
)

// receiverProc is a running `uploadbox-receiver serve`.
type receiverProc struct {
	cmd    *exec.Cmd
	addr   string
	data   string
	stderr syncbuf.Buffer // the receiver's log

	webAddr     string // the --web-listen address, when given
	metricsAddr string // the --metrics-listen address, when given
}

// startReceiver runs `uploadbox-receiver serve` on listen; extra are more
// serve flags (limits, timeouts) a test sets.
func startReceiver(t *testing.T, data, listen string, extra ...string) *receiverProc {
	t.Helper()
	return startReceiverIn(t, nil, data, listen, extra...)
}

// startReceiverIn is startReceiver inside ns (nil: here).
func startReceiverIn(t *testing.T, ns *netns.NS, data, listen string, extra ...string) *receiverProc {
	t.Helper()
	return startReceiverArgs(t, ns, data, append([]string{"serve", "--data", data, "--listen", listen}, extra...))
}

// startReceiverArgs runs uploadbox-receiver with args (serve and its
// flags, e.g. --config) inside ns (nil: here); data is the data directory
// the flags or the config file give.
func startReceiverArgs(t *testing.T, ns *netns.NS, data string, args []string) *receiverProc {
	t.Helper()
	cmd := binCommand(ns, "uploadbox-receiver", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &receiverProc{cmd: cmd, data: data}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "web listening on "); ok {
			p.webAddr = addr
		}
		if addr, ok := strings.CutPrefix(sc.Text(), "metrics listening on "); ok {
			p.metricsAddr = addr
		}
		if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			p.addr = addr
			go func() {
				for sc.Scan() {
				}
			}()
			return p
		}
	}
	t.Fatal("the receiver exited before it said it was listening")
	return nil
}

func (p *receiverProc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

type enrolled struct {
	state string
	rcv   *receiverProc
}

// setupBox starts a receiver, adds a device and enrolls a box with it;
// via, if set, maps the receiver's address to the one the box should use.
func setupBox(t *testing.T, dir string, via func(addr string) string) enrolled {
	t.Helper()
	return setupBoxWith(t, dir, nil, via)
}

// setupBoxWith is setupBox with extra serve flags.
func setupBoxWith(t *testing.T, dir string, serve []string, via func(addr string) string) enrolled {
	t.Helper()
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0", serve...)
	boxAddr := rcv.addr
	if via != nil {
		boxAddr = via(rcv.addr)
	}
	return enrollBox(t, rcv, "room-7", boxAddr, filepath.Join(dir, "state"))
}

// enrollBox adds device name at rcv and enrolls a box whose state
// directory is state, reaching the receiver at boxAddr.
func enrollBox(t *testing.T, rcv *receiverProc, name, boxAddr, state string) enrolled {
	t.Helper()
	return enrollBoxIn(t, nil, rcv, name, boxAddr, state)
}

// enrollBoxIn is enrollBox with the box inside ns (nil: here).
func enrollBoxIn(t *testing.T, ns *netns.NS, rcv *receiverProc, name, boxAddr, state string) enrolled {
	t.Helper()
	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	out := run(t, "uploadbox-receiver", "devices", "add", name, "--data", rcv.data, "--json")
	if err := json.Unmarshal([]byte(out), &add); err != nil || add.Token == "" || len(add.CAFingerprint) != 64 {
		t.Fatalf("devices add --json printed %q", out)
	}
	runIn(t, ns, "uploadbox", "enroll", "--receiver", "https://"+boxAddr, "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", state)
	for _, f := range []string{"device.key", "device.crt", "ca.crt", "receipt.pub", "org.pub"} {
		if st, err := os.Stat(filepath.Join(state, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("state file %s: %v (mode %v)", f, err, st.Mode().Perm())
		}
	}
	return enrolled{state: state, rcv: rcv}
}

func recordInto(t *testing.T, b enrolled, spool string, d string) int {
	t.Helper()
	out := run(t, "uploadbox", "record", "--source", "test", "--size", "640x360", "--fps", "25", "--bitrate", "2000k",
		"--duration", d, "--segment", "2s", "--state", b.state, "--out", spool)
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "sealed ") {
			n++
		}
	}
	return n
}

type recordingInfo struct {
	ID       string   `json:"id"`
	Segments int      `json:"segments"`
	Complete bool     `json:"complete"`
	Keys     []string `json:"keys"`
}

func recordings(t *testing.T, data string) []recordingInfo {
	t.Helper()
	var rs []recordingInfo
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "recordings", "list", "--data", data, "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

func spoolSegments(t *testing.T, spool string) []string {
	files, _ := filepath.Glob(filepath.Join(spool, "*.ubx*"))
	return files
}

// TestUploadExactlyOnceThenWipe: record, upload, and the receiver holds
// every segment once, the box holds none, and the stored recording exports
// and plays.
func TestUploadExactlyOnceThenWipe(t *testing.T) {
	if testing.Short() {
		t.Skip("records and uploads; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, "6s")
	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if n := strings.Count(out, "committed "); n != sealed || sealed < 3 {
		t.Fatalf("upload committed %d segments, %d were sealed:\n%s", n, sealed, out)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left after upload: %v", left)
	}
	rs := recordings(t, b.rcv.data)
	if len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want one complete recording of %d segments", rs, sealed)
	}
	// A second run finds nothing to do and uploads nothing twice.
	out = run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if !strings.Contains(out, "uploaded 0 segments") {
		t.Fatalf("second upload: %s", out)
	}
	mp4 := filepath.Join(dir, "rec.mp4")
	run(t, "uploadbox-receiver", "recordings", "export", rs[0].ID, "-o", mp4, "--identity", filepath.Join(b.rcv.data, "org.key"), "--data", b.rcv.data)
	if d := checkRecording(t, mp4, true); d < 5.5 {
		t.Fatalf("exported %.2fs of a 6 s recording", d)
	}
	rep := run(t, "uploadbox-receiver", "audit", "verify", "--data", b.rcv.data)
	if !strings.Contains(rep, "audit log OK") {
		t.Fatalf("audit verify: %s", rep)
	}
}

// TestUploadSurvivesKills: the uploader is killed with SIGKILL at random
// moments and the receiver is killed and restarted once; afterwards every
// segment is stored exactly once and every local copy is gone.
func TestUploadSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("records and uploads; skipped under -short")
	}
	dir := t.TempDir()
	// A slow link (about 1 MB/s) so that kills land in the middle of PATCHes.
	b := setupBox(t, dir, func(addr string) string {
		p, err := faultproxy.Start(addr, faultproxy.Options{Rate: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p.Addr()
	})
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, "8s")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := range 12 {
		if i == 3 {
			// The receiver dies and comes back on the same port.
			b.rcv.kill()
			b.rcv = startReceiver(t, b.rcv.data, b.rcv.addr)
		}
		cmd := exec.Command(filepath.Join(binDir, "uploadbox"), "upload", "--state", b.state, "--spool", spool)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d: %d local segments left", i, len(spoolSegments(t, spool)))
	}
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}
	rs := recordings(t, b.rcv.data)
	if len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want one complete recording of %d segments, each once", rs, sealed)
	}
	// Every wipe happened after a receipt was stored.
	sp, err := spoolpkg.Open(spool, spoolpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	all, err := sp.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if r.State != spoolpkg.Wiped || len(r.Receipt) == 0 {
			t.Errorf("segment %s: state %s, receipt %d bytes", r.Name, r.State, len(r.Receipt))
		}
	}
	if len(all) != sealed {
		t.Errorf("spool index lists %d segments, %d were sealed", len(all), sealed)
	}
}
