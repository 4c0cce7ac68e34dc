package pki

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/wire"
)

func TestSameNames(t *testing.T) {
	ca, err := NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueServer([]string{"Receiver.Example", "10.0.0.1", "::1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		hosts []string
		same  bool
	}{
		{"same order", []string{"Receiver.Example", "10.0.0.1", "::1"}, true},
		{"other order and case", []string{"0:0:0:0:0:0:0:1", "10.0.0.1", "receiver.example"}, true},
		{"given twice", []string{"receiver.example", "receiver.example", "10.0.0.1", "::1"}, true},
		{"one missing", []string{"receiver.example", "10.0.0.1"}, false},
		{"one more", []string{"receiver.example", "10.0.0.1", "::1", "localhost"}, false},
		{"another", []string{"other.example", "10.0.0.1", "::1"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := SameNames(c.Leaf, tt.hosts); got != tt.same {
				t.Errorf("SameNames(%v) = %v, want %v", tt.hosts, got, tt.same)
			}
		})
	}
}

// A reissue keeps the previous pair as .old (key 0600) and the new pair
// loads as the server certificate, from the same CA.
func TestReissueServer(t *testing.T) {
	dir := t.TempDir()
	ca, first, _, err := LoadOrCreate(dir, []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.ReissueServer(dir, []string{"receiver.example", "192.0.2.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, loaded, created, err := LoadOrCreate(dir, []string{"ignored"}, time.Now())
	if err != nil || created {
		t.Fatalf("load after reissue: created=%v err=%v", created, err)
	}
	if !loaded.Leaf.Equal(c.Leaf) || !SameNames(loaded.Leaf, []string{"192.0.2.1", "receiver.example"}) {
		t.Fatalf("loaded %v, want the reissued certificate", Names(loaded.Leaf))
	}
	if err := loaded.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("the reissued certificate is not signed by the CA: %v", err)
	}
	old, err := wire.LoadKeyPair(filepath.Join(dir, ServerCertFile+OldSuffix), filepath.Join(dir, ServerKeyFile+OldSuffix))
	if err != nil {
		t.Fatalf("the kept pair: %v", err)
	}
	if !old.Leaf.Equal(first.Leaf) {
		t.Fatal("server.crt.old is not the first certificate")
	}
	if st, err := os.Stat(filepath.Join(dir, ServerKeyFile+OldSuffix)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("server.key.old: %v %v, want mode 0600", st.Mode().Perm(), err)
	}
}

func TestCheckHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"receiver.school.example", true}, {"Receiver-1.example.", true}, {"localhost", true},
		{"192.0.2.10", true}, {"2001:db8::1", true},
		{"", false}, {"bad name", false}, {"a..b", false}, {"-a.example", false}, {"a_b.example", false}, {"https://x", false},
	} {
		if err := CheckHost(tt.host); (err == nil) != tt.ok {
			t.Errorf("CheckHost(%q) = %v, want ok %v", tt.host, err, tt.ok)
		}
	}
}
