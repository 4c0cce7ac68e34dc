package viewers_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/syncbuf"
	"github.com/uploadbox/uploadbox/internal/testbin"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/uploader"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(kvtest.Wrap(m).Run()) // the integration test skips itself: no binaries needed
	}
	os.Exit(testbin.Main(kvtest.Wrap(m).Run, &binDir))
}

// run executes one of the built binaries with stdin and returns stdout.
func run(t *testing.T, stdin string, wantOK bool, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, name), args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if (err == nil) != wantOK {
		t.Fatalf("%s %s: %v (want success %t)\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, wantOK, out, stderr.String())
	}
	return string(out) + stderr.String()
}

// TestLoginWithRealReceiver runs the real receiver binary: viewer
// accounts added through the admin socket while it serves, password
// logins over TLS without a client certificate, lockout after five
// failures, unlock, and an audit log that verifies and names each attempt.
func TestLoginWithRealReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; skipped under -short")
	}
	dir := t.TempDir()
	data, state := filepath.Join(dir, "receiver"), filepath.Join(dir, "state")
	serve := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "serve", "--data", data, "--listen", "127.0.0.1:0", "--password-policy", "high",
		"--auth-rate", "600/min") // many logins from one address; the limits have their own e2e test
	stdout, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var serveErr syncbuf.Buffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			serve.Wait()
		}
	})
	var addr string
	var serveOut syncbuf.Buffer
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		serveOut.Write(append(sc.Bytes(), '\n'))
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatalf("the receiver exited before it said it was listening:\n%s", serveErr.String())
	}
	copied := make(chan struct{})
	go func() { io.Copy(&serveOut, stdout); close(copied) }()

	// Enroll a box: it stores the receiver's token key.
	var dev struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	if err := json.Unmarshal([]byte(run(t, "", true, "uploadbox-receiver", "devices", "add", "room-1", "--data", data, "--json")), &dev); err != nil {
		t.Fatal(err)
	}
	run(t, "", true, "uploadbox", "enroll", "--receiver", "https://"+addr, "--token", dev.Token, "--ca-fingerprint", dev.CAFingerprint, "--state", state)
	if st, err := os.Stat(filepath.Join(state, uploader.TokenKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token.pub after enrollment: %v %v", err, st)
	}
	box, err := uploader.LoadState(state)
	if err != nil || box.TokenKey == nil {
		t.Fatalf("LoadState: %v, token key %v", err, box)
	}

	// Accounts, added while serve holds the database.
	var added struct{ Name, Password string }
	if err := json.Unmarshal([]byte(run(t, "", true, "uploadbox-receiver", "viewers", "add", "coach", "--data", data, "--json")), &added); err != nil {
		t.Fatal(err)
	}
	if added.Name != "coach" || len(added.Password) < 20 {
		t.Fatalf("viewers add printed %+v", added)
	}
	pw := added.Password
	if out := run(t, "Medium-policy1\n", false, "uploadbox-receiver", "viewers", "add", "weak", "--password-stdin", "--data", data); !strings.Contains(out, "policy high") {
		t.Fatalf("a password below the high policy: %s", out)
	}
	run(t, "", false, "uploadbox-receiver", "viewers", "add", "coach", "--data", data)
	anna := "Anna-has-a-long-passphrase-7"
	if out := run(t, anna+"\n", true, "uploadbox-receiver", "viewers", "add", "anna", "--password-stdin", "--data", data); strings.Contains(out, anna) {
		t.Fatalf("a password given on stdin was printed: %s", out)
	}

	pool := x509.NewCertPool()
	pool.AddCert(box.CA)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	login := func(name, password string) (int, map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"name": name, "password": password})
		resp, err := client.Post("https://"+addr+"/v1/login", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	verifier, err := viewtoken.LoadBoxVerifier(state)
	if err != nil {
		t.Fatal(err)
	}
	okLogin := func(name, password string) {
		t.Helper()
		code, out := login(name, password)
		if code != http.StatusOK {
			t.Fatalf("login %s: HTTP %d %v", name, code, out)
		}
		tok, _ := out["token"].(string)
		c, err := verifier.Verify(tok, time.Now())
		if err != nil {
			t.Fatalf("the box does not accept the token: %v", err)
		}
		if c.Subject != name || c.Issuer != viewtoken.IssuerReceiver || time.Until(c.Expiry()) > 15*time.Minute || time.Until(c.Expiry()) < 14*time.Minute {
			t.Fatalf("claims %+v", c)
		}
	}
	okLogin("coach", pw)
	okLogin("anna", anna)
	if code, _ := login("nobody", pw); code != http.StatusUnauthorized {
		t.Fatalf("unknown viewer: HTTP %d", code)
	}

	// Five wrong passwords lock the account; then the right one fails too.
	for i := range 5 {
		code, out := login("coach", "wrong-"+pw)
		want := http.StatusUnauthorized
		if i == 4 {
			want = http.StatusLocked
		}
		if code != want || out["token"] != nil {
			t.Fatalf("wrong password %d: HTTP %d %v, want %d", i+1, code, out, want)
		}
	}
	if code, out := login("coach", pw); code != http.StatusLocked || out["reason"] != "locked" {
		t.Fatalf("right password on a locked account: HTTP %d %v", code, out)
	}
	okLogin("anna", anna) // others are not affected
	var list []struct {
		Name     string
		Locked   bool
		Failures int
	}
	listOut := run(t, "", true, "uploadbox-receiver", "viewers", "list", "--json", "--data", data)
	if err := json.Unmarshal([]byte(listOut), &list); err != nil || len(list) != 2 || list[1].Name != "coach" || !list[1].Locked || list[1].Failures != 5 {
		t.Fatalf("viewers list: %v %s", err, listOut)
	}
	if strings.Contains(listOut, "argon2") {
		t.Fatalf("viewers list shows a hash: %s", listOut)
	}
	run(t, "", true, "uploadbox-receiver", "viewers", "unlock", "coach", "--data", data)
	okLogin("coach", pw)

	// A new password replaces the old one.
	newPW := "Coach-new-passphrase-2026"
	run(t, newPW+"\n", true, "uploadbox-receiver", "viewers", "passwd", "coach", "--password-stdin", "--data", data)
	if code, _ := login("coach", pw); code != http.StatusUnauthorized {
		t.Fatalf("old password after passwd: HTTP %d", code)
	}
	okLogin("coach", newPW)

	// Device routes stay as strict as they were: no certificate, no commit.
	resp, err := client.Post("https://"+addr+"/v1/commit", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("commit without a device certificate: HTTP %d", resp.StatusCode)
	}

	// A token minted on the box with its local key is trusted alongside.
	if out := run(t, "", false, "uploadbox", "viewer", "token", "--name", "rig", "--ttl", "13h", "--state", state); !strings.Contains(out, "12h") {
		t.Fatalf("a 13 h token: %s", out)
	}
	local := strings.TrimSpace(run(t, "", true, "uploadbox", "viewer", "token", "--name", "rig", "--ttl", "1h", "--state", state))
	if verifier, err = viewtoken.LoadBoxVerifier(state); err != nil {
		t.Fatal(err)
	}
	if c, err := verifier.Verify(local, time.Now()); err != nil || c.Issuer != viewtoken.IssuerLocal || c.Subject != "rig" {
		t.Fatalf("local token: %+v %v", c, err)
	}
	if st, err := os.Stat(filepath.Join(state, viewtoken.LocalKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", viewtoken.LocalKeyFile, err, st)
	}

	serve.Process.Signal(syscall.SIGTERM)
	<-copied
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, serveErr.String())
	}

	// The audit log verifies and holds every attempt with its source.
	if out := run(t, "", true, "uploadbox-receiver", "audit", "verify", "--data", data); !strings.HasPrefix(out, "audit log OK") {
		t.Fatalf("audit verify: %s", out)
	}
	raw, err := os.ReadFile(filepath.Join(data, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e audit.Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if e.Event == "viewer.login" {
			if !strings.HasPrefix(e.Source, "127.0.0.1") {
				t.Fatalf("login without its source address: %+v", e)
			}
			if strings.Contains(e.Detail, "more failures from 127.0.0.1") {
				k, _ := strconv.Atoi(strings.Fields(e.Detail)[0])
				outcomes["coalesced"] += k
				continue
			}
			outcomes[e.Identity+":"+e.Outcome]++
		}
		if e.Event == "viewer.unlock" && e.Identity == "coach" && e.Outcome == "ok" {
			outcomes["unlock"]++
		}
	}
	// Failures are coalesced per source: the first (nobody) and the one that
	// locks coach are written in full; the other six (4 wrong passwords, the
	// right one on the locked account, the old one after passwd) are counted
	// in one summary written at shutdown.
	want := map[string]int{"coach:ok": 3, "anna:ok": 2, "nobody:denied": 1, "coach:denied": 0, "coach:locked": 1, "coalesced": 6, "unlock": 1}
	for k, n := range want {
		if outcomes[k] != n {
			t.Errorf("audit: %d entries %s, want %d (all: %v)", outcomes[k], k, n, outcomes)
		}
	}
	// No password or token appears in the audit log or the server's output.
	for _, secret := range []string{pw, anna, newPW, local} {
		for where, text := range map[string]string{"audit log": string(raw), "serve output": serveOut.String() + serveErr.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret appears in the %s", where)
			}
		}
	}

	// Without a server the admin commands open the database themselves,
	// and the policy serve stored (high) still applies.
	if out := run(t, "Medium-policy1\n", false, "uploadbox-receiver", "viewers", "passwd", "anna", "--password-stdin", "--data", data); !strings.Contains(out, "policy high") {
		t.Fatalf("offline passwd below the stored policy: %s", out)
	}
	gen := run(t, "", true, "uploadbox-receiver", "viewers", "passwd", "anna", "--data", data)
	if !strings.Contains(gen, "generated password (shown once): ") {
		t.Fatalf("offline passwd without a password: %s", gen)
	}
	if out := run(t, "", true, "uploadbox-receiver", "viewers", "list", "--data", data); !strings.Contains(out, "coach") || !strings.Contains(out, "LAST LOGIN") {
		t.Fatalf("offline list: %s", out)
	}

	// A state from before viewer accounts (no token.pub) still loads.
	if err := os.Remove(filepath.Join(state, uploader.TokenKeyFile)); err != nil {
		t.Fatal(err)
	}
	old, err := uploader.LoadState(state)
	if err != nil || old.TokenKey != nil {
		t.Fatalf("state without token.pub: %v, token key %v", err, old)
	}
}
