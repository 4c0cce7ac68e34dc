package agent

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/wire"
)

// decisionRig is an agent with what decisions need: an enrolled state
// naming the device, the receiver's token key in token.pub, a ledger and
// its audit log.
type decisionRig struct {
	a         *Agent
	key       ed25519.PrivateKey
	auditPath string
}

func newDecisionRig(t *testing.T, remote bool) *decisionRig {
	t.Helper()
	dir := t.TempDir()
	pub, key, _ := ed25519.GenerateKey(nil)
	if err := os.WriteFile(filepath.Join(dir, viewtoken.ReceiverKeyFile), []byte(viewtoken.FormatPublicKey(pub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Consent.RemoteDecisions = &remote
	r := &decisionRig{key: key, auditPath: filepath.Join(dir, "audit.jsonl")}
	log, err := audit.Open(r.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := consent.Open(filepath.Join(dir, "consent.db"), consent.Options{Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	st := &uploader.State{DeviceCert: tls.Certificate{Leaf: &x509.Certificate{Subject: pkix.Name{CommonName: "room-7"}}}}
	r.a = &Agent{log: slog.New(slog.DiscardHandler), audit: log, cfg: cfg, state: st, ledger: l}
	return r
}

func (r *decisionRig) send(t *testing.T, statement string) (wire.Response, wire.DecisionResult) {
	t.Helper()
	p, _ := json.Marshal(wire.DecisionParams{Statement: statement})
	resp := r.a.serveRequest(t.Context(), wire.OpDecision, p)
	var res wire.DecisionResult
	if err := json.Unmarshal(resp.Result, &res); err != nil {
		t.Fatalf("response %+v: %v", resp, err)
	}
	return resp, res
}

func (r *decisionRig) mint(t *testing.T, device, request, decision, grant string) string {
	t.Helper()
	s, _, err := wire.MintDecision(r.key, "tess", device, request, decision, grant, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refusals returns the consent.decision entries of the audit log.
func (r *decisionRig) refusals(t *testing.T) []audit.Entry {
	t.Helper()
	es, err := audit.Tail(r.auditPath, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range es {
		if e.Event == "consent.decision" {
			out = append(out, e)
		}
	}
	return out
}

func pendingOf(t *testing.T, l *consent.Ledger, viewer string) string {
	t.Helper()
	_, err := l.Ask(viewer, true)
	var d *consent.Denied
	if !errors.As(err, &d) || d.Reason != consent.ReasonPending {
		t.Fatalf("Ask(%s): %v, want pending", viewer, err)
	}
	return d.Request
}

// TestDecisionStatements: a teacher's signed decision is acted on once,
// in the teacher's name; forged, replayed, stale, other boxes', malformed
// ones and viewer tokens are refused and audited.
func TestDecisionStatements(t *testing.T) {
	r := newDecisionRig(t, true)
	l := r.a.ledger
	l.SessionStarted(time.Now().Add(time.Hour))
	reqA := pendingOf(t, l, "coach-a")

	good := r.mint(t, "room-7", reqA, wire.DecisionVideoOnly, "15m")
	resp, res := r.send(t, good)
	if resp.Status != http.StatusOK || res.Viewer != "coach-a" || res.State != consent.StateAccepted || res.Audio ||
		time.Until(res.Expires) > 15*time.Minute || time.Until(res.Expires) < 14*time.Minute {
		t.Fatalf("accept: %+v %+v", resp, res)
	}
	if g, err := l.Ask("coach-a", true); err != nil || g.Audio {
		t.Fatalf("coach-a after a video-only accept: %+v, %v", g, err)
	}

	_, other, _ := ed25519.GenerateKey(nil)
	forged, _, _ := wire.MintDecision(other, "tess", "room-7", reqA, wire.DecisionAccept, "", time.Now(), 0)
	stale, _, _ := wire.MintDecision(r.key, "tess", "room-7", reqA, wire.DecisionAccept, "", time.Now().Add(-5*time.Minute), 0)
	token, _ := viewtoken.Mint(r.key, viewtoken.IssuerReceiver, "tess", time.Hour, time.Now())
	tests := []struct {
		name, statement, reason string
		status                  int
		by                      string // who the refusal names: only a teacher whose signature verified
	}{
		{"replayed", good, wire.DecisionReplayed, http.StatusForbidden, "teacher:tess"},
		{"forged", forged, wire.DecisionForged, http.StatusForbidden, ""},
		{"stale", stale, wire.DecisionStale, http.StatusForbidden, ""},
		{"other box", r.mint(t, "room-8", reqA, wire.DecisionDecline, ""), wire.DecisionWrongDevice, http.StatusForbidden, "teacher:tess"},
		{"viewer token", token, wire.DecisionMalformed, http.StatusBadRequest, ""},
		{"unknown request", r.mint(t, "room-7", "00000000000000ff", wire.DecisionDecline, ""), wire.DecisionUnknownRequest, http.StatusNotFound, "teacher:tess"},
		{"decided already", r.mint(t, "room-7", reqA, wire.DecisionDecline, ""), wire.DecisionNotPending, http.StatusConflict, "teacher:tess"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.refusals(t))
			resp, res := r.send(t, tt.statement)
			if resp.Status != tt.status || res.Reason != tt.reason || resp.Error == "" {
				t.Fatalf("HTTP %d reason %q (%s), want %d %s", resp.Status, res.Reason, resp.Error, tt.status, tt.reason)
			}
			es := r.refusals(t)
			if len(es) != before+1 {
				t.Fatalf("%d refusals audited, want %d", len(es), before+1)
			}
			e := es[len(es)-1]
			if e.Outcome != "refused" || e.By != tt.by || e.Source != DecisionSource || !strings.Contains(e.Detail, "reason="+tt.reason) {
				t.Fatalf("audited %+v", e)
			}
		})
	}
	// None of them changed coach-a's grant.
	if g, err := l.Ask("coach-a", true); err != nil || g.Audio {
		t.Fatalf("coach-a after the refusals: %+v, %v", g, err)
	}

	// Decline, then end all: attributed to the teacher.
	reqB := pendingOf(t, l, "coach-b")
	if resp, res := r.send(t, r.mint(t, "room-7", reqB, wire.DecisionDecline, "")); resp.Status != http.StatusOK || res.State != consent.StateDenied {
		t.Fatalf("decline: %+v %+v", resp, res)
	}
	if resp, res := r.send(t, r.mint(t, "room-7", "", wire.DecisionEndAll, "")); resp.Status != http.StatusOK || res.Ended != 1 {
		t.Fatalf("end all: %+v %+v", resp, res)
	}
	for v, reason := range map[string]string{"coach-a": consent.ReasonEnded, "coach-b": consent.ReasonDeclined} {
		var d *consent.Denied
		if _, err := l.Ask(v, true); !errors.As(err, &d) || d.Reason != reason {
			t.Fatalf("Ask(%s) = %v, want %s", v, err, reason)
		}
	}
	// The teacher invites coach-b after all: accepting the declined
	// request, until the lesson ends.
	resp, res = r.send(t, r.mint(t, "room-7", reqB, wire.DecisionAccept, wire.GrantLesson))
	if resp.Status != http.StatusOK || !res.Audio || time.Until(res.Expires) < 59*time.Minute {
		t.Fatalf("accept until the lesson ends: %+v %+v", resp, res)
	}
	es, _ := audit.Tail(r.auditPath, 0)
	var by []string
	for _, e := range es {
		if e.Event == "consent.accept" || e.Event == "consent.deny" || e.Event == "consent.end_all" {
			by = append(by, e.Event+" "+e.Identity+" "+e.By)
		}
	}
	want := "consent.accept coach-a teacher:tess\nconsent.deny coach-b teacher:tess\nconsent.end_all coach-a teacher:tess\nconsent.accept coach-b teacher:tess"
	if strings.Join(by, "\n") != want {
		t.Fatalf("decisions audited:\n%s\nwant:\n%s", strings.Join(by, "\n"), want)
	}
}

// With consent.remote_decisions off the box refuses every statement,
// well-signed or not, and audits it.
func TestDecisionRemoteOff(t *testing.T) {
	r := newDecisionRig(t, false)
	l := r.a.ledger
	l.SessionStarted(time.Now().Add(time.Hour))
	id := pendingOf(t, l, "coach-a")
	resp, res := r.send(t, r.mint(t, "room-7", id, wire.DecisionAccept, ""))
	if resp.Status != http.StatusForbidden || res.Reason != wire.DecisionRemoteOff || !strings.Contains(resp.Error, "remote decisions are off on this box") {
		t.Fatalf("remote off: %+v %+v", resp, res)
	}
	if q, _ := l.Get(id); q.State != consent.StatePending {
		t.Fatalf("request %s is %s after a refused decision", id, q.State)
	}
	if es := r.refusals(t); len(es) != 1 || es[0].By != "teacher:tess" || !strings.Contains(es[0].Detail, "reason=remote-off") {
		t.Fatalf("audited %+v", es)
	}
}
