// Package ownership keeps the box's state directory usable by the user the
// daemon runs as. The commands that write there as root (`uploadbox enroll`,
// `uploadbox viewer token`) work out that user and become it before they
// write, so every file they make is the daemon's; the daemon and `diag` name
// each file the daemon cannot use as it is, what is wrong with it, and the
// command that fixes it.
package ownership

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PackagedUser is the user the packaged unit runs the daemon as
// (User=uploadbox in uploadbox.service; the package's postinst makes it).
const PackagedUser = "uploadbox"

// User is a user and its primary group.
type User struct {
	Name     string // the login name, or the uid in decimal if it has none
	UID, GID int
	Group    string // the primary group's name, or the gid in decimal
}

func (u User) String() string { return u.Name }

// Owner is the owner argument of chown(1) that gives a file to u.
func (u User) Owner() string { return u.Name + ":" + u.Group }

// Root reports whether u is the superuser.
func (u User) Root() bool { return u.UID == 0 }

// Lookup finds the user with login name or numeric uid name.
func Lookup(name string) (User, error) {
	u, err := user.Lookup(name)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	var unknownID user.UnknownUserIdError
	if errors.As(err, &unknown) || errors.As(err, &unknownID) {
		return User{}, fmt.Errorf("no user %q on this system", name)
	}
	if err != nil {
		return User{}, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return User{}, fmt.Errorf("user %q has a non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return User{}, fmt.Errorf("user %q has a non-numeric gid %q", name, u.Gid)
	}
	found := ids(uid, gid)
	found.Name = u.Username // another name may come first for the same uid
	return found, nil
}

// ids is the user with uid and gid, named where the system knows the
// names.
func ids(uid, gid int) User {
	u := User{Name: strconv.Itoa(uid), UID: uid, GID: gid, Group: strconv.Itoa(gid)}
	if pw, err := user.LookupId(u.Name); err == nil {
		u.Name = pw.Username
	}
	if g, err := user.LookupGroupId(u.Group); err == nil {
		u.Group = g.Name
	}
	return u
}

// Current is the user this process runs as (its effective ids).
func Current() User { return ids(os.Geteuid(), os.Getegid()) }

// ownerOf returns the owner of path, or of its nearest existing parent
// when path does not exist (exists then false).
func ownerOf(path string) (u User, exists bool, err error) {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err == nil {
			sys := st.Sys().(*syscall.Stat_t)
			return ids(int(sys.Uid), int(sys.Gid)), p == filepath.Clean(path), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return User{}, false, err
		}
	}
}

// Service is the packaged daemon: the user its unit runs it as and the
// state directory its config names.
type Service struct {
	User     string // PackagedUser
	StateDir string // state_dir of the packaged config
}

// userFor returns the service's user when dir is the service's state
// directory and the system has that user (the package made it).
func (s Service) userFor(dir string) (User, bool) {
	if s.User == "" || s.StateDir == "" || filepath.Clean(dir) != filepath.Clean(s.StateDir) {
		return User{}, false
	}
	u, err := Lookup(s.User)
	return u, err == nil && !u.Root()
}

// ServiceUser is the user the daemon that uses the state directory dir
// runs as: the owner of dir (or of its nearest existing parent), unless
// that is root and dir is the packaged daemon's (svc) on a system with its
// user: then that user.
func ServiceUser(dir string, svc Service) (User, error) {
	owner, _, err := ownerOf(dir)
	if err != nil {
		return User{}, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if owner.Root() {
		if p, ok := svc.userFor(dir); ok {
			return p, nil
		}
	}
	return owner, nil
}

// Writer is whom a command that writes into the state directory dir
// writes as: name (its --user flag) when given, else the owner of dir. It
// refuses what would leave files the daemon cannot read: root writing into
// the packaged daemon's state directory (svc) while root owns it, on a
// system with the packaged user, and a user other than root writing for
// someone else. cmd is the command as the user would type it again
// ("uploadbox enroll …"), for the error.
func Writer(dir, name, cmd string, svc Service) (User, error) {
	self := Current()
	if name != "" {
		u, err := Lookup(name)
		if err != nil {
			return User{}, fmt.Errorf("--user %s: %w", name, err)
		}
		if !self.Root() && u.UID != self.UID {
			return User{}, fmt.Errorf("--user %s: only root can write files for another user: run `sudo %s --user %s`", name, cmd, name)
		}
		return u, nil
	}
	owner, exists, err := ownerOf(dir)
	if err != nil {
		return User{}, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if !self.Root() {
		if exists && owner.UID != self.UID {
			return User{}, fmt.Errorf("state directory %s belongs to %s, so the daemon runs as %s and could not read files %s writes: run `sudo -u %s %s`",
				dir, owner, owner, self, owner, cmd)
		}
		return self, nil
	}
	if !owner.Root() {
		return owner, nil
	}
	if p, ok := svc.userFor(dir); ok {
		what := "belongs to root"
		if !exists {
			what = "does not exist yet (its parent belongs to root)"
		}
		return User{}, fmt.Errorf("state directory %s %s, but the daemon runs as %s (the packaged service user) and could not read files root writes there: run `%s --user %s` (it makes the directory and every file %s's), or add --user root if the daemon really runs as root",
			dir, what, p, cmd, p, p)
	}
	return self, nil
}

// Become makes the state directory dir u's and then makes this process u
// for good, so that everything it writes afterwards is u's with the modes
// it asks for. The missing directories of dir are made (0700) and given to
// u, and dir itself is given to u if it is someone else's. Only root can
// do this; for the current user it does nothing.
func Become(dir string, u User) error {
	self := Current()
	if u.UID == self.UID && u.GID == self.GID {
		return nil
	}
	if !self.Root() {
		return fmt.Errorf("only root can write files for %s", u)
	}
	if err := mkdirOwned(dir, u); err != nil {
		return err
	}
	// Groups first: after setuid the process may no longer change them.
	if err := syscall.Setgroups([]int{u.GID}); err != nil {
		return fmt.Errorf("become %s: setgroups: %w", u, err)
	}
	if err := syscall.Setgid(u.GID); err != nil {
		return fmt.Errorf("become %s: setgid: %w", u, err)
	}
	if err := syscall.Setuid(u.UID); err != nil {
		return fmt.Errorf("become %s: setuid: %w", u, err)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("state directory %s: %s cannot open it (%w), so the daemon running as %s could not either: give %s access to its parent directories", dir, u, err, u, u)
	}
	return nil
}

// mkdirOwned makes dir and its missing parents (0700) u's, and gives dir
// to u if another user owns it.
func mkdirOwned(dir string, u User) error {
	var missing []string
	p := filepath.Clean(dir)
	for {
		st, err := os.Stat(p)
		if err == nil {
			if len(missing) == 0 && int(st.Sys().(*syscall.Stat_t).Uid) != u.UID {
				if err := os.Chown(p, u.UID, u.GID); err != nil {
					return fmt.Errorf("state directory %s: give it to %s: %w", p, u, err)
				}
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
		missing = append(missing, p)
		p = filepath.Dir(p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("state directory %s: %w", missing[i], err)
		}
		if err := os.Chown(missing[i], u.UID, u.GID); err != nil {
			return fmt.Errorf("state directory %s: give it to %s: %w", missing[i], u, err)
		}
	}
	return nil
}

// Problem is something in the state directory that the daemon's user
// cannot use as it is.
type Problem struct {
	Path string // the file or directory
	What string // what is wrong, e.g. "owned by root, not uploadbox (mode 0600)"
	Fix  string // the command that fixes it, e.g. "chown uploadbox:uploadbox /…/device.key"
}

func (p Problem) String() string { return Explain([]Problem{p}, 1) }

// Check checks the state directory dir and the files in it against u, the
// user the daemon runs as: each must be u's (unless u is root) and
// readable by u, and a private key (*.key) readable by no one else. A
// directory that does not exist has no problems.
func Check(dir string, u User) ([]Problem, error) {
	var ps []Problem
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ps = append(ps, check(dir, st, u, false)...)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if len(ps) > 0 {
			return ps, nil // the directory's problem hides what is in it
		}
		return nil, err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			continue // gone meanwhile; a link's target is not the state's
		}
		ps = append(ps, check(p, fi, u, strings.HasSuffix(e.Name(), ".key"))...)
	}
	return ps, nil
}

// check is Check for one file or directory.
func check(path string, fi fs.FileInfo, u User, private bool) []Problem {
	var ps []Problem
	sys := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	if !u.Root() && int(sys.Uid) != u.UID {
		owner := ids(int(sys.Uid), int(sys.Gid))
		fix := "chown " + u.Owner() + " " + path
		ps = append(ps, Problem{path, fmt.Sprintf("owned by %s, not %s (the daemon's user; mode %04o)", owner, u, perm), fix})
	}
	switch need := fs.FileMode(0o600); {
	case fi.IsDir():
		if perm&0o700 != 0o700 {
			ps = append(ps, Problem{path, fmt.Sprintf("mode %04o: its owner cannot list and write it", perm), "chmod 700 " + path})
		}
	case private && perm&0o077 != 0:
		ps = append(ps, Problem{path, fmt.Sprintf("a private key readable by group or others (mode %04o)", perm), "chmod 600 " + path})
	case perm&need != need:
		ps = append(ps, Problem{path, fmt.Sprintf("mode %04o: its owner cannot read and write it", perm), "chmod 600 " + path})
	}
	return ps
}

// Fixes are the commands that fix every problem in ps, one per kind of
// fix, each naming all its files: "chown uploadbox:uploadbox A B",
// "chmod 600 C".
func Fixes(ps []Problem) []string {
	var order []string
	files := map[string][]string{}
	for _, p := range ps {
		cmd := strings.TrimSuffix(p.Fix, " "+p.Path)
		if _, ok := files[cmd]; !ok {
			order = append(order, cmd)
		}
		files[cmd] = append(files[cmd], p.Path)
	}
	out := make([]string, len(order))
	for i, cmd := range order {
		out[i] = cmd + " " + strings.Join(files[cmd], " ")
	}
	return out
}

// Describe says what is wrong with each of ps on one line, at most max of
// them spelled out and the rest counted.
func Describe(ps []Problem, max int) string {
	var what []string
	for i, p := range ps {
		if i == max {
			what = append(what, fmt.Sprintf("and %d more", len(ps)-max))
			break
		}
		what = append(what, p.Path+" is "+p.What)
	}
	return strings.Join(what, "; ")
}

// Explain is one line for a log or an error: Describe and the commands
// that fix every problem.
func Explain(ps []Problem, max int) string {
	return Describe(ps, max) + ": run " + strings.Join(Fixes(ps), "; ")
}

// Annotate adds to err, when it is a permission error, which files of the
// state directory dir u cannot use and the commands that fix them.
func Annotate(dir string, u User, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	if ps, cerr := Check(dir, u); cerr == nil && len(ps) > 0 {
		return fmt.Errorf("%w; %s", err, Explain(ps, maxExplained))
	}
	return err
}

// maxExplained is how many problems an annotated error spells out.
const maxExplained = 4
