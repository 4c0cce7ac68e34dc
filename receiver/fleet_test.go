package receiver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/wire"
)

// TestBoxReports: a box's report over its control connection is stored
// and shown by devices list and GET /v1/fleet (admins only), alerts
// first; a report beyond wire's bounds is refused 400 naming the field
// and the last good one stays.
func TestBoxReports(t *testing.T) {
	h := start(t)
	// A second box, enrolled but never connected: offline.
	nd, err := h.admin.AddDevice("room-8")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uploader.Enroll(t.Context(), "https://"+h.addr, nd.Token, nd.CAFingerprint, filepath.Join(t.TempDir(), "box8")); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ name, role string }{{"ada", "admin"}, {"tess", "teacher"}} {
		if err := h.admin.AddViewer(a.name, "Correct-Horse-Battery-9"); err != nil {
			t.Fatal(err)
		}
		if err := h.admin.SetViewerRole(a.name, a.role); err != nil {
			t.Fatal(err)
		}
	}
	c := coachClient(t, h)
	base := "https://" + h.addr
	admin, teacher := login(t, c, base, "ada"), login(t, c, base, "tess")

	box := runLink(t, h, "room-9")
	waitFor(t, "connected", func() bool { return connectedIn(t, h, "room-9") })
	send := func(r wire.BoxReport) wire.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		resp, err := box.Request(ctx, wire.OpBoxReport, r)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	device := func(name string) receiver.DeviceStatus {
		t.Helper()
		ds, err := h.admin.ListDevices()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.Name == name {
				return d
			}
		}
		t.Fatalf("devices list has no %s", name)
		return receiver.DeviceStatus{}
	}
	order := func() string {
		t.Helper()
		resp, body := get(t, c, base+"/v1/fleet", admin.Token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/fleet as an admin: HTTP %d %s", resp.StatusCode, body)
		}
		var f receiver.Fleet
		if err := json.Unmarshal(body, &f); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range f.Boxes {
			out = append(out, b.Device+"="+b.Health)
		}
		return strings.Join(out, " ")
	}

	expiry := time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Second)
	good := wire.BoxReport{
		Version: "1.2.3", Started: time.Now().Add(-time.Hour).UTC(), UptimeSeconds: 3600,
		Backlog:    wire.Backlog{Segments: 3, Bytes: 12 << 20, OldestAgeSeconds: 120},
		Alerts:     []wire.Alert{},
		CertExpiry: expiry,
		Diag:       &wire.DiagSummary{At: time.Now().UTC(), Status: "warn", Checks: map[string]string{"camera": "warn", "disk": "pass"}},
		At:         time.Now().UTC(),
	}
	if r := send(good); r.Status != http.StatusOK {
		t.Fatalf("a good report: %+v", r)
	}
	d := device("room-9")
	if d.Report == nil || d.Report.Version != "1.2.3" || d.Report.Backlog.Bytes != 12<<20 || !d.Report.CertExpiry.Equal(expiry) ||
		d.Report.Diag.Checks["camera"] != "warn" || d.Reported.IsZero() || d.Health != receiver.HealthOnline {
		t.Fatalf("devices list after a report: %+v report %+v", d, d.Report)
	}
	if d8 := device("room-8"); d8.Report != nil || d8.Health != receiver.HealthOffline {
		t.Fatalf("the box never connected: %+v", d8)
	}
	if got := order(); got != "room-8=offline room-9=online" {
		t.Fatalf("fleet order %q, want the offline box first", got)
	}

	// Refusals: the page is for admins.
	if resp, body := get(t, c, base+"/v1/fleet", teacher.Token); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"reason":"role"`) {
		t.Errorf("GET /v1/fleet as a teacher: HTTP %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, c, base+"/v1/fleet", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/fleet without a token: HTTP %d %s", resp.StatusCode, body)
	}

	// Bad reports are refused, naming the field; the last good one stays.
	for _, tt := range []struct {
		name, field string
		bad         func(r *wire.BoxReport)
	}{
		{"a path as alert kind", "alerts[0].kind", func(r *wire.BoxReport) { r.Alerts = []wire.Alert{{Kind: "/home/alice", Message: "x"}} }},
		{"a long alert", "alerts[0].message", func(r *wire.BoxReport) {
			r.Alerts = []wire.Alert{{Kind: "x", Message: strings.Repeat("a", wire.MaxAlertMessage+1)}}
		}},
		{"an unknown diag status", "diag.checks.camera", func(r *wire.BoxReport) {
			r.Diag = &wire.DiagSummary{Status: "pass", Checks: map[string]string{"camera": "great"}}
		}},
		{"a negative backlog", "backlog", func(r *wire.BoxReport) { r.Backlog.Segments = -1 }},
	} {
		r := good
		tt.bad(&r)
		if resp := send(r); resp.Status != http.StatusBadRequest || !strings.Contains(resp.Error, tt.field) {
			t.Errorf("%s: %+v, want 400 naming %s", tt.name, resp, tt.field)
		}
	}
	if d := device("room-9"); d.Report.Version != "1.2.3" || len(d.Report.Alerts) != 0 {
		t.Fatalf("a refused report replaced the last good one: %+v", d.Report)
	}

	// An alert: the box comes first.
	alerting := good
	alerting.Alerts = []wire.Alert{{Kind: wire.AlertRecordingStopped, Message: "recording stopped on its own: the spool is full"}}
	if r := send(alerting); r.Status != http.StatusOK {
		t.Fatalf("a report with an alert: %+v", r)
	}
	if got := order(); got != "room-9=alert room-8=offline" {
		t.Fatalf("fleet order %q, want the box with the alert first", got)
	}
}
