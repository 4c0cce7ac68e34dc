package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
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

// addViewer adds a viewer account with password through the admin command.
func addViewer(t *testing.T, data, name, password string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "viewers", "add", name, "--password-stdin", "--data", data)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("viewers add %s: %v\n%s", name, err, out)
	}
}

func medianOf(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// sameAnswers fails unless an existing and an unknown name got the same
// status and body.
func sameAnswers(t *testing.T, step string, known, unknown answer) {
	t.Helper()
	if known.code != unknown.code || known.body != unknown.body {
		t.Fatalf("%s: an existing name got HTTP %d %s, an unknown one HTTP %d %s: the answers tell names apart", step, known.code, known.body, unknown.code, unknown.body)
	}
}

// TestLoginNoEnumeration (issue 10 item 6): an outsider cannot tell an
// existing viewer name from an unknown one by status, body or timing, and
// both lock after 5 failures; the lock needs viewers unlock.
func TestLoginNoEnumeration(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	// The rate limits have their own test; here every attempt must reach the check.
	rcv := startReceiver(t, data, "127.0.0.1:0", "--auth-rate", "100000/min", "--auth-burst", "1000")
	c := authClient(t, data)
	const password = "Correct-Horse-Battery-9"
	const names = 10
	for i := range names {
		addViewer(t, data, fmt.Sprintf("coach-%d", i), password)
	}
	url := "https://" + rcv.addr + "/v1/login"
	login := func(name, pw string) (answer, time.Duration) {
		body := fmt.Sprintf(`{"name":%q,"password":%q}`, name, pw)
		start := time.Now()
		a := postJSON(t, c, url, body)
		return a, time.Since(start)
	}
	postJSON(t, c, url, `{}`) // open the kept-alive connection
	var knownT, unknownT []time.Duration
	// Four failures per name (below the lock), 40 tries each, interleaved.
	for try := range 4 {
		for i := range names {
			var k, u answer
			var kt, ut time.Duration
			if (try+i)%2 == 0 { // alternate the order, so neither is always second
				k, kt = login(fmt.Sprintf("coach-%d", i), "Wrong-password-1")
				u, ut = login(fmt.Sprintf("ghost-%d", i), "Wrong-password-1")
			} else {
				u, ut = login(fmt.Sprintf("ghost-%d", i), "Wrong-password-1")
				k, kt = login(fmt.Sprintf("coach-%d", i), "Wrong-password-1")
			}
			sameAnswers(t, fmt.Sprintf("failure %d", try+1), k, u)
			if k.code != http.StatusUnauthorized {
				t.Fatalf("failure %d: HTTP %d %s, want 401", try+1, k.code, k.body)
			}
			knownT, unknownT = append(knownT, kt), append(unknownT, ut)
		}
	}
	km, um := medianOf(knownT), medianOf(unknownT)
	diff := float64(km-um) / float64(max(km, um))
	t.Logf("median login time: existing name %v, unknown name %v (difference %.1f%%)", km, um, 100*diff)
	if diff < -0.10 || diff > 0.10 {
		t.Errorf("median login time of an existing name %v and of an unknown one %v differ by %.1f%% (want under 10%%): timing tells names apart", km, um, 100*diff)
	}
	// The fifth failure locks both; afterwards both stay locked, the right
	// password included.
	k, _ := login("coach-0", "Wrong-password-1")
	u, _ := login("ghost-0", "Wrong-password-1")
	sameAnswers(t, "failure 5", k, u)
	if k.code != http.StatusLocked {
		t.Fatalf("failure 5: HTTP %d %s, want 423", k.code, k.body)
	}
	k, _ = login("coach-0", password)
	u, _ = login("ghost-0", password)
	sameAnswers(t, "after the lock", k, u)
	if k.code != http.StatusLocked {
		t.Fatalf("right password on a locked account: HTTP %d %s, want 423", k.code, k.body)
	}
	run(t, "uploadbox-receiver", "viewers", "unlock", "coach-0", "--data", data)
	if k, _ = login("coach-0", password); k.code != http.StatusOK {
		t.Fatalf("after viewers unlock: HTTP %d %s", k.code, k.body)
	}
}

// enrollAttempt is a well-formed enrollment request for token with a
// fresh device key (or key, if given) and a valid proof.
func enrollAttempt(t *testing.T, token string, key *crypto.DeviceKey) string {
	t.Helper()
	if key == nil {
		var err error
		if key, err = crypto.GenerateDeviceKey(); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(receiver.EnrollRequest{Token: token, DeviceKey: key.Public().String(), Proof: base64.StdEncoding.EncodeToString(key.Sign(receiver.EnrollProof(token)))})
	return string(b)
}

// addDevice runs devices add and returns the token.
func addDevice(t *testing.T, data, name string) string {
	t.Helper()
	var add struct{ Token string }
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "add", name, "--data", data, "--json")), &add); err != nil || add.Token == "" {
		t.Fatalf("devices add: %v", err)
	}
	return add.Token
}

// TestEnrollNoEnumeration (issue 10 item 6): wrong tokens for an existing
// device name and for an unknown one get the same answers, both lock after
// 5 failures, and the lock needs devices unlock.
func TestEnrollNoEnumeration(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--auth-rate", "100000/min", "--auth-burst", "1000")
	c := authClient(t, data)
	url := "https://" + rcv.addr + "/v1/enroll"
	token := addDevice(t, data, "room-1")
	enrolledTok := addDevice(t, data, "room-2")
	if a := postJSON(t, c, url, enrollAttempt(t, enrolledTok, nil)); a.code != http.StatusOK {
		t.Fatalf("enroll room-2: HTTP %d %s", a.code, a.body)
	}
	wrong := func(name string) string { return "ubx-enroll-" + name + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }
	for try := range 6 {
		k := postJSON(t, c, url, enrollAttempt(t, wrong("room-1"), nil))
		a := postJSON(t, c, url, enrollAttempt(t, wrong("room-2"), nil)) // enrolled already
		u := postJSON(t, c, url, enrollAttempt(t, wrong("room-9"), nil))
		sameAnswers(t, fmt.Sprintf("failure %d (pending device)", try+1), k, u)
		sameAnswers(t, fmt.Sprintf("failure %d (enrolled device)", try+1), a, u)
		want := http.StatusForbidden
		if try >= 4 {
			want = http.StatusLocked
		}
		if k.code != want {
			t.Fatalf("failure %d: HTTP %d %s, want %d", try+1, k.code, k.body, want)
		}
	}
	// The right token of a locked device is refused too, until unlocked.
	if a := postJSON(t, c, url, enrollAttempt(t, token, nil)); a.code != http.StatusLocked {
		t.Fatalf("right token on a locked device: HTTP %d %s, want 423", a.code, a.body)
	}
	run(t, "uploadbox-receiver", "devices", "unlock", "room-1", "--data", data)
	if a := postJSON(t, c, url, enrollAttempt(t, token, nil)); a.code != http.StatusOK {
		t.Fatalf("after devices unlock: HTTP %d %s", a.code, a.body)
	}
}
