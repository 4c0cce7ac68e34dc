package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
)

// loginBench compares a real viewer login made during a 40-way flood of
// unknown-name logins (from another address, ignoring Retry-After) with a
// quiet login, interleaved round by round, against a receiver with its
// default limits. Each real login comes from its own address and account,
// as different coaches would, so the real logins do not meet each other's
// limits.
func loginBench(rounds int) error {
	const flooders = 40
	dir, err := os.MkdirTemp("", "uploadbox-bench-login-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := filepath.Join(dir, "receiver")
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer srv.Close()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a string) { ready <- a }) }()
	addr := <-ready
	defer func() { cancel(); <-done }()
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		return err
	}
	defer admin.Close()
	const password = "Correct-Horse-Battery-9"
	for i := range 2*rounds + 1 {
		if err := admin.AddViewer(fmt.Sprintf("coach-%d", i), password); err != nil {
			return err
		}
	}
	pem, err := os.ReadFile(filepath.Join(data, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	clientFrom := func(ip string, conns int) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			DialContext: d.DialContext, TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: conns,
		}}
	}
	url := "https://" + addr + "/v1/login"
	realLogin := func(i int) (time.Duration, error) {
		c := clientFrom(fmt.Sprintf("127.0.0.%d", 10+i), 1)
		defer c.CloseIdleConnections()
		body := fmt.Sprintf(`{"name":"coach-%d","password":%q}`, i, password)
		start := time.Now()
		resp, err := c.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("login of coach-%d: HTTP %d", i, resp.StatusCode)
		}
		return d, nil
	}
	flood := clientFrom("127.0.0.2", flooders)
	var sent atomic.Int64
	var mu sync.Mutex
	answers := map[int]int{}
	startFlood := func() (stop func()) {
		fctx, fcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for w := range flooders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; fctx.Err() == nil; n++ {
					body := fmt.Sprintf(`{"name":"ghost-%d-%d","password":"Wrong-password-1"}`, w, n)
					req, _ := http.NewRequestWithContext(fctx, http.MethodPost, url, strings.NewReader(body))
					resp, err := flood.Do(req)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					sent.Add(1)
					mu.Lock()
					answers[resp.StatusCode]++
					mu.Unlock()
				}
			}()
		}
		return func() { fcancel(); wg.Wait() }
	}
	// One login first, so that no measured one pays for a cold start.
	if _, err := realLogin(2 * rounds); err != nil {
		return err
	}
	var quiet, flooded []time.Duration
	for r := range rounds {
		q, err := realLogin(2 * r)
		if err != nil {
			return err
		}
		stop := startFlood()
		// Measure once the flood is running, not while it connects.
		for base := sent.Load(); sent.Load() < base+4*flooders; {
			time.Sleep(10 * time.Millisecond)
		}
		f, err := realLogin(2*r + 1)
		stop()
		if err != nil {
			return err
		}
		quiet, flooded = append(quiet, q), append(flooded, f)
	}
	q, f := median(quiet), median(flooded)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	spread := func(ds []time.Duration) string {
		lo, hi := ds[0], ds[0]
		for _, d := range ds {
			lo, hi = min(lo, d), max(hi, d)
		}
		return fmt.Sprintf("%.0f–%.0f ms", ms(lo), ms(hi))
	}
	fmt.Printf("login under flood / quiet login (%d-way flood of unknown-name logins from one other address, default --auth-rate, median of %d interleaved rounds):\n", flooders, rounds)
	fmt.Printf("  quiet login       %7.0f ms  (spread %s)\n", ms(q), spread(quiet))
	fmt.Printf("  login under flood %7.0f ms  (spread %s)\n", ms(f), spread(flooded))
	fmt.Printf("  ratio             %7.2f   (goal <= 2)\n", f.Seconds()/q.Seconds())
	fmt.Printf("  flood answers     %v over %d requests\n", answers, sent.Load())
	return nil
}
