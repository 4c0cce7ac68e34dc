package receiver

import (
	"bytes"
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
	mux.HandleFunc("POST /viewers/{name}/unlock", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.UnlockViewer(r.PathValue("name")))
	})
}

func (a *localAdmin) AddViewer(name, password string) error  { return a.viewers.Add(name, password) }
func (a *localAdmin) ListViewers() ([]viewers.Viewer, error) { return a.viewers.List() }
func (a *localAdmin) UnlockViewer(name string) error         { return a.viewers.Unlock(name) }
func (a *localAdmin) SetViewerPassword(name, password string) error {
	return a.viewers.SetPassword(name, password)
}

// viewerCall is call with a JSON body and the viewer errors mapped back.
func (a *socketAdmin) viewerCall(method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequest(method, "http://receiver"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.Unmarshal(data, &e)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w (%s)", viewers.ErrUnknownViewer, e.Error)
		case http.StatusConflict:
			return fmt.Errorf("%w (%s)", viewers.ErrExists, e.Error)
		}
		return errors.New(e.Error)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
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
