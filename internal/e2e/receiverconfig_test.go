package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
)

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// loginStatus is the answer to a login with a wrong password for an
// unknown account.
func loginStatus(t *testing.T, data, addr string) int {
	t.Helper()
	return postJSON(t, authClient(t, data), "https://"+addr+"/v1/login", `{"name":"nobody","password":"Wrong-Password-1"}`).code
}

// TestReceiverConfigFile: `serve --config FILE` takes serve's options from
// a YAML file (flags given as well win), and SIGHUP reads it again: new
// hostnames reissue the server certificate, a new web certificate and new
// login limits apply at once, a change that needs a restart is logged as
// such, and a file that does not load changes nothing and says why, with
// the line. On the code before, serve had no --config and SIGHUP only read
// the web certificate files again.
func TestReceiverConfigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	dir := t.TempDir()
	data, conf := filepath.Join(dir, "receiver"), filepath.Join(dir, "receiver.yaml")
	writeConfig(t, conf, fmt.Sprintf(`data: %s
listen: 256.0.0.1:0        # not an address: the command line's --listen wins
hostnames: [receiver.school.example, 127.0.0.1]
auth:
  rate: 1/h
  burst: 5
web:
  listen: 127.0.0.1:0
request_timeout: 10s
`, data))
	rcv := startReceiverArgs(t, nil, data, []string{"serve", "--config", conf, "--listen", "127.0.0.1:0"})
	first := mustServe(t, data, rcv.addr, "receiver.school.example", "hostnames from the config file")
	if rcv.webAddr == "" {
		t.Fatal("web.listen in the config file opened no web listener")
	}
	if got := mustServe(t, data, rcv.webAddr, "127.0.0.1", "web listener without web.cert"); !got.Equal(first) {
		t.Error("the web listener without web.cert does not present the server certificate")
	}
	for i := range 2 {
		if code := loginStatus(t, data, rcv.addr); code != http.StatusUnauthorized {
			t.Fatalf("login %d of 2 within auth.burst 5: HTTP %d, want 401", i+1, code)
		}
	}

	// SIGHUP with new names, a web certificate, a lower burst, and a
	// change that waits for a restart.
	ca, err := pki.NewCA("test public CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
	webLeaf := issue(t, ca, certPath, keyPath)
	good := fmt.Sprintf(`data: %s
listen: 256.0.0.1:0
hostnames: [new.school.example, 127.0.0.1]
auth:
  rate: 1/h
  burst: 1
web:
  listen: 127.0.0.1:0
  cert: %s
  key: %s
request_timeout: 20s
`, data, certPath, keyPath)
	writeConfig(t, conf, good)
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "configuration reloaded", 1)
	mustServe(t, data, rcv.addr, "new.school.example", "after SIGHUP with new hostnames")
	if got := servedSerial(t, rcv.webAddr, ca.Pool()); got.Cmp(webLeaf.SerialNumber) != 0 {
		t.Errorf("after SIGHUP with web.cert the web listener presents serial %x, want %x", got, webLeaf.SerialNumber)
	}
	// Two tokens were left of 5; with burst 1, one attempt passes and the
	// next is refused (with burst 5 it would pass).
	if code := loginStatus(t, data, rcv.addr); code != http.StatusUnauthorized {
		t.Fatalf("first login after the reload: HTTP %d, want 401", code)
	}
	if code := loginStatus(t, data, rcv.addr); code != http.StatusTooManyRequests {
		t.Errorf("second login after auth.burst went down to 1: HTTP %d, want 429", code)
	}
	log := rcv.stderr.String()
	for _, want := range []string{
		`applied="hostnames web.cert web.key auth.rate auth.burst"`,
		"configuration changed where only a restart applies it", `keys=request_timeout`,
		"server certificate reissued for new host names", "reason=reload", "web certificate reloaded",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the receiver's log does not say %s:\n%s", want, log)
		}
	}
	held := certsShow(t, "--config", conf)
	if s := held["server"]; strings.Join(s.Names, " ") != "new.school.example 127.0.0.1" {
		t.Errorf("certs show --config: server names %v", s.Names)
	}
	if w := held["web"]; w.Path != certPath || w.SHA256 == "" {
		t.Errorf("certs show --config: web %+v, want %s", w, certPath)
	}

	// A file that does not load changes nothing, and the log names the
	// key and line.
	writeConfig(t, conf, "hostnames: [bad.school.example]\nbogus: 1\n")
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "configuration not reloaded", 1)
	if !strings.Contains(rcv.stderr.String(), "bogus (line 2): unknown key") {
		t.Errorf("the refused reload does not name the key and line:\n%s", rcv.stderr.String())
	}
	mustServe(t, data, rcv.addr, "new.school.example", "after a refused reload")
	if _, err := servedTo(t, data, rcv.addr, "bad.school.example"); err == nil {
		t.Error("a refused reload changed the certificate's names")
	}
	a := readFile(t, filepath.Join(data, "audit.jsonl"))
	if !strings.Contains(a, `"event":"config.reload","source":"local","outcome":"ok"`) || !strings.Contains(a, `"event":"config.reload","source":"local","outcome":"failed"`) {
		t.Errorf("config.reload ok and failed are not both audited:\n%s", a)
	}

	// web.cert emptied: the web listener presents the server certificate.
	writeConfig(t, conf, strings.Replace(good, "  cert: "+certPath+"\n  key: "+keyPath+"\n", "", 1))
	rcv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, rcv, "configuration reloaded", 2)
	if got, err := servedTo(t, data, rcv.webAddr, "new.school.example"); err != nil || got.Issuer.String() != caCert(t, data).Subject.String() {
		t.Errorf("after web.cert was emptied, the web listener does not present the server certificate: %v", err)
	}

	// The restart applies request_timeout and serves only the new names.
	writeConfig(t, conf, good)
	rcv.stop(t)
	rcv = startReceiverArgs(t, nil, data, []string{"serve", "--config", conf, "--listen", "127.0.0.1:0"})
	mustServe(t, data, rcv.addr, "new.school.example", "restart with the config file")
}

// TestReceiverConfigErrors: a bad config file stops serve with exit code
// 2 and every problem named with its key and line; a value the file gave
// that serve's checks refuse names the file's key and line too.
func TestReceiverConfigErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "receiver.yaml")
	for _, tt := range []struct {
		name, file string
		want       []string
	}{
		{"keys and values", `data: ` + filepath.Join(dir, "r") + `
hostname: receiver.example
audit:
  retention: 6 months
turn:
  lisen: ":3478"
`, []string{conf + ": 3 problem(s):", "hostname (line 2): unknown key (did you mean hostnames?)",
			`audit.retention (line 4): "6 months" is not a duration`, "turn.lisen (line 6): unknown key (did you mean turn.listen?)"}},
		{"checked value", `data: ` + filepath.Join(dir, "r") + `
auth:
  burst: 0
`, []string{conf + " line 3, auth.burst: --auth-burst 0: give 1 to 1000"}},
		{"bad hostname", `data: ` + filepath.Join(dir, "r") + `
hostnames: [receiver.example, "bad name"]
`, []string{conf + ` line 2, hostnames: --hostname: "bad name" is neither a host name (letters, digits, hyphens and dots) nor an IP address`}},
		{"no data", "listen: 127.0.0.1:0\n", []string{"serve needs the data directory: give --data DIR, or data: in the --config file"}},
		{"not YAML", "data: [\n", []string{conf + ": 1 problem(s):", "not valid YAML"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			writeConfig(t, conf, tt.file)
			res := runExit(t, time.Minute, "uploadbox-receiver", "serve", "--config", conf)
			if res.code != 2 {
				t.Fatalf("exit code %d, want 2 (usage); stderr:\n%s", res.code, res.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, res.stderr)
				}
			}
		})
	}
}
