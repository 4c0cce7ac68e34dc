package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/uploadbox/uploadbox/receiver/turn"
	"github.com/uploadbox/uploadbox/wire"
)

// startTURN starts the embedded TURN server when cfg.TURN.Listen is set.
func (s *Server) startTURN() error {
	if s.cfg.TURN.Listen == "" {
		return nil
	}
	cfg := s.cfg.TURN
	cfg.Audit, cfg.Failures, cfg.Logger = s.audit, s.fails, s.log
	t, err := turn.Listen(cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	s.turn = t
	s.log.Info("turn listening", "addr", t.Addr(), "urls", t.URLs())
	return nil
}

func (s *Server) stopTURN() {
	if s.turn != nil {
		if err := s.turn.Close(); err != nil {
			s.log.Warn("turn close", "err", err)
		}
	}
}

// TURNAddr is the address the TURN server listens on (UDP and TCP) while
// Run runs, "" when TURN is off.
func (s *Server) TURNAddr() string {
	if s.turn == nil {
		return ""
	}
	return s.turn.Addr()
}

// boxICEServers is the TURN credential for the box's side of viewer's
// session in room, sent with the relayed offer; nil when TURN is off.
func (s *Server) boxICEServers(room, viewer string) []wire.ICEServer {
	c, ok := s.issueTURN(turn.Name{Room: room, Viewer: viewer, Box: true})
	if !ok {
		return nil
	}
	return []wire.ICEServer{{URLs: c.URLs, Username: c.Username, Credential: c.Password}}
}

// addICELinks adds the viewer's TURN credential to a 201 answer as Link
// headers (RFC 9725 section 4.4), one per URL.
func (s *Server) addICELinks(h http.Header, room, viewer string) {
	c, ok := s.issueTURN(turn.Name{Room: room, Viewer: viewer})
	if !ok {
		return
	}
	for _, u := range c.URLs {
		// Neither value holds a quote or a backslash: names are
		// validated, the password is base64.
		h.Add("Link", "<"+u+`>; rel="ice-server"; username="`+c.Username+`"; credential="`+c.Password+`"; credential-type="password"`)
	}
}

func (s *Server) issueTURN(n turn.Name) (turn.Credential, bool) {
	if s.turn == nil {
		return turn.Credential{}, false
	}
	c, err := s.turn.Issue(n)
	if err != nil {
		s.log.Warn("no turn credential", "room", n.Room, "viewer", n.Viewer, "err", err)
		return turn.Credential{}, false
	}
	return c, true
}

// ErrTURNOff is TURNStatus's error when the running receiver has no TURN
// server.
var ErrTURNOff = errors.New("TURN is off on this receiver")

// TURNStatus asks the receiver running on data for its TURN server's
// counters and allocations.
func TURNStatus(data string) (turn.Status, error) {
	noServer := fmt.Errorf("no receiver runs on %s: TURN status is the running server's (uploadbox-receiver serve --data %s --turn-listen ADDR)", data, data)
	a, err := OpenAdmin(data)
	if err != nil {
		if statePostgres(data) {
			// The state could not be opened without --database: it
			// is not needed, the status is the server's.
			return turn.Status{}, noServer
		}
		return turn.Status{}, err
	}
	defer a.Close()
	sa, ok := a.(*socketAdmin)
	if !ok {
		return turn.Status{}, noServer
	}
	var st turn.Status
	return st, sa.do("GET", "/turn", nil, &st, ErrTURNOff, ErrTURNOff)
}

func (s *Server) handleTURNStatus(w http.ResponseWriter, _ *http.Request) {
	if s.turn == nil {
		httpError(w, http.StatusNotFound, "start serve with --turn-listen ADDR")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.turn.Status())
}
