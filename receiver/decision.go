package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/wire"
)

// DecideRequest is a teacher's decision to bring to a box: what the
// teacher decided (signed here with the token key), or, for tests and
// debugging, a statement signed already (Statement, sent as it is).
type DecideRequest struct {
	Teacher  string `json:"teacher,omitempty"`
	Request  string `json:"request,omitempty"`
	Decision string `json:"decision,omitempty"`
	Grant    string `json:"grant,omitempty"`
	// Talk, with accept and video_only, lets the viewer speak to the
	// teacher (talk-back) for the grant.
	Talk      bool   `json:"talk,omitempty"`
	Statement string `json:"statement,omitempty"`
	// Anonymise, with start_session, is the session's anonymisation mode
	// (off, whole, masks); empty: the box's default.
	Anonymise string `json:"anonymise,omitempty"`
}

// DecideAnswer is the box's answer to a decision.
type DecideAnswer struct {
	Device    string `json:"device"`
	Statement string `json:"statement"`
	// Status is the box's: 200 when it acted; 4xx when it refused
	// (Result.Reason and Error say why).
	Status int                 `json:"status"`
	Error  string              `json:"error,omitempty"`
	Result wire.DecisionResult `json:"result"`
}

// decisionWait bounds the wait for the box's answer (stopping a session
// waits for its last segment)
// (stays under the admin socket client's 30 s).
const decisionWait = 25 * time.Second

// Decide brings in's decision to device over its control connection and
// returns the box's answer. A decision to make here (in.Teacher) is
// refused unless the teacher's account is allowed device's room (`viewers
// allow`); it is signed with the token key for a minute. source is where
// the decision came from (the admin socket, a page's remote address), for
// the receiver's audit log (consent.decision). An error means nothing
// reached the box: a bad request (errBadAdminRequest) or the box offline
// (ErrOffline).
func (s *Server) Decide(ctx context.Context, device string, in DecideRequest, source string) (*DecideAnswer, error) {
	ans := &DecideAnswer{Device: device, Statement: in.Statement}
	by, what := "", "forwarded statement"
	if in.Statement == "" {
		ok, err := s.viewers.RoomAllowed(in.Teacher, device)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: %q is not an account allowed room %s (uploadbox-receiver viewers allow %s %s)", errBadAdminRequest, in.Teacher, device, in.Teacher, device)
		}
		st, d, err := wire.MintDecisionOf(s.tokenKey, wire.Decision{Teacher: in.Teacher, Device: device, Request: in.Request, Decision: in.Decision, Grant: in.Grant, Talk: in.Talk, Anonymise: in.Anonymise}, time.Now(), time.Minute)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadAdminRequest, err)
		}
		ans.Statement = st
		by, what = "teacher:"+in.Teacher, fmt.Sprintf("decision=%s request=%s grant=%s nonce=%s", d.Decision, d.Request, d.Grant, d.Nonce)
		if d.Talk {
			what += " talk=true"
		}
	}
	if in.Statement == "" && in.Anonymise != "" {
		what += " anonymise=" + in.Anonymise // signed into the statement as it is
	}
	ctx, cancel := context.WithTimeout(ctx, decisionWait)
	defer cancel()
	resp, err := s.hub.Request(ctx, device, wire.OpDecision, wire.DecisionParams{Statement: ans.Statement})
	if err != nil {
		s.auditDecision(device, source, by, "failed", what+": "+err.Error())
		return nil, err
	}
	ans.Status, ans.Error = resp.Status, resp.Error
	if len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, &ans.Result); err != nil {
			return nil, fmt.Errorf("the box's answer to the decision: %w", err)
		}
	}
	outcome := "ok"
	if resp.Status != http.StatusOK {
		outcome = "refused"
		what += fmt.Sprintf(": the box refused it (%d %s): %s", resp.Status, ans.Result.Reason, resp.Error)
	}
	s.auditDecision(device, source, by, outcome, what)
	return ans, nil
}

func (s *Server) auditDecision(device, source, by, outcome, detail string) {
	if len(detail) > 512 {
		detail = detail[:512]
	}
	if _, err := s.audit.Append(audit.Entry{Event: "consent.decision", Identity: device, Source: source, By: by, Outcome: outcome, Detail: detail}); err != nil {
		s.log.Error("audit", "event", "consent.decision", "err", err)
	}
}

// readDecide decodes an admin socket's decision body.
func readDecide(r *http.Request) (DecideRequest, error) {
	var in DecideRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, fmt.Errorf("%w: decision body: %v", errBadAdminRequest, err)
	}
	if (in.Statement == "") == (in.Teacher == "") {
		return in, fmt.Errorf("%w: give either a teacher and a decision, or a statement", errBadAdminRequest)
	}
	return in, nil
}

// errNotServing is Decide through an Admin that opened the database itself.
var errNotServing = errors.New("the receiver is not running here: a decision reaches the box over its control connection, so start uploadbox-receiver serve")

// Decide is refused without a running server (the admin socket's route
// calls Server.Decide).
func (a *localAdmin) Decide(string, DecideRequest) (*DecideAnswer, error) { return nil, errNotServing }

func (a *socketAdmin) Decide(device string, in DecideRequest) (*DecideAnswer, error) {
	var ans DecideAnswer
	return &ans, a.do("POST", "/devices/"+url.PathEscape(device)+"/decision", in, &ans, devices.ErrUnknownDevice, devices.ErrExists)
}
