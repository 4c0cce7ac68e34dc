package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// fleetPage is the receiver's page open in Chromium with an admin signed in.
type fleetPage struct{ coachPage }

// boxes waits up to 40 s for the fleet to list order ("device=health …")
// and, if ok is set, for ok to accept it.
func (p fleetPage) boxes(what, order string, ok func(livetest.PageState) bool) livetest.PageState {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 40*time.Second)
	defer cancel()
	s, err := p.Wait(ctx, func(s livetest.PageState) bool {
		if s.Fleet == nil || s.Fleet.State != "live" {
			return false
		}
		var got []string
		for _, b := range s.Fleet.Boxes {
			got = append(got, b.Device+"="+b.Health)
		}
		return strings.Join(got, " ") == order && (ok == nil || ok(s))
	})
	if err != nil {
		p.t.Fatalf("the fleet page never showed %s: %+v: %v", what, p.Last().Fleet, err)
	}
	return s
}

// fleetDevice is one entry of `devices list --json` with the box's report.
type fleetDevice struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Health  string `json:"health"`
	Control struct {
		Connected bool      `json:"connected"`
		LastSeen  time.Time `json:"last_seen"`
	} `json:"control"`
	Reported time.Time `json:"reported"`
	Report   *struct {
		Version       string    `json:"version"`
		UptimeSeconds float64   `json:"uptime_seconds"`
		LastUpload    time.Time `json:"last_upload"`
		CertExpiry    time.Time `json:"cert_expiry"`
		Backlog       struct {
			Segments         int     `json:"segments"`
			Bytes            int64   `json:"bytes"`
			OldestAgeSeconds float64 `json:"oldest_age_seconds"`
		} `json:"backlog"`
		Alerts []struct{ Kind, Message string } `json:"alerts"`
		Diag   *struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		} `json:"diag"`
	} `json:"report"`
}

func fleetDevices(t *testing.T, data string) map[string]fleetDevice {
	t.Helper()
	var ds []fleetDevice
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "list", "--data", data, "--json")), &ds); err != nil {
		t.Fatal(err)
	}
	m := map[string]fleetDevice{}
	for _, d := range ds {
		m[d.Name] = d
	}
	return m
}

// waitFleet polls devices list --json until ok says yes for name.
func waitFleet(t *testing.T, data, name, what string, ok func(d fleetDevice) bool) fleetDevice {
	t.Helper()
	var d fleetDevice
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if d = fleetDevices(t, data)[name]; ok(d) {
			return d
		}
	}
	t.Fatalf("devices list never showed %s %s: %+v (report %+v)", name, what, d, d.Report)
	return d
}

// deviceMetrics reads the receiver's per-device series for device.
func deviceMetrics(t *testing.T, addr, device string) map[string]float64 {
	t.Helper()
	body := metricsText(t, addr)
	out := map[string]float64{}
	re := regexp.MustCompile(`(?m)^uploadbox_receiver_device_(\w+)\{device="` + regexp.QuoteMeta(device) + `"\} (\S+)$`)
	for _, m := range re.FindAllSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		out[string(m[1])] = v
	}
	return out
}

// TestFleet (issue 14, the admin's fleet view): a box reports over its
// control connection; devices list (--json exact, human with ages and
// sizes), the receiver's Prometheus metrics and the fleet page (an admin
// signed in on the web listener, Chromium 390 px wide) show it: version,
// uptime, certificate expiry, the diag run's statuses, the last upload
// once the queue drained; a recording stopped by a full spool is an alert
// with the backlog it left, and its box moves first on the page; a killed
// box is offline with its last report (its alert still first), which
// devices list still shows with the receiver stopped. A second box,
// enrolled but never started, is offline from the start (first on the
// page while the other is healthy).
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--control-ping", "300ms", "--metrics-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0")
	if rcv.metricsAddr == "" || rcv.webAddr == "" {
		t.Fatal("serve did not print the metrics and web listeners' addresses")
	}
	b := enrollBox(t, rcv, "room-7", rcv.addr, filepath.Join(dir, "state"))
	enrollBox(t, rcv, "room-8", rcv.addr, filepath.Join(dir, "state-8"))
	d := writeBoxConfig(t, dir, b.state, fastLink)
	good, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, d)

	// The administrator's page, 390 px wide, on the web listener.
	const password = "Correct-Horse-Battery-9"
	addViewer(t, data, "ada", password, "--role", "admin")
	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	pg, err := livetest.OpenPage(t.Context(), "https://"+rcv.webAddr+"/", livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	page := fleetPage{coachPage{pg, t}}
	page.wait("the sign-in form", func(s livetest.PageState) bool { return s.State == "signed-out" && s.SignIn })
	page.signIn("ada", password)

	// Connected: the first report.
	dev := waitFleet(t, data, "room-7", "reported", func(d fleetDevice) bool { return d.Report != nil && d.Control.Connected })
	r := dev.Report
	if dev.Health != "online" || r.Version == "" || r.UptimeSeconds <= 0 || len(r.Alerts) != 0 || r.Backlog.Segments != 0 || r.Diag != nil || !r.LastUpload.IsZero() ||
		r.CertExpiry.Before(time.Now().Add(24*time.Hour)) || dev.Reported.IsZero() {
		t.Fatalf("first report: %+v %+v", dev, *r)
	}
	if d8 := fleetDevices(t, data)["room-8"]; d8.Health != "offline" || d8.Report != nil {
		t.Fatalf("the box never started: %+v", d8)
	}
	m := deviceMetrics(t, rcv.metricsAddr, "room-7")
	if m["connected"] != 1 || m["last_seen_age_seconds"] != 0 || m["alerts"] != 0 || m["backlog_segments"] != 0 ||
		m["cert_expiry_timestamp_seconds"] != float64(r.CertExpiry.Unix()) || m["report_age_seconds"] < 0 {
		t.Fatalf("metrics of a connected box: %v", m)
	}
	if m8 := deviceMetrics(t, rcv.metricsAddr, "room-8"); m8["connected"] != 0 || len(m8) != 1 {
		t.Fatalf("metrics of a box never seen: %v, want connected 0 only", m8)
	}
	s := page.boxes("room-8 offline first, room-7 online", "room-8=offline room-7=online", nil)
	if r7 := s.Fleet.Boxes[1]; !r7.Online || !strings.Contains(r7.Text, "connected") || !strings.Contains(r7.Text, "expires in 7") || !strings.Contains(r7.Text, "none yet") {
		t.Errorf("room-7's row: %+v", r7)
	}
	if r8 := s.Fleet.Boxes[0]; r8.Online || !strings.Contains(r8.Text, "never connected") {
		t.Errorf("room-8's row: %+v", r8)
	}
	page.fits("fleet-online")

	// A diag run on the box: its statuses, no more.
	diagDaemon(t, d)
	dev = waitFleet(t, data, "room-7", "the diag run", func(d fleetDevice) bool { return d.Report != nil && d.Report.Diag != nil })
	if len(dev.Report.Diag.Checks) != 1 || dev.Report.Diag.Checks["daemon"] == "" || dev.Report.Diag.Status == "" {
		t.Fatalf("diag summary: %+v", *dev.Report.Diag)
	}

	// A short recording, uploaded: the last upload is reported once the
	// queue drained.
	var st sessionStatus
	started := time.Now()
	ctl(t, d, &st, "session", "start", "--for", "4s")
	waitSessionEnd(t, d, 30*time.Second)
	waitDrained(t, d, 60*time.Second)
	dev = waitFleet(t, data, "room-7", "the last upload", func(d fleetDevice) bool {
		return d.Report != nil && !d.Report.LastUpload.IsZero() && d.Report.Backlog.Segments == 0
	})
	if dev.Report.LastUpload.Before(started) {
		t.Fatalf("last upload %s, before the session started at %s", dev.Report.LastUpload, started)
	}

	// Uploads off and a 2 MiB spool: recording stops on its own, an
	// alert, with the backlog it left.
	full := bytes.Replace(good, []byte("  min_free: 0\n"), []byte("  min_free: 0\n  max_size: 2MiB\n"), 1)
	full = bytes.Replace(full, []byte("upload:\n"), []byte("upload:\n  enabled: false\n"), 1)
	if err := os.WriteFile(d.config, full, 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(p.log(), "config reloaded"); {
		time.Sleep(100 * time.Millisecond)
	}
	ctl(t, d, &st, "session", "start", "--for", "60s")
	if st = waitSessionEnd(t, d, 60*time.Second); st.Alert == "" {
		t.Fatalf("the session did not stop with an alert: %+v", st)
	}
	dev = waitFleet(t, data, "room-7", "the alert", func(d fleetDevice) bool { return d.Health == "alert" })
	if a := dev.Report.Alerts; len(a) != 1 || a[0].Kind != "recording-stopped" || !strings.Contains(a[0].Message, "spool is full") {
		t.Fatalf("alerts: %+v", a)
	}
	// The backlog is taken with the alert's report: the spool is full.
	if bl := dev.Report.Backlog; bl.Segments == 0 || bl.Bytes < 1<<20 {
		t.Fatalf("backlog with a full spool: %+v", bl)
	}
	m = deviceMetrics(t, rcv.metricsAddr, "room-7")
	if m["alerts"] != 1 || m["backlog_segments"] != float64(dev.Report.Backlog.Segments) || m["backlog_bytes"] != float64(dev.Report.Backlog.Bytes) ||
		m["last_upload_timestamp_seconds"] == 0 {
		t.Fatalf("metrics with the alert: %v (report %+v)", m, *dev.Report)
	}
	page.boxes("room-7 first with its alert", "room-7=alert room-8=offline", func(s livetest.PageState) bool {
		b := s.Fleet.Boxes[0]
		return b.Online && len(b.Alerts) == 1 && b.Alerts[0] == "recording-stopped" && strings.Contains(b.Text, "spool is full") && strings.Contains(b.Text, "MiB")
	})
	page.fits("fleet-alert")

	// The admin socket serves the same metrics.
	sock := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(data, "admin.sock"))
	}}}
	if resp, err := sock.Get("http://receiver/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `uploadbox_receiver_device_alerts{device="room-7"} 1`) {
			t.Fatalf("metrics on the admin socket:\n%s", body)
		}
	}
	human := run(t, "uploadbox-receiver", "devices", "list", "--data", data)
	t.Logf("devices list:\n%s", human)
	for _, want := range []string{"HEALTH", "alert", "connected (", "MiB, oldest ", "alerts (as last reported):", "room-7 recording-stopped: ", "never connected", "daemon="} {
		if want == "daemon=" && dev.Report.Diag.Status == "pass" {
			want = "pass ("
		}
		if !strings.Contains(human, want) {
			t.Errorf("devices list does not say %q:\n%s", want, human)
		}
	}

	if !regexp.MustCompile(`in \d+d  `).MatchString(human) {
		t.Errorf("devices list does not give the certificate's expiry as an age:\n%s", human)
	}

	// The box dies: offline, its last report kept (alert first still).
	p.cmd.Process.Kill()
	<-p.done
	dev = waitFleet(t, data, "room-7", "offline", func(d fleetDevice) bool { return !d.Control.Connected })
	if dev.Health != "alert" || dev.Report == nil || dev.Control.LastSeen.IsZero() {
		t.Fatalf("a dead box: %+v", dev)
	}
	if m = deviceMetrics(t, rcv.metricsAddr, "room-7"); m["connected"] != 0 || m["last_seen_age_seconds"] < 0 || m["alerts"] != 1 {
		t.Fatalf("metrics of a dead box: %v", m)
	}
	page.boxes("room-7 offline, its alert still first", "room-7=alert room-8=offline", func(s livetest.PageState) bool {
		b := s.Fleet.Boxes[0]
		return !b.Online && strings.Contains(b.Text, "last seen") && len(b.Alerts) == 1
	})
	page.fits("fleet-offline")
	if s := page.Last(); s.Loads != 1 {
		t.Errorf("the page loaded %d times, want once (it refreshes by itself)", s.Loads)
	}
	// Signing out hides the fleet with the rest.
	page.click("#t-signout")
	page.wait("signed out, no fleet", func(s livetest.PageState) bool { return s.SignIn && s.Fleet == nil && s.Teacher == nil })

	// With the receiver stopped, devices list reads the database.
	rcv.cmd.Process.Signal(syscall.SIGTERM)
	rcv.cmd.Wait()
	if dev = fleetDevices(t, data)["room-7"]; dev.Report == nil || len(dev.Report.Alerts) != 1 || dev.Health != "alert" {
		t.Fatalf("devices list with the receiver stopped: %+v", dev)
	}
	if out := run(t, "uploadbox-receiver", "devices", "list", "--data", data); !strings.Contains(out, "last seen ") || !strings.Contains(out, "recording-stopped") {
		t.Fatalf("devices list with the receiver stopped:\n%s", out)
	}
}
