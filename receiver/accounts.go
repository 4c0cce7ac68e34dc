package receiver

import (
	"net/http"
	"net/url"
	"time"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

// accountRoutes adds the account state calls (disable, enable, remove) to
// the admin socket.
func accountRoutes(mux *http.ServeMux, local *localAdmin, reply func(http.ResponseWriter, any, error)) {
	mux.HandleFunc("POST /viewers/{name}/disable", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.DisableViewer(r.PathValue("name")))
	})
	mux.HandleFunc("POST /viewers/{name}/enable", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.EnableViewer(r.PathValue("name")))
	})
	mux.HandleFunc("DELETE /viewers/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.RemoveViewer(r.PathValue("name")))
	})
}

// DisableViewer disables name and ends its open teacher event streams.
func (a *localAdmin) DisableViewer(name string) error {
	return a.ended(name, a.viewers.Disable(name))
}

func (a *localAdmin) EnableViewer(name string) error { return a.viewers.Enable(name) }

// RemoveViewer removes name and ends its open teacher event streams.
func (a *localAdmin) RemoveViewer(name string) error {
	return a.ended(name, a.viewers.Remove(name))
}

// ended wakes name's event streams in the running server (if any) after
// a change err did not refuse: each checks its token again and ends.
func (a *localAdmin) ended(name string, err error) error {
	if err == nil && a.hub != nil {
		a.hub.rooms.wake(name)
	}
	return err
}

// wake signals every event stream of teacher.
func (rs *roomStates) wake(teacher string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for sub := range rs.subs {
		if sub.teacher == teacher {
			select {
			case sub.ch <- struct{}{}:
			default:
			}
		}
	}
}

// tokenRefused reports whether a token that opened a stream is refused
// now: expired, or its account disabled or removed since.
func (s *Server) tokenRefused(token string) bool {
	_, err := s.accountAccepts(s.tokenVerifier().Verify(token, time.Now()))
	return err != nil
}

func (a *socketAdmin) DisableViewer(name string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/disable", nil, nil)
}

func (a *socketAdmin) EnableViewer(name string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/enable", nil, nil)
}

func (a *socketAdmin) RemoveViewer(name string) error {
	return a.viewerCall("DELETE", "/viewers/"+url.PathEscape(name), nil, nil)
}

// accountAccepts checks that the account of a token whose signature and
// validity were checked may still use it: it exists, is not disabled, and
// the token is from its current life (viewers.Registry.TokenAccepted).
func (s *Server) accountAccepts(c viewtoken.Claims, err error) (viewtoken.Claims, error) {
	if err != nil {
		return c, err
	}
	return c, s.viewers.TokenAccepted(c.Subject, c.IssuedAt)
}
