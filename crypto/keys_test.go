package crypto

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIdentityRoundTrip(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(suite.String(), func(t *testing.T) {
			id, err := GenerateIdentity(suite)
			if err != nil {
				t.Fatal(err)
			}
			s := id.String()
			if want := "UBX-ORG-KEY-" + strings.ToUpper(suite.String()) + ":"; !strings.HasPrefix(s, want) {
				t.Errorf("identity %q does not start with %q", s[:20], want)
			}
			id2, err := ParseIdentity(s)
			if err != nil {
				t.Fatal(err)
			}
			if id2.Suite() != suite || id2.String() != s {
				t.Error("parsed identity differs")
			}
			rs := id.Recipient().String()
			if want := "ubx-org-pub-" + suite.String() + ":"; !strings.HasPrefix(rs, want) {
				t.Errorf("recipient %q does not start with %q", rs[:20], want)
			}
			rc, err := ParseRecipient(rs)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Suite() != suite || rc.String() != rs || id2.Recipient().String() != rs {
				t.Error("parsed recipient differs")
			}
			// The parsed halves work together.
			dev := newDevice(t)
			msg := []byte("round trip through the text encodings")
			seg, _ := sealSegment(t, []*Recipient{rc}, dev, Params{}, msg, sealOpts{})
			if res := openSegment(seg, id2); res.err != nil || !bytes.Equal(res.released, msg) {
				t.Fatalf("open with the parsed identity: %v", res.err)
			}
		})
	}
	if _, err := GenerateIdentity(Suite(0)); err == nil {
		t.Error("GenerateIdentity accepted suite 0")
	}
}

func TestParseSuite(t *testing.T) {
	tests := []struct {
		in   string
		want Suite
		ok   bool
	}{
		{"xwing", SuiteXWing, true},
		{"X25519", SuiteX25519, true},
		{"p256", SuiteP256, true},
		{"P256", SuiteP256, true},
		{"", 0, false},
		{"p-256", 0, false},
		{"ed25519", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSuite(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseSuite(%q) = %v, %v", tc.in, got, err)
			}
			if err != nil && !strings.Contains(err.Error(), "xwing, x25519 or p256") {
				t.Errorf("error %q does not list the suites", err)
			}
		})
	}
	if s := Suite(9).String(); s != "suite(9)" {
		t.Errorf("Suite(9).String() = %q", s)
	}
}

func TestDeviceKeyRoundTrip(t *testing.T) {
	dev := newDevice(t)
	dev2, err := ParseDeviceKey(dev.String())
	if err != nil {
		t.Fatal(err)
	}
	if dev2.String() != dev.String() || !dev2.Public().Equal(dev.Public()) {
		t.Fatal("parsed device key differs")
	}
	pub, err := ParseDevicePublicKey(dev.Public().String())
	if err != nil || !pub.Equal(dev.Public()) {
		t.Fatalf("parse public key: %v", err)
	}
	b := pub.Bytes()
	b[0] ^= 1
	if !pub.Equal(dev.Public()) {
		t.Error("Bytes() aliases the key")
	}
	if !strings.HasPrefix(dev.String(), "UBX-DEV-KEY-ED25519:") || !strings.HasPrefix(pub.String(), "ubx-dev-pub-ed25519:") {
		t.Errorf("unexpected encodings %q, %q", dev.String()[:20], pub.String()[:20])
	}
	dev2.Destroy()
	if !bytes.Equal(dev2.priv, make([]byte, len(dev2.priv))) {
		t.Error("Destroy left key bytes")
	}
	for _, bad := range []string{"", dev.Public().String(), "UBX-DEV-KEY-ED25519:", "UBX-DEV-KEY-ED25519:" + b64.EncodeToString(make([]byte, 31)), "UBX-DEV-KEY-ED25519:!!!"} {
		if _, err := ParseDeviceKey(bad); err == nil {
			t.Errorf("ParseDeviceKey(%q) succeeded", bad)
		}
	}
	for _, bad := range []string{"", dev.String(), "ubx-dev-pub-ed25519:" + b64.EncodeToString(make([]byte, 33)), "ubx-dev-pub-ed25519:***"} {
		if _, err := ParseDevicePublicKey(bad); err == nil {
			t.Errorf("ParseDevicePublicKey(%q) succeeded", bad)
		}
	}
}

// keyOf returns a key string of suite with its base64 payload replaced.
func keyOf(prefix string, raw []byte) string { return prefix + b64.EncodeToString(raw) }

func TestParseIdentityRejects(t *testing.T) {
	x, _ := newIdentities(t, SuiteX25519, 1)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "not an organisation private key"},
		{"public key", x[0].Recipient().String(), "not an organisation private key"},
		{"no colon", "UBX-ORG-KEY-X25519", "no ':'"},
		{"lower-case suite", strings.Replace(x[0].String(), "X25519", "x25519", 1), "unknown suite"},
		{"unknown suite", strings.Replace(x[0].String(), "X25519", "X448", 1), "unknown suite"},
		{"bad base64", "UBX-ORG-KEY-X25519:%%%", "base64"},
		{"padded base64", x[0].String() + "=", "base64"},
		{"31 bytes", keyOf("UBX-ORG-KEY-X25519:", make([]byte, 31)), "31 bytes, want 32"},
		{"33 bytes", keyOf("UBX-ORG-KEY-XWING:", make([]byte, 33)), "33 bytes, want 32"},
		{"p256 scalar out of range", keyOf("UBX-ORG-KEY-P256:", bytes.Repeat([]byte{0xff}, 32)), "invalid P256 private key"},
		{"p256 zero scalar", keyOf("UBX-ORG-KEY-P256:", make([]byte, 32)), "invalid P256 private key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIdentity(tc.in)
			if err == nil {
				t.Fatal("ParseIdentity succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParseRecipientRejects(t *testing.T) {
	x, _ := newIdentities(t, SuiteX25519, 1)
	offCurve := append([]byte{4}, bytes.Repeat([]byte{1}, 64)...)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "not an organisation public key"},
		{"private key", x[0].String(), "not an organisation public key"},
		{"no colon", "ubx-org-pub-x25519", "no ':'"},
		{"upper-case suite", strings.Replace(x[0].Recipient().String(), "x25519", "X25519", 1), "unknown suite"},
		{"unknown suite", "ubx-org-pub-kyber:AAAA", "unknown suite"},
		{"bad base64", "ubx-org-pub-x25519:@@@", "base64"},
		{"x25519 short", keyOf("ubx-org-pub-x25519:", make([]byte, 31)), "31 bytes, want 32"},
		{"x25519 long", keyOf("ubx-org-pub-x25519:", make([]byte, 33)), "33 bytes, want 32"},
		{"xwing short", keyOf("ubx-org-pub-xwing:", make([]byte, 1215)), "1215 bytes, want 1216"},
		{"p256 compressed length", keyOf("ubx-org-pub-p256:", make([]byte, 33)), "33 bytes, want 65"},
		{"p256 off the curve", keyOf("ubx-org-pub-p256:", offCurve), "invalid p256 public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecipient(tc.in)
			if err == nil {
				t.Fatal("ParseRecipient succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParseRecipients(t *testing.T) {
	_, x := newIdentities(t, SuiteX25519, 5)
	_, p := newIdentities(t, SuiteP256, 1)
	line := func(rs ...*Recipient) string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.String() + "\n")
		}
		return b.String()
	}
	tests := []struct {
		name string
		in   string
		n    int    // recipients on success
		want string // error substring, "" for success
	}{
		{"one", line(x[0]), 1, ""},
		{"comments, blanks, spaces, CRLF", "# org keys\n\n  " + x[0].String() + "  \r\n# second\n" + x[1].String(), 2, ""},
		{"four", line(x[:4]...), 4, ""},
		{"none", "", 0, "no public keys"},
		{"only comments", "# nothing here\n\n", 0, "no public keys"},
		{"five", line(x...), 0, "5 public keys, at most 4"},
		{"mixed suites", line(x[0], p[0]), 0, "key 2 is p256 but key 1 is x25519"},
		{"garbage first", "hello\n" + line(x[0]), 0, "key 1: not an organisation public key"},
		{"garbage third", line(x[0], x[1]) + "ubx-org-pub-x25519:nonsense!\n", 0, "key 3: public key is not valid base64url"},
		{"wrong length second", line(x[0]) + keyOf("ubx-org-pub-x25519:", make([]byte, 16)), 0, "key 2: x25519 public key is 16 bytes, want 32"},
		{"private key second", line(x[0]) + "UBX-ORG-KEY-X25519:AAAA\n", 0, "key 2: not an organisation public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := ParseRecipients(strings.NewReader(tc.in))
			if tc.want == "" {
				if err != nil || len(rs) != tc.n {
					t.Fatalf("got %d recipients, %v; want %d", len(rs), err, tc.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %d recipients", len(rs))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "recipients.txt")
		if err := os.WriteFile(path, []byte(line(x[0])+line(x[1])+line(p[0])), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadRecipientsFile(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "key 3") {
			t.Fatalf("error %v does not name the file and key 3", err)
		}
		if _, err := ReadRecipientsFile(filepath.Join(t.TempDir(), "missing")); err == nil {
			t.Error("a missing recipients file was accepted")
		}
	})
}

func TestWriteKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "org.key")
	if err := WriteKeyFile(path, "first\n", 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", st.Mode().Perm())
	}
	err = WriteKeyFile(path, "second\n", 0o600)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") || !strings.Contains(err.Error(), path) {
		t.Fatalf("overwrite: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "first\n" {
		t.Errorf("the key file now holds %q", data)
	}
	// A symlink, even a dangling one, is not replaced either.
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), link); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(link, "x", 0o600); err == nil {
		t.Error("WriteKeyFile replaced a dangling symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "nowhere")); !os.IsNotExist(err) {
		t.Error("WriteKeyFile wrote through a symlink")
	}
	pub := filepath.Join(dir, "org.pub")
	if err := WriteKeyFile(pub, "public\n", 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(pub); st.Mode().Perm() != 0o644 {
		t.Errorf("public key mode %04o, want 0644", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".key-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	if err := WriteKeyFile(filepath.Join(dir, "no", "such", "dir.key"), "x", 0o600); err == nil {
		t.Error("WriteKeyFile into a missing directory succeeded")
	}
}

func TestGenerateKeyFiles(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(suite.String(), func(t *testing.T) {
			dir := t.TempDir()
			priv, pub := filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub")
			rc, err := GenerateIdentityFile(suite, priv, pub)
			if err != nil {
				t.Fatal(err)
			}
			id, err := ReadIdentityFile(priv)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := ReadRecipientsFile(pub)
			if err != nil {
				t.Fatal(err)
			}
			if id.Recipient().String() != rc.String() || len(rs) != 1 || rs[0].String() != rc.String() {
				t.Error("the key files do not match the returned recipient")
			}
			for path, perm := range map[string]os.FileMode{priv: 0o600, pub: 0o644} {
				if st, _ := os.Stat(path); st.Mode().Perm() != perm {
					t.Errorf("%s mode %04o, want %04o", path, st.Mode().Perm(), perm)
				}
			}
			if _, err := GenerateIdentityFile(suite, priv, ""); err == nil {
				t.Error("GenerateIdentityFile overwrote a key")
			}
		})
	}
	t.Run("device", func(t *testing.T) {
		dir := t.TempDir()
		priv, pub := filepath.Join(dir, "device.key"), filepath.Join(dir, "device.pub")
		p, err := GenerateDeviceKeyFile(priv, pub)
		if err != nil {
			t.Fatal(err)
		}
		dk, err := ReadDeviceKeyFile(priv)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := ReadDevicePublicKeyFile(pub)
		if err != nil {
			t.Fatal(err)
		}
		if !dk.Public().Equal(p) || !p2.Equal(p) {
			t.Error("the device key files do not match")
		}
		if _, err := GenerateDeviceKeyFile(priv, ""); err == nil {
			t.Error("GenerateDeviceKeyFile overwrote a key")
		}
		if _, err := ReadDevicePublicKeyFile(priv); err == nil {
			t.Error("a private key was read as a device public key")
		}
	})
}

// TestPrivateKeyFileMode: private key files readable by group or others
// are refused with an error that names the file and the fix.
func TestPrivateKeyFileMode(t *testing.T) {
	id, _ := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	readers := []struct {
		name    string
		content string
		read    func(string) error
	}{
		{"identity", "# org key\n" + id[0].String() + "\n", func(p string) error { _, err := ReadIdentityFile(p); return err }},
		{"device", dev.String() + "\n", func(p string) error { _, err := ReadDeviceKeyFile(p); return err }},
	}
	for _, r := range readers {
		for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o644, 0o604, 0o660, 0o666} {
			t.Run(r.name+"/"+mode.String(), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), r.name+".key")
				if err := os.WriteFile(path, []byte(r.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				err := r.read(path)
				if mode&0o077 == 0 {
					if err != nil {
						t.Fatalf("mode %04o refused: %v", mode, err)
					}
					return
				}
				if err == nil {
					t.Fatalf("mode %04o accepted", mode)
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
					t.Errorf("error %q does not name the file and chmod 600", err)
				}
			})
		}
		t.Run(r.name+"/bad files", func(t *testing.T) {
			dir := t.TempDir()
			two := filepath.Join(dir, "two.key")
			os.WriteFile(two, []byte(r.content+r.content), 0o600)
			if err := r.read(two); err == nil || !strings.Contains(err.Error(), "exactly one key line") {
				t.Errorf("two key lines: %v", err)
			}
			empty := filepath.Join(dir, "empty.key")
			os.WriteFile(empty, []byte("# nothing\n"), 0o600)
			if err := r.read(empty); err == nil {
				t.Error("an empty key file was accepted")
			}
			sub := filepath.Join(dir, "sub")
			os.Mkdir(sub, 0o700)
			if err := r.read(sub); err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("directory: %v", err)
			}
			if err := r.read(filepath.Join(dir, "missing.key")); err == nil {
				t.Error("a missing key file was accepted")
			}
			garbage := filepath.Join(dir, "garbage.key")
			os.WriteFile(garbage, []byte("garbage\n"), 0o600)
			if err := r.read(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
				t.Errorf("garbage: %v", err)
			}
		})
	}
	t.Run("identity file with a device key", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "k")
		os.WriteFile(path, []byte(dev.String()), 0o600)
		if _, err := ReadIdentityFile(path); err == nil {
			t.Error("a device key was read as an identity")
		}
	})
}

func TestKeyFileLimits(t *testing.T) {
	id, err := GenerateIdentity(SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("# padding\n", 7000) + id.Recipient().String() + "\n"
	if _, err := ParseRecipients(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than 64 KiB") {
		t.Fatalf("oversized recipients file: err = %v", err)
	}
	// A non-canonical base64 tail (stray low bits) is not the same key.
	s := id.Recipient().String()
	last := s[len(s)-1]
	alt := map[byte]byte{'A': 'B', 'E': 'F', 'I': 'J', 'M': 'N', 'Q': 'R', 'U': 'V', 'Y': 'Z', 'c': 'd', 'g': 'h', 'k': 'l', 'o': 'p', 's': 't', 'w': 'x', '0': '1', '4': '5', '8': '9'}[last]
	if alt == 0 {
		t.Fatalf("last base64 digit %q of a 32-byte key must have two zero padding bits", last)
	}
	if _, err := ParseRecipient(s[:len(s)-1] + string(alt)); err == nil {
		t.Fatal("non-canonical base64 accepted")
	}
}

// A FIFO, a device or a socket given as a key file is refused at once
// (opened without blocking), a symlink to a good key file is followed, and
// ReadPrivateFile applies the same permission rule to any format.
func TestKeyFileKinds(t *testing.T) {
	dev := newDevice(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "device.key")
	if err := os.WriteFile(good, []byte(dev.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDeviceKeyFile(link); err != nil {
		t.Errorf("symlink to a good key file: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 3)
	go func() { _, err := ReadDeviceKeyFile(fifo); done <- err }()
	go func() { _, err := ReadRecipientsFile(fifo); done <- err }()
	go func() { _, err := ReadPrivateFile(fifo); done <- err }()
	for range 3 {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), fifo) {
				t.Errorf("FIFO: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("reading a FIFO as a key file blocked")
		}
	}
	if _, err := ReadPrivateFile("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("/dev/zero: %v", err)
	}
	pem := filepath.Join(dir, "server.key")
	os.WriteFile(pem, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o644)
	if _, err := ReadPrivateFile(pem); err == nil || !strings.Contains(err.Error(), "chmod 600 "+pem) {
		t.Errorf("0644 PEM key: %v", err)
	}
	os.Chmod(pem, 0o600)
	if _, err := ReadPrivateFile(pem); err != nil {
		t.Errorf("0600 PEM key: %v", err)
	}
	big := filepath.Join(dir, "big.key")
	os.WriteFile(big, make([]byte, 64<<10+1), 0o600)
	if _, err := ReadPrivateFile(big); err == nil || !strings.Contains(err.Error(), "64 KiB") {
		t.Errorf("oversized key file: %v", err)
	}
}
