package e2e

import (
	"bytes"
	"crypto/ed25519"
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
	"github.com/uploadbox/uploadbox/receiver/pki"
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

// addViewer adds a viewer account with password through the admin
// command, with extra flags (such as --role teacher).
func addViewer(t *testing.T, data, name, password string, extra ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), append([]string{"viewers", "add", name, "--password-stdin", "--data", data}, extra...)...)
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

// checkTiming fails when the times of an existing name's attempts and of
// an unknown name's, taken in interleaved pairs, differ by 10 % or more of
// the median time. The difference is the median of the pairs' differences:
// load from other processes then slows both sides of a pair alike instead
// of whichever side it happened to fall on.
func checkTiming(t *testing.T, what string, known, unknown []time.Duration) {
	t.Helper()
	var diffs []time.Duration
	for i := range known {
		diffs = append(diffs, known[i]-unknown[i])
	}
	km, um, dm := medianOf(known), medianOf(unknown), medianOf(diffs)
	ratio := float64(dm) / float64(max(km, um))
	t.Logf("%s over %d tries each: median existing name %v, unknown name %v, median paired difference %v (%.1f%%)", what, len(known), km, um, dm, 100*ratio)
	if ratio <= -0.10 || ratio >= 0.10 {
		t.Errorf("%s: an existing name takes %v, an unknown one %v; median difference %.1f%% (want under 10%%): timing tells names apart", what, km, um, 100*ratio)
	}
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
	checkTiming(t, "login", knownT, unknownT)
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
	// Timing: four failures (below the lock) for each of 10 pending devices
	// and 10 unknown names, 40 tries each, interleaved. The requests are
	// prepared first, so that only the receiver's work is timed.
	const names = 10
	for i := range names {
		addDevice(t, data, fmt.Sprintf("dev-%d", i))
	}
	attempt := func(body string) (answer, time.Duration) {
		start := time.Now()
		a := postJSON(t, c, url, body)
		return a, time.Since(start)
	}
	postJSON(t, c, url, `{}`) // open the kept-alive connection
	var knownT, unknownT []time.Duration
	for try := range 4 {
		for i := range names {
			kb, ub := enrollAttempt(t, wrong(fmt.Sprintf("dev-%d", i)), nil), enrollAttempt(t, wrong(fmt.Sprintf("ghost-%d", i)), nil)
			var k, u answer
			var kt, ut time.Duration
			if (try+i)%2 == 0 {
				k, kt = attempt(kb)
				u, ut = attempt(ub)
			} else {
				u, ut = attempt(ub)
				k, kt = attempt(kb)
			}
			sameAnswers(t, fmt.Sprintf("failure %d", try+1), k, u)
			knownT, unknownT = append(knownT, kt), append(unknownT, ut)
		}
	}
	checkTiming(t, "enrollment", knownT, unknownT)
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

// TestSlowBodyIsCut (issue 10 item 5): a body sent one byte every 2 s to
// /v1/login, /v1/enroll or a path the receiver does not serve is cut at
// --request-timeout instead of holding the connection open.
func TestSlowBodyIsCut(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--request-timeout", "2s")
	pem, err := os.ReadFile(filepath.Join(data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	const bodyLen = 20 // 40 s at one byte every 2 s
	for _, path := range []string{"/v1/login", "/v1/enroll", "/v1/no-such-endpoint"} {
		t.Run(path, func(t *testing.T) {
			conn, err := tls.Dial("tcp", rcv.addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, bodyLen)
			answered := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(conn) // the answer, then the close
				answered <- string(b)
			}()
			sent := 0
			var reply string
		send:
			for sent < bodyLen {
				if _, err := conn.Write([]byte("x")); err != nil {
					break
				}
				sent++
				select {
				case reply = <-answered:
					break send
				case <-time.After(2 * time.Second):
				}
			}
			if reply == "" {
				select {
				case reply = <-answered:
				case <-time.After(5 * time.Second):
				}
			}
			t.Logf("cut after %d of %d body bytes: %q", sent, bodyLen, strings.SplitN(reply, "\r\n", 2)[0])
			// The timeout is 2 s: the server must give up after about one byte.
			if sent > 3 {
				t.Fatalf("%s: the server kept reading a 1-byte-per-2-s body: %d of %d bytes sent before it answered %q", path, sent, bodyLen, reply)
			}
			if !strings.HasPrefix(reply, "HTTP/1.1 408") {
				t.Fatalf("%s: answer to a body that did not arrive in time: %q, want 408", path, reply)
			}
		})
	}
}

// stopAndReadAudit stops the receiver (writing the coalesced summaries)
// and returns its audit log.
func stopAndReadAudit(t *testing.T, rcv *receiverProc) string {
	t.Helper()
	rcv.stop(t)
	b, err := os.ReadFile(filepath.Join(rcv.data, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFailedAuthAudited (issue 10 item 8, receiver side): an enrollment
// with a bad proof, one with a garbage body and an mTLS handshake with a
// certificate from another CA are in the audit log.
func TestFailedAuthAudited(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0")
	c := authClient(t, data)
	url := "https://" + rcv.addr + "/v1/enroll"
	token := addDevice(t, data, "room-1")
	key, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	badProof, _ := json.Marshal(receiver.EnrollRequest{Token: token, DeviceKey: key.Public().String(), Proof: base64.StdEncoding.EncodeToString(key.Sign([]byte("something else")))})
	if a := postJSON(t, c, url, string(badProof)); a.code != http.StatusBadRequest {
		t.Fatalf("bad proof: HTTP %d %s", a.code, a.body)
	}
	if a := postJSON(t, c, url, "garbage"); a.code != http.StatusBadRequest {
		t.Fatalf("garbage body: HTTP %d %s", a.code, a.body)
	}

	// A device certificate from another CA, for a real device key.
	foreign, err := pki.NewCA("elsewhere", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := foreign.IssueDevice("room-1", ed25519.PublicKey(key.Public().Bytes()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(filepath.Join(data, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		// Sent whatever CAs the server names (crypto/tls would otherwise
		// leave out a certificate the server did not ask for).
		dc := pki.DeviceCertificate(cert, key.Signer())
		conn, err := tls.Dial("tcp", rcv.addr, &tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &dc, nil }})
		if err == nil {
			// TLS 1.3: the client learns of the refusal at its first read.
			conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatalf("TLS %x: a certificate from another CA was accepted", v)
		}
	}

	log := stopAndReadAudit(t, rcv)
	for _, want := range []string{
		`"event":"device.enroll","source":"127.0.0.1","outcome":"denied","detail":"bad proof of the device key"`,
		`"event":"device.enroll","source":"127.0.0.1","outcome":"denied","detail":"1 more failures from 127.0.0.1`,
		`"event":"device.connect","source":"127.0.0.1","outcome":"denied","detail":"client certificate \"room-1\"`,
		`"event":"device.connect","source":"127.0.0.1","outcome":"denied","detail":"1 more failures from 127.0.0.1`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
}

// TestEnrollRefusesKnownKey (issue 10 item 13): a device key already
// enrolled under one name is refused for another (409, clear message);
// the token stays valid for a new key.
func TestEnrollRefusesKnownKey(t *testing.T) {
	dir := t.TempDir()
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0")
	b := enrollBox(t, rcv, "room-1", rcv.addr, filepath.Join(dir, "state"))
	key, err := crypto.ReadDeviceKeyFile(filepath.Join(b.state, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	token := addDevice(t, rcv.data, "room-2")
	c := authClient(t, rcv.data)
	a := postJSON(t, c, "https://"+rcv.addr+"/v1/enroll", enrollAttempt(t, token, key))
	if a.code != http.StatusConflict || !strings.Contains(a.body, "already enrolled under another name") {
		t.Fatalf("room-1's key for room-2: HTTP %d %s, want 409 already enrolled", a.code, a.body)
	}
	if a := postJSON(t, c, "https://"+rcv.addr+"/v1/enroll", enrollAttempt(t, token, nil)); a.code != http.StatusOK {
		t.Fatalf("the same token with a new key: HTTP %d %s", a.code, a.body)
	}
}

// TestTLS12OnlyAEAD (issue 10 item 13): under TLS 1.2 the receiver
// refuses CBC suites (openssl s_client, a real peer) and takes AEAD ones.
func TestTLS12OnlyAEAD(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required: %v", err)
	}
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0")
	for _, tc := range []struct {
		cipher string
		ok     bool
	}{
		{"ECDHE-ECDSA-AES128-SHA", false},
		{"ECDHE-ECDSA-AES256-SHA", false},
		{"ECDHE-ECDSA-AES128-SHA256", false},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", true},
		{"ECDHE-ECDSA-CHACHA20-POLY1305", true},
	} {
		cmd := exec.Command(openssl, "s_client", "-connect", rcv.addr, "-tls1_2", "-cipher", tc.cipher)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		accepted := err == nil && strings.Contains(string(out), "Cipher is "+tc.cipher)
		if accepted != tc.ok {
			t.Errorf("TLS 1.2 with %s: accepted %v, want %v\n%s", tc.cipher, accepted, tc.ok, out)
		}
	}
}

// TestEnrollTokenFromFileOrStdin (issue 10 item 13): uploadbox enroll
// reads the token from --token-file (refused when group/world-readable)
// or from standard input with --token -, so it is not in /proc.
func TestEnrollTokenFromFileOrStdin(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0")
	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "add", "room-1", "--data", data, "--json")), &add)
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("# from devices add\n"+add.Token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	enroll := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "uploadbox"), append([]string{"enroll", "--receiver", "https://" + rcv.addr, "--ca-fingerprint", add.CAFingerprint}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := enroll("", "--token-file", tokFile, "--state", filepath.Join(dir, "s1"))
	if err == nil || !strings.Contains(out, "chmod 600 "+tokFile) {
		t.Fatalf("a world-readable token file: %v\n%s", err, out)
	}
	os.Chmod(tokFile, 0o600)
	if out, err := enroll("", "--token-file", tokFile, "--state", filepath.Join(dir, "s1")); err != nil || !strings.Contains(out, "enrolled with") {
		t.Fatalf("--token-file: %v\n%s", err, out)
	}
	json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "add", "room-2", "--data", data, "--json")), &add)
	if out, err := enroll(add.Token+"\n", "--token", "-", "--state", filepath.Join(dir, "s2")); err != nil || !strings.Contains(out, "as room-2") {
		t.Fatalf("--token -: %v\n%s", err, out)
	}
	if out, err := enroll("", "--token", "-", "--state", filepath.Join(dir, "s3")); err == nil || !strings.Contains(out, "standard input held no token") {
		t.Fatalf("--token - with nothing on stdin: %v\n%s", err, out)
	}
}
