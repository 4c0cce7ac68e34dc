package receiver

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewerweb"
	"github.com/uploadbox/uploadbox/receiver/turn"
)

// coachRoutes adds the coach's page (GET /, the viewer shared with the
// box's LAN page) and GET /v1/rooms, the rooms the signed-in viewer may
// ask to watch.
func (s *Server) coachRoutes(mux *http.ServeMux) {
	page := s.bounded(viewerweb.Handler(viewerweb.Coach))
	for _, p := range viewerweb.Patterns {
		mux.Handle(p, page)
	}
	mux.Handle("GET /v1/rooms", s.bounded(http.HandlerFunc(s.handleRooms)))
}

// Room is one entry of GET /v1/rooms: a device whose live view the viewer
// may ask for, whether the box is connected now, and, with TURN on, the
// ICE servers the viewer's browser gathers its candidates with for this
// room (a short-lived TURN credential; the browser's public address then
// reaches the box in the offer).
type Room struct {
	Name   string `json:"name"`
	Online bool   `json:"online"`
	// Recording says whether the room's box records a lesson now, from
	// the consent state it last pushed; left out while it is offline or
	// has pushed none.
	Recording  *bool       `json:"recording,omitempty"`
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
}

// ICEServer is a browser's RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// RoomList is the body of GET /v1/rooms.
type RoomList struct {
	Viewer string `json:"viewer"`
	Rooms  []Room `json:"rooms"`
}

// handleRooms lists the rooms the viewer of the request's bearer token
// (a valid token from POST /v1/login) is allowed, each online while its
// box has a control connection. A missing, forged or expired token gets
// 401, audited as live.auth like the relay's.
func (s *Server) handleRooms(w http.ResponseWriter, r *http.Request) {
	token, ok := bearerToken(r)
	var viewer string
	var err error
	if !ok {
		err = errors.New("no bearer token")
	} else {
		viewer, err = s.viewerOf(token)
	}
	if err != nil {
		s.fails.Record(audit.Entry{Event: "live.auth", Source: r.RemoteAddr, Outcome: "denied", Detail: "rooms: " + err.Error()})
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploadbox live view", error="invalid_token"`)
		relayProblem(w, http.StatusUnauthorized, "token", "the bearer token is missing, invalid or expired; sign in again (POST /v1/login)")
		return
	}
	names, err := s.viewers.Rooms(viewer)
	if err != nil {
		s.log.Error("rooms of viewer", "viewer", viewer, "err", err)
		relayProblem(w, http.StatusInternalServerError, "internal", "the room policy could not be read")
		return
	}
	out := RoomList{Viewer: viewer, Rooms: make([]Room, 0, len(names))}
	for _, n := range names {
		tr := s.hub.room(n)
		room := Room{Name: n, Online: tr.Online}
		if tr.State != nil {
			room.Recording = &tr.State.Recording
		}
		if c, ok := s.issueTURN(turn.Name{Room: n, Viewer: viewer}); ok {
			room.ICEServers = []ICEServer{{URLs: c.URLs, Username: c.Username, Credential: c.Password}}
		}
		out.Rooms = append(out.Rooms, room)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}
