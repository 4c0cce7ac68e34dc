package live

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/internal/viewerweb"
)

// maxOffer bounds the size of an SDP offer.
const maxOffer = 64 << 10

var (
	errBadOffer = errors.New("bad SDP offer")
	errClosed   = errors.New("live view server closed")
)

// Handler serves the WHEP endpoint and the viewer page:
//
//	POST   /whep       SDP offer → 201 answer, Location /whep/{id}
//	GET    /whep/{id}  200 while the session is live (with the grant's end), 410 with the reason after it ended
//	DELETE /whep/{id}  ends the session (the same viewer only); 410 after it ended
//	GET    /           the viewer page (internal/viewerweb)
//
// A POST needs a token that has not expired; GET and DELETE of a session
// accept its viewer's token even after it expired (Authenticator.Owner):
// the session lasts as long as its grant.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whep", s.handleOffer)
	mux.HandleFunc("GET /whep/{id}", s.handleStatus)
	mux.HandleFunc("DELETE /whep/{id}", s.handleDelete)
	page := viewerweb.Handler(viewerweb.Box)
	for _, p := range viewerweb.Patterns {
		mux.Handle(p, page)
	}
	return mux
}

// problem is the JSON body of every error response.
type problem struct {
	Error   string `json:"error"`
	Reason  string `json:"reason"`
	Request string `json:"request,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, problem{Error: msg, Reason: reason})
}

// authenticate returns the viewer of the request's bearer token, or writes
// 401. The token is never logged.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	return s.authenticateWith(w, r, s.cfg.Auth.Viewer)
}

// authenticateWith is authenticate with check as the token check.
func (s *Server) authenticateWith(w http.ResponseWriter, r *http.Request, check func(string) (string, error)) (string, bool) {
	token, ok := bearer(r)
	if !ok {
		s.authFailed(r, errNoToken)
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploadbox live view"`)
		writeProblem(w, http.StatusUnauthorized, "token", "an Authorization: Bearer token is required; log in to get one")
		return "", false
	}
	viewer, err := check(token)
	if err != nil || viewer == "" {
		if err == nil {
			err = errors.New("the token names no viewer")
		}
		s.authFailed(r, err)
		s.log.Warn("live view token refused", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploadbox live view", error="invalid_token"`)
		writeProblem(w, http.StatusUnauthorized, "token", "the bearer token is invalid or expired; log in again")
		return "", false
	}
	return viewer, true
}

var errNoToken = errors.New("no bearer token")

func (s *Server) authFailed(r *http.Request, err error) {
	if s.cfg.AuthFailed != nil {
		s.cfg.AuthFailed(r.RemoteAddr, err)
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (s *Server) handleOffer(w http.ResponseWriter, r *http.Request) {
	viewer, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/sdp" {
		writeProblem(w, http.StatusUnsupportedMediaType, "content-type", "the offer must be sent as Content-Type: application/sdp")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOffer))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "offer", "the SDP offer is unreadable or larger than 64 KiB")
		return
	}
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(body)}
	parsed, err := offer.Unmarshal()
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "offer", "the SDP offer does not parse: "+err.Error())
		return
	}
	wantVideo, wantAudio := kinds(parsed)
	if !wantVideo {
		writeProblem(w, http.StatusBadRequest, "offer", "the SDP offer has no video section; add a recvonly video transceiver")
		return
	}
	hear, speak := audioDirection(parsed)
	wantAudio = wantAudio && hear

	adm, err := s.admit(w, r, viewer, wantAudio)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			s.log.Info("live view refused", "viewer", viewer, "reason", ref.Reason, "request", ref.Request)
			writeJSON(w, http.StatusForbidden, problem{
				Error:   "the observed person has not granted you live view (" + ref.Reason + ")",
				Reason:  ref.Reason,
				Request: ref.Request,
			})
			return
		}
		s.log.Error("consent gate failed", "viewer", viewer, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "consent", "the consent check failed; try again later")
		return
	}
	if code, reason := s.reserve(viewer); code != 0 {
		if adm.Cancel != nil {
			adm.Cancel()
		}
		msg := "the live view cannot take another viewer now: " + reason
		if code == http.StatusConflict {
			msg = "another offer of yours is being set up; wait for its answer"
		}
		writeProblem(w, code, reason, msg)
		return
	}
	registered := false
	defer func() {
		if !registered {
			s.unreserve(viewer)
		}
	}()
	talk := ""
	if speak {
		switch {
		case s.cfg.Talk == nil:
			talk = TalkUnavailable
		case !adm.Talk:
			talk = TalkNotGranted
		default:
			talk = TalkAllowed
		}
		if talk != TalkAllowed {
			// Answered as if the viewer sent no audio: the browser then
			// sends none, and nothing is read.
			offer.SDP = noViewerAudio(parsed)
		}
	}
	sess, err := s.open(r.Context(), viewer, offer, adm, wantAudio && adm.Audio, talk == TalkAllowed)
	if err != nil {
		if adm.Cancel != nil {
			adm.Cancel()
		}
		switch {
		case errors.Is(err, errBadOffer):
			writeProblem(w, http.StatusBadRequest, "offer", err.Error())
		case errors.Is(err, errClosed):
			writeProblem(w, http.StatusServiceUnavailable, "closed", "the live view is shutting down")
		default:
			s.log.Error("open live session", "viewer", viewer, "err", err)
			writeProblem(w, http.StatusInternalServerError, "internal", "could not set up the peer connection")
		}
		return
	}
	registered = true
	s.log.Info("viewer joined", "viewer", viewer, "session", sess.id, "audio", sess.audio, "talk", talk)
	if talk != "" {
		w.Header().Set("Talk", talk)
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+sess.id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, sess.pc.LocalDescription().SDP)
}

// kinds reports which media the offer asks for (sections not rejected
// with port 0).
// MaxWait is the longest a viewer's offer waits for the teacher's decision
// (Prefer: wait=N, RFC 7240).
const MaxWait = 30 * time.Second

// admit asks the gate. When the answer is "pending", the request carries
// Prefer: wait=N and the gate can wait for decisions (a Waiter), the offer
// waits up to N seconds for the teacher and is asked again once decided,
// so the viewer's connection starts the moment the teacher accepts. The
// answer then carries Preference-Applied: wait=N, which tells the viewer
// page it need not poll.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, viewer string, wantAudio bool) (Admission, error) {
	adm, err := s.cfg.Gate.Admit(viewer, wantAudio)
	var ref *Refusal
	waiter, ok := s.cfg.Gate.(Waiter)
	if err == nil || !ok || !errors.As(err, &ref) || ref.Reason != "pending" || ref.Request == "" {
		return adm, err
	}
	wait := preferWait(r.Header.Get("Prefer"))
	if wait <= 0 {
		return adm, err
	}
	w.Header().Set("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	if werr := waiter.AwaitDecision(ctx, ref.Request); werr != nil {
		return adm, err // still pending: the viewer asks again
	}
	return s.cfg.Gate.Admit(viewer, wantAudio)
}

// preferWait parses "Prefer: wait=N" (seconds), capped at MaxWait.
func preferWait(h string) time.Duration {
	for _, part := range strings.Split(h, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "wait="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return min(time.Duration(n)*time.Second, MaxWait)
			}
		}
	}
	return 0
}

// Values of the Talk header of a 201 answer to an offer whose audio
// section sends (sendrecv, sendonly).
const (
	TalkAllowed     = "allowed"     // the viewer's voice is played when it arrives
	TalkNotGranted  = "not-granted" // the grant does not let the viewer speak
	TalkUnavailable = "unavailable" // the box has no talk-back output
)

// audioDirection reports whether the offer's audio section (the first
// not rejected) receives (hear) and sends (speak); no direction attribute
// means sendrecv.
func audioDirection(d *sdp.SessionDescription) (hear, speak bool) {
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" || m.MediaName.Port.Value == 0 {
			continue
		}
		for _, a := range m.Attributes {
			switch a.Key {
			case "sendrecv":
				return true, true
			case "sendonly":
				return false, true
			case "recvonly":
				return true, false
			case "inactive":
				return false, false
			}
		}
		return true, true
	}
	return false, false
}

// noViewerAudio returns the offer with its audio sections no longer
// sending: sendrecv becomes recvonly, sendonly inactive.
func noViewerAudio(d *sdp.SessionDescription) string {
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		found := false
		for i, a := range m.Attributes {
			switch a.Key {
			case "sendrecv":
				m.Attributes[i].Key, found = "recvonly", true
			case "sendonly":
				m.Attributes[i].Key, found = "inactive", true
			case "recvonly", "inactive":
				found = true
			}
		}
		if !found {
			m.Attributes = append(m.Attributes, sdp.Attribute{Key: "recvonly"})
		}
	}
	b, err := d.Marshal()
	if err != nil {
		panic(fmt.Sprintf("re-marshal a parsed SDP offer: %v", err)) // it parsed: a broken invariant
	}
	return string(b)
}

func kinds(d *sdp.SessionDescription) (video, audio bool) {
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			continue
		}
		switch m.MediaName.Media {
		case "video":
			video = true
		case "audio":
			audio = true
		}
	}
	return video, audio
}

// reserve takes a viewer slot for viewer, or returns the status and
// reason of the refusal. Slots count viewers, not offers: a viewer's own
// session (which the new one replaces) takes no second slot, and a viewer
// has one offer in progress at a time.
func (s *Server) reserve(viewer string) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return http.StatusServiceUnavailable, "closed"
	}
	if s.offering[viewer] {
		return http.StatusConflict, "offer in progress"
	}
	others := map[string]bool{}
	for v := range s.offering {
		others[v] = true
	}
	for _, sess := range s.sessions {
		if sess.viewer != viewer {
			others[sess.viewer] = true
		}
	}
	if len(others) >= s.cfg.MaxViewers {
		return http.StatusServiceUnavailable, "too many viewers"
	}
	s.offering[viewer] = true
	return 0, ""
}

func (s *Server) unreserve(viewer string) {
	s.mu.Lock()
	delete(s.offering, viewer)
	s.mu.Unlock()
}

// lookup finds the live or ended session id of viewer, whose token may
// have expired since the session began. It writes 404 for an unknown id
// and 403 for another viewer's session.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (viewer string, sess *session, gone *endedSession, ok bool) {
	viewer, ok = s.authenticateWith(w, r, s.cfg.Auth.Owner)
	if !ok {
		return "", nil, nil, false
	}
	id := r.PathValue("id")
	s.mu.Lock()
	sess = s.sessions[id]
	gone = s.gone.get(id)
	s.mu.Unlock()
	owner := ""
	switch {
	case sess != nil:
		owner = sess.viewer
	case gone != nil:
		owner = gone.viewer
	default:
		writeProblem(w, http.StatusNotFound, "unknown session", "no live view session "+id)
		return "", nil, nil, false
	}
	if owner != viewer {
		s.log.Warn("live session of another viewer refused", "viewer", viewer, "session", id)
		writeProblem(w, http.StatusForbidden, "not yours", "session "+id+" belongs to another viewer")
		return "", nil, nil, false
	}
	return viewer, sess, gone, true
}

// status is the body of GET /whep/{id}.
type status struct {
	State  string `json:"state"` // "live" or "ended"
	Reason string `json:"reason,omitempty"`
	Audio  bool   `json:"audio"`
	// Talk says the viewer may speak; Floor is then "free", "yours" or
	// "taken" (talkback).
	Talk  bool   `json:"talk,omitempty"`
	Floor string `json:"floor,omitempty"`
	// Expires is when the grant ends unless the teacher ends it sooner.
	Expires time.Time `json:"expires,omitzero"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	_, sess, gone, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if sess != nil {
		st := status{State: "live", Audio: sess.audio, Expires: sess.adm.Expires}
		if sess.voice != nil {
			st.Talk, st.Floor = true, sess.voice.Floor()
		}
		writeJSON(w, http.StatusOK, st)
		return
	}
	writeJSON(w, http.StatusGone, status{State: "ended", Reason: gone.reason})
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	_, sess, gone, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if sess == nil {
		writeJSON(w, http.StatusGone, status{State: "ended", Reason: gone.reason})
		return
	}
	if err := s.end(sess, "viewer left"); err != nil {
		s.log.Warn("end live session", "session", sess.id, "err", err)
	}
	w.WriteHeader(http.StatusOK)
}

// endedSession remembers why a session ended, for the viewer page.
type endedSession struct {
	viewer, reason string
}

// endedSessions is a bounded record of recently ended sessions.
type endedSessions struct {
	max   int
	byID  map[string]*endedSession
	order []string
}

func newEndedSessions(max int) *endedSessions {
	return &endedSessions{max: max, byID: make(map[string]*endedSession)}
}

func (e *endedSessions) add(id, viewer, reason string) {
	if len(e.order) >= e.max {
		delete(e.byID, e.order[0])
		e.order = e.order[1:]
	}
	e.byID[id] = &endedSession{viewer: viewer, reason: reason}
	e.order = append(e.order, id)
}

func (e *endedSessions) get(id string) *endedSession { return e.byID[id] }

// newID returns a random, unguessable session id (128 bits).
func newID() string { return rand.Text() }
