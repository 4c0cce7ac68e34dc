package receiver

import (
	"errors"
	"net/http"
)

// errRekeyed ends the control connection of a device whose key was
// replaced: its certificate stops working at once.
var errRekeyed = errors.New("the device was re-keyed")

// keyRoutes adds the key-history calls to the admin socket.
func keyRoutes(mux *http.ServeMux, local *localAdmin, reply func(http.ResponseWriter, any, error)) {
	mux.HandleFunc("POST /devices/{name}/rekey", func(w http.ResponseWriter, r *http.Request) {
		v, err := local.RekeyDevice(r.PathValue("name"))
		reply(w, v, err)
	})
	mux.HandleFunc("POST /devices/{name}/revoke-compromised", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.RevokeCompromised(r.PathValue("name")))
	})
	mux.HandleFunc("DELETE /devices/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.RemoveDevice(r.PathValue("name")))
	})
}

// RekeyDevice gives a token for a new device key under name (see
// devices.Registry.Rekey) and ends the device's control connection.
func (a *localAdmin) RekeyDevice(name string) (*NewDevice, error) {
	tok, exp, err := a.reg.Rekey(name)
	if err != nil {
		return nil, err
	}
	if a.hub != nil {
		a.hub.drop(name, errRekeyed)
	}
	return &NewDevice{Name: name, Token: tok, Expires: exp, CAFingerprint: a.ca.Fingerprint()}, nil
}

// RevokeCompromised revokes name, marks its key compromised now and ends
// its control connection.
func (a *localAdmin) RevokeCompromised(name string) error {
	if err := a.reg.RevokeCompromised(name); err != nil {
		return err
	}
	if a.hub != nil {
		a.hub.drop(name, errRevoked)
	}
	return nil
}

// RemoveDevice frees the name of a device that is not active.
func (a *localAdmin) RemoveDevice(name string) error { return a.reg.Remove(name) }

func (a *socketAdmin) RekeyDevice(name string) (*NewDevice, error) {
	var d NewDevice
	return &d, a.call("POST", "/devices/"+name+"/rekey", &d)
}

func (a *socketAdmin) RevokeCompromised(name string) error {
	return a.call("POST", "/devices/"+name+"/revoke-compromised", nil)
}

func (a *socketAdmin) RemoveDevice(name string) error {
	return a.call("DELETE", "/devices/"+name, nil)
}
