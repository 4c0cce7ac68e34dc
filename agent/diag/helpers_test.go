package diag

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// box is a test box: a config file, a state directory enrolled with ca,
// and the fakes a run uses.
type box struct {
	dir    string
	config string
	state  string
	spool  string
	audit  string
	ca     *pki.CA
	stderr bytes.Buffer

	mu      sync.Mutex
	tools   map[string]string // "name arg…" → output; absent: not installed
	entries []audit.Entry
}

// newBox writes a config with the given extra YAML (after the paths) and
// an empty spool directory. The box is not enrolled until enroll.
func newBox(t *testing.T, extra string) *box {
	t.Helper()
	b := &box{dir: t.TempDir(), tools: map[string]string{}}
	b.state = filepath.Join(b.dir, "state")
	b.spool = filepath.Join(b.dir, "spool")
	b.audit = filepath.Join(b.dir, "audit.jsonl")
	b.config = filepath.Join(b.dir, "uploadbox.yaml")
	if err := os.Mkdir(b.spool, 0o700); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("state_dir: %s\nruntime_dir: %s\nspool:\n  dir: %s\naudit:\n  path: %s\n%s",
		b.state, filepath.Join(b.dir, "run"), b.spool, b.audit, extra)
	if err := os.WriteFile(b.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// enroll writes a complete state directory for a receiver at url, with a
// device certificate issued at certTime by a fresh CA.
func (b *box) enroll(t *testing.T, url string, certTime time.Time) {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b.ca = ca
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueDevice("box-1", ed25519.PublicKey(dev.Public().Bytes()), certTime)
	if err != nil {
		t.Fatal(err)
	}
	org, err := crypto.GenerateIdentity(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	receipt, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(b.state, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"receiver":    url + "\n",
		"device.key":  dev.String() + "\n",
		"device.crt":  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ca.crt":      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})),
		"receipt.pub": base64.StdEncoding.EncodeToString(receipt) + "\n",
		"org.pub":     org.Recipient().String() + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(b.state, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// serverCert issues a receiver certificate from the box's CA.
func (b *box) serverCert(t *testing.T, hosts []string, now time.Time) tls.Certificate {
	t.Helper()
	c, err := b.ca.IssueServer(hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *box) tool(cmd, out string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tools[cmd] = out
}

// options are the Options of a run of this box: fast timeouts, fake
// tools (none installed unless set), audit entries collected.
func (b *box) options(check string) Options {
	return Options{
		ConfigPath: b.config,
		Env:        []string{},
		Check:      check,
		Stderr:     &b.stderr,
		Command: func(_ context.Context, name string, args ...string) (string, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			out, ok := b.tools[strings.Join(append([]string{name}, args...), " ")]
			if !ok {
				return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
			}
			return out, nil
		},
		Audit: func(_ context.Context, e audit.Entry) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.entries = append(b.entries, e)
			return nil
		},
		StageTimeout: 500 * time.Millisecond,
		VideoTime:    500 * time.Millisecond,
		AudioTime:    300 * time.Millisecond,
	}
}

// result finds the named check in r.
func result(t *testing.T, r Report, name string) Result {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s check in the report: %+v", name, r.Checks)
	return Result{}
}
