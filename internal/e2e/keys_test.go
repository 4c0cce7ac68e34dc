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

// rekeyBox re-keys the box of d as docs/daemon.md "Re-keying the box" tells
// an administrator, as root: stop the daemon, get a token for a new key
// from `devices rekey`, move the state directory aside (to aside), enroll
// with that token (the state directory from the daemon's config, made
// again as the daemon's user's) and start the daemon again as that user.
func rekeyBox(t *testing.T, rcv *receiverProc, d boxDirs, p *daemonProc, aside string) *daemonProc {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	tok := run(t, "uploadbox-receiver", "devices", "rekey", "room-7", "--data", rcv.data, "--json")
	if err := os.Rename(d.state, aside); err != nil {
		t.Fatal(err)
	}
	enrollAsAdmin(t, rcv, d, tok)
	wantServiceOwned(t, d.state)
	return startDaemonAs(t, d)
}

// TestRenewAndRekey is issue 14's observation 2 through the real
// binaries, on a box set up as an administrator would: enrolled as root
// with `uploadbox enroll --config` into the state directory of the daemon,
// which runs as an unprivileged user (uid 65534) that owns it. Device
// certificates live 20 s (serve --device-cert-ttl): the daemon renews its
// own over mutual TLS while it records and uploads, with no refusal and no
// pause, and picks up one renewed by hand as root (enroll --renew
// --config), which leaves device.crt the daemon user's. Re-keyed (devices
// rekey, a new key under the same name; on the box, as root: state
// directory moved aside, enroll again), the box uploads the segments still
// queued under its old key and those of the new one: all accepted
// (before, the old ones were refused as signed by another device and
// blocked the queue). After devices revoke --compromised, a segment signed
// later by that key is refused for good and lands in the box's quarantine,
// and the segments after it upload.
func TestRenewAndRekey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir, lb := serviceBox(t)
	d := lb.boxDirs
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0", "--device-cert-ttl", "20s")
	enrollWithConfig(t, rcv, "room-7", d)
	wantServiceOwned(t, d.state)
	first := certSerial(t, d.state)
	p := startDaemonAs(t, d)

	// Renewal during a recording: the first falls due 13 s after enrollment.
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "24s")
	waitAudit(t, d.audit, "cert.renew", 1)
	renewed := certSerial(t, d.state)
	if renewed == first {
		t.Fatal("device.crt still holds the enrollment certificate after cert.renew")
	}
	st = waitSessionEnd(t, d, 60*time.Second)
	waitDrained(t, d, 60*time.Second)
	rs := recordingsByID(t, rcv.data)
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

	// By hand as root, while the daemon runs: enroll --renew finds the
	// state directory and the user as enroll does, and the daemon adopts
	// the certificate.
	out := run(t, "uploadbox", "enroll", "--renew", "--config", d.config)
	crt := filepath.Join(d.state, "device.crt")
	if !strings.Contains(out, "renewed the certificate of room-7") || !strings.Contains(out, crt+" owner nobody") {
		t.Fatalf("enroll --renew printed %q", out)
	}
	if uid, mode := statOwner(t, crt); uid != serviceUID || mode != 0o600 {
		t.Errorf("after enroll --renew as root, device.crt has owner uid %d mode %04o, want uid %d mode 0600", uid, mode, serviceUID)
	}
	byHand := certSerial(t, d.state)
	if registrySerial(t, rcv.data, "room-7") != byHand {
		t.Fatal("devices list does not show the certificate renewed by hand")
	}
	cpWait(t, 30*time.Second, "the daemon picks up the certificate renewed by hand", func() bool {
		return strings.Contains(p.log(), "device certificate renewed by hand picked up")
	})

	// Re-key with segments of the old key still queued: record while the
	// receiver already refuses the old key's certificate.
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", rcv.data)
	old := recordSession(t, d, "4s")
	p = rekeyBox(t, rcv, d, p, d.state+".key1")
	fresh := recordSession(t, d, "4s")
	waitDrained(t, d, 60*time.Second)
	rs = recordingsByID(t, rcv.data)
	for _, s := range []sessionStatus{old, fresh} {
		if r, ok := rs[s.Recording]; !ok || r.Segments != s.Segments || !r.Complete {
			t.Fatalf("after the re-key, recording %s: receiver has %+v, want %d segments, complete", s.Recording, r, s.Segments)
		}
	}

	// Compromised: segments the second key seals after the revocation are
	// refused for good and quarantined; the new key's upload.
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--compromised", "--data", rcv.data)
	late := recordSession(t, d, "4s")
	p = rekeyBox(t, rcv, d, p, d.state+".key2")
	after := recordSession(t, d, "4s")
	q := waitQueue(t, d, 60*time.Second, "the compromised key's segments are quarantined", func(q queueHeld) bool {
		return q.Count == late.Segments && q.ByState["quarantined"] == late.Segments
	})
	for _, h := range q.Held {
		if h.Reason != "key-compromised" || h.Status != 403 || !strings.HasPrefix(h.ID, late.Recording) {
			t.Errorf("held segment %+v, want recording %s refused 403 key-compromised", h, late.Recording)
		}
	}
	rs = recordingsByID(t, rcv.data)
	if r, ok := rs[late.Recording]; ok {
		t.Errorf("the receiver stored %d segments signed by the compromised key after its revocation", r.Segments)
	}
	if r, ok := rs[after.Recording]; !ok || r.Segments != after.Segments || !r.Complete {
		t.Fatalf("after the compromised key, recording %s: receiver has %+v, want %d segments, complete", after.Recording, r, after.Segments)
	}

	// remove frees the name, only once the device is revoked.
	if msg := runFails(t, "uploadbox-receiver", "devices", "remove", "room-7", "--data", rcv.data); !strings.Contains(msg, "revoke it first") {
		t.Errorf("remove of an active device: %q, want the advice to revoke it first", msg)
	}
	runFails(t, "uploadbox-receiver", "devices", "add", "room-7", "--data", rcv.data)
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", rcv.data)
	if out := run(t, "uploadbox-receiver", "devices", "remove", "room-7", "--data", rcv.data); !strings.Contains(out, "removed") {
		t.Errorf("devices remove printed %q", out)
	}
	run(t, "uploadbox-receiver", "devices", "add", "room-7", "--data", rcv.data)
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
