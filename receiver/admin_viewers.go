package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/uploadbox/uploadbox/receiver/viewers"
)

// errBadAdminRequest marks an admin request the socket cannot decode.
var errBadAdminRequest = errors.New("bad admin request")

// passwordBody carries a password over the admin socket (never in a URL,
// so it is in no log).
type passwordBody struct {
	Password string `json:"password"`
}

func readPassword(r *http.Request) (string, error) {
	var b passwordBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return "", fmt.Errorf("%w: password body: %v", errBadAdminRequest, err)
	}
	return b.Password, nil
}

// viewerRoutes adds the viewer account calls to the admin socket.
func viewerRoutes(mux *http.ServeMux, local *localAdmin, reply func(http.ResponseWriter, any, error)) {
	mux.HandleFunc("GET /viewers", func(w http.ResponseWriter, _ *http.Request) {
		v, err := local.ListViewers()
		reply(w, v, err)
	})
	mux.HandleFunc("POST /viewers/{name}", func(w http.ResponseWriter, r *http.Request) {
		pw, err := readPassword(r)
		if err == nil {
			err = local.AddViewer(r.PathValue("name"), pw)
		}
		reply(w, struct{}{}, err)
	})
	mux.HandleFunc("POST /viewers/{name}/password", func(w http.ResponseWriter, r *http.Request) {
		pw, err := readPassword(r)
		if err == nil {
			err = local.SetViewerPassword(r.PathValue("name"), pw)
		}
		reply(w, struct{}{}, err)
	})
	mux.HandleFunc("POST /viewers/{name}/rooms/{device}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.AllowRoom(r.PathValue("name"), r.PathValue("device")))
	})
	mux.HandleFunc("DELETE /viewers/{name}/rooms/{device}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.DenyRoom(r.PathValue("name"), r.PathValue("device")))
	})
	mux.HandleFunc("POST /viewers/{name}/role/{role}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.SetViewerRole(r.PathValue("name"), r.PathValue("role")))
	})
	mux.HandleFunc("POST /viewers/{name}/unlock", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.UnlockViewer(r.PathValue("name")))
	})
}

func (a *localAdmin) AddViewer(name, password string) error  { return a.viewers.Add(name, password) }
func (a *localAdmin) ListViewers() ([]viewers.Viewer, error) { return a.viewers.List() }
func (a *localAdmin) UnlockViewer(name string) error         { return a.viewers.Unlock(name) }
func (a *localAdmin) SetViewerRole(name, role string) error  { return a.viewers.SetRole(name, role) }
func (a *localAdmin) AllowRoom(name, device string) error    { return a.viewers.AllowRoom(name, device) }
func (a *localAdmin) DenyRoom(name, device string) error     { return a.viewers.DenyRoom(name, device) }
func (a *localAdmin) SetViewerPassword(name, password string) error {
	return a.viewers.SetPassword(name, password)
}

// viewerCall is a call with the viewer errors mapped back.
func (a *socketAdmin) viewerCall(method, path string, in, out any) error {
	return a.do(method, path, in, out, viewers.ErrUnknownViewer, viewers.ErrExists)
}

func (a *socketAdmin) AddViewer(name, password string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name), passwordBody{password}, nil)
}

func (a *socketAdmin) ListViewers() ([]viewers.Viewer, error) {
	var vs []viewers.Viewer
	return vs, a.viewerCall("GET", "/viewers", nil, &vs)
}

func (a *socketAdmin) UnlockViewer(name string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/unlock", nil, nil)
}

func (a *socketAdmin) SetViewerPassword(name, password string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/password", passwordBody{password}, nil)
}

func (a *socketAdmin) AllowRoom(name, device string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/rooms/"+url.PathEscape(device), nil, nil)
}

func (a *socketAdmin) DenyRoom(name, device string) error {
	return a.viewerCall("DELETE", "/viewers/"+url.PathEscape(name)+"/rooms/"+url.PathEscape(device), nil, nil)
}

func (a *socketAdmin) SetViewerRole(name, role string) error {
	return a.viewerCall("POST", "/viewers/"+url.PathEscape(name)+"/role/"+url.PathEscape(role), nil, nil)
}
