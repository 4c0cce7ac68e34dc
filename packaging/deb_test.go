// Package packaging_test builds the .deb packages with scripts/deb.sh, as
// `make deb` does, and checks what a user's dpkg would get: the files and
// their architecture, the conffiles, the hardened systemd units and the
// maintainer scripts; then runs the arm64 box binary under qemu.
package packaging_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The version the test stamps; deb.sh must turn it into debVersion.
const (
	testVersion = "v1.2.3-4-g0123abc"
	testCommit  = "0123abc45678"
	debVersion  = "1.2.3+git4.0123abc"
)

// TestDebVersion checks how deb.sh turns `git describe` output into a
// Debian version: digits first, "~" for what sorts before a release.
func TestDebVersion(t *testing.T) {
	tests := []struct{ name, version, want string }{
		{"tag", "v1.2.3", "1.2.3"},
		{"after tag", "v1.2.3-4-gabc1234", "1.2.3+git4.abc1234"},
		{"pre-release", "v1.2.3-rc.1", "1.2.3~rc.1"},
		{"after pre-release, dirty", "v1.2.3-rc.1-4-gabc1234-dirty", "1.2.3~rc.1+git4.abc1234+dirty"},
		{"no tag", "abc1234", "0.0.0~gitabc1234"},
		{"no tag, dirty", "abc1234-dirty", "0.0.0~gitabc1234+dirty"},
		{"no git", "dev", "0.0.0~dev"},
		{"odd characters", "v2.0_beta/x", "2.0.beta.x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), "../scripts/deb.sh", "--print-version")
			cmd.Env = append(os.Environ(), "VERSION="+tt.version)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("deb.sh --print-version with VERSION=%s: %v", tt.version, err)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("VERSION=%s: got %q, want %q", tt.version, got, tt.want)
			}
		})
	}
}

// arch is one target: Debian's name, the ELF machine and, for the
// dynamically linked (cgo) box binary, its program interpreter.
type arch struct {
	deb     string
	machine elf.Machine
	class   elf.Class
	interp  string
	qemu    []string // how to run a binary for it here; nil: natively
}

var arches = []arch{
	{"amd64", elf.EM_X86_64, elf.ELFCLASS64, "/lib64/ld-linux-x86-64.so.2", nil},
	{"arm64", elf.EM_AARCH64, elf.ELFCLASS64, "/lib/ld-linux-aarch64.so.1", []string{"qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"}},
	{"armhf", elf.EM_ARM, elf.ELFCLASS32, "/lib/ld-linux-armhf.so.3", []string{"qemu-arm-static", "-L", "/usr/arm-linux-gnueabihf"}},
}

// pkg is what one package must hold.
type pkg struct {
	name      string
	user      string
	conffiles []string
	// unit settings ([Service] unless the key names a section) whose
	// effective value must be exactly this.
	unit map[string]string
	// multi-valued unit settings that must hold exactly these values.
	unitLists map[string][]string
	// unit settings that must not appear at all.
	unitAbsent []string
	// packaged files that must equal a file in the repository.
	same map[string]string
	// the documents in /usr/share/doc/NAME, from docs/.
	docs []string
}

// hardening is what both units share.
var hardening = map[string]string{
	"NoNewPrivileges":         "yes",
	"CapabilityBoundingSet":   "",
	"AmbientCapabilities":     "",
	"ProtectSystem":           "strict",
	"ProtectHome":             "yes",
	"PrivateTmp":              "yes",
	"DevicePolicy":            "closed",
	"LimitCORE":               "0",
	"UMask":                   "0077",
	"ProtectKernelTunables":   "yes",
	"ProtectKernelModules":    "yes",
	"ProtectKernelLogs":       "yes",
	"ProtectControlGroups":    "yes",
	"RestrictNamespaces":      "yes",
	"RestrictSUIDSGID":        "yes",
	"LockPersonality":         "yes",
	"SystemCallArchitectures": "native",
	"Restart":                 "on-failure",
	"TimeoutStopSec":          "15",
	"Install.WantedBy":        "multi-user.target",
}

func with(m map[string]string, extra map[string]string) map[string]string {
	out := make(map[string]string, len(m)+len(extra))
	for k, v := range m {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

var pkgs = []pkg{
	{
		name:      "uploadbox",
		user:      "uploadbox",
		conffiles: []string{"/etc/uploadbox/uploadbox.yaml"},
		unit: with(hardening, map[string]string{
			"Type":                 "notify",
			"WatchdogSec":          "30",
			"ExecStart":            "/usr/bin/uploadbox run --config /etc/uploadbox/uploadbox.yaml",
			"ExecReload":           "/bin/kill -HUP $MAINPID",
			"User":                 "uploadbox",
			"Group":                "uploadbox",
			"RuntimeDirectory":     "uploadbox",
			"RuntimeDirectoryMode": "0750",
			"StateDirectory":       "uploadbox uploadbox/state uploadbox/spool",
			// A Pi has no real-time clock.
			"Unit.After": "network-online.target sound.target time-sync.target",
		}),
		unitLists: map[string][]string{
			"DeviceAllow":             {"char-video4linux rw", "char-alsa rw", "char-gpiochip rw"},
			"RestrictAddressFamilies": {"AF_UNIX AF_INET AF_INET6 AF_NETLINK"},
			"SupplementaryGroups":     {"video audio"},
		},
		unitAbsent: []string{"PrivateDevices"},
		same: map[string]string{
			"/etc/uploadbox/uploadbox.yaml":      "uploadbox.yaml",
			"/usr/share/doc/uploadbox/README.md": "../README.md",
		},
		// The README and --help cite daemon.md and diag.md.
		docs: []string{"format.md", "daemon.md", "diag.md"},
	},
	{
		name:      "uploadbox-receiver",
		user:      "uploadbox-receiver",
		conffiles: []string{"/etc/uploadbox-receiver/receiver.yaml"},
		unit: with(hardening, map[string]string{
			"Type":      "simple",
			"ExecStart": "/usr/bin/uploadbox-receiver serve --config /etc/uploadbox-receiver/receiver.yaml",
			// S3 credentials only, optional and not shipped.
			"EnvironmentFile": "-/etc/default/uploadbox-receiver",
			"ExecReload":      "/bin/kill -HUP $MAINPID",
			"User":            "uploadbox-receiver",
			"Group":           "uploadbox-receiver",
			"StateDirectory":  "uploadbox-receiver",
			"PrivateDevices":  "yes",
			// serve's drain grace (30 s) and the rest of its stop.
			"TimeoutStopSec": "45",
		}),
		unitLists: map[string][]string{
			"RestrictAddressFamilies": {"AF_UNIX AF_INET AF_INET6"},
		},
		// No device access at all, and no capability to get any.
		unitAbsent: []string{"DeviceAllow", "SupplementaryGroups"},
		same: map[string]string{
			"/etc/uploadbox-receiver/receiver.yaml":           "receiver.yaml",
			"/usr/share/doc/uploadbox-receiver/README.md":     "../README.md",
			"/usr/share/lintian/overrides/uploadbox-receiver": "lintian/uploadbox-receiver",
		},
		docs: []string{"format.md", "receiver.md"},
	},
}

// TestDeb builds every package and inspects each one.
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds six binaries (three cross-compiled with cgo) and six packages")
	}
	for _, tool := range []string{"dpkg-deb", "aarch64-linux-gnu-gcc", "arm-linux-gnueabihf-gcc", "qemu-aarch64-static", "qemu-arm-static"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing; scripts/setup.sh or .ci/run installs it", tool)
		}
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "../scripts/deb.sh", out)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "COMMIT="+testCommit, "ARCHS=amd64 arm64 armhf")
	if log, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/deb.sh %s: %v\n%s", out, err, log)
	}
	t.Logf("deb.sh built the packages in %v", time.Since(start).Round(time.Second))
	checkLintian(t, out)

	for _, p := range pkgs {
		for _, a := range arches {
			t.Run(p.name+"_"+a.deb, func(t *testing.T) {
				deb := filepath.Join(out, fmt.Sprintf("%s_%s_%s.deb", p.name, debVersion, a.deb))
				checkDeb(t, deb, p, a)
			})
		}
	}
}

// checkDeb inspects one package with dpkg-deb.
func checkDeb(t *testing.T, deb string, p pkg, a arch) {
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("package not built: %v", err)
	}

	// Control fields.
	info := dpkgDeb(t, "-I", deb)
	for _, want := range []string{
		"Package: " + p.name,
		"Version: " + debVersion,
		"Architecture: " + a.deb,
	} {
		if !slices.Contains(lines(info), " "+want) {
			t.Errorf("dpkg-deb -I: no %q in\n%s", want, info)
		}
	}

	// Files.
	files := dataFiles(t, deb)
	binPath := "/usr/bin/" + p.name
	unitPath := "/lib/systemd/system/" + p.name + ".service"
	doc := "/usr/share/doc/" + p.name + "/"
	modes := map[string]os.FileMode{
		binPath:              0o755,
		unitPath:             0o644,
		doc + "README.md":    0o644,
		doc + "copyright":    0o644,
		doc + "changelog.gz": 0o644,
		"/usr/share/man/man1/" + p.name + ".1.gz":          0o644,
		"/usr/share/bash-completion/completions/" + p.name: 0o644,
		"/usr/share/zsh/vendor-completions/_" + p.name:     0o644,
	}
	for _, d := range p.docs {
		modes[doc+d] = 0o644
	}
	for path, mode := range modes {
		f, ok := files[path]
		switch {
		case !ok:
			t.Errorf("%s is not in the package", path)
		case f.mode != mode:
			t.Errorf("%s has mode %v, want %v", path, f.mode, mode)
		}
	}
	same := with(p.same, map[string]string{doc + "copyright": "copyright"})
	for _, d := range p.docs {
		same[doc+d] = "../docs/" + d
	}
	for path, src := range same {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if f, ok := files[path]; !ok || !bytes.Equal(f.data, want) {
			t.Errorf("%s in the package differs from %s in the repository (or is missing)", path, src)
		}
	}
	listing := dpkgDeb(t, "-c", deb)
	if !strings.Contains(listing, "."+binPath) {
		t.Errorf("dpkg-deb -c lists no %s:\n%s", binPath, listing)
	}
	if bin, ok := files[binPath]; ok {
		checkELF(t, bin.data, a, p.name == "uploadbox")
		checkDepends(t, info, bin.data)
		checkLicences(t, files, p, bin.data)
	}
	checkManPages(t, files, p)
	checkCompletion(t, files, p)
	checkChangelog(t, files, p)

	// Control archive: conffiles and maintainer scripts.
	ctl := t.TempDir()
	dpkgDeb(t, "-e", deb, ctl)
	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil {
		t.Fatalf("no conffiles: %v", err)
	}
	if got := lines(string(conffiles)); !slices.Equal(got, p.conffiles) {
		t.Errorf("conffiles = %q, want %q", got, p.conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		checkScript(t, filepath.Join(ctl, s))
	}
	checkMaintScripts(t, ctl, p)

	// The unit.
	if f, ok := files[unitPath]; ok {
		checkUnit(t, f.data, p)
		verifyUnit(t, p.name+".service", f.data)
	}

	// Every binary runs here, natively or under qemu.
	if bin, ok := files[binPath]; ok {
		path := writeBin(t, bin.data)
		checkVersion(t, path, p.name, a)
		if p.name == "uploadbox" && a.deb == "arm64" {
			checkDiag(t, path, a)
		}
	}
}

// dpkgDeb runs dpkg-deb and returns its output.
func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "dpkg-deb", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("dpkg-deb %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

type file struct {
	mode os.FileMode
	data []byte
}

// dataFiles reads the package's filesystem tarball: regular files by
// absolute path.
func dataFiles(t *testing.T, deb string) map[string]file {
	t.Helper()
	tarball := dpkgDeb(t, "--fsys-tarfile", deb)
	files := map[string]file{}
	tr := tar.NewReader(strings.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read the data tarball of %s: %v", deb, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, ".")] = file{mode: os.FileMode(h.Mode).Perm(), data: data}
	}
	return files
}

// checkELF checks the binary's machine and linking: the box is linked
// against the target's glibc (cgo), the receiver is static (pure Go).
func checkELF(t *testing.T, data []byte, a arch, cgo bool) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("binary is not ELF: %v", err)
	}
	defer f.Close()
	if f.Machine != a.machine || f.Class != a.class {
		t.Errorf("binary is %v %v, want %v %v", f.Machine, f.Class, a.machine, a.class)
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	want := ""
	if cgo {
		want = a.interp
	}
	if interp != want {
		t.Errorf("program interpreter %q, want %q (cgo: %v)", interp, want, cgo)
	}
}

// checkScript checks a maintainer script is there, executable and valid sh.
func checkScript(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("maintainer script missing: %v", err)
		return
	}
	if fi.Mode().Perm()&0o111 != 0o111 {
		t.Errorf("%s has mode %v, want it executable", filepath.Base(path), fi.Mode().Perm())
	}
	if out, err := exec.CommandContext(t.Context(), "sh", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", filepath.Base(path), err, out)
	}
}

// checkMaintScripts runs the maintainer scripts with stub commands that
// log their arguments, with the system's paths (/run/systemd/system, the
// state directory) moved into temporary directories: postinst on a fresh
// system, again (idempotent), as an upgrade; postrm purge with and without
// segments waiting for upload.
func checkMaintScripts(t *testing.T, ctl string, p pkg) {
	t.Helper()
	unit := p.name + ".service"
	first := runScript(t, ctl, "postinst", scriptEnv{}, "configure", "")
	if !strings.Contains(first.log, "adduser --system --group --no-create-home --home /var/lib/"+p.name) {
		t.Errorf("postinst configure on a fresh system did not create the user; it ran:\n%s", first.log)
	}
	switch p.name {
	case "uploadbox":
		for _, want := range []string{"deb-systemd-helper enable " + unit, "deb-systemd-invoke start " + unit} {
			if !strings.Contains(first.log, want) {
				t.Errorf("postinst configure on a fresh system did not run %q; it ran:\n%s", want, first.log)
			}
		}
		for _, g := range []string{"video", "audio", "gpio"} {
			if !strings.Contains(first.log, "adduser --quiet uploadbox "+g) {
				t.Errorf("postinst did not add uploadbox to %s:\n%s", g, first.log)
			}
		}
	case "uploadbox-receiver":
		// The server certificate takes its names at the first start: the
		// admin sets them before the service may run.
		for _, never := range []string{"deb-systemd-helper enable", "deb-systemd-invoke start", "deb-systemd-invoke restart"} {
			if strings.Contains(first.log, never) {
				t.Errorf("postinst configure on a fresh system ran %q; the receiver must not start before its host names are set:\n%s", never, first.log)
			}
		}
		for _, want := range []string{"/etc/uploadbox-receiver/receiver.yaml", "hostnames", "systemctl enable --now uploadbox-receiver"} {
			if !strings.Contains(first.out, want) {
				t.Errorf("postinst configure on a fresh system does not tell the admin %q; it printed:\n%s", want, first.out)
			}
		}
		// An upgrade of an enabled receiver keeps it enabled and restarts
		// it only if it runs; options left in the old options string are
		// named, not ignored silently.
		env := scriptEnv{userExists: true, installed: true, root: t.TempDir()}
		old := filepath.Join(env.root, "etc/default/uploadbox-receiver")
		if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(old, []byte("#UPLOADBOX_RECEIVER_OPTS=\"--s3-bucket x\"\nUPLOADBOX_RECEIVER_OPTS=\"--hostname r.example.org\"\nAWS_ACCESS_KEY_ID=k\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		up := runScript(t, ctl, "postinst", env, "configure", "1.0.0")
		if want := `UPLOADBOX_RECEIVER_OPTS in ` + old + ` is no longer read: move "--hostname r.example.org" to /etc/uploadbox-receiver/receiver.yaml`; !strings.Contains(up.out, want) {
			t.Errorf("postinst configure 1.0.0 (upgrade) with options in %s did not say %q; it printed:\n%s", old, want, up.out)
		}
		for _, want := range []string{"deb-systemd-helper enable " + unit, "deb-systemd-invoke try-restart " + unit} {
			if !strings.Contains(up.log, want) {
				t.Errorf("postinst configure 1.0.0 (upgrade) did not run %q; it ran:\n%s", want, up.log)
			}
		}
		if strings.Contains(up.out, "not started") {
			t.Errorf("postinst configure 1.0.0 (upgrade) printed the first-install note:\n%s", up.out)
		}
	}
	again := runScript(t, ctl, "postinst", scriptEnv{userExists: true}, "configure", "")
	if strings.Contains(again.log, "adduser --system") {
		t.Errorf("postinst configure with the user present created it again:\n%s", again.log)
	}
	checkPurge(t, ctl, p)

	prerm, err := os.ReadFile(filepath.Join(ctl, "prerm"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(prerm), "deb-systemd-invoke stop "+unit) {
		t.Errorf("prerm does not stop %s:\n%s", unit, prerm)
	}
}

// checkPurge runs `postrm purge` against a state directory in a temporary
// root. The receiver's is the only copy of every recording: it stays. The
// box's goes, unless its spool holds a segment not yet uploaded (a .ubx
// or .partial file): then it stays and the message says where.
func checkPurge(t *testing.T, ctl string, p pkg) {
	t.Helper()
	tests := []struct {
		name     string
		files    []string // under /var/lib/NAME
		wantKept bool
	}{
		{"uploaded all", []string{"state/device.key", "spool/spool.db", "audit.jsonl"}, p.name != "uploadbox"},
		{"segments left", []string{"state/device.key", "spool/spool.db", "spool/0001.ubx", "spool/0002.partial"}, true},
	}
	for _, tt := range tests {
		t.Run("purge "+tt.name, func(t *testing.T) {
			env := scriptEnv{userExists: true, root: t.TempDir()}
			state := filepath.Join(env.root, "var/lib", p.name)
			for _, f := range tt.files {
				path := filepath.Join(state, f)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			res := runScript(t, ctl, "postrm", env, "purge")
			var kept []string
			for _, f := range tt.files {
				if _, err := os.Stat(filepath.Join(state, f)); err == nil {
					kept = append(kept, f)
				}
			}
			switch {
			case tt.wantKept && len(kept) != len(tt.files):
				t.Errorf("postrm purge removed files from %s, want all kept (kept %q)\n%s", state, kept, res.out)
			case tt.wantKept && !strings.Contains(res.out, "kept "+state):
				t.Errorf("postrm purge kept %s without saying so:\n%s", state, res.out)
			case !tt.wantKept && len(kept) > 0:
				t.Errorf("postrm purge kept %q in %s, want the directory removed", kept, state)
			}
			if p.name == "uploadbox" && tt.wantKept && !strings.Contains(res.out, "2 segment(s) in "+state+"/spool are not uploaded yet") {
				t.Errorf("postrm purge does not say how many segments wait where:\n%s", res.out)
			}
		})
	}
}

// scriptEnv is the system a maintainer script runs against.
type scriptEnv struct {
	userExists bool   // getent finds the package's user
	installed  bool   // deb-systemd-helper knows the unit (an upgrade)
	root       string // /var/lib and /etc/default are moved here; "" leaves them alone
}

type scriptResult struct {
	log string // the stubs' calls
	out string // what the script printed
}

// runScript runs a maintainer script with every command it may call
// stubbed in PATH, and with systemd running (/run/systemd/system moved to
// a temporary directory that exists).
func runScript(t *testing.T, ctl, script string, env scriptEnv, args ...string) scriptResult {
	t.Helper()
	stubs := t.TempDir()
	log := filepath.Join(stubs, "log")
	getent := `case "$1 $2" in "group "*) exit 0;; esac; exit 2`
	if env.userExists {
		getent = "exit 0"
	}
	// was-enabled is true for a unit never seen (debhelper's default).
	helper := `[ "$1" = debian-installed ] && exit 1; exit 0`
	if env.installed {
		helper = "exit 0"
	}
	for name, body := range map[string]string{
		"getent":             getent,
		"adduser":            "",
		"deb-systemd-helper": helper,
		"deb-systemd-invoke": "",
		"systemctl":          "",
	} {
		stub := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >>%q\n%s\n", name, log, body)
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	text, err := os.ReadFile(filepath.Join(ctl, script))
	if err != nil {
		t.Fatal(err)
	}
	systemd := filepath.Join(t.TempDir(), "run/systemd/system")
	if err := os.MkdirAll(systemd, 0o755); err != nil {
		t.Fatal(err)
	}
	moved := strings.ReplaceAll(string(text), "/run/systemd/system", systemd)
	if env.root != "" {
		moved = strings.ReplaceAll(moved, "/var/lib/", env.root+"/var/lib/")
		moved = strings.ReplaceAll(moved, "/etc/default/", env.root+"/etc/default/")
	}
	path := filepath.Join(t.TempDir(), script)
	if err := os.WriteFile(path, []byte(moved), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "sh", append([]string{path}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+stubs+":/usr/bin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	data, err := os.ReadFile(log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return scriptResult{log: string(data), out: string(out)}
}

// unitFile is a parsed systemd unit: "Section.Key" (or "Key" for
// [Service]) to every value in order.
type unitFile map[string][]string

func parseUnit(data []byte) unitFile {
	u := unitFile{}
	sec := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			sec = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if sec != "Service" {
				k = sec + "." + k
			}
			if v == "" {
				// An empty assignment resets a list setting.
				u[k] = []string{""}
				continue
			}
			if len(u[k]) == 1 && u[k][0] == "" {
				u[k] = nil
			}
			u[k] = append(u[k], v)
		}
	}
	return u
}

// checkUnit checks the unit's settings, including the hardening.
func checkUnit(t *testing.T, data []byte, p pkg) {
	t.Helper()
	u := parseUnit(data)
	for k, want := range p.unit {
		vs := u[k]
		if len(vs) == 0 {
			t.Errorf("unit: %s is not set, want %q", k, want)
			continue
		}
		if got := vs[len(vs)-1]; got != want {
			t.Errorf("unit: %s=%q, want %q", k, got, want)
		}
	}
	for k, want := range p.unitLists {
		if got := u[k]; !slices.Equal(got, want) {
			t.Errorf("unit: %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range p.unitAbsent {
		if vs, ok := u[k]; ok {
			t.Errorf("unit: %s=%q is set, want it absent", k, vs)
		}
	}
}

// verifyUnit runs systemd-analyze verify on the unit, when there is one,
// and ignores only its complaints that the binary and its manual page
// are not installed here.
func verifyUnit(t *testing.T, name string, data []byte) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("no systemd-analyze: unit not verified")
		return
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.CommandContext(t.Context(), "systemd-analyze", "verify", path).CombinedOutput()
	for _, line := range lines(string(out)) {
		if strings.Contains(line, "Command /usr/bin/") && strings.Contains(line, "is not executable") {
			continue
		}
		// Documentation=man:NAME(1): the page is in the package, not here.
		if strings.Contains(line, "Command 'man "+strings.TrimSuffix(name, ".service")+"(1)' failed") {
			continue
		}
		t.Errorf("systemd-analyze verify %s: %s", name, line)
	}
}

// writeBin writes a packaged binary to a temporary file.
func writeBin(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs a binary for a, under qemu if it is foreign, with a deadline.
func run(t *testing.T, a arch, bin string, args ...string) ([]byte, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	argv := append(slices.Clone(a.qemu), bin)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

// checkVersion runs `version` and checks the stamped version and platform.
func checkVersion(t *testing.T, bin, name string, a arch) {
	t.Helper()
	out, stderr, err := run(t, a, bin, "version")
	if err != nil {
		t.Fatalf("%s version: %v\n%s", name, err, stderr)
	}
	goarch := map[string]string{"amd64": "amd64", "arm64": "arm64", "armhf": "arm"}[a.deb]
	for _, want := range []string{name + " " + testVersion, "commit " + testCommit, "linux/" + goarch} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%s version printed %q, want it to contain %q", name, out, want)
		}
	}
}

// diagReport is the part of `uploadbox diag --json` the test relies on.
type diagReport struct {
	Version json.RawMessage `json:"version"` // of the report format
	Status  string          `json:"status"`
	Checks  []struct {
		Name    string `json:"name"`
		Status  string `json:"status"`
		Summary string `json:"summary"`
	} `json:"checks"`
}

// checkDiag runs `uploadbox diag --json` with a config that uses the test
// source and temporary directories. The box is not enrolled and no daemon
// runs, so some checks fail; the config check must pass.
func checkDiag(t *testing.T, bin string, a arch) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "uploadbox.yaml")
	yaml := fmt.Sprintf(`state_dir: %[1]s/state
runtime_dir: %[1]s/run
capture:
  source: test
spool:
  dir: %[1]s/spool
metrics:
  listen: ""
audit:
  path: %[1]s/audit.jsonl
`, dir)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(t, a, bin, "diag", "--json", "--config", cfg)
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("uploadbox diag --json: %v\nstderr: %s", err, stderr)
	}
	var r diagReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("uploadbox diag --json (exit %d) printed no JSON report: %v\nstdout: %s\nstderr: %s", code, err, out, stderr)
	}
	// Exit status: 0 all passed, 1 a warning, 2 a failure.
	wantCode := map[string]int{"pass": 0, "warn": 1, "fail": 2}
	if want, ok := wantCode[r.Status]; !ok || code != want {
		t.Errorf("diag status %q with exit code %d; want pass/warn/fail with 0/1/2\nstderr: %s", r.Status, code, stderr)
	}
	if len(r.Version) == 0 || len(r.Checks) == 0 {
		t.Errorf("diag report has no version or no checks: %s", out)
	}
	statuses := []string{"pass", "warn", "fail", "skip"}
	config := ""
	for i, c := range r.Checks {
		if c.Name == "" || c.Summary == "" || !slices.Contains(statuses, c.Status) {
			t.Errorf("diag check %d lacks a name or summary, or has status %q: %+v", i, c.Status, c)
		}
		if c.Name == "config" {
			config = c.Status
		}
	}
	if config != "pass" {
		t.Errorf("diag config check: %q, want pass (it loads %s)\n%s", config, cfg, out)
	}
}

// lines splits s into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
