package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// authClient trusts the CA of the receiver whose data directory is data.
func authClient(t *testing.T, data string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16,
	}}
}

type answer struct {
	code       int
	body       string
	retryAfter string
}

func postJSON(t *testing.T, c *http.Client, url, body string) answer {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Retry-After")}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// stop ends the receiver with SIGTERM, so that it writes what it holds
// (the coalesced failure summaries), and waits for it.
func (p *receiverProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("receiver after SIGTERM: %v", err)
	}
}

// TestAuthFloodIsLimited (issue 10 item 3): a flood of malformed bodies
// and unknown-name logins, and of garbage enrollments, from one address
// gets 429 with Retry-After after a small burst, and the audit log grows
// by a bounded amount: a few coalesced entries, not one line per request.
func TestAuthFloodIsLimited(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0")
	c := authClient(t, data)
	auditPath := filepath.Join(data, "audit.jsonl")
	before := fileSize(t, auditPath)

	const n = 600
	bodies := []struct{ path, body string }{
		{"/v1/login", `{"name": "nobody`},                                  // malformed
		{"/v1/login", `{"name":"ghost-%d","password":"Wrong-Password-1"}`}, // unknown names
		{"/v1/enroll", `garbage %d`},
	}
	var mu sync.Mutex
	codes := map[string]map[int]int{}
	var noRetryAfter int
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				b := bodies[i%len(bodies)]
				body := b.body
				if strings.Contains(body, "%d") {
					body = fmt.Sprintf(body, i)
				}
				a := postJSON(t, c, "https://"+rcv.addr+b.path, body)
				mu.Lock()
				if codes[b.path] == nil {
					codes[b.path] = map[int]int{}
				}
				codes[b.path][a.code]++
				if a.code == http.StatusTooManyRequests && a.retryAfter == "" {
					noRetryAfter++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("answers: %v", codes)
	for path, byCode := range codes {
		passed := 0
		for code, k := range byCode {
			if code != http.StatusTooManyRequests {
				passed += k
			}
		}
		// The default is a burst of 5 and 10 a minute per address.
		if passed > 10 {
			t.Errorf("%s: %d of %d requests from one address were served, want at most the burst and the rate (answers %v)", path, passed, passed+byCode[http.StatusTooManyRequests], byCode)
		}
	}
	if noRetryAfter > 0 {
		t.Errorf("%d answers 429 without Retry-After", noRetryAfter)
	}
	rcv.stop(t)
	grown := fileSize(t, auditPath) - before
	perRequest := float64(grown) / n
	t.Logf("audit log grew by %d bytes for %d requests (%.1f bytes per request)", grown, n, perRequest)
	if perRequest > 10 {
		t.Errorf("audit log grew by %.1f bytes per refused request, want a bounded amount (coalesced), far below one 300-byte line each", perRequest)
	}
	log, _ := os.ReadFile(auditPath)
	for _, want := range []string{`"event":"viewer.login"`, `"event":"device.enroll"`, `more failures from 127.0.0.1`} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
	if out := run(t, "uploadbox-receiver", "audit", "verify", "--data", data); !strings.Contains(out, "audit log OK") {
		t.Errorf("audit verify: %s", out)
	}
}
