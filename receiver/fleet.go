package receiver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/viewers"
	"github.com/uploadbox/uploadbox/wire"
)

// StaleAfter is how long a connected box may go without a report before
// the fleet view calls it stale (three missed reports).
const StaleAfter = 3 * wire.ReportEvery

// Health of a box in the fleet view, in the order the fleet page lists
// them: boxes with an alert first, then those offline or stale, then the
// healthy ones.
const (
	HealthAlert   = "alert"   // its last report has an alert
	HealthOffline = "offline" // no control connection now
	HealthStale   = "stale"   // connected, but no report for StaleAfter
	HealthOnline  = "online"  // connected and reporting, no alert
)

var healthOrder = map[string]int{HealthAlert: 0, HealthOffline: 1, HealthStale: 1, HealthOnline: 2}

// fleetBucket keeps each device's last report (JSON storedReport), so
// that devices list shows it while the server is stopped too.
var fleetBucket = []byte("fleet")

type storedReport struct {
	Report   wire.BoxReport `json:"report"`
	Received time.Time      `json:"received"`
}

func initFleet(db kv.DB) error {
	return db.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(fleetBucket)
		return err
	})
}

// putReport stores device's report and moves its last-seen time, in one
// transaction.
func putReport(db kv.DB, device string, r storedReport) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return db.Update(func(tx kv.Tx) error {
		if err := tx.Bucket(fleetBucket).Put([]byte(device), v); err != nil {
			return err
		}
		return tx.Bucket(controlBucket).Put([]byte(device), []byte(r.Received.UTC().Format(time.RFC3339Nano)))
	})
}

// reports reads every stored report; a database from before the fleet
// view has none.
func reports(db kv.DB) (map[string]storedReport, error) {
	m := map[string]storedReport{}
	err := db.View(func(tx kv.Tx) error {
		b := tx.Bucket(fleetBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r storedReport
			if json.Unmarshal(v, &r) == nil {
				m[string(k)] = r
			}
			return nil
		})
	})
	return m, err
}

// health is the fleet view's judgement of an active device at now ("" for
// a device that is not active: it is not in the fleet).
func health(d DeviceStatus, now time.Time) string {
	switch {
	case d.State != devices.Active:
		return ""
	case d.Report != nil && len(d.Report.Alerts) > 0:
		return HealthAlert
	case !d.Control.Connected:
		return HealthOffline
	}
	last := d.Control.Since
	if d.Reported.After(last) {
		last = d.Reported
	}
	if now.Sub(last) > StaleAfter {
		return HealthStale
	}
	return HealthOnline
}

// serveBoxReport stores the report c's box sent (wire.OpBoxReport) and
// answers 200; a report that fails wire's checks is answered 400 naming
// the field, one from a replaced connection 409.
func (s *Server) serveBoxReport(ctx context.Context, c *controlConn, id string, params json.RawMessage) {
	var r wire.BoxReport
	resp := wire.Response{Status: http.StatusOK}
	err := json.Unmarshal(params, &r)
	if err == nil {
		err = r.Check()
	}
	switch {
	case err != nil:
		resp = wire.Response{Status: http.StatusBadRequest, Error: wire.OpBoxReport + " params: " + err.Error()}
	case !s.hub.current(c):
		resp = wire.Response{Status: http.StatusConflict, Error: "this control connection was replaced by a newer one"}
	default:
		if err := putReport(s.db, c.device, storedReport{Report: r, Received: time.Now().UTC()}); err != nil {
			s.log.Error("box report not stored", "device", c.device, "err", err)
			resp = wire.Response{Status: http.StatusInternalServerError, Error: "the receiver could not store the report"}
		}
	}
	if err := writeEnvelope(ctx, c.conn, wire.TypeResponse, id, resp); err != nil {
		s.log.Warn(wire.OpBoxReport+" answer not sent", "device", c.device, "err", err)
	}
}

// current reports whether c is still its device's connection.
func (h *Hub) current(c *controlConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[c.device] == c
}

// Fleet is the body of GET /v1/fleet: the active boxes, alerts first,
// then offline and stale ones (longest unseen first), then the rest, by
// name within each group.
type Fleet struct {
	At                time.Time  `json:"at"`
	StaleAfterSeconds float64    `json:"stale_after_seconds"`
	Boxes             []FleetBox `json:"boxes"`
}

// FleetBox is one box on the fleet page.
type FleetBox struct {
	Device   string          `json:"device"`
	Health   string          `json:"health"`
	Control  ControlStatus   `json:"control"`
	Report   *wire.BoxReport `json:"report"`
	Reported time.Time       `json:"reported,omitzero"`
}

// fleet lists the active boxes in the fleet page's order.
func fleet(ds []DeviceStatus, now time.Time) Fleet {
	f := Fleet{At: now.UTC(), StaleAfterSeconds: StaleAfter.Seconds(), Boxes: []FleetBox{}}
	for _, d := range ds {
		if d.Health == "" {
			continue
		}
		f.Boxes = append(f.Boxes, FleetBox{Device: d.Name, Health: d.Health, Control: d.Control, Report: d.Report, Reported: d.Reported})
	}
	sort.SliceStable(f.Boxes, func(i, j int) bool {
		a, b := f.Boxes[i], f.Boxes[j]
		if oa, ob := healthOrder[a.Health], healthOrder[b.Health]; oa != ob {
			return oa < ob
		}
		if a.Health != HealthOnline && !a.Control.LastSeen.Equal(b.Control.LastSeen) {
			return a.Control.LastSeen.Before(b.Control.LastSeen)
		}
		return a.Device < b.Device
	})
	return f
}

// fleetDevices is the running server's devices with their reports.
func (s *Server) fleetDevices() ([]DeviceStatus, error) {
	return (&localAdmin{reg: s.devices, db: s.db, hub: &s.hub}).ListDevices()
}

// handleFleet is GET /v1/fleet, for admin accounts (role admin).
func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.signedIn(w, r, "fleet", "fleet.role", func(role string) bool { return role == viewers.RoleAdmin },
		"this account is not an administrator's (an administrator sets it: uploadbox-receiver viewers role NAME admin)"); !ok {
		return
	}
	ds, err := s.fleetDevices()
	if err != nil {
		s.log.Error("fleet", "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the devices could not be read")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(fleet(ds, time.Now()))
}

// withReports adds each device's stored report and its health at now. A
// report older than the device's enrollment is not shown: it was about
// an earlier device of that name.
func withReports(db kv.DB, ds []DeviceStatus, now time.Time) error {
	rs, err := reports(db)
	if err != nil {
		return fmt.Errorf("box reports: %w", err)
	}
	for i := range ds {
		if r, ok := rs[ds[i].Name]; ok && !r.Received.Before(ds[i].Enrolled) {
			ds[i].Report, ds[i].Reported = &r.Report, r.Received
		}
		ds[i].Health = health(ds[i], now)
	}
	return nil
}
