package receiver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/wire"
)

// relayPrefix is where a room's WHEP endpoint is relayed:
// /v1/rooms/{device}/whep.
const relayPrefix = "/v1/rooms/"

// relaySlack is how much longer than the longest wait for the teacher the
// receiver waits for the box's answer.
const relaySlack = 15 * time.Second

// relayRoutes adds the live view relay: POST /v1/rooms/{device}/whep (an
// SDP offer), GET, PATCH and DELETE /v1/rooms/{device}/whep/{session}.
func (s *Server) relayRoutes(mux *http.ServeMux) {
	h := s.bounded(http.HandlerFunc(s.handleRelay))
	mux.Handle("POST /v1/rooms/{device}/whep", h)
	for _, m := range []string{"GET", "PATCH", "DELETE"} {
		mux.Handle(m+" /v1/rooms/{device}/whep/{session}", h)
	}
}

// handleRelay checks the viewer's token (signed with the receiver's token
// key) and the room policy, then forwards the request to the box over its
// control connection (wire.OpWHEP) and returns the box's answer with its
// status and body unchanged. The receiver admits no one: the box checks
// the token again, asks for consent and audits, as for its LAN endpoint.
func (s *Server) handleRelay(w http.ResponseWriter, r *http.Request) {
	device, session := r.PathValue("device"), r.PathValue("session")
	src := r.RemoteAddr
	token, ok := bearerToken(r)
	var viewer string
	var err error
	switch {
	case !ok:
		err = errors.New("no bearer token")
	case session != "" && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
		// A running view is bound to its grant: its viewer's token may
		// have expired since the offer (the box checks it the same way).
		viewer, err = s.ownerOf(token)
	default:
		viewer, err = s.viewerOf(token)
	}
	if err != nil {
		s.fails.Record(audit.Entry{Event: "live.auth", Source: src, Outcome: "denied", Detail: "relay to " + trimDetail(device) + ": " + err.Error()})
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploadbox live view", error="invalid_token"`)
		relayProblem(w, http.StatusUnauthorized, "token", "the bearer token is missing, invalid or expired; log in again (POST /v1/login)")
		return
	}
	allowed, err := s.viewers.RoomAllowed(viewer, device)
	if err != nil {
		s.log.Error("room policy", "viewer", viewer, "device", device, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the room policy could not be read")
		return
	}
	if !allowed {
		s.fails.Record(audit.Entry{Event: "live.room", Identity: viewer, Source: src, Outcome: "denied", Detail: "room " + trimDetail(device) + " not allowed"})
		relayProblem(w, http.StatusForbidden, "room", "you are not allowed this room's live view; an administrator runs: uploadbox-receiver viewers allow "+viewer+" DEVICE")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxWHEPBody+1))
	if err != nil || len(body) > wire.MaxWHEPBody {
		relayProblem(w, http.StatusRequestEntityTooLarge, "offer", "the request body is unreadable or larger than 64 KiB")
		return
	}
	path := "/whep"
	if session != "" {
		path += "/" + session
	}
	req := wire.WHEPRequest{Method: r.Method, Path: path, Header: wire.FilterHeader(r.Header, wire.WHEPHeaders), Body: body}
	offer := r.Method == http.MethodPost
	if offer {
		req.ICEServers = s.boxICEServers(device, viewer)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wire.MaxWHEPWait+relaySlack)
	defer cancel()
	resp, err := s.hub.Request(ctx, device, wire.OpWHEP, req)
	status, answer, msg := relayAnswer(resp, err)
	if msg != "" {
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "10")
		}
		if err != nil && !errors.Is(err, ErrOffline) {
			s.log.Warn("live view relay failed", "device", device, "viewer", viewer, "err", err)
		}
		reason := "relay"
		if errors.Is(err, ErrOffline) {
			reason = "offline"
		}
		relayProblem(w, status, reason, msg)
		return
	}
	if offer && answer.Status == http.StatusCreated {
		if answer.Header == nil {
			answer.Header = http.Header{}
		}
		s.addICELinks(answer.Header, device, viewer)
	}
	writeAnswer(w, device, answer)
}

// relayAnswer maps the box's response to the viewer's: the box's WHEP
// answer, or a status and message when there is none (box offline: 503).
func relayAnswer(resp wire.Response, err error) (int, wire.WHEPResponse, string) {
	var ce *wire.ControlError
	switch {
	case errors.Is(err, ErrOffline):
		return http.StatusServiceUnavailable, wire.WHEPResponse{}, "the box is offline"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, wire.WHEPResponse{}, "the box did not answer in time"
	case errors.As(err, &ce):
		return http.StatusBadGateway, wire.WHEPResponse{}, "the box refused the relayed request: " + ce.Message
	case err != nil:
		return http.StatusBadGateway, wire.WHEPResponse{}, "relay to the box failed: " + err.Error()
	case resp.Status == http.StatusNotImplemented || resp.Status == http.StatusServiceUnavailable:
		return http.StatusServiceUnavailable, wire.WHEPResponse{}, "the box does not serve its live view now: " + resp.Error
	case resp.Status != http.StatusOK:
		return http.StatusBadGateway, wire.WHEPResponse{}, "the box failed the relayed request: " + resp.Error
	}
	var a wire.WHEPResponse
	if err := json.Unmarshal(resp.Result, &a); err != nil || a.Status < 100 || a.Status > 599 {
		return http.StatusBadGateway, wire.WHEPResponse{}, "the box's answer is malformed"
	}
	return a.Status, a, ""
}

// writeAnswer writes the box's WHEP answer: its status and body unchanged,
// its viewer-facing headers, a Location under the room's relay path.
func writeAnswer(w http.ResponseWriter, device string, a wire.WHEPResponse) {
	h := wire.FilterHeader(a.Header, wire.WHEPAnswerHeaders)
	if loc := h.Get("Location"); loc != "" {
		h.Set("Location", relayLocation(device, loc))
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(a.Status)
	w.Write(a.Body)
}

// relayLocation rewrites the box's session path (/whep/{id}) to the
// receiver's (/v1/rooms/{device}/whep/{id}).
func relayLocation(device, loc string) string {
	if rest, ok := strings.CutPrefix(loc, "/whep"); ok {
		return relayPrefix + device + "/whep" + rest
	}
	return loc
}

func relayProblem(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg, "reason": reason})
}

// viewerOf checks a viewer token against the receiver's token key and
// that its account may still use it (accountAccepts).
func (s *Server) viewerOf(token string) (string, error) {
	c, err := s.accountAccepts(s.tokenVerifier().Verify(token, time.Now()))
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// ownerOf is viewerOf for a running session's requests: the token may
// have expired (viewtoken.VerifyIgnoringExpiry).
func (s *Server) ownerOf(token string) (string, error) {
	c, err := s.accountAccepts(s.tokenVerifier().VerifyIgnoringExpiry(token, time.Now()))
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

func (s *Server) tokenVerifier() *viewtoken.Verifier {
	return viewtoken.NewVerifier(viewtoken.TrustedKey{Issuer: viewtoken.IssuerReceiver, Key: s.tokenKey.Public().(ed25519.PublicKey)})
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func trimDetail(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}
