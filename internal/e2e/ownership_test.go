package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serviceUID is the unprivileged user (nobody) the daemon runs as in
// these tests, while enroll, viewer token and diag run as root, as a
// technician with sudo runs them on a packaged box.
const serviceUID = 65534

// serviceBox makes a box directory and its empty state directory owned by
// serviceUID, as the packaged unit's StateDirectory= leaves them, under a
// directory that user may traverse, and lets it run the test binaries.
// The daemon's config (live view on) is in the box directory, readable by
// the daemon.
func serviceBox(t *testing.T) (dir string, lb liveBox) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test runs commands as root and the daemon as uid 65534: run it as root (CI does)")
	}
	dir = t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir, binDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	box := filepath.Join(dir, "box")
	state := filepath.Join(box, "state")
	lb = liveBox{live: freePort(t), indicator: filepath.Join(box, "indicator")}
	for _, d := range []string{box, state} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	lb.boxDirs = writeBoxConfig(t, box, state, "live:\n  enabled: true\n  listen: "+lb.live+"\nindicator:\n  path: "+lb.indicator+"\n")
	for _, f := range []string{box, state, lb.config, lb.indicator} {
		if f == lb.indicator {
			os.WriteFile(f, nil, 0o600)
		}
		if err := os.Chown(f, serviceUID, serviceUID); err != nil {
			t.Fatal(err)
		}
	}
	return dir, lb
}

// startDaemonAs runs the daemon of d as serviceUID.
func startDaemonAs(t *testing.T, d boxDirs) *daemonProc {
	t.Helper()
	cmd := binCommand(nil, "uploadbox", "run", "--config", d.config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
	return startDaemonCmd(t, cmd, d)
}

// enrollWithConfig adds device name at rcv and enrolls the box as root
// with `uploadbox enroll --config`, the state directory taken from the
// daemon's config.
func enrollWithConfig(t *testing.T, rcv *receiverProc, name string, d boxDirs) {
	t.Helper()
	enrollAsAdmin(t, rcv, d, run(t, "uploadbox-receiver", "devices", "add", name, "--data", rcv.data, "--json"))
}

// enrollAsAdmin enrolls the box of d as root, as docs/daemon.md tells an
// administrator, with the token and fingerprint of tokenJSON (the --json
// of devices add or devices rekey): `uploadbox enroll --receiver URL
// --token-file FILE --ca-fingerprint FP --config FILE`, the state
// directory taken from the daemon's config.
func enrollAsAdmin(t *testing.T, rcv *receiverProc, d boxDirs, tokenJSON string) {
	t.Helper()
	var tok struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	if err := json.Unmarshal([]byte(tokenJSON), &tok); err != nil || tok.Token == "" {
		t.Fatalf("no token in %q: %v", tokenJSON, err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "uploadbox", "enroll", "--receiver", "https://"+rcv.addr, "--token-file", file, "--ca-fingerprint", tok.CAFingerprint, "--config", d.config)
	if !strings.Contains(out, "state in "+d.state) {
		t.Fatalf("enroll --config did not use the config's state_dir %s:\n%s", d.state, out)
	}
}

// enrolledServiceBox is a serviceBox enrolled as root with
// `uploadbox enroll --config` and the local viewer token minted as root
// with `uploadbox viewer token` and the flag where ("--config" or
// "--state") naming the state directory.
func enrolledServiceBox(t *testing.T, where string) (liveBox, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the receiver and the daemon; skipped under -short")
	}
	dir, lb := serviceBox(t)
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0")
	enrollWithConfig(t, rcv, "room-own", lb.boxDirs)
	arg := lb.state
	if where == "--config" {
		arg = lb.config
	}
	return lb, strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "rig", where, arg))
}

// statOwner is the uid and mode of path.
func statOwner(t *testing.T, path string) (uint32, os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid, st.Mode().Perm()
}

// wantServiceOwned checks that the state directory dir (0700) and every
// file in it (0600) belong to serviceUID, and returns the files' names.
func wantServiceOwned(t *testing.T, dir string) []string {
	t.Helper()
	if uid, mode := statOwner(t, dir); uid != serviceUID || mode != 0o700 {
		t.Errorf("%s: owner uid %d mode %04o, want uid %d mode 0700", dir, uid, mode, serviceUID)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		uid, mode := statOwner(t, filepath.Join(dir, e.Name()))
		if uid != serviceUID || mode != 0o600 {
			t.Errorf("%s: owner uid %d mode %04o, want uid %d mode 0600", e.Name(), uid, mode, serviceUID)
		}
	}
	return names
}

// line waits until the daemon's log has a line holding every part and
// returns it (the log arrives through a pipe, after the fact it tells).
func (d *daemonProc) line(t *testing.T, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for l := range strings.SplitSeq(d.log(), "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
				return l
			}
		}
	}
	t.Errorf("the daemon's log has no line with all of %q", parts)
	return ""
}

// whepStatus posts to the live view of the box p runs with token, once it
// listens, and returns the HTTP status: 401 when the token is refused, 415
// for the (deliberately) wrong content type once the token is accepted.
func whepStatus(t *testing.T, p *daemonProc, lb liveBox, token string) int {
	t.Helper()
	p.line(t, "live view listening")
	pem, err := os.ReadFile(filepath.Join(lb.state, "live.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+lb.live+"/whep", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestEnrollAsRootForServiceUser is issue 14's first observation: a
// technician runs `sudo uploadbox enroll` and `sudo uploadbox viewer token`
// on a box whose state directory belongs to the daemon's user. Every file
// they write must be that user's (keys 0600), so that the daemon, running
// as that user, is enrolled (it records and uploads) and accepts the local
// viewer token. Before the fix the files were root's and the daemon said
// only "box not enrolled (permission denied)" and "token refused".
func TestEnrollAsRootForServiceUser(t *testing.T) {
	lb, token := enrolledServiceBox(t, "--config")

	names := wantServiceOwned(t, lb.state)
	for _, want := range []string{"device.key", "device.crt", "viewer-local.key", "viewer-local.pub"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("the state directory holds %v, no %s", names, want)
		}
	}

	p := startDaemonAs(t, lb.boxDirs)
	recordSession(t, lb.boxDirs, "3s")
	waitDrained(t, lb.boxDirs, 30*time.Second)
	if code := whepStatus(t, p, lb, token); code != http.StatusUnsupportedMediaType {
		t.Errorf("the daemon answered the local viewer token with HTTP %d, want 415 (token accepted, content type wrong)\n%s", code, p.log())
	}
}

// TestStateFilesOfAnotherUser: state files the daemon's user cannot read
// (left by an older enroll run as root) are named, with what is wrong and
// the command that fixes them, by the daemon at start, by a session that
// cannot start, by the refusal of a viewer token, by viewer token run
// again, and by diag run as root (which used to pass every check) or as the
// daemon's user; the fix they name works without a restart.
func TestStateFilesOfAnotherUser(t *testing.T) {
	lb, token := enrolledServiceBox(t, "--state")
	crt, key := filepath.Join(lb.state, "device.crt"), filepath.Join(lb.state, "device.key")
	vkey, pub := filepath.Join(lb.state, "viewer-local.key"), filepath.Join(lb.state, "viewer-local.pub")
	bad := []string{crt, key, vkey, pub}
	for _, f := range bad {
		if err := os.Chown(f, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	g, err := user.LookupGroupId(fmt.Sprint(serviceUID))
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.LookupId(fmt.Sprint(serviceUID))
	if err != nil {
		t.Fatal(err)
	}
	owner := u.Username + ":" + g.Name

	p := startDaemonAs(t, lb.boxDirs)
	for _, f := range bad {
		p.line(t, "state file unusable by the daemon's user", fmt.Sprintf(`file=%s problem="owned by root, not %s`, f, u.Username),
			fmt.Sprintf(`fix="chown %s %s"`, owner, f))
	}

	_, stderr, code := runCode(t, "uploadbox", "session", "start", "--socket", lb.socket)
	fix := "chown " + owner + " " + strings.Join(bad, " ")
	if code == 0 || !strings.Contains(stderr, fix) {
		t.Errorf("session start: exit %d, stderr %q; want a failure naming %q", code, stderr, fix)
	}
	// status says so too, not "not enrolled (run uploadbox enroll)".
	status := run(t, "uploadbox", "status", "--socket", lb.socket)
	if want := "receiver:  the box's state cannot be used: " + crt + " is owned by root"; !strings.Contains(status, want) || !strings.Contains(status, fix) {
		t.Errorf("uploadbox status:\n%s\nwant %q and %q", status, want, fix)
	}

	if code := whepStatus(t, p, lb, token); code != http.StatusUnauthorized {
		t.Errorf("the daemon answered a viewer token it cannot check with HTTP %d, want 401", code)
	}
	// The refusal says that the key file is unreadable and how to fix it.
	p.line(t, "live view token refused", pub+": permission denied", "chown "+owner+" ")

	// Minting again as root (as the directory's owner) cannot read the
	// root-owned key and says why.
	_, stderr, code = runCode(t, "uploadbox", "viewer", "token", "--name", "rig", "--state", lb.state)
	if code != 1 || !strings.Contains(stderr, "permission denied") || !strings.Contains(stderr, fix) {
		t.Errorf("viewer token with a root-owned key: exit %d, stderr %q; want a failure naming %q", code, stderr, fix)
	}

	diag := func(check string, asDaemonUser bool) (status, summary, remedy string) {
		cmd := binCommand(nil, "uploadbox", "diag", "--config", lb.config, "--check", check, "--json")
		if asDaemonUser {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
		}
		out, _ := cmd.Output()
		var rep struct {
			Checks []struct{ Status, Summary, Remedy string } `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Checks) != 1 {
			t.Fatalf("diag --json: %v\n%s", err, out)
		}
		c := rep.Checks[0]
		return c.Status, c.Summary, c.Remedy
	}
	for _, as := range []string{"root", "the daemon's user"} {
		status, summary, remedy := diag("enrollment", as != "root")
		if status != "fail" || !strings.Contains(summary, key+" is owned by root") || !strings.Contains(remedy, "run "+fix+",") {
			t.Errorf("diag as %s: %s %q, remedy %q; want a failure naming %s and the remedy %q", as, status, summary, remedy, key, fix)
		}
	}
	// The certificate check, which reads device.crt on its own, gives the
	// same remedy when it cannot (it used to say: run diag as the daemon's
	// user, which it was).
	if status, _, remedy := diag("certificate", true); status != "fail" || !strings.Contains(remedy, "run "+fix+",") {
		t.Errorf("diag --check certificate as the daemon's user: %s, remedy %q; want %q", status, remedy, fix)
	}

	if out, err := exec.Command("chown", append([]string{owner}, bad...)...).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v\n%s", err, out)
	}
	if status, summary, _ := diag("enrollment", false); status != "pass" {
		t.Errorf("diag after the chown it named: %s %q", status, summary)
	}
	// The running daemon uses the state from now on.
	ctl(t, lb.boxDirs, nil, "session", "start", "--for", "2s")
	if code := whepStatus(t, p, lb, token); code != http.StatusUnsupportedMediaType {
		t.Errorf("after the chown the daemon answered the viewer token with HTTP %d, want 415 (accepted)", code)
	}
}

// packagedUID is the packaged uploadbox user's uid in
// TestEnrollRefusedForPackagedUser, which adds that user to a copy of
// /etc/passwd mounted over the real one in a mount namespace: the test
// machine has no uploadbox user.
const packagedUID = 64999

// withPackagedUser runs a project binary as root in a mount namespace
// where /etc/passwd and /etc/group also hold the packaged uploadbox user
// and group (packagedUID) and /var/lib is dir/varlib, so that
// /var/lib/uploadbox/state, the packaged daemon's state directory, is
// dir/varlib/uploadbox/state. It returns the stdout, stderr and exit code.
func withPackagedUser(t *testing.T, dir, name string, args ...string) (string, string, int) {
	t.Helper()
	var files []string
	for _, f := range []struct{ path, line string }{
		{"/etc/passwd", fmt.Sprintf("uploadbox:x:%d:%d:uploadbox daemon:/var/lib/uploadbox:/usr/sbin/nologin\n", packagedUID, packagedUID)},
		{"/etc/group", fmt.Sprintf("uploadbox:x:%d:\n", packagedUID)},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		dup := filepath.Join(dir, filepath.Base(f.path))
		if err := os.WriteFile(dup, append(data, f.line...), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, dup)
	}
	varlib := filepath.Join(dir, "varlib")
	if err := os.MkdirAll(varlib, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", append([]string{"--mount", "sh", "-c",
		`mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && mount --bind "$3" /var/lib && shift 3 && exec "$@"`,
		"sh", files[0], files[1], varlib, filepath.Join(binDir, name)}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("unshare (this test needs mount namespaces, as root): %v", err)
	}
	return stdout.String(), stderr.String(), code
}

// TestEnrollRefusedForPackagedUser: on a box with the packaged uploadbox
// user, `sudo uploadbox enroll` into the packaged daemon's state directory
// (/var/lib/uploadbox/state) that root would own is refused before the
// receiver is asked (the token stays usable), with the command to run;
// that command, run as root, makes the directories and every file the
// uploadbox user's. Other directories of root's are not refused. A user
// other than root is refused for a directory it does not own.
func TestEnrollRefusedForPackagedUser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the receiver; skipped under -short")
	}
	dir, _ := serviceBox(t)
	const state = "/var/lib/uploadbox/state" // in withPackagedUser's namespace
	host := filepath.Join(dir, "varlib", "uploadbox", "state")
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0")
	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "add", "room-pkg", "--data", rcv.data, "--json")), &add)

	_, stderr, code := withPackagedUser(t, dir, "uploadbox", "enroll", "--receiver", "https://"+rcv.addr, "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", state)
	want := "enroll: state directory " + state + " does not exist yet (its parent belongs to root), but the daemon runs as uploadbox (the packaged service user)"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("enroll as root into a directory root would own: exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
	if strings.Contains(stderr, add.Token) {
		t.Errorf("the refusal prints the token: %q", stderr)
	}
	if _, err := os.Stat(filepath.Dir(host)); err == nil {
		t.Error("the refused enroll made directories")
	}
	_, suggested, ok := strings.Cut(stderr, "run `")
	suggested, _, _ = strings.Cut(suggested, "`")
	args := strings.Fields(suggested)
	if !ok || len(args) < 2 || args[0] != "uploadbox" || args[len(args)-1] != "uploadbox" || args[len(args)-2] != "--user" {
		t.Fatalf("the refusal names no command ending in --user uploadbox: %q", stderr)
	}
	for i, a := range args {
		if a == "TOKEN" {
			args[i] = add.Token
		}
	}
	out, stderr, code := withPackagedUser(t, dir, "uploadbox", args[1:]...)
	if code != 0 || !strings.Contains(out, "owner uploadbox") {
		t.Fatalf("the command the refusal named (%s): exit %d\n%s%s", suggested, code, out, stderr)
	}
	if _, _, code := withPackagedUser(t, dir, "uploadbox", "viewer", "token", "--name", "rig", "--state", state); code != 0 {
		t.Fatalf("viewer token as root into the uploadbox user's state: exit %d", code)
	}
	for _, d := range []string{filepath.Dir(host), host} {
		if uid, mode := statOwner(t, d); uid != packagedUID || mode != 0o700 {
			t.Errorf("%s: uid %d mode %04o, want uid %d mode 0700", d, uid, mode, packagedUID)
		}
	}
	entries, _ := os.ReadDir(host)
	for _, e := range entries {
		if uid, mode := statOwner(t, filepath.Join(host, e.Name())); uid != packagedUID || mode != 0o600 {
			t.Errorf("%s: uid %d mode %04o, want uid %d mode 0600", e.Name(), uid, mode, packagedUID)
		}
	}
	if len(entries) < 8 {
		t.Errorf("the state directory holds %d files, want the enrollment's and the viewer key pair", len(entries))
	}

	// diag as root finds the packaged daemon's state directory given to
	// root (as `chown -R root` would) although the uploadbox user owns
	// nothing there any more.
	if err := filepath.WalkDir(host, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, 0, 0)
	}); err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(dir, "diagbox")
	if err := os.Mkdir(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := writeBoxConfig(t, cfgDir, state, "")
	out, _, code = withPackagedUser(t, dir, "uploadbox", "diag", "--config", d.config, "--check", "enrollment")
	if want := "run chown uploadbox:uploadbox " + state + " " + state + "/ca.crt "; code != 2 || !strings.Contains(out, "the daemon, running as uploadbox, cannot use") || !strings.Contains(out, want) {
		t.Errorf("diag as root on the packaged state directory given to root: exit %d\n%s\nwant exit 2 and %q", code, out, want)
	}
	// enroll --renew chooses its user as enroll does: refused there too.
	_, stderr, code = withPackagedUser(t, dir, "uploadbox", "enroll", "--renew", "--state", state)
	if want := "enroll --renew: state directory " + state + " belongs to root, but the daemon runs as uploadbox (the packaged service user) and could not read files root writes there: run `uploadbox enroll --renew --state " + state + " --user uploadbox`"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("enroll --renew as root on the packaged state directory given to root: exit %d, %q; want exit 1 and %q", code, stderr, want)
	}

	// Another directory of root's is the business of whoever runs a daemon
	// on it: root writes there as before, packaged user or not.
	rig := filepath.Join(dir, "rig-state")
	if _, stderr, code := withPackagedUser(t, dir, "uploadbox", "viewer", "token", "--name", "rig", "--state", rig); code != 0 {
		t.Fatalf("viewer token as root into a directory of root's that is not the packaged daemon's: exit %d\n%s", code, stderr)
	}
	if uid, _ := statOwner(t, filepath.Join(rig, "viewer-local.key")); uid != 0 {
		t.Errorf("viewer token as root into %s wrote as uid %d, want root", rig, uid)
	}

	// --user gives an existing directory of root's to that user.
	given := filepath.Join(dir, "given")
	if err := os.Mkdir(given, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "uploadbox", "viewer", "token", "--name", "rig", "--state", given, "--user", "nobody")
	for _, p := range []string{given, filepath.Join(given, "viewer-local.key")} {
		if uid, _ := statOwner(t, p); uid != serviceUID {
			t.Errorf("viewer token --user nobody: %s belongs to uid %d, want %d", p, uid, serviceUID)
		}
	}

	// A directory the daemon's user could not reach is named as such.
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCode(t, "uploadbox", "viewer", "token", "--name", "rig", "--state", filepath.Join(private, "state"), "--user", "nobody")
	if want := "nobody cannot open it (open " + filepath.Join(private, "state") + ": permission denied), so the daemon running as nobody could not either"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("viewer token --user nobody into a directory nobody cannot reach: exit %d, %q; want %q", code, stderr, want)
	}

	// Not root: only for a directory of its own.
	rootDir := filepath.Join(dir, "rootstate")
	if err := os.Mkdir(rootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := binCommand(nil, "uploadbox", "viewer", "token", "--name", "rig", "--state", rootDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
	msg, err := cmd.CombinedOutput()
	if want := "state directory " + rootDir + " belongs to root, so the daemon runs as root and could not read files nobody writes: run `sudo -u root uploadbox viewer token --name rig --state " + rootDir + "`"; err == nil || !strings.Contains(string(msg), want) {
		t.Errorf("viewer token as nobody into root's directory: %v, %q; want %q", err, msg, want)
	}
}
