package tus

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// BenchmarkUploadCuts uploads 64 MiB with default options through the cut
// proxy, once with no cuts (the baseline, same run) and once with 10 cuts,
// and reports the re-sent share and the time ratio against the baseline.
//
// Re-sent bytes per cut are the bytes in flight when the link died: the
// client's socket send buffer and the proxy's receive buffer, which the
// kernel autotunes to megabytes on loopback; the sndbuf case caps them.
func BenchmarkUploadCuts(b *testing.B) {
	for _, bc := range []struct {
		name   string
		sndbuf int
	}{{"kernel-buffers", 0}, {"sndbuf-256KiB", 256 << 10}} {
		b.Run(bc.name, func(b *testing.B) { benchmarkUploadCuts(b, bc.sndbuf) })
	}
}

func benchmarkUploadCuts(b *testing.B, sndbuf int) {
	const size = 64 << 20
	data := randomBytes(size, 11)
	run := func(b *testing.B, cuts []int64) (time.Duration, int64) {
		s := startTusd(b, nil)
		p := startCutProxy(b, s.srv.Listener.Addr().String(), cuts)
		tr := s.srv.Client().Transport.(*http.Transport).Clone()
		if sndbuf > 0 {
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetWriteBuffer(sndbuf)
				}
				return conn, err
			}
		}
		defer tr.CloseIdleConnections()
		ep, _ := url.Parse("https://" + p.ln.Addr().String() + "/files/")
		c := NewClient(&http.Client{Transport: tr}, ep, Options{BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond})
		start := time.Now()
		u, err := c.Create(b.Context(), size, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Upload(b.Context(), u, bytes.NewReader(data), size, nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start), c.Stats().BytesSent - size
	}
	var base, cut time.Duration
	var resent int64
	for b.Loop() {
		d, _ := run(b, nil)
		base += d
		cuts := make([]int64, 10)
		for i := range cuts {
			cuts[i] = 3<<20 + int64(i)*(1<<20) // each connection dies a few MiB in
		}
		d, r := run(b, cuts)
		cut += d
		resent += r
	}
	b.ReportMetric(100*float64(resent)/float64(int64(b.N)*size), "resent-%")
	b.ReportMetric(float64(cut)/float64(base), "time-vs-nocut")
	b.SetBytes(size)
}
