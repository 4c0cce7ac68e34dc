package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// getWithToken GETs url with a bearer token and returns the status.
func getWithToken(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestViewerDisableEnableRemove (issue 14, observation 6): through the
// real binaries, while serve runs, `viewers disable` stops an account from
// signing in and the receiver refuses the token it already holds;
// `viewers enable` lets it sign in again, but not with the old token;
// `viewers remove` deletes it, its token is refused, and the name can be
// added again without the new account accepting the old account's token.
// Every change is in the audit log, and `audit list` selects them by type
// and time; `audit verify --json` reports the same log.
func TestViewerDisableEnableRemove(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	// The rate limits have their own test.
	rcv := startReceiver(t, data, "127.0.0.1:0", "--auth-rate", "100000/min", "--auth-burst", "1000")
	c := authClient(t, data)
	const pw = "Correct-Horse-Battery-9"
	addViewer(t, data, "coach", pw)
	base := "https://" + rcv.addr
	login := func(password string) answer {
		return postJSON(t, c, base+"/v1/login", fmt.Sprintf(`{"name":"coach","password":%q}`, password))
	}
	token := func(a answer) string {
		t.Helper()
		var r struct{ Token string }
		if a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &r) != nil || r.Token == "" {
			t.Fatalf("login: %d %s", a.code, a.body)
		}
		return r.Token
	}
	rooms := func(tok string) int { return getWithToken(t, c, base+"/v1/rooms", tok) }

	first := token(login(pw))
	if got := rooms(first); got != http.StatusOK {
		t.Fatalf("rooms with a fresh token: %d", got)
	}

	if out := run(t, "uploadbox-receiver", "viewers", "disable", "coach", "--data", data); !strings.Contains(out, "viewer coach disabled") {
		t.Fatalf("disable printed %q", out)
	}
	if a := login(pw); a.code != http.StatusForbidden || !strings.Contains(a.body, `"reason":"disabled"`) {
		t.Fatalf("login of a disabled account: %d %s", a.code, a.body)
	}
	if a := login("Wrong-password-99"); a.code != http.StatusUnauthorized {
		t.Fatalf("wrong password for a disabled account: %d %s (must not tell the account apart)", a.code, a.body)
	}
	if got := rooms(first); got != http.StatusUnauthorized {
		t.Fatalf("the token of a disabled account: %d, want 401", got)
	}
	var list []struct {
		Name     string
		Disabled bool
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "viewers", "list", "--data", data, "--json")), &list); err != nil || len(list) != 1 || !list[0].Disabled {
		t.Fatalf("viewers list: %+v %v", list, err)
	}
	if msg := runFails(t, "uploadbox-receiver", "viewers", "disable", "coach", "--data", data); !strings.Contains(msg, "disabled already") {
		t.Fatalf("disabling twice: %s", msg)
	}

	run(t, "uploadbox-receiver", "viewers", "enable", "coach", "--data", data)
	second := token(login(pw))
	if got := rooms(second); got != http.StatusOK {
		t.Fatalf("a token issued after enable: %d", got)
	}
	if got := rooms(first); got != http.StatusUnauthorized {
		t.Fatalf("a token from before the disable, after enable: %d, want 401", got)
	}

	run(t, "uploadbox-receiver", "viewers", "remove", "coach", "--data", data)
	if got := rooms(second); got != http.StatusUnauthorized {
		t.Fatalf("the token of a removed account: %d, want 401", got)
	}
	if a := login(pw); a.code != http.StatusUnauthorized {
		t.Fatalf("login of a removed account: %d %s", a.code, a.body)
	}
	if msg := runFails(t, "uploadbox-receiver", "viewers", "remove", "coach", "--data", data); !strings.Contains(msg, "no such viewer") {
		t.Fatalf("removing twice: %s", msg)
	}
	addViewer(t, data, "coach", pw)
	if got := rooms(second); got != http.StatusUnauthorized {
		t.Fatalf("the removed account's token on the new account of that name: %d, want 401", got)
	}
	if got := rooms(token(login(pw))); got != http.StatusOK {
		t.Fatalf("the new account's token: %d", got)
	}

	rcv.stop(t)
	// `audit list` shows the changes, selected by type and time.
	audited := func(args ...string) []string {
		t.Helper()
		return listedEvents(t, run(t, "uploadbox-receiver", append([]string{"audit", "list", "--data", data, "--json"}, args...)...))
	}
	if got := strings.Join(audited("--type", "disable,enable", "--type", "remove"), " "); got != "viewer.disable viewer.disable viewer.enable viewer.remove viewer.remove" { // the refused second disable and remove too
		t.Fatalf("audit list --type disable,enable --type remove: %q", got)
	}
	logins := audited("--type", "login", "--since", "1h")
	if len(logins) < 5 || strings.Join(logins, " ") != strings.TrimSpace(strings.Repeat("viewer.login ", len(logins))) {
		t.Fatalf("audit list --type login: %q", logins)
	}
	if got := audited("--since", "2999-01-01"); len(got) != 0 {
		t.Fatalf("audit list --since 2999-01-01: %q", got)
	}
	table := run(t, "uploadbox-receiver", "audit", "list", "--data", data, "--type", "viewer.remove")
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "viewer.remove") || !strings.Contains(lines[1], "coach") {
		t.Fatalf("audit list table:\n%s", table)
	}
	bad := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "audit", "list", "--data", data, "--since", "soon")
	if msg, err := bad.CombinedOutput(); bad.ProcessState.ExitCode() != 2 || !strings.Contains(string(msg), `--since "soon"`) {
		t.Fatalf("a bad --since: %v %s", err, msg)
	}
	var rep struct {
		Path    string `json:"path"`
		Entries int    `json:"entries"`
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "audit", "verify", "--data", data, "--json")), &rep); err != nil ||
		rep.Entries != len(audited()) || rep.Path != filepath.Join(data, "audit.jsonl") {
		t.Fatalf("audit verify --json: %+v %v", rep, err)
	}
}
