package ownership

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// nobody is a real unprivileged user; the tests run as root (CI does) and
// give it files, as the packaged daemon's user owns its state.
const nobody = 65534

func mustRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test gives files to uid 65534: run it as root (CI does)")
	}
}

// tree makes a state directory with files name → mode, owned by uid.
func tree(t *testing.T, uid int, dirMode os.FileMode, files map[string]os.FileMode) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheck(t *testing.T) {
	mustRoot(t)
	svc, err := Lookup("65534")
	if err != nil {
		t.Fatal(err)
	}
	root := Current()
	tests := []struct {
		name    string
		owner   int // of every file and the directory
		dirMode os.FileMode
		files   map[string]os.FileMode
		chown   []string // the files (and "." for the directory) the fix gives to the service user
		mode    []string // the problems' "chmod …" fixes, "chmod 600 NAME"
		as      User
	}{
		{"all the daemon's", nobody, 0o700, map[string]os.FileMode{"device.key": 0o600, "ca.crt": 0o600, "token.pub": 0o644}, nil, nil, svc},
		{"root's files, the daemon is nobody", 0, 0o700, map[string]os.FileMode{"device.key": 0o600, "ca.crt": 0o644},
			[]string{".", "ca.crt", "device.key"}, nil, svc},
		{"private key readable by others", nobody, 0o700, map[string]os.FileMode{"device.key": 0o644, "viewer-local.pub": 0o644},
			nil, []string{"chmod 600 device.key"}, svc},
		{"private key readable by the group", nobody, 0o700, map[string]os.FileMode{"live-dtls.key": 0o640}, nil, []string{"chmod 600 live-dtls.key"}, svc},
		{"owner cannot read", nobody, 0o700, map[string]os.FileMode{"ca.crt": 0o200}, nil, []string{"chmod 600 ca.crt"}, svc},
		{"directory not listable", nobody, 0o300, map[string]os.FileMode{"ca.crt": 0o600}, nil, []string{"chmod 700 ."}, svc},
		{"a root daemon reads anyone's files", nobody, 0o700, map[string]os.FileMode{"device.key": 0o600}, nil, nil, root},
		{"a root daemon still wants private keys private", nobody, 0o700, map[string]os.FileMode{"device.key": 0o604}, nil, []string{"chmod 600 device.key"}, root},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tree(t, tt.owner, tt.dirMode, tt.files)
			ps, err := Check(dir, tt.as)
			if err != nil {
				t.Fatal(err)
			}
			var chown, mode []string
			for _, p := range ps {
				rel, _ := filepath.Rel(dir, p.Path)
				cmd := strings.TrimSuffix(p.Fix, " "+p.Path)
				switch {
				case cmd == "chown "+tt.as.Owner():
					chown = append(chown, rel)
					if !strings.Contains(p.What, "owned by root, not "+tt.as.Name) {
						t.Errorf("%s: %q does not say who owns it and who should", rel, p.What)
					}
				case strings.HasPrefix(cmd, "chmod "):
					mode = append(mode, cmd+" "+rel)
				default:
					t.Errorf("%s: unexpected fix %q", rel, p.Fix)
				}
			}
			slices.Sort(chown)
			slices.Sort(mode)
			if !slices.Equal(chown, tt.chown) || !slices.Equal(mode, tt.mode) {
				t.Errorf("problems %v:\nchown %v, want %v\nchmod %v, want %v", ps, chown, tt.chown, mode, tt.mode)
			}
		})
	}
}

func TestCheckMissingDirectory(t *testing.T) {
	ps, err := Check(filepath.Join(t.TempDir(), "none"), Current())
	if err != nil || len(ps) != 0 {
		t.Fatalf("a state directory not made yet: %v, %v", ps, err)
	}
}

func TestFixesAndExplain(t *testing.T) {
	ps := []Problem{
		{"/s/device.key", "owned by root, not uploadbox", "chown uploadbox:uploadbox /s/device.key"},
		{"/s/live-dtls.key", "a private key readable by group or others (mode 0644)", "chmod 600 /s/live-dtls.key"},
		{"/s/ca.crt", "owned by root, not uploadbox", "chown uploadbox:uploadbox /s/ca.crt"},
	}
	want := []string{"chown uploadbox:uploadbox /s/device.key /s/ca.crt", "chmod 600 /s/live-dtls.key"}
	if got := Fixes(ps); !slices.Equal(got, want) {
		t.Errorf("Fixes: %q, want %q", got, want)
	}
	got := Explain(ps, 2)
	if !strings.HasPrefix(got, "/s/device.key is owned by root, not uploadbox; /s/live-dtls.key is a private key") ||
		!strings.Contains(got, "; and 1 more: run chown uploadbox:uploadbox /s/device.key /s/ca.crt; chmod 600 /s/live-dtls.key") {
		t.Errorf("Explain: %q", got)
	}
}

func TestWriter(t *testing.T) {
	mustRoot(t)
	base := t.TempDir()
	nobodyDir := tree(t, nobody, 0o700, nil)
	rootDir := tree(t, 0, 0o700, nil)
	newDir := filepath.Join(base, "new")
	// The packaged daemon's user is nobody here (the test machine has no
	// uploadbox user), for rootDir or newDir.
	pkg := func(dir string) Service { return Service{User: "nobody", StateDir: dir} }
	tests := []struct {
		name, dir, user string
		svc             Service
		uid             int    // want
		err             string // want in the error; empty: none
	}{
		{"the state directory's owner", nobodyDir, "", Service{}, nobody, ""},
		{"a directory not made yet, under nobody's", filepath.Join(nobodyDir, "sub", "state"), "", Service{}, nobody, ""},
		{"--user", rootDir, "65534", Service{}, nobody, ""},
		{"--user unknown", rootDir, "no-such-user-ubx", Service{}, 0, `--user no-such-user-ubx: no user "no-such-user-ubx"`},
		{"root's, not the packaged daemon's directory", rootDir, "", pkg(newDir), 0, ""},
		{"root's, the packaged daemon's, no such user: root's daemon", rootDir, "", Service{User: "no-such-user-ubx", StateDir: rootDir}, 0, ""},
		{"root's, the packaged daemon's: refused", rootDir, "", pkg(rootDir), 0,
			"state directory " + rootDir + " belongs to root, but the daemon runs as nobody (the packaged service user) and could not read files root writes there: run `uploadbox enroll --state " + rootDir + " --user nobody`"},
		{"not made yet under root's, the packaged daemon's: refused", newDir, "", pkg(newDir + "/"), 0,
			"does not exist yet (its parent belongs to root)"},
		{"root's, the packaged daemon's, --user root", rootDir, "root", pkg(rootDir), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := Writer(tt.dir, tt.user, "uploadbox enroll --state "+tt.dir, tt.svc)
			switch {
			case tt.err == "" && err != nil:
				t.Fatal(err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one with %q", err, tt.err)
			case tt.err == "" && u.UID != tt.uid:
				t.Fatalf("writer %+v, want uid %d", u, tt.uid)
			}
		})
	}
}

func TestServiceUser(t *testing.T) {
	mustRoot(t)
	rootDir := tree(t, 0, 0o700, nil)
	nobodyDir := tree(t, nobody, 0o700, nil)
	for _, tt := range []struct {
		name, dir string
		svc       Service
		uid       int
	}{
		{"the directory's owner", nobodyDir, Service{User: "nobody", StateDir: nobodyDir}, nobody},
		{"root's, the packaged daemon's", rootDir, Service{User: "nobody", StateDir: rootDir}, nobody},
		{"root's, another directory than the packaged daemon's", rootDir, Service{User: "nobody", StateDir: nobodyDir}, 0},
		{"root's, no packaged user", rootDir, Service{User: "no-such-user-ubx", StateDir: rootDir}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ServiceUser(tt.dir, tt.svc)
			if err != nil || u.UID != tt.uid {
				t.Fatalf("ServiceUser: %+v, %v; want uid %d", u, err, tt.uid)
			}
		})
	}
}

// TestMkdirOwned: the directories Become makes for the service user are
// its own, 0700, and an existing state directory of another user is given
// to it (what `enroll --user` does as root before it becomes the user).
func TestMkdirOwned(t *testing.T) {
	mustRoot(t)
	u, err := Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dir := filepath.Join(base, "lib", "uploadbox", "state")
	if err := mkdirOwned(dir, u); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(base, "lib"), filepath.Join(base, "lib", "uploadbox"), dir} {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != nobody || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: uid %d mode %04o, want %d 0700", d, uid, st.Mode().Perm(), nobody)
		}
	}
	if st, _ := os.Stat(base); st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the existing parent %s was given away", base)
	}
	rootDir := tree(t, 0, 0o700, nil)
	if err := mkdirOwned(rootDir, u); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(rootDir); st.Sys().(*syscall.Stat_t).Uid != nobody {
		t.Errorf("the existing state directory %s was not given to nobody", rootDir)
	}
}
