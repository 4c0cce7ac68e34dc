package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// certSerial is the serial of the device certificate in a state directory.
func certSerial(t *testing.T, state string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(state, "device.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s/device.crt is not PEM", state)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// registrySerial is the certificate serial `devices list` shows for name.
func registrySerial(t *testing.T, data, name string) string {
	t.Helper()
	var ds []struct {
		Name       string `json:"name"`
		CertSerial string `json:"cert_serial"`
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "list", "--data", data, "--json")), &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d.CertSerial
		}
	}
	t.Fatalf("devices list has no %s", name)
	return ""
}

// rekeyBox stops the daemon, gets a token for a new key from `devices
// rekey`, enrolls the box with a new key in a fresh state directory at the
// same path (the old one moved aside, as docs/receiver.md says) and
// starts the daemon again.
func rekeyBox(t *testing.T, b enrolled, d boxDirs, p *daemonProc, aside string) *daemonProc {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	var tok struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "rekey", "room-7", "--data", b.rcv.data, "--json")), &tok); err != nil || tok.Token == "" {
		t.Fatalf("devices rekey --json: %v", err)
	}
	if err := os.Rename(b.state, aside); err != nil {
		t.Fatal(err)
	}
	run(t, "uploadbox", "enroll", "--receiver", "https://"+b.rcv.addr, "--token", tok.Token, "--ca-fingerprint", tok.CAFingerprint, "--state", b.state)
	return startDaemon(t, d)
}

// TestRenewAndRekey is issue 14's observation 2 through the real
// binaries. Device certificates live 20 s (serve --device-cert-ttl): the
// daemon renews its own over mutual TLS while it records and uploads, with
// no refusal and no pause, and picks up one renewed by hand (enroll
// --renew). Re-keyed (devices rekey, a new key under the same name), the
// box uploads the segments still queued under its old key and those of
// the new one: all accepted (before, the old ones were refused as signed
// by another device and blocked the queue). After devices revoke
// --compromised, a segment signed later by that key is refused for good
// and lands in the box's quarantine, and the segments after it upload.
func TestRenewAndRekey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBoxWith(t, dir, []string{"--device-cert-ttl", "20s"}, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	first := certSerial(t, b.state)
	p := startDaemon(t, d)

	// Renewal during a recording: the first falls due 13 s after enrollment.
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "24s")
	waitAudit(t, d.audit, "cert.renew", 1)
	renewed := certSerial(t, b.state)
	if renewed == first {
		t.Fatal("device.crt still holds the enrollment certificate after cert.renew")
	}
	st = waitSessionEnd(t, d, 60*time.Second)
	waitDrained(t, d, 60*time.Second)
	rs := recordingsByID(t, b.rcv.data)
	if r, ok := rs[st.Recording]; !ok || r.Segments != st.Segments || !r.Complete {
		t.Fatalf("recording across the renewal: receiver has %+v, want %d segments, complete", r, st.Segments)
	}
	for _, e := range auditEvents(t, d.audit, "cert.renew") {
		if e.Outcome != "ok" {
			t.Errorf("renewal audited %s: %s", e.Outcome, e.Detail)
		}
	}
	metricAt(t, d, "uploadbox_upload_device_refused", 0)
	if log := p.log(); strings.Contains(log, "refused") || strings.Contains(log, "retrying") {
		t.Errorf("the daemon logged a refusal or a retry around the renewal:\n%s", log)
	}

	// By hand, while the daemon runs: the daemon adopts it.
	out := run(t, "uploadbox", "enroll", "--renew", "--state", b.state)
	if !strings.Contains(out, "renewed the certificate of room-7") {
		t.Fatalf("enroll --renew printed %q", out)
	}
	byHand := certSerial(t, b.state)
	if registrySerial(t, b.rcv.data, "room-7") != byHand {
		t.Fatal("devices list does not show the certificate renewed by hand")
	}
	cpWait(t, 30*time.Second, "the daemon picks up the certificate renewed by hand", func() bool {
		return strings.Contains(p.log(), "device certificate renewed by hand picked up")
	})

	// Re-key with segments of the old key still queued: record while the
	// receiver already refuses the old key's certificate.
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", b.rcv.data)
	old := recordSession(t, d, "4s")
	p = rekeyBox(t, b, d, p, filepath.Join(dir, "state-key1"))
	fresh := recordSession(t, d, "4s")
	waitDrained(t, d, 60*time.Second)
	rs = recordingsByID(t, b.rcv.data)
	for _, s := range []sessionStatus{old, fresh} {
		if r, ok := rs[s.Recording]; !ok || r.Segments != s.Segments || !r.Complete {
			t.Fatalf("after the re-key, recording %s: receiver has %+v, want %d segments, complete", s.Recording, r, s.Segments)
		}
	}

	// Compromised: segments the second key seals after the revocation are
	// refused for good and quarantined; the new key's upload.
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--compromised", "--data", b.rcv.data)
	late := recordSession(t, d, "4s")
	p = rekeyBox(t, b, d, p, filepath.Join(dir, "state-key2"))
	after := recordSession(t, d, "4s")
	q := waitQueue(t, d, 60*time.Second, "the compromised key's segments are quarantined", func(q queueHeld) bool {
		return q.Count == late.Segments && q.ByState["quarantined"] == late.Segments
	})
	for _, h := range q.Held {
		if h.Reason != "key-compromised" || h.Status != 403 || !strings.HasPrefix(h.ID, late.Recording) {
			t.Errorf("held segment %+v, want recording %s refused 403 key-compromised", h, late.Recording)
		}
	}
	rs = recordingsByID(t, b.rcv.data)
	if r, ok := rs[late.Recording]; ok {
		t.Errorf("the receiver stored %d segments signed by the compromised key after its revocation", r.Segments)
	}
	if r, ok := rs[after.Recording]; !ok || r.Segments != after.Segments || !r.Complete {
		t.Fatalf("after the compromised key, recording %s: receiver has %+v, want %d segments, complete", after.Recording, r, after.Segments)
	}

	// remove frees the name, only once the device is revoked.
	if msg := runFails(t, "uploadbox-receiver", "devices", "remove", "room-7", "--data", b.rcv.data); !strings.Contains(msg, "revoke it first") {
		t.Errorf("remove of an active device: %q, want the advice to revoke it first", msg)
	}
	runFails(t, "uploadbox-receiver", "devices", "add", "room-7", "--data", b.rcv.data)
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", b.rcv.data)
	if out := run(t, "uploadbox-receiver", "devices", "remove", "room-7", "--data", b.rcv.data); !strings.Contains(out, "removed") {
		t.Errorf("devices remove printed %q", out)
	}
	run(t, "uploadbox-receiver", "devices", "add", "room-7", "--data", b.rcv.data)
}

// recordingsByID is `recordings list --json` by recording id.
func recordingsByID(t *testing.T, data string) map[string]recordingInfo {
	t.Helper()
	out := map[string]recordingInfo{}
	for _, r := range recordings(t, data) {
		out[r.ID] = r
	}
	return out
}
