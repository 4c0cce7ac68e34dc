package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/wire"
)

// DecisionSource is the source the audit log names for a teacher's
// decision that came signed over the control connection.
const DecisionSource = "receiver"

// decisionRefusal is a decision the box does not act on.
type decisionRefusal struct {
	status int
	reason string // a wire.Decision* reason
	err    error
}

func refuse(status int, reason string, err error) *decisionRefusal {
	return &decisionRefusal{status: status, reason: reason, err: err}
}

// serveDecision answers wire.OpDecision: a teacher's decision signed by
// the receiver. It acts only on a statement that verifies with token.pub,
// names this box, is fresh and was never used, and only while
// consent.remote_decisions is on; the teacher is named in the audit chain
// (teacher:NAME). Every refusal is audited too (consent.decision).
func (a *Agent) serveDecision(params json.RawMessage) wire.Response {
	d, res, ref := a.decide(params, time.Now())
	if ref != nil {
		by := ""
		if d.Teacher != "" { // only set once the signature verified
			by = consent.ByTeacher(d.Teacher)
		}
		detail := fmt.Sprintf("reason=%s decision=%s request=%s: %v", ref.reason, d.Decision, d.Request, ref.err)
		if len(detail) > 512 {
			detail = detail[:512]
		}
		if _, err := a.audit.Append(audit.Entry{Event: "consent.decision", Source: DecisionSource, By: by, Outcome: "refused", Detail: detail}); err != nil {
			a.log.Error("audit of a refused decision failed", "err", err)
		}
		a.log.Warn("teacher's decision refused", "reason", ref.reason, "teacher", d.Teacher, "decision", d.Decision, "err", ref.err)
		res.Decision, res.Request, res.Reason = d.Decision, d.Request, ref.reason
		return decisionResponse(ref.status, ref.err.Error(), res)
	}
	a.log.Info("teacher's decision", "teacher", d.Teacher, "decision", d.Decision, "request", d.Request)
	return decisionResponse(http.StatusOK, "", res)
}

func decisionResponse(status int, msg string, res wire.DecisionResult) wire.Response {
	b, err := json.Marshal(res)
	if err != nil {
		return wire.Response{Status: http.StatusInternalServerError, Error: err.Error()}
	}
	return wire.Response{Status: status, Error: msg, Result: b}
}

// decide checks the statement in params and acts on it. The Decision it
// returns is empty unless the signature verified.
func (a *Agent) decide(params json.RawMessage, now time.Time) (wire.Decision, wire.DecisionResult, *decisionRefusal) {
	var res wire.DecisionResult
	var p wire.DecisionParams
	if err := json.Unmarshal(params, &p); err != nil {
		return wire.Decision{}, res, refuse(http.StatusBadRequest, wire.DecisionMalformed, fmt.Errorf("malformed decision params: %v", err))
	}
	cfg := a.Config()
	st, err := a.enrolled()
	if err != nil {
		return wire.Decision{}, res, refuse(http.StatusForbidden, wire.DecisionForged, err)
	}
	pub, err := viewtoken.ReadPublicKeyFile(filepath.Join(cfg.StateDir, viewtoken.ReceiverKeyFile))
	if err != nil {
		return wire.Decision{}, res, refuse(http.StatusForbidden, wire.DecisionForged, explainUnreadable(cfg.StateDir, err))
	}
	d, err := wire.VerifyDecision(pub, p.Statement, now)
	switch {
	case errors.Is(err, wire.ErrDecisionForged):
		return wire.Decision{}, res, refuse(http.StatusForbidden, wire.DecisionForged, err)
	case errors.Is(err, wire.ErrDecisionStale):
		return wire.Decision{}, res, refuse(http.StatusForbidden, wire.DecisionStale, err)
	case err != nil:
		return wire.Decision{}, res, refuse(http.StatusBadRequest, wire.DecisionMalformed, err)
	}
	device := ""
	if st.DeviceCert.Leaf != nil {
		device = st.DeviceCert.Leaf.Subject.CommonName
	}
	if d.Device != device {
		return d, res, refuse(http.StatusForbidden, wire.DecisionWrongDevice, fmt.Errorf("the statement is for device %q, this box is %q", d.Device, device))
	}
	if !cfg.RemoteDecisionsOn() {
		return d, res, refuse(http.StatusForbidden, wire.DecisionRemoteOff, errors.New("remote decisions are off on this box (consent.remote_decisions): decide on the box"))
	}
	if err := a.ledger.UseNonce(d.Nonce, d.ForgetAfter()); err != nil {
		if errors.Is(err, consent.ErrReplayed) {
			return d, res, refuse(http.StatusForbidden, wire.DecisionReplayed, err)
		}
		return d, res, refuse(http.StatusServiceUnavailable, wire.DecisionRefused, err)
	}
	defer a.updateIndicator()
	return d, res, a.act(d, &res)
}

// act carries out a verified decision, by the teacher who made it.
func (a *Agent) act(d wire.Decision, res *wire.DecisionResult) *decisionRefusal {
	by := consent.ByTeacher(d.Teacher)
	res.Decision, res.Request = d.Decision, d.Request
	var err error
	switch d.Decision {
	case wire.DecisionAccept, wire.DecisionVideoOnly:
		ttl, lesson, gerr := d.GrantLength()
		if gerr != nil {
			return refuse(http.StatusBadRequest, wire.DecisionMalformed, gerr)
		}
		if lesson {
			ttl = consent.UntilSessionEnd
		}
		var g consent.Grant
		terms := consent.Terms{TTL: ttl, NoAudio: d.Decision == wire.DecisionVideoOnly, Talk: d.Talk}
		if g, err = a.ledger.AcceptWith(d.Request, terms, by); err == nil {
			res.Viewer, res.State, res.Expires, res.Audio, res.Talk = g.Viewer, consent.StateAccepted, g.Expires, g.Audio, g.Talk
		}
	case wire.DecisionDecline:
		if err = a.ledger.Deny(d.Request, by); err == nil {
			var r consent.Request
			r, err = a.ledger.Get(d.Request)
			res.Viewer, res.State = r.Viewer, r.State
		}
	case wire.DecisionEndAll:
		res.Ended, err = a.ledger.EndAllViewing(by)
	case wire.DecisionStartSession:
		_, err = a.startSession(0, anon.Mode(d.Anonymise), by)
	case wire.DecisionStopSession:
		err = a.stopSession(StopStopped, by)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, consent.ErrUnknownRequest):
		return refuse(http.StatusNotFound, wire.DecisionUnknownRequest, err)
	case errors.Is(err, consent.ErrNotPending):
		return refuse(http.StatusConflict, wire.DecisionNotPending, err)
	}
	return refuse(http.StatusConflict, wire.DecisionRefused, err)
}
