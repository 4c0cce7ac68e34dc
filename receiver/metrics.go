package receiver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fleetMetric is one per-device series of the fleet (label device),
// taken from the devices list at each scrape; ok false leaves the series
// out for that device.
type fleetMetric struct {
	desc  *prometheus.Desc
	value func(d DeviceStatus, now time.Time) (v float64, ok bool)
}

func newFleetMetric(name, help string, value func(d DeviceStatus, now time.Time) (float64, bool)) fleetMetric {
	return fleetMetric{desc: prometheus.NewDesc("uploadbox_receiver_device_"+name, help, []string{"device"}, nil), value: value}
}

// reported wraps a value that only a box's last report has.
func reported(f func(d DeviceStatus) float64) func(DeviceStatus, time.Time) (float64, bool) {
	return func(d DeviceStatus, _ time.Time) (float64, bool) {
		if d.Report == nil {
			return 0, false
		}
		return f(d), true
	}
}

func unixSeconds(t time.Time) (float64, bool) {
	return float64(t.UnixMilli()) / 1000, !t.IsZero()
}

var fleetMetrics = []fleetMetric{
	newFleetMetric("connected", "1 while the box's control connection is open.", func(d DeviceStatus, _ time.Time) (float64, bool) {
		if d.Control.Connected {
			return 1, true
		}
		return 0, true
	}),
	newFleetMetric("last_seen_age_seconds", "Seconds since the box was last seen (0 while connected); absent for a box never seen.", func(d DeviceStatus, now time.Time) (float64, bool) {
		if d.Control.Connected {
			return 0, true
		}
		return now.Sub(d.Control.LastSeen).Seconds(), !d.Control.LastSeen.IsZero()
	}),
	newFleetMetric("report_age_seconds", "Seconds since the box's last report arrived (a connected box reports at least every minute).", func(d DeviceStatus, now time.Time) (float64, bool) {
		return now.Sub(d.Reported).Seconds(), d.Report != nil
	}),
	newFleetMetric("backlog_segments", "Segments waiting on the box for upload, as last reported.", reported(func(d DeviceStatus) float64 { return float64(d.Report.Backlog.Segments) })),
	newFleetMetric("backlog_bytes", "Bytes waiting on the box for upload, as last reported.", reported(func(d DeviceStatus) float64 { return float64(d.Report.Backlog.Bytes) })),
	newFleetMetric("backlog_oldest_age_seconds", "Age of the oldest segment waiting on the box, as last reported (0 when none waits).", reported(func(d DeviceStatus) float64 { return d.Report.Backlog.OldestAgeSeconds })),
	newFleetMetric("held_segments", "Segments on the box that wait for a technician (quarantined, corrupt, missing), as last reported.", reported(func(d DeviceStatus) float64 { return float64(d.Report.Backlog.Held) })),
	newFleetMetric("alerts", "Active alerts in the box's last report.", reported(func(d DeviceStatus) float64 { return float64(len(d.Report.Alerts)) })),
	newFleetMetric("cert_expiry_timestamp_seconds", "When the box's client certificate expires (Unix time), as last reported.", func(d DeviceStatus, _ time.Time) (float64, bool) {
		if d.Report == nil {
			return 0, false
		}
		return unixSeconds(d.Report.CertExpiry)
	}),
	newFleetMetric("last_upload_timestamp_seconds", "When the receiver last committed a segment of the box (Unix time), as last reported; absent before the first since the box's daemon started.", func(d DeviceStatus, _ time.Time) (float64, bool) {
		if d.Report == nil {
			return 0, false
		}
		return unixSeconds(d.Report.LastUpload)
	}),
}

// fleetCollector reads the devices at each scrape: the active ones are
// the fleet.
type fleetCollector struct {
	list func() ([]DeviceStatus, error)
	errs prometheus.Counter
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range fleetMetrics {
		ch <- m.desc
	}
	c.errs.Describe(ch)
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ds, err := c.list()
	if err != nil {
		c.errs.Inc()
	}
	c.errs.Collect(ch)
	now := time.Now()
	for _, d := range ds {
		if d.Health == "" {
			continue
		}
		for _, m := range fleetMetrics {
			if v, ok := m.value(d, now); ok {
				ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, v, d.Name)
			}
		}
	}
}

// metricsHandler serves the receiver's Prometheus metrics.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&fleetCollector{list: s.fleetDevices, errs: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "uploadbox_receiver_fleet_read_errors_total", Help: "Scrapes that could not read the devices from the database.",
	})})
	reg.MustRegister(s.ScrubCollectors()...)
	reg.MustRegister(s.commitMetrics.collectors()...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Plain HTTP, so a load balancer can probe health and readiness here.
	s.healthRoutes(mux)
	return mux
}

// MetricsAddr is the metrics listener's address once Run listens (""
// without ServerConfig.MetricsListen).
func (s *Server) MetricsAddr() string { return s.metricsAddr }

// startMetrics listens on ServerConfig.MetricsListen (plain HTTP, GET
// /metrics only) and serves until Run shuts it down; nil without one.
func (s *Server) startMetrics(ctx context.Context, errc chan<- error) (*http.Server, error) {
	if s.cfg.MetricsListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("serve: --metrics-listen %s: %w", s.cfg.MetricsListen, err)
	}
	s.metricsAddr = ln.Addr().String()
	srv := &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { errc <- srv.Serve(ln) }()
	return srv, nil
}
