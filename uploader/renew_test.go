package uploader

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReplaceOwnedKeepsOwner: a certificate renewed by root (uploadbox
// enroll --renew under sudo) keeps the owner of the file it replaces, so
// the daemon's user can still read it, and mode 0600.
func TestReplaceOwnedKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test changes file owners: run it as root (the test machines do)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, DeviceCertFile)
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4321, 4322); err != nil {
		t.Fatal(err)
	}
	if err := replaceOwned(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if data, _ := os.ReadFile(path); string(data) != "new" || st.Uid != 4321 || st.Gid != 4322 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %q owned by %d:%d mode %v, want the new content owned by 4321:4322 mode 0600", path, data, st.Uid, st.Gid, fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.new*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
