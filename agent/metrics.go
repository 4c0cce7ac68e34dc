package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// metrics are the daemon's Prometheus series. Capture counters survive
// sessions: each session's totals are added when it ends.
type metrics struct {
	reg *prometheus.Registry

	segmentsSealed   prometheus.Counter
	uploadedBytes    prometheus.Counter
	sentBytes        prometheus.Counter
	retries          prometheus.Counter
	wipes            prometheus.Counter
	commitLatency    prometheus.Histogram
	reloadFailures   prometheus.Counter
	sessionActive    prometheus.Gauge
	alert            prometheus.Gauge
	deviceRefused    prometheus.Gauge
	controlConnected prometheus.Gauge
	liveViewers      prometheus.Gauge
	consentState     *prometheus.GaugeVec

	mu   sync.Mutex
	base capture.Stats // counters of the sessions that ended
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "uploadbox_" + name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	g := func(name, help string) prometheus.Gauge {
		c := prometheus.NewGauge(prometheus.GaugeOpts{Name: "uploadbox_" + name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	m.segmentsSealed = f("segments_sealed_total", "Segments sealed into the spool.")
	m.uploadedBytes = f("upload_bytes_total", "Bytes of segments committed by the receiver.")
	m.sentBytes = f("upload_sent_bytes_total", "Bytes sent in uploads, including bytes re-sent after faults.")
	m.retries = f("upload_retries_total", "Upload attempts retried after a fault.")
	m.wipes = f("wipes_total", "Local segment files wiped after a verified receipt.")
	m.reloadFailures = f("config_reload_failures_total", "SIGHUP reloads refused because the file was bad.")
	m.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "uploadbox_commit_latency_seconds", Help: "Commit request to verified receipt.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	m.reg.MustRegister(m.commitLatency)
	m.sessionActive = g("session_active", "1 while a recording session runs.")
	m.alert = g("alert", "1 when recording stopped on its own (spool full, disk reserve, or a write error such as a full disk) until the next session.")
	m.deviceRefused = g("upload_device_refused", "1 while the receiver refuses this box's enrollment: uploads wait, nothing is quarantined.")
	m.controlConnected = g("control_connected", "1 while the control connection to the receiver is open.")
	m.liveViewers = g("live_viewers", "Viewers connected to the live view.")
	m.consentState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "uploadbox_consent_requests", Help: "Consent requests by state."}, []string{"state"})
	m.reg.MustRegister(m.consentState)

	frames := func(name, help string, pick func(capture.Stats) (video, audio uint64)) {
		desc := prometheus.NewDesc("uploadbox_"+name, help, []string{"stream"}, nil)
		m.reg.MustRegister(collectorFunc{desc: desc, collect: func(ch chan<- prometheus.Metric) {
			v, au := pick(m.captureTotals(a))
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), "video")
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(au), "audio")
		}})
	}
	frames("frames_captured_total", "Frames (video) or 20 ms chunks (audio) captured.", func(s capture.Stats) (uint64, uint64) { return s.Video.Captured, s.Audio.Captured })
	frames("frames_dropped_total", "Frames lost before encoding.", func(s capture.Stats) (uint64, uint64) { return s.Video.Dropped, s.Audio.Dropped })

	spoolDesc := []*prometheus.Desc{
		prometheus.NewDesc("uploadbox_spool_segments", "Segments on the box not yet wiped.", nil, nil),
		prometheus.NewDesc("uploadbox_spool_bytes", "Bytes of segments on the box not yet wiped.", nil, nil),
		prometheus.NewDesc("uploadbox_spool_oldest_age_seconds", "Age of the oldest segment not yet wiped.", nil, nil),
		prometheus.NewDesc("uploadbox_quarantined_segments", "Segments the receiver refused for good, kept on the box until `uploadbox queue retry` or `discard`; alert when above 0.", nil, nil),
	}
	m.reg.MustRegister(collectorFunc{desc: spoolDesc[0], more: spoolDesc[1:], collect: func(ch chan<- prometheus.Metric) {
		st, err := a.spool.Stats()
		if err != nil {
			return
		}
		ch <- prometheus.MustNewConstMetric(spoolDesc[0], prometheus.GaugeValue, float64(st.Count))
		ch <- prometheus.MustNewConstMetric(spoolDesc[1], prometheus.GaugeValue, float64(st.Bytes))
		ch <- prometheus.MustNewConstMetric(spoolDesc[2], prometheus.GaugeValue, st.Age.Seconds())
		ch <- prometheus.MustNewConstMetric(spoolDesc[3], prometheus.GaugeValue, float64(st.ByState[spool.Quarantined]))
	}})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// captureTotals adds the running session's counters to those of the
// sessions that ended.
func (m *metrics) captureTotals(a *Agent) capture.Stats {
	// a.mu then m.mu, as in sessionEnded, so a session's counters are
	// never counted twice or not at all while it ends.
	a.mu.Lock()
	defer a.mu.Unlock()
	var c *capture.Capture
	if a.sess != nil {
		c = a.sess.rs.Capture
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c != nil {
		return addStats(m.base, c.Stats())
	}
	return m.base
}

// sessionDone adds an ended session's capture counters to the totals.
func (m *metrics) sessionDone(c *capture.Capture) {
	m.mu.Lock()
	m.base = addStats(m.base, c.Stats())
	m.mu.Unlock()
}

func addStats(a, b capture.Stats) capture.Stats {
	add := func(x, y capture.StreamStats) capture.StreamStats {
		return capture.StreamStats{Captured: x.Captured + y.Captured, Dropped: x.Dropped + y.Dropped, Encoded: x.Encoded + y.Encoded, Bytes: x.Bytes + y.Bytes, Keyframes: x.Keyframes + y.Keyframes}
	}
	return capture.Stats{Video: add(a.Video, b.Video), Audio: add(a.Audio, b.Audio), KeyframeRequests: a.KeyframeRequests + b.KeyframeRequests, ForcedKeyframes: a.ForcedKeyframes + b.ForcedKeyframes}
}

func (m *metrics) session(on bool) {
	if on {
		m.sessionActive.Set(1)
		m.alert.Set(0)
	} else {
		m.sessionActive.Set(0)
	}
}

// serve exposes /metrics on addr until ctx ends; "" turns it off.
func (m *metrics) serve(ctx context.Context, addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// collectorFunc is a collector whose metrics come from a function.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
	more    []*prometheus.Desc
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	for _, d := range c.more {
		ch <- d
	}
}
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
