package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/viewers"
	"github.com/uploadbox/uploadbox/wire"
)

// TeacherPing is how often an idle teacher's event stream sends a comment,
// so that proxies keep it open and the page notices a dead one.
const TeacherPing = 15 * time.Second

// teacherWrite bounds writing one event to a teacher's stream: a client
// that reads nothing for this long loses its stream.
const teacherWrite = 10 * time.Second

// teacherRoutes adds the teacher's endpoints. The event stream is
// long-lived: not bounded by the request timeout (its pings and the
// token's expiry bound it instead).
func (s *Server) teacherRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/teacher/rooms", s.bounded(http.HandlerFunc(s.handleTeacherRooms)))
	mux.Handle("GET /v1/teacher/events", http.HandlerFunc(s.handleTeacherEvents))
	mux.Handle("POST /v1/teacher/rooms/{device}/decision", s.bounded(http.HandlerFunc(s.handleTeacherDecision)))
}

// TeacherRooms is the body of GET /v1/teacher/rooms.
type TeacherRooms struct {
	Rooms []TeacherRoom `json:"rooms"`
}

// teacherOf checks the request's bearer token and that its account is a
// teacher (or an admin) now: the role is read from the account on every
// request, so a changed role counts at once. On a refusal it has
// answered (401 token, 403 role) and audited it (coalesced) and returns
// ok false.
func (s *Server) teacherOf(w http.ResponseWriter, r *http.Request, what string) (name string, expires time.Time, ok bool) {
	return s.signedIn(w, r, "teacher "+what, "teacher.role", viewers.Teaches,
		"this account is not a teacher's (an administrator sets it: uploadbox-receiver viewers role NAME teacher)")
}

// signedIn checks the request's bearer token and that its account's role
// (read now) passes allowed; on a refusal it answers 401 (token) or 403
// (role, audited as roleEvent with the refusal text) and returns ok false.
// what names the endpoint in the audit log.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request, what, roleEvent string, allowed func(role string) bool, refusal string) (name string, expires time.Time, ok bool) {
	token, have := bearerToken(r)
	err := errors.New("no bearer token")
	if have {
		c, verr := s.accountAccepts(s.tokenVerifier().Verify(token, time.Now()))
		name, expires, err = c.Subject, c.Expiry(), verr
	}
	if err != nil {
		s.fails.Record(audit.Entry{Event: "live.auth", Source: r.RemoteAddr, Outcome: "denied", Detail: what + ": " + err.Error()})
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploadbox live view", error="invalid_token"`)
		relayProblem(w, http.StatusUnauthorized, "token", "the bearer token is missing, invalid or expired; sign in again (POST /v1/login)")
		return "", time.Time{}, false
	}
	role, err := s.viewers.Role(name)
	if err != nil && !errors.Is(err, viewers.ErrUnknownViewer) {
		s.log.Error("role of account", "viewer", name, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the account's role could not be read")
		return "", time.Time{}, false
	}
	if !allowed(role) {
		s.fails.Record(audit.Entry{Event: roleEvent, Identity: name, Source: r.RemoteAddr, Outcome: "denied", Detail: fmt.Sprintf("%s: the account's role is %q", what, role)})
		relayProblem(w, http.StatusForbidden, "role", refusal)
		return "", time.Time{}, false
	}
	return name, expires, true
}

// teacherRooms is the rooms teacher answers for, as shown now.
func (s *Server) teacherRooms(teacher string) ([]TeacherRoom, error) {
	names, err := s.viewers.Rooms(teacher)
	if err != nil {
		return nil, err
	}
	out := make([]TeacherRoom, 0, len(names))
	for _, n := range names {
		out = append(out, s.hub.room(n))
	}
	return out, nil
}

// handleTeacherRooms is GET /v1/teacher/rooms: the teacher's rooms, each
// online or not, with its box's consent state.
func (s *Server) handleTeacherRooms(w http.ResponseWriter, r *http.Request) {
	teacher, _, ok := s.teacherOf(w, r, "rooms")
	if !ok {
		return
	}
	rooms, err := s.teacherRooms(teacher)
	if err != nil {
		s.log.Error("rooms of teacher", "teacher", teacher, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the room policy could not be read")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(TeacherRooms{Rooms: rooms})
}

// writeEvent writes one server-sent event: event name and its JSON data
// on one line.
func writeEvent(w io.Writer, event string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
	return err
}

// handleTeacherEvents is GET /v1/teacher/events: a text/event-stream of
// the teacher's rooms. First one "room" event per room, then one each
// time a room changes (its box connects or disconnects, or pushes a new
// consent state), a ": ping" comment every TeacherPing, and "expired"
// when the token expires or its account is disabled or removed (the
// stream then ends). Bounded per teacher
// (MaxTeacherStreams) and in total (MaxTeacherStreamsTotal): beyond, 503
// with reason "busy".
func (s *Server) handleTeacherEvents(w http.ResponseWriter, r *http.Request) {
	teacher, expires, ok := s.teacherOf(w, r, "events")
	if !ok {
		return
	}
	token, _ := bearerToken(r)
	sub, err := s.hub.rooms.subscribe(teacher)
	if err != nil {
		s.fails.Record(audit.Entry{Event: "teacher.events", Identity: teacher, Source: r.RemoteAddr, Outcome: "denied", Detail: err.Error()})
		w.Header().Set("Retry-After", "60")
		relayProblem(w, http.StatusServiceUnavailable, "busy", err.Error())
		return
	}
	defer s.hub.rooms.unsubscribe(sub)
	rooms, err := s.teacherRooms(teacher)
	if err != nil {
		s.log.Error("rooms of teacher", "teacher", teacher, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the room policy could not be read")
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy in front must not hold events back
	w.WriteHeader(http.StatusOK)
	send := func(write func() error) bool {
		rc.SetWriteDeadline(time.Now().Add(teacherWrite))
		if err := write(); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(func() error {
		for _, room := range rooms {
			if err := writeEvent(w, "room", room); err != nil {
				return err
			}
		}
		return nil
	}) {
		return
	}
	ping := time.NewTicker(TeacherPing)
	defer ping.Stop()
	expiry := time.NewTimer(time.Until(expires))
	defer expiry.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-expiry.C:
			send(func() error {
				return writeEvent(w, "expired", map[string]string{"error": "the token has expired; sign in again"})
			})
			return
		case <-ping.C:
			if !send(func() error { _, err := io.WriteString(w, ": ping\n\n"); return err }) {
				return
			}
		case <-sub.ch:
			// A disabled or removed account's stream ends (accounts.go
			// wakes it at once).
			if s.tokenRefused(token) {
				send(func() error {
					return writeEvent(w, "expired", map[string]string{"error": "the account was disabled or removed; sign in again"})
				})
				return
			}
			// The rooms are read again: a room withdrawn from the teacher
			// is not shown any more.
			names, err := s.viewers.Rooms(teacher)
			if err != nil {
				s.log.Error("rooms of teacher", "teacher", teacher, "err", err)
				return
			}
			allowed := map[string]bool{}
			for _, n := range names {
				allowed[n] = true
			}
			changed := s.hub.rooms.take(sub)
			if !send(func() error {
				for _, d := range changed {
					if allowed[d] {
						if err := writeEvent(w, "room", s.hub.room(d)); err != nil {
							return err
						}
					}
				}
				return nil
			}) {
				return
			}
		}
	}
}

// TeacherDecision is the body of POST /v1/teacher/rooms/{device}/decision.
type TeacherDecision struct {
	Decision string `json:"decision"`
	Request  string `json:"request,omitempty"`
	// Anonymise, with start_session, is the session's anonymisation mode:
	// off, whole or masks; empty: the box's default (recording.anonymise).
	Anonymise string `json:"anonymise,omitempty"`
	// For is the grant length of accept and video_only: "15m", "45m",
	// "lesson" (any length from 1m to 8h); empty: the box's default.
	For string `json:"for,omitempty"`
	// Talk, with accept and video_only, lets the coach speak to the
	// teacher (talk-back) for the grant.
	Talk bool `json:"talk,omitempty"`
}

// TeacherDecisionAnswer is the answer to a decision: the box's result,
// with its status (200 acted; 4xx refused, Reason and Error say why).
type TeacherDecisionAnswer struct {
	Device   string              `json:"device"`
	Decision string              `json:"decision"`
	Request  string              `json:"request,omitempty"`
	Status   int                 `json:"status"`
	Reason   string              `json:"reason,omitempty"`
	Error    string              `json:"error,omitempty"`
	Result   wire.DecisionResult `json:"result"`
}

// handleTeacherDecision is POST /v1/teacher/rooms/{device}/decision: the
// teacher's decision, signed here in the teacher's name (Server.Decide,
// audited consent.decision) and brought to the box, whose answer it
// relays with the box's status. A room the teacher is not allowed is 403
// reason "room"; an offline box 503 reason "offline".
func (s *Server) handleTeacherDecision(w http.ResponseWriter, r *http.Request) {
	teacher, _, ok := s.teacherOf(w, r, "decision")
	if !ok {
		return
	}
	device := r.PathValue("device")
	allowed, err := s.viewers.RoomAllowed(teacher, device)
	if err != nil {
		s.log.Error("room policy", "teacher", teacher, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the room policy could not be read")
		return
	}
	if !allowed {
		s.fails.Record(audit.Entry{Event: "teacher.room", Identity: teacher, Source: r.RemoteAddr, Outcome: "denied", Detail: "decision for room " + trimDetail(device) + ": not allowed"})
		relayProblem(w, http.StatusForbidden, "room", "this account is not allowed room "+trimDetail(device)+" (an administrator allows it: uploadbox-receiver viewers allow NAME DEVICE)")
		return
	}
	var in TeacherDecision
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		relayProblem(w, http.StatusBadRequest, "malformed", `decision body: want {"decision": …, "request": …, "for": …, "talk": …}: `+err.Error())
		return
	}
	if in.Talk && in.Decision != wire.DecisionAccept && in.Decision != wire.DecisionVideoOnly {
		relayProblem(w, http.StatusBadRequest, "malformed", fmt.Sprintf(`"talk" goes with accept and video_only only, not with %q (it lets the coach of a grant speak)`, in.Decision))
		return
	}
	if in.For != "" && in.Decision != wire.DecisionAccept && in.Decision != wire.DecisionVideoOnly {
		relayProblem(w, http.StatusBadRequest, "malformed", fmt.Sprintf(`"for" goes with accept and video_only only, not with %q (a session starts with the box's own length)`, in.Decision))
		return
	}
	ans, err := s.Decide(r.Context(), device, DecideRequest{Teacher: teacher, Request: in.Request, Decision: in.Decision, Grant: in.For, Talk: in.Talk, Anonymise: in.Anonymise}, r.RemoteAddr)
	switch {
	case errors.Is(err, ErrOffline):
		relayProblem(w, http.StatusServiceUnavailable, "offline", "the box of room "+trimDetail(device)+" is offline (no control connection)")
		return
	case errors.Is(err, errBadAdminRequest):
		relayProblem(w, http.StatusBadRequest, "malformed", err.Error())
		return
	case err != nil:
		s.log.Error("teacher's decision", "teacher", teacher, "device", device, "err", err)
		relayProblem(w, http.StatusBadGateway, "box", "the decision did not reach the box: "+err.Error())
		return
	}
	out := TeacherDecisionAnswer{Device: device, Decision: in.Decision, Request: in.Request, Status: ans.Status, Reason: ans.Result.Reason, Error: ans.Error, Result: ans.Result}
	code := ans.Status
	if code < 200 || code > 599 {
		code = http.StatusBadGateway
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(out)
}
