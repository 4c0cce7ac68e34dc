package diag

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/internal/audit"
)

func TestConfigErrors(t *testing.T) {
	b := newBox(t, "capture:\n  fps: 0\nlog:\n  level: loud\n")
	rep := Run(t.Context(), b.options(""))
	r := result(t, rep, "config")
	if r.Status != Fail || !strings.Contains(r.Summary, "capture.fps") || !strings.Contains(r.Summary, "log.level") {
		t.Fatalf("config: %s %q, want a failure naming capture.fps and log.level", r.Status, r.Summary)
	}
	if r.Metrics["problems"] != 2 || r.Remedy == "" {
		t.Errorf("metrics %v, remedy %q", r.Metrics, r.Remedy)
	}
	if rep.ExitCode() != ExitFail || rep.Status != Fail {
		t.Errorf("exit code %d, status %s; want %d, fail", rep.ExitCode(), rep.Status, ExitFail)
	}
	if len(rep.Checks) != len(Names) {
		t.Fatalf("%d checks reported, want all %d", len(rep.Checks), len(Names))
	}
	for _, c := range rep.Checks {
		if needsConfig[c.Name] && (c.Status != Skip || !strings.Contains(c.Summary, "config")) {
			t.Errorf("%s: %s %q, want skipped for the config", c.Name, c.Status, c.Summary)
		}
	}
	// One check asked for: the config's failure comes with it.
	rep = Run(t.Context(), b.options("disk"))
	if got := []string{rep.Checks[0].Name, rep.Checks[1].Name}; len(rep.Checks) != 2 || got[0] != "config" || got[1] != "disk" {
		t.Errorf("--check disk with a bad config reported %v", rep.Checks)
	}
}

func TestConfigMissing(t *testing.T) {
	b := newBox(t, "")
	o := b.options("")
	o.ConfigPath = filepath.Join(b.dir, "nonexistent.yaml")
	o.Audit = nil // the default needs the config's audit.path
	rep := Run(t.Context(), o)
	r := result(t, rep, "config")
	if r.Status != Fail || !strings.Contains(r.Summary, "nonexistent.yaml") || !strings.Contains(r.Remedy, "--config") {
		t.Fatalf("missing config: %s %q %q", r.Status, r.Summary, r.Remedy)
	}
	if rep.ExitCode() != ExitFail {
		t.Errorf("exit code %d, want %d", rep.ExitCode(), ExitFail)
	}
	if !strings.Contains(b.stderr.String(), "not in the audit log") {
		t.Errorf("no warning about the audit log on stderr: %q", b.stderr.String())
	}
}

func TestUnknownCheck(t *testing.T) {
	b := newBox(t, "")
	rep := Run(t.Context(), b.options("kamera"))
	if len(rep.Checks) != 1 || rep.Checks[0].Status != Fail || !strings.Contains(rep.Checks[0].Remedy, "camera") {
		t.Fatalf("unknown check: %+v", rep.Checks)
	}
}

func TestCameraMissing(t *testing.T) {
	const dev = "/dev/video-nonexistent"
	b := newBox(t, "capture:\n  source: camera\n  device: "+dev+"\n")
	rep := Run(t.Context(), b.options("camera"))
	r := result(t, rep, "camera")
	if r.Status != Fail || !strings.Contains(r.Summary, "no camera at "+dev) || !strings.Contains(r.Remedy, "v4l2-ctl --list-devices") {
		t.Fatalf("missing camera: %s %q %q", r.Status, r.Summary, r.Remedy)
	}
	if rep.ExitCode() != ExitFail {
		t.Errorf("exit code %d, want %d", rep.ExitCode(), ExitFail)
	}
}

// TestMediaStatisticsOnly measures the test pattern and tone through the
// real capture code and checks that nothing is written anywhere and that
// the report holds numbers, not media.
func TestMediaStatisticsOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("measures for about a second of real time; skipped with -short")
	}
	b := newBox(t, "capture:\n  source: test\n  width: 320\n  height: 180\n  fps: 10\n")
	tmp, home := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("HOME", home)
	before := listTree(t, b.dir)
	var out bytes.Buffer
	for _, check := range []string{"camera", "microphone"} {
		rep := Run(t.Context(), b.options(check))
		r := result(t, rep, check)
		if r.Status != Pass {
			t.Fatalf("%s: %s %q", check, r.Status, r.Summary)
		}
		if err := WriteJSON(&out, rep); err != nil {
			t.Fatal(err)
		}
		if err := WriteText(&out, rep); err != nil {
			t.Fatal(err)
		}
		for k, v := range r.Metrics {
			switch v.(type) {
			case int, uint64, float64:
			default:
				t.Errorf("%s metric %s is %T, want a number", check, k, v)
			}
		}
		if check == "camera" {
			if fps := r.Metrics["fps_measured"].(float64); fps < 9 || fps > 10.5 {
				t.Errorf("measured %.1f fps from a 10 fps pattern", fps)
			}
		} else if rms := r.Metrics["dbfs_rms"].(float64); rms > -10 || rms < -20 {
			t.Errorf("test tone at %.1f dBFS RMS, want about -14", rms)
		}
	}
	for _, d := range []string{tmp, home} {
		if got := listTree(t, d); len(got) != 0 {
			t.Errorf("measuring wrote %v under %s", got, d)
		}
	}
	if after := listTree(t, b.dir); !slices.Equal(before, after) {
		t.Errorf("files changed from %v to %v", before, after)
	}
	if out.Len() > 4096 {
		t.Errorf("the output is %d bytes: more than a report of numbers", out.Len())
	}
	for _, c := range out.String() {
		if c > 0x7e || (c < 0x20 && c != '\n') {
			t.Fatalf("the output holds a non-text byte %q", c)
		}
	}
}

func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestLevelResult(t *testing.T) {
	tests := []struct {
		name   string
		level  capture.AudioLevel
		status string
		word   string
	}{
		{"speech", capture.AudioLevel{RMS: -30, Peak: -8}, Pass, ""},
		{"silent", capture.AudioLevel{RMS: -75, Peak: -60}, Warn, "silent"},
		{"digital silence", capture.AudioLevel{RMS: capture.SilenceFloor, Peak: capture.SilenceFloor}, Warn, "silent"},
		{"clipping", capture.AudioLevel{RMS: -3, Peak: 0, Clipped: 0.02}, Warn, "clipping"},
		{"a rare full-scale sample", capture.AudioLevel{RMS: -20, Peak: 0, Clipped: 0.0005}, Pass, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := levelResult(tt.level, "microphone")
			if r.Status != tt.status || !strings.Contains(r.Summary, tt.word) || (r.Status != Pass) != (r.Remedy != "") {
				t.Fatalf("got %s %q remedy %q, want %s mentioning %q", r.Status, r.Summary, r.Remedy, tt.status, tt.word)
			}
		})
	}
}

func TestMicrophoneOff(t *testing.T) {
	b := newBox(t, "capture:\n  source: test\n  audio: false\n")
	if r := result(t, Run(t.Context(), b.options("microphone")), "microphone"); r.Status != Skip || !strings.Contains(r.Summary, "capture.audio") {
		t.Fatalf("audio off: %s %q, want a skip", r.Status, r.Summary)
	}
}

func TestDisk(t *testing.T) {
	const mib = 1 << 20
	// 2500k video + 32k audio: 316500 bytes a second.
	tests := []struct {
		name    string
		free    uint64
		backlog int64
		status  string
		minutes float64
	}{
		{"plenty", 20 << 30, 0, Pass, math.Floor(float64(8<<30) / 316500 / 60)},
		{"below an hour", 512*mib + 600*mib, 0, Warn, math.Floor(600 * mib / 316500 / 60)},
		{"full", 400 * mib, 0, Fail, 0},
		{"spool at max_size", 20 << 30, 8 << 30, Fail, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			o := b.options("disk")
			var asked string
			o.Statfs = func(path string) (DiskSpace, error) {
				asked = path
				return DiskSpace{Free: tt.free, Total: 32 << 30}, nil
			}
			o.Queue = func(context.Context) (QueueInfo, error) {
				return QueueInfo{Count: 1, Bytes: tt.backlog, Oldest: time.Now()}, nil
			}
			r := result(t, Run(t.Context(), o), "disk")
			if r.Status != tt.status || r.Metrics["minutes_left"] != tt.minutes || asked != b.spool {
				t.Fatalf("got %s, %v minutes (%q) measuring %s; want %s, %v minutes", r.Status, r.Metrics["minutes_left"], r.Summary, asked, tt.status, tt.minutes)
			}
			if tt.name == "full" && (!strings.Contains(r.Summary, "disk full") || r.Remedy != "disk full: recording stops; free space or lower spool.min_free") {
				t.Errorf("full disk: %q, remedy %q", r.Summary, r.Remedy)
			}
		})
	}
	b := newBox(t, "")
	o := b.options("disk")
	o.Statfs = func(string) (DiskSpace, error) { return DiskSpace{}, errors.New("statfs: input/output error") }
	if r := result(t, Run(t.Context(), o), "disk"); r.Status != Fail || !strings.Contains(r.Summary, "input/output error") {
		t.Errorf("statfs error: %s %q", r.Status, r.Summary)
	}
}

func TestSpoolScan(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		age    time.Duration
		status string
	}{
		{"fresh", 5 * time.Minute, Pass},
		{"two hours", 2 * time.Hour, Warn},
		{"two days", 48 * time.Hour, Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			files := map[string]int{"0123-000001.ubx": 1000, "0123-000002.ubx.partial": 500, "spool.db": 4096, "notes.txt": 10}
			for name, size := range files {
				path := filepath.Join(b.spool, name)
				if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(path, now.Add(-tt.age), now.Add(-tt.age)); err != nil {
					t.Fatal(err)
				}
			}
			r := result(t, Run(t.Context(), b.options("spool")), "spool")
			if r.Status != tt.status || r.Metrics["segments"] != 2 || r.Metrics["bytes"] != int64(1500) || r.Metrics["source"] != "scan" {
				t.Fatalf("got %s %v (%q), want %s with 2 segments of 1500 bytes scanned", r.Status, r.Metrics, r.Summary, tt.status)
			}
			if age := r.Metrics["oldest_age_seconds"].(float64); math.Abs(age-tt.age.Seconds()) > 5 {
				t.Errorf("oldest age %v s, want %v", age, tt.age.Seconds())
			}
		})
	}
}

func TestSpoolFromDaemon(t *testing.T) {
	b := newBox(t, "")
	o := b.options("spool")
	o.Queue = func(context.Context) (QueueInfo, error) {
		return QueueInfo{Count: 7, Bytes: 7 << 20, Oldest: time.Now().Add(-90 * time.Minute)}, nil
	}
	r := result(t, Run(t.Context(), o), "spool")
	if r.Status != Warn || r.Metrics["segments"] != 7 || r.Metrics["source"] != "daemon" {
		t.Fatalf("got %s %v", r.Status, r.Metrics)
	}
	// A quarantined segment fails the check, however young, with the remedy.
	o.Queue = func(context.Context) (QueueInfo, error) {
		return QueueInfo{Count: 2, Bytes: 2 << 20, Oldest: time.Now(), Quarantined: []Quarantined{
			{ID: "00112233445566778899aabbccddeeff-000003.ubx", Status: 409, Reason: "exists", Message: "segment 3 was already stored\nwith other bytes"},
			{ID: "00112233445566778899aabbccddeeff-000004.ubx", Status: 403, Message: "signed by another device"},
		}}, nil
	}
	r = result(t, Run(t.Context(), o), "spool")
	if r.Status != Fail || r.Metrics["quarantined"] != 2 ||
		!strings.Contains(r.Summary, "-000003.ubx") || !strings.Contains(r.Summary, "HTTP 409 exists: segment 3 was already stored with other bytes") ||
		!strings.Contains(r.Remedy, "uploadbox queue retry 00112233445566778899aabbccddeeff-000003.ubx") ||
		!strings.Contains(r.Remedy, "uploadbox queue discard 00112233445566778899aabbccddeeff-000003.ubx --yes") {
		t.Fatalf("quarantined: %s %v %q %q", r.Status, r.Metrics, r.Summary, r.Remedy)
	}
	// The daemon does not answer: the directory is scanned.
	o.Queue = func(context.Context) (QueueInfo, error) { return QueueInfo{}, errors.New("connection refused") }
	if r := result(t, Run(t.Context(), o), "spool"); r.Status != Pass || r.Metrics["source"] != "scan" || r.Metrics["segments"] != 0 {
		t.Fatalf("fallback: %s %v", r.Status, r.Metrics)
	}
}

func TestCertificate(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		issued   time.Time // the device certificate lasts pki.DeviceLifetime
		status   string
		daysLeft float64
	}{
		{"new", now, Pass, 729},
		{"expires in 10 days", now.Add(-2*365*24*time.Hour + 10*24*time.Hour + time.Hour), Warn, 10},
		{"past its renewal time", now.Add(-510 * 24 * time.Hour), Warn, 219},
		{"expired", now.Add(-3 * 365 * 24 * time.Hour), Fail, -366},
		{"not yet valid", now.Add(48 * time.Hour), Fail, 731},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			b.enroll(t, "https://127.0.0.1:1", tt.issued)
			r := result(t, Run(t.Context(), b.options("certificate")), "certificate")
			if r.Status != tt.status || r.Metrics["days_left"] != tt.daysLeft {
				t.Fatalf("got %s with %v days left (%q), want %s with %v", r.Status, r.Metrics["days_left"], r.Summary, tt.status, tt.daysLeft)
			}
		})
	}
	b := newBox(t, "")
	if r := result(t, Run(t.Context(), b.options("certificate")), "certificate"); r.Status != Skip {
		t.Errorf("not enrolled: %s %q, want skip", r.Status, r.Summary)
	}
}

func TestEnrollment(t *testing.T) {
	b := newBox(t, "")
	r := result(t, Run(t.Context(), b.options("enrollment")), "enrollment")
	if r.Status != Fail || !strings.Contains(r.Remedy, "uploadbox enroll") || !strings.Contains(r.Remedy, b.state) {
		t.Fatalf("not enrolled: %s %q %q", r.Status, r.Summary, r.Remedy)
	}
	b.enroll(t, "https://rx.example.org:8443", time.Now())
	r = result(t, Run(t.Context(), b.options("enrollment")), "enrollment")
	if r.Status != Pass || !strings.Contains(r.Summary, "rx.example.org") || r.Metrics["recipients"] != 1 {
		t.Fatalf("enrolled: %s %q %v", r.Status, r.Summary, r.Metrics)
	}
	if err := os.WriteFile(filepath.Join(b.state, "ca.crt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = result(t, Run(t.Context(), b.options("enrollment")), "enrollment")
	if r.Status != Fail || !strings.Contains(r.Summary, "damaged") {
		t.Fatalf("damaged state: %s %q", r.Status, r.Summary)
	}
}

func TestDaemon(t *testing.T) {
	up := func(context.Context) (DaemonInfo, error) {
		return DaemonInfo{Running: true, PID: 42, Uptime: time.Hour, Session: true}, nil
	}
	down := func(context.Context) (DaemonInfo, error) {
		return DaemonInfo{}, errors.New("dial unix /run/uploadbox/control.sock: connect: no such file or directory")
	}
	tests := []struct {
		name     string
		daemon   func(context.Context) (DaemonInfo, error)
		restarts string // systemctl's NRestarts; empty: no systemctl
		active   string
		status   string
	}{
		{"running", up, "0", "active", Pass},
		{"running without systemd", up, "", "", Pass},
		{"restarted", up, "3", "active", Warn},
		{"socket silent", down, "0", "active", Warn},
		{"stopped", down, "0", "inactive", Fail},
		{"no hook, no systemd", nil, "", "", Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			if tt.restarts != "" {
				b.tool("systemctl show uploadbox -p NRestarts --value", tt.restarts)
				b.tool("systemctl is-active uploadbox", tt.active)
			}
			o := b.options("daemon")
			o.Daemon = tt.daemon
			r := result(t, Run(t.Context(), o), "daemon")
			if r.Status != tt.status {
				t.Fatalf("got %s %q, want %s", r.Status, r.Summary, tt.status)
			}
			_, hasRestarts := r.Metrics["restarts"]
			if hasRestarts != (tt.restarts != "") {
				t.Errorf("restarts metric %v with systemctl %q", r.Metrics["restarts"], tt.restarts)
			}
		})
	}
}

func TestPower(t *testing.T) {
	tests := []struct {
		name, out string
		status    string
		word      string
	}{
		{"not a Pi", "", Skip, "vcgencmd"},
		{"clean", "throttled=0x0", Pass, "no under-voltage"},
		{"under-voltage earlier", "throttled=0x50000", Warn, "under-voltage occurred"},
		{"under-voltage now", "throttled=0x50005", Fail, "under-voltage now"},
		{"hot", "throttled=0x80008", Warn, "soft temperature"},
		{"garbage", "VCHI initialization failed", Warn, "VCHI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			if tt.out != "" {
				b.tool("vcgencmd get_throttled", tt.out)
			}
			r := result(t, Run(t.Context(), b.options("power")), "power")
			if r.Status != tt.status || !strings.Contains(r.Summary, tt.word) {
				t.Fatalf("got %s %q, want %s mentioning %q", r.Status, r.Summary, tt.status, tt.word)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		statuses []string
		status   string
		code     int
	}{
		{[]string{Pass, Skip, Pass}, Pass, ExitPass},
		{[]string{Pass, Warn, Skip}, Warn, ExitWarn},
		{[]string{Warn, Fail, Pass}, Fail, ExitFail},
		{[]string{Fail, Warn}, Fail, ExitFail},
		{[]string{Skip}, Pass, ExitPass},
		{nil, Pass, ExitPass},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.statuses, ","), func(t *testing.T) {
			var checks []Result
			for _, s := range tt.statuses {
				checks = append(checks, Result{Status: s})
			}
			r := Report{Status: worst(checks), Checks: checks}
			if r.Status != tt.status || r.ExitCode() != tt.code {
				t.Fatalf("statuses %v gave %s, exit %d; want %s, %d", tt.statuses, r.Status, r.ExitCode(), tt.status, tt.code)
			}
		})
	}
	// Through Run: one warning and nothing worse exits 1.
	b := newBox(t, "")
	b.tool("vcgencmd get_throttled", "throttled=0x10000")
	if rep := Run(t.Context(), b.options("power")); rep.Status != Warn || rep.ExitCode() != ExitWarn {
		t.Errorf("a warning alone: status %s, exit %d", rep.Status, rep.ExitCode())
	}
}

// TestAudit: every run is recorded; by default in the config's audit log.
func TestAudit(t *testing.T) {
	b := newBox(t, "capture:\n  source: test\n")
	o := b.options("power")
	Run(t.Context(), o)
	if len(b.entries) != 1 || b.entries[0].Event != "diag" || b.entries[0].Outcome != Pass || b.entries[0].Detail != "power=skip" {
		t.Fatalf("audit hook got %+v", b.entries)
	}
	o.Audit = nil
	Run(t.Context(), o)
	Run(t.Context(), o)
	data, err := os.ReadFile(b.audit)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"event":"diag"`) {
		t.Fatalf("audit log holds %q", data)
	}
	if _, err := audit.VerifyFile(b.audit); err != nil {
		t.Fatalf("the audit chain does not verify: %v", err)
	}
	o.Audit = func(context.Context, audit.Entry) error { return errors.New("read-only file system") }
	rep := Run(t.Context(), o)
	if rep.Status != Pass || !strings.Contains(b.stderr.String(), "read-only file system") {
		t.Fatalf("audit failure: status %s, stderr %q", rep.Status, b.stderr.String())
	}
}

// TestJSONSchema checks the documented field names and types.
func TestJSONSchema(t *testing.T) {
	b := newBox(t, "capture:\n  source: camera\n  device: /dev/video-nonexistent\n  audio: false\n")
	b.tool("vcgencmd get_throttled", "throttled=0x0")
	rep := Run(t.Context(), b.options(""))
	var buf bytes.Buffer
	if err := WriteJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if keys := sortedKeys(doc); !slices.Equal(keys, []string{"checks", "host", "notes", "status", "time", "version"}) {
		t.Fatalf("report keys %v", keys)
	}
	if doc["version"] != float64(1) || doc["status"] != Fail {
		t.Errorf("version %v, status %v", doc["version"], doc["status"])
	}
	if _, err := time.Parse(time.RFC3339, doc["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	checks := doc["checks"].([]any)
	var names []string
	for _, c := range checks {
		m := c.(map[string]any)
		if keys := sortedKeys(m); !slices.Equal(keys, []string{"metrics", "name", "remedy", "status", "summary"}) {
			t.Errorf("check keys %v", keys)
		}
		names = append(names, m["name"].(string))
		if s := m["status"].(string); !slices.Contains([]string{Pass, Warn, Fail, Skip}, s) {
			t.Errorf("%s: status %q", m["name"], s)
		}
		if _, ok := m["metrics"].(map[string]any); !ok {
			t.Errorf("%s: metrics is %T", m["name"], m["metrics"])
		}
		if strings.Contains(m["summary"].(string), "\n") || strings.Contains(m["remedy"].(string), "\n") {
			t.Errorf("%s: summary or remedy spans lines", m["name"])
		}
	}
	if !slices.Equal(names, Names) {
		t.Errorf("checks %v, want %v in order", names, Names)
	}

	buf.Reset()
	if err := WriteText(&buf, rep); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := fmt.Sprintf("FAIL  %-11s  no camera at /dev/video-nonexistent", "camera")
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
		t.Errorf("no line starting %q in\n%s", want, buf.String())
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "      remedy: check the cable") }) {
		t.Errorf("no remedy under the camera line in\n%s", buf.String())
	}
}

func sortedKeys(m map[string]any) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestNothingConfigured is what the packaging test does under qemu: no
// config, no camera, no receiver. The run ends quickly and fails.
func TestNothingConfigured(t *testing.T) {
	start := time.Now()
	rep := Run(t.Context(), Options{ConfigPath: filepath.Join(t.TempDir(), "none.yaml"), Stderr: &bytes.Buffer{},
		Command: func(context.Context, string, ...string) (string, error) { return "", errors.New("not here") }})
	if rep.ExitCode() != ExitFail || result(t, rep, "config").Status != Fail {
		t.Fatalf("status %s", rep.Status)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestDeviceFailure: a camera the daemon holds for a session is a
// warning; every other failure to open a device fails and names it.
func TestDeviceFailure(t *testing.T) {
	busy := &capture.DeviceError{Kind: "camera", Device: "/dev/video0", Reason: capture.ErrDeviceBusy,
		Err: errors.New("open: device or resource busy"), Hint: "another program is using the camera"}
	denied := &capture.DeviceError{Kind: "camera", Device: "/dev/video0", Reason: capture.ErrPermission,
		Err: errors.New("open: permission denied"), Hint: "check that the uploadbox user is in group video"}
	noMic := &capture.DeviceError{Kind: "microphone", Device: "(default)", Reason: capture.ErrNoDevice,
		Err: errors.New("the audio system lists no capture device"), Hint: "check arecord -l"}
	tests := []struct {
		name    string
		err     error
		kind    string
		session bool
		status  string
		summary string
		remedy  string
	}{
		{"busy during a session", busy, "camera", true, Warn, "in use by the daemon", "after the session"},
		{"busy, no session", busy, "camera", false, Fail, "device busy", "another program"},
		{"permission", denied, "camera", false, Fail, "permission denied", "group video"},
		{"no microphone", noMic, "microphone", false, Fail, "no microphone", "arecord -l"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{ctx: t.Context(), o: Options{StageTimeout: time.Second,
				Daemon: func(context.Context) (DaemonInfo, error) {
					return DaemonInfo{Running: true, Session: tt.session}, nil
				}}}
			r := e.deviceFailure(tt.kind+" /dev/video0", "/dev/video0", tt.kind, tt.err)
			if r.Status != tt.status || !strings.Contains(r.Summary, tt.summary) || !strings.Contains(r.Remedy, tt.remedy) {
				t.Fatalf("got %s %q remedy %q; want %s with %q and %q", r.Status, r.Summary, r.Remedy, tt.status, tt.summary, tt.remedy)
			}
			if strings.Contains(r.Summary, "\n") {
				t.Errorf("summary spans lines: %q", r.Summary)
			}
		})
	}
}

// TestDaemonControlConnection: the daemon check reports the control
// connection, and warns while it is down with the cause and next retry.
func TestDaemonControlConnection(t *testing.T) {
	since := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		control *ControlInfo
		status  string
		metric  string
		summary string
	}{
		{"off", nil, Pass, "off", "no control connection"},
		{"connected", &ControlInfo{Connected: true, Since: since}, Pass, "connected", "control connection up since 2026-12-03T08:00:00Z"},
		{"down", &ControlInfo{Since: since, Cause: "refused", LastError: "dial tcp: connection refused", NextRetry: time.Now().Add(time.Minute)},
			Warn, "disconnected", "control connection down since 2026-12-03T08:00:00Z (refused): dial tcp: connection refused; next retry in "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{ctx: t.Context(), o: Options{StageTimeout: time.Second,
				Command: func(context.Context, string, ...string) (string, error) { return "", exec.ErrNotFound },
				Daemon: func(context.Context) (DaemonInfo, error) {
					return DaemonInfo{Running: true, PID: 7, Control: tt.control}, nil
				}}}
			r := checkDaemon(e)
			if r.Status != tt.status || r.Metrics["control"] != tt.metric || !strings.Contains(r.Summary, tt.summary) {
				t.Fatalf("got %s %v %q; want %s, control=%s, %q", r.Status, r.Metrics, r.Summary, tt.status, tt.metric, tt.summary)
			}
		})
	}
}

// TestLiveDTLSNote: the daemon's live view DTLS fingerprint is a note line
// (text and JSON) and a metric of the daemon check, never a warning; a
// daemon without one adds no note, and notes are never null.
func TestLiveDTLSNote(t *testing.T) {
	const fp = "sha-256 AB:CD:EF"
	for _, tt := range []struct {
		name, dtls string
		notes      []string
	}{
		{"with", fp, []string{"live view DTLS fingerprint " + fp}},
		{"without", "", []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			o := b.options("daemon")
			o.Daemon = func(context.Context) (DaemonInfo, error) {
				return DaemonInfo{Running: true, PID: 7, LiveDTLS: tt.dtls}, nil
			}
			rep := Run(t.Context(), o)
			if r := result(t, rep, "daemon"); r.Status != Pass || (tt.dtls != "" && r.Metrics["live_dtls_fingerprint"] != fp) {
				t.Fatalf("daemon check %s %v", r.Status, r.Metrics)
			}
			if !slices.Equal(rep.Notes, tt.notes) || rep.Notes == nil {
				t.Fatalf("notes %#v, want %#v", rep.Notes, tt.notes)
			}
			var text, js strings.Builder
			WriteText(&text, rep)
			WriteJSON(&js, rep)
			if tt.dtls != "" && !strings.Contains(text.String(), "\nnote  live view DTLS fingerprint "+fp+"\n") {
				t.Errorf("text report:\n%s", text.String())
			}
			if want := `"notes": []`; tt.dtls == "" && !strings.Contains(js.String(), want) {
				t.Errorf("JSON report lacks %s:\n%s", want, js.String())
			}
		})
	}
}
