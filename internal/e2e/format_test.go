package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exitResult is how a command ended.
type exitResult struct {
	code           int
	stdout, stderr string
}

// runExit runs a command that may fail and returns its exit code and
// output. A command still running after within is killed and fails the
// test: a key file or input must never make a command wait.
func runExit(t *testing.T, within time.Duration, name string, args ...string) exitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not exit within %s (it waits on something); stderr:\n%s", name, strings.Join(args, " "), within, stderr.String())
	}
	res := exitResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// sealed is one segment sealed by the real `uploadbox seal`.
type sealed struct {
	keys   keys
	devPub string // the device public key file
	media  []byte
	seg    []byte
}

// sealMedia seals size random bytes with fresh keys.
func sealMedia(t *testing.T, dir string, size int) sealed {
	t.Helper()
	k := keys{filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub"), filepath.Join(dir, "dev.key")}
	devPub := filepath.Join(dir, "dev.pub")
	run(t, "uploadbox-receiver", "keys", "generate", "--out", k.org, "--public-out", k.pub)
	run(t, "uploadbox", "keys", "device", "--out", k.dev, "--public-out", devPub)
	media := make([]byte, size)
	rand.Read(media)
	in, segPath := filepath.Join(dir, "media.bin"), filepath.Join(dir, "seg.ubx")
	if err := os.WriteFile(in, media, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "uploadbox", "seal", "--recipients-file", k.pub, "--device-key", k.dev, "-o", segPath, in)
	seg, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	return sealed{k, devPub, media, seg}
}

// TestOpenCutInsideTrailer: a power cut while the trailer of a 32,767-byte
// recording was written (its final chunk is 16,399 bytes, so any trailer
// byte completes a 16,400-byte piece that fails as a full chunk) opens as
// TRUNCATED, exit 3, with the full chunk in the output; the keyless verify
// says TRUNCATED too.
func TestOpenCutInsideTrailer(t *testing.T) {
	dir := t.TempDir()
	s := sealMedia(t, dir, 32767)
	const trailer, fullChunk = 72, 16384
	for _, into := range []int{1, 10, 71} {
		cut := filepath.Join(dir, "cut.ubx")
		if err := os.WriteFile(cut, s.seg[:len(s.seg)-trailer+into], 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out.bin")
		os.Remove(out)
		res := runExit(t, time.Minute, "uploadbox-receiver", "open", "--identity", s.keys.org, "-o", out, cut)
		if res.code != 3 {
			t.Errorf("cut %d bytes into the trailer: exit %d, want 3 (TRUNCATED)\nstdout: %sstderr: %s", into, res.code, res.stdout, res.stderr)
		}
		if !strings.Contains(res.stderr, "ends inside the trailer") {
			t.Errorf("cut %d bytes into the trailer: stderr does not say where the file ends:\n%s", into, res.stderr)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Errorf("cut %d bytes into the trailer: no output: %v", into, err)
		} else if !bytes.Equal(got, s.media[:fullChunk]) {
			t.Errorf("cut %d bytes into the trailer: output is %d bytes, want the full chunk (%d bytes of the media)", into, len(got), fullChunk)
		}
		res = runExit(t, time.Minute, "uploadbox-receiver", "verify", "--device-pub", s.devPub, cut)
		if res.code != 3 || !strings.HasPrefix(res.stdout, "TRUNCATED ") {
			t.Errorf("verify, cut %d bytes into the trailer: exit %d, want 3 (TRUNCATED)\nstdout: %s", into, res.code, res.stdout)
		}
	}
}

// TestOpenIdentityFileKinds: a FIFO given as --identity is refused at once
// (it is never opened for a blocking read), naming the file; a symlink to
// the key file is followed and works.
func TestOpenIdentityFileKinds(t *testing.T) {
	dir := t.TempDir()
	s := sealMedia(t, dir, 1000)
	seg := filepath.Join(dir, "seg.ubx")

	fifo := filepath.Join(dir, "org.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "fifo.out")
	res := runExit(t, 20*time.Second, "uploadbox-receiver", "open", "--identity", fifo, "-o", out, seg)
	if res.code != 1 {
		t.Errorf("FIFO as --identity: exit %d, want 1\nstderr: %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, fifo) || !strings.Contains(res.stderr, "not a regular file") {
		t.Errorf("FIFO as --identity: the error does not name the file and say it is not a regular file:\n%s", res.stderr)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FIFO as --identity: output exists (%v)", err)
	}

	link := filepath.Join(dir, "org-link.key")
	if err := os.Symlink(s.keys.org, link); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(dir, "link.out")
	res = runExit(t, time.Minute, "uploadbox-receiver", "open", "--identity", link, "-o", out, seg)
	if res.code != 0 {
		t.Fatalf("symlink to the key as --identity: exit %d, want 0\nstderr: %s", res.code, res.stderr)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, s.media) {
		t.Errorf("symlink to the key as --identity: output %d bytes (%v), want the %d media bytes", len(got), err, len(s.media))
	}
}

// TestOpenDevicePub: open --device-pub refuses a whole, validly signed
// segment of another device with exit 4 and a message naming both keys,
// writing nothing; with the sealing device's key (as a file or inline) it
// opens. verify --device-pub says the same.
func TestOpenDevicePub(t *testing.T) {
	dir := t.TempDir()
	s := sealMedia(t, dir, 40000)
	seg := filepath.Join(dir, "seg.ubx")
	other := filepath.Join(dir, "other.pub")
	run(t, "uploadbox", "keys", "device", "--out", filepath.Join(dir, "other.key"), "--public-out", other)
	otherKey := strings.TrimSpace(readFile(t, other))
	ownKey := strings.TrimSpace(readFile(t, s.devPub))

	for _, pub := range []string{other, otherKey} {
		out := filepath.Join(dir, "wrong.out")
		res := runExit(t, time.Minute, "uploadbox-receiver", "open", "--identity", s.keys.org, "--device-pub", pub, "-o", out, seg)
		if res.code != 4 {
			t.Errorf("open --device-pub %s: exit %d, want 4\nstderr: %s", pub, res.code, res.stderr)
		}
		if !strings.Contains(res.stderr, "signed by another device than "+otherKey) || !strings.Contains(res.stderr, ownKey) {
			t.Errorf("open --device-pub %s: the message does not name both devices:\n%s", pub, res.stderr)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("open --device-pub %s of another device wrote %s (%v)", pub, out, err)
		}
		res = runExit(t, time.Minute, "uploadbox-receiver", "verify", "--device-pub", pub, seg)
		if res.code != 4 || !strings.Contains(res.stderr, "signed by another device than "+otherKey) {
			t.Errorf("verify --device-pub %s: exit %d, want 4 naming the device\nstderr: %s", pub, res.code, res.stderr)
		}
	}
	for _, pub := range []string{s.devPub, ownKey} {
		out := filepath.Join(dir, "right.out")
		os.Remove(out)
		res := runExit(t, time.Minute, "uploadbox-receiver", "open", "--identity", s.keys.org, "--device-pub", pub, "-o", out, seg)
		if res.code != 0 {
			t.Fatalf("open --device-pub %s of its own device: exit %d\nstderr: %s", pub, res.code, res.stderr)
		}
		if got := readFile(t, out); got != string(s.media) {
			t.Errorf("open --device-pub %s: output is %d bytes, want the %d media bytes", pub, len(got), len(s.media))
		}
	}
	// A device key that does not parse is a usage error.
	if res := runExit(t, time.Minute, "uploadbox-receiver", "open", "--identity", s.keys.org, "--device-pub", "ubx-dev-pub-ed25519:AAAA", "-o", filepath.Join(dir, "x.out"), seg); res.code != 2 {
		t.Errorf("open --device-pub with a bad key: exit %d, want 2\nstderr: %s", res.code, res.stderr)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenExitCodes runs the real `uploadbox-receiver open` and `verify`
// once for every error class of the exit-code table in docs/format.md §13
// and checks, for open, whether OUT exists afterwards and what it holds.
func TestOpenExitCodes(t *testing.T) {
	dir := t.TempDir()
	s := sealMedia(t, dir, 3*16384+500)
	const hdrLen = 1287 - len("video/mp4") + len("application/octet-stream") // X-Wing, one recipient
	write := func(name string, b []byte, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seg := filepath.Join(dir, "seg.ubx")
	flipped := bytes.Clone(s.seg)
	flipped[hdrLen+56+100] ^= 1
	otherOrg := filepath.Join(dir, "other.key")
	run(t, "uploadbox-receiver", "keys", "generate", "--out", otherOrg)
	otherDev := filepath.Join(dir, "other-dev.pub")
	run(t, "uploadbox", "keys", "device", "--out", filepath.Join(dir, "other-dev.key"), "--public-out", otherDev)
	loose := write("loose.key", []byte(readFile(t, s.keys.org)), 0o644)

	const (
		noOutput = -1 // OUT must not exist
		kept     = -2 // OUT existed before and must be unchanged
	)
	tests := []struct {
		name string
		code int
		seg  string
		args []string // extra flags; -o is added unless the test is about it
		out  int      // bytes of media OUT holds, or noOutput / kept
	}{
		{"ok", 0, seg, nil, len(s.media)},
		{"usage: empty -o", 2, seg, []string{"-o", ""}, noOutput},
		{"usage: empty --identity", 2, seg, []string{"--identity", ""}, kept},
		{"usage: unknown flag", 2, seg, []string{"--no-such-flag"}, noOutput},
		{"usage: two segments", 2, seg, []string{seg}, noOutput},
		{"usage: bad --device-pub", 2, seg, []string{"--device-pub", "ubx-dev-pub-ed25519:AAAA"}, noOutput},
		{"truncated after two chunks", 3, write("cut.ubx", s.seg[:hdrLen+56+2*16400+300], 0o644), nil, 2 * 16384},
		{"truncated in the first chunk", 3, write("cut0.ubx", s.seg[:hdrLen+56+100], 0o644), nil, 0},
		{"truncated in the header", 3, write("cuthdr.ubx", s.seg[:100], 0o644), nil, noOutput},
		{"truncated in the commitment", 3, write("cutsalt.ubx", s.seg[:hdrLen+40], 0o644), nil, noOutput},
		{"corrupt", 4, write("flipped.ubx", flipped, 0o644), nil, kept},
		{"not for this key", 4, seg, []string{"--identity", otherOrg}, kept},
		{"another device", 4, seg, []string{"--device-pub", otherDev}, kept},
		{"identity missing", 1, seg, []string{"--identity", filepath.Join(dir, "nope.key")}, kept},
		{"identity readable by others", 1, seg, []string{"--identity", loose}, kept},
		{"segment missing", 1, filepath.Join(dir, "nope.ubx"), nil, kept},
		{"output directory missing", 1, seg, []string{"-o", filepath.Join(dir, "no", "dir", "out.bin")}, noOutput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".out")
			if tc.out == kept {
				write(filepath.Base(out), []byte("already here"), 0o600)
			}
			args := []string{"open", "--identity", s.keys.org, "-o", out}
			args = append(args, tc.args...)
			args = append(args, tc.seg)
			res := runExit(t, time.Minute, "uploadbox-receiver", args...)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %sstderr: %s", res.code, tc.code, res.stdout, res.stderr)
			}
			got, err := os.ReadFile(out)
			switch tc.out {
			case noOutput:
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("OUT exists (%d bytes, %v), want none", len(got), err)
				}
			case kept:
				if string(got) != "already here" {
					t.Errorf("OUT was changed: %d bytes, %v", len(got), err)
				}
			default:
				if err != nil || !bytes.Equal(got, s.media[:tc.out]) {
					t.Errorf("OUT holds %d bytes (%v), want the first %d media bytes", len(got), err, tc.out)
				}
				if tc.code == 3 && !strings.Contains(res.stdout, "TRUNCATED") {
					t.Errorf("stdout does not say TRUNCATED: %s", res.stdout)
				}
			}
			if tc.code != 0 && !strings.Contains(res.stderr, "uploadbox-receiver: ") {
				t.Errorf("no error message on stderr: %q", res.stderr)
			}
		})
	}

	verify := []struct {
		name string
		code int
		args []string
	}{
		{"ok", 0, []string{"--device-pub", s.devPub, seg}},
		{"truncated", 3, []string{"--device-pub", s.devPub, filepath.Join(dir, "cut.ubx")}},
		{"corrupt signature", 4, []string{"--device-pub", s.devPub, write("badsig.ubx", append(bytes.Clone(s.seg[:len(s.seg)-1]), s.seg[len(s.seg)-1]^1), 0o644)}},
		{"another device", 4, []string{"--device-pub", otherDev, seg}},
		{"usage: no --device-pub", 2, []string{seg}},
		{"segment missing", 1, []string{"--device-pub", s.devPub, filepath.Join(dir, "nope.ubx")}},
	}
	for _, tc := range verify {
		t.Run("verify "+tc.name, func(t *testing.T) {
			res := runExit(t, time.Minute, "uploadbox-receiver", append([]string{"verify"}, tc.args...)...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %sstderr: %s", res.code, tc.code, res.stdout, res.stderr)
			}
		})
	}
}
