package receiver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"

	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/wire"
)

// TestFleetHealth: an alert wins over everything; a box without a
// connection is offline; a connected box without a report for StaleAfter
// (since its last report or its connect, the later) is stale; devices
// that are not active are not in the fleet. The fleet lists alerts, then
// offline and stale boxes (longest unseen first), then the rest, by name.
func TestFleetHealth(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	alert := &wire.BoxReport{Alerts: []wire.Alert{{Kind: wire.AlertSegmentsHeld, Message: "1 segment(s) wait"}}}
	ok := &wire.BoxReport{Alerts: []wire.Alert{}}
	dev := func(name string, st devices.State, connected bool, since, seen, reported time.Duration, r *wire.BoxReport) DeviceStatus {
		d := DeviceStatus{Device: devices.Device{Name: name, State: st}, Report: r}
		d.Control.Connected = connected
		if since > 0 {
			d.Control.Since = now.Add(-since)
		}
		if seen > 0 || connected {
			d.Control.LastSeen = now.Add(-seen) // now while connected, as Hub.status says
		}
		if r != nil {
			d.Reported = now.Add(-reported)
		}
		return d
	}
	ds := []DeviceStatus{
		dev("a-online", devices.Active, true, time.Hour, 0, 30*time.Second, ok),
		dev("b-stale", devices.Active, true, time.Hour, 0, StaleAfter+time.Second, ok),
		dev("c-just-connected", devices.Active, true, time.Second, 0, time.Hour, ok),
		dev("d-offline-recent", devices.Active, false, 0, time.Minute, time.Minute, ok),
		dev("e-offline-long", devices.Active, false, 0, 48*time.Hour, 48*time.Hour, ok),
		dev("f-alert-offline", devices.Active, false, 0, time.Hour, time.Hour, alert),
		dev("g-alert", devices.Active, true, time.Hour, 0, time.Second, alert),
		dev("h-pending", devices.Pending, false, 0, 0, 0, nil),
		dev("i-revoked", devices.Revoked, false, 0, time.Hour, time.Hour, alert),
		dev("j-never-seen", devices.Active, false, 0, 0, 0, nil),
	}
	want := map[string]string{
		"a-online": HealthOnline, "b-stale": HealthStale, "c-just-connected": HealthOnline,
		"d-offline-recent": HealthOffline, "e-offline-long": HealthOffline, "f-alert-offline": HealthAlert,
		"g-alert": HealthAlert, "h-pending": "", "i-revoked": "", "j-never-seen": HealthOffline,
	}
	for i := range ds {
		ds[i].Health = health(ds[i], now)
		if ds[i].Health != want[ds[i].Name] {
			t.Errorf("%s: health %q, want %q", ds[i].Name, ds[i].Health, want[ds[i].Name])
		}
	}
	var got []string
	for _, b := range fleet(ds, now).Boxes {
		got = append(got, b.Device)
	}
	// The alerts' boxes by name; then the never seen (zero last seen),
	// the longest unseen, the stale one (seen now: connected), the
	// recent; then the healthy by name.
	order := "f-alert-offline g-alert j-never-seen e-offline-long d-offline-recent b-stale a-online c-just-connected"
	if strings.Join(got, " ") != order {
		t.Errorf("fleet order:\n%s\nwant\n%s", strings.Join(got, " "), order)
	}
}

// TestReportOfAnEarlierDevice: a stored report that arrived before the
// device's enrollment (an earlier device of that name) is not shown.
func TestReportOfAnEarlierDevice(t *testing.T) {
	db := kvtest.Open(t)
	if err := errors.Join(initControl(db), initFleet(db)); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := putReport(db, "room-1", storedReport{Report: wire.BoxReport{Version: "old", Alerts: []wire.Alert{}}, Received: at}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		enrolled time.Time
		shown    bool
	}{
		{"enrolled before the report", at.Add(-time.Hour), true},
		{"enrolled after it", at.Add(time.Second), false},
	} {
		ds := []DeviceStatus{{Device: devices.Device{Name: "room-1", State: devices.Active, Enrolled: tt.enrolled}}}
		if err := withReports(db, ds, at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if shown := ds[0].Report != nil; shown != tt.shown {
			t.Errorf("%s: report shown %t, want %t", tt.name, shown, tt.shown)
		}
	}
}
