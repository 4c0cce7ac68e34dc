package receiver

import (
	"net/http"
	"net/url"

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

func (a *localAdmin) DisableViewer(name string) error { return a.viewers.Disable(name) }
func (a *localAdmin) EnableViewer(name string) error  { return a.viewers.Enable(name) }
func (a *localAdmin) RemoveViewer(name string) error  { return a.viewers.Remove(name) }

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
