package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/receiver/viewers"
)

// AdminSocket is the unix socket, inside the data directory, through which
// admin commands reach a running server: the server holds the database, so
// they never wait on its lock.
const AdminSocket = "admin.sock"

// NewDevice is what `devices add` prints.
type NewDevice struct {
	Name          string    `json:"name"`
	Token         string    `json:"token"`
	Expires       time.Time `json:"expires"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

// Admin is what the admin commands need, whether the server runs or not.
type Admin interface {
	AddDevice(name string) (*NewDevice, error)
	// ListDevices lists the devices with their control connections.
	ListDevices() ([]DeviceStatus, error)
	RevokeDevice(name string) error
	UnlockDevice(name string) error
	// Key history (admin_keys.go).
	RekeyDevice(name string) (*NewDevice, error)
	RevokeCompromised(name string) error
	RemoveDevice(name string) error
	ListRecordings() ([]Recording, error)
	// Deleting, restoring, purging and scrubbing recordings (admin_recordings.go).
	recordingAdmin
	// Viewer accounts (admin_viewers.go).
	AddViewer(name, password string) error
	ListViewers() ([]viewers.Viewer, error)
	UnlockViewer(name string) error
	SetViewerPassword(name, password string) error
	// SetViewerRole sets an account's role (viewers.Roles).
	SetViewerRole(name, role string) error
	// AllowRoom and DenyRoom set which devices' live view a viewer may
	// ask for through the receiver (every room is denied unless allowed).
	AllowRoom(name, device string) error
	DenyRoom(name, device string) error
	// DisableViewer, EnableViewer and RemoveViewer change whether an
	// account may sign in and use its tokens (accounts.go).
	DisableViewer(name string) error
	EnableViewer(name string) error
	RemoveViewer(name string) error
	// Decide brings a teacher's decision to a box (decision.go).
	Decide(device string, in DecideRequest) (*DecideAnswer, error)
	// DeviceCheckpoint is the newest audit checkpoint a box sent (nil:
	// none yet; checkpoint_store.go).
	DeviceCheckpoint(name string) (*audit.Checkpoint, error)
	Close() error
}

// Recording summarises the committed segments of one recording.
type Recording struct {
	Device   string `json:"device"`
	ID       string `json:"id"`
	Segments int    `json:"segments"`
	Bytes    int64  `json:"bytes"`
	// Complete: every segment the box sealed is here — 0..N all stored
	// and N carries the last flag (segments cut by a crash count: they
	// were uploaded as far as they got, see Truncated).
	Complete bool `json:"complete"`
	// Ended says why the recording ended (see RecordingState).
	Ended string `json:"ended"`
	// Missing counts the sequence numbers below the highest known one
	// (or the last-flagged one) that are not stored.
	Missing   int       `json:"missing"`
	Truncated int       `json:"truncated"`
	First     time.Time `json:"first_committed"`
	Last      time.Time `json:"last_committed"`
	Keys      []string  `json:"keys"`
	// Anonymise is how the box filtered the picture before encoding, from
	// the segments' signed headers: "off", "whole" or "masks" (several,
	// comma-separated, if the segments disagree); empty for a recording
	// whose segments were committed before the receiver kept it.
	Anonymise string `json:"anonymise"`
	// Times of the media and the recording's lifecycle (recordings.go).
	RecordingTimes
	RecordingLife
}

func (s *Server) listenAdmin() (net.Listener, error) {
	path := filepath.Join(s.cfg.Data, AdminSocket)
	os.Remove(path) // a stale socket from a crash; we hold the database lock
	addr, dir, err := unixPath(s.cfg.Data, AdminSocket)
	if err != nil {
		return nil, fmt.Errorf("serve: admin socket: %w", err)
	}
	defer dir.Close()
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("serve: admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // removed by name when Run ends
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *Server) adminHandler() http.Handler {
	local := &localAdmin{reg: s.devices, db: s.db, ca: s.ca, viewers: s.viewers, hub: &s.hub, life: s.life, data: s.cfg.Data}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, devices.ErrUnknownDevice):
				code = http.StatusNotFound
			case errors.Is(err, devices.ErrExists):
				code = http.StatusConflict
			case errors.Is(err, devices.ErrBadName), errors.Is(err, devices.ErrActive):
				code = http.StatusBadRequest
			case errors.Is(err, viewers.ErrUnknownViewer):
				code = http.StatusNotFound
			case errors.Is(err, viewers.ErrExists):
				code = http.StatusConflict
			case errors.Is(err, viewers.ErrBadName), errors.Is(err, viewers.ErrWeakPassword), errors.Is(err, viewers.ErrBadRole), errors.Is(err, errBadAdminRequest):
				code = http.StatusBadRequest
			case errors.Is(err, ErrOffline):
				code = http.StatusServiceUnavailable
			}
			httpError(w, code, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /devices/{name}/audit-checkpoint", func(w http.ResponseWriter, r *http.Request) {
		v, err := local.DeviceCheckpoint(r.PathValue("name"))
		reply(w, v, err)
	})
	mux.HandleFunc("GET /devices", func(w http.ResponseWriter, _ *http.Request) {
		v, err := local.ListDevices()
		reply(w, v, err)
	})
	mux.HandleFunc("POST /devices/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, err := local.AddDevice(r.PathValue("name"))
		reply(w, v, err)
	})
	mux.HandleFunc("POST /devices/{name}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.RevokeDevice(r.PathValue("name")))
	})
	mux.HandleFunc("POST /devices/{name}/unlock", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, local.UnlockDevice(r.PathValue("name")))
	})
	mux.HandleFunc("GET /recordings", func(w http.ResponseWriter, _ *http.Request) {
		v, err := local.ListRecordings()
		reply(w, v, err)
	})
	accountRoutes(mux, local, reply)
	mux.HandleFunc("GET "+dbSnapshotPath, s.handleDatabaseSnapshot)
	viewerRoutes(mux, local, reply)
	keyRoutes(mux, local, reply)
	s.recordingRoutes(mux, reply)
	mux.HandleFunc("GET /turn", s.handleTURNStatus)
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("POST /devices/{name}/decision", func(w http.ResponseWriter, r *http.Request) {
		in, err := readDecide(r)
		var v *DecideAnswer
		if err == nil {
			v, err = s.Decide(r.Context(), r.PathValue("name"), in, "admin-socket")
		}
		reply(w, v, err)
	})
	return mux
}

// OpenAdmin reaches the receiver on data: through the admin socket when a
// server runs there, else by opening the database itself (the bbolt file;
// see OpenAdminDatabase for PostgreSQL).
func OpenAdmin(data string) (Admin, error) { return OpenAdminDatabase(data, "") }

// OpenAdminDatabase is OpenAdmin for a receiver whose state is in the
// PostgreSQL database at database (when no server answers on data).
func OpenAdminDatabase(data, database string) (Admin, error) {
	sock := filepath.Join(data, AdminSocket)
	addr, dir, err := unixPath(data, AdminSocket)
	if err != nil {
		return nil, fmt.Errorf("%s is not a receiver data directory: %w", data, err)
	}
	if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
		c.Close()
		return &socketAdmin{dir: dir, client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", addr)
			}},
		}}, nil
	}
	dir.Close()
	if _, err := os.Stat(filepath.Join(data, pki.CACertFile)); err != nil {
		return nil, fmt.Errorf("%s is not a receiver data directory (run uploadbox-receiver serve --data %s once): %w", data, data, err)
	}
	db, err := openState(data, database, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w; no server answers on %s", err, sock)
	}
	var log auditChain
	if pg, ok := db.(*kv.Postgres); ok {
		// With the state in PostgreSQL, what admin commands change is
		// audited in the receivers' shared chain.
		log = pgaudit.New(pg.Pool(), receiverName("admin"))
	} else if log, err = audit.Open(filepath.Join(data, AuditFile)); err != nil {
		db.Close()
		return nil, err
	}
	reg, err := devices.New(db, log)
	if err == nil {
		err = initSegments(db)
	}
	var vs *viewers.Registry
	if err == nil {
		vs, err = viewers.New(db, log)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	ca, _, _, err := pki.LoadOrCreate(data, []string{"localhost"}, time.Now())
	if err != nil {
		db.Close()
		return nil, err
	}
	l, err := openLife(data, db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &localAdmin{reg: reg, db: db, ca: ca, closeDB: true, viewers: vs, life: l, data: data}, nil
}

type localAdmin struct {
	reg     *devices.Registry
	db      kv.DB
	ca      *pki.CA
	closeDB bool
	viewers *viewers.Registry
	// hub is the running server's control connections; nil without one.
	hub *Hub
	// life is the recordings' lifecycle (recordings.go).
	life *life
	// data is the data directory (the boxes' audit checkpoints with bbolt).
	data string
}

func (a *localAdmin) AddDevice(name string) (*NewDevice, error) {
	tok, exp, err := a.reg.Add(name)
	if err != nil {
		return nil, err
	}
	return &NewDevice{Name: name, Token: tok, Expires: exp, CAFingerprint: a.ca.Fingerprint()}, nil
}

func (a *localAdmin) ListDevices() ([]DeviceStatus, error) {
	ds, err := a.reg.List()
	if err != nil {
		return nil, err
	}
	seen, err := lastSeen(a.db)
	if err != nil {
		return nil, err
	}
	out := make([]DeviceStatus, len(ds))
	var remote map[string]ControlStatus
	if a.hub != nil {
		remote = a.hub.remote() // one query, not one per device
	}
	for i, d := range ds {
		d.TokenHash, d.Failures = nil, nil
		out[i] = DeviceStatus{Device: d, Control: ControlStatus{LastSeen: seen[d.Name]}}
		if a.hub != nil {
			if cs, ok := a.hub.local(d.Name); ok {
				out[i].Control = cs
			} else if cs, ok := remote[d.Name]; ok {
				out[i].Control = cs
			}
		}
	}
	return out, withReports(a.db, out, time.Now())
}

// RevokeDevice revokes name and ends its control connection.
func (a *localAdmin) RevokeDevice(name string) error {
	if err := a.reg.Revoke(name); err != nil {
		return err
	}
	if a.hub != nil {
		a.hub.drop(name, errRevoked)
	}
	return nil
}
func (a *localAdmin) UnlockDevice(name string) error { return a.reg.Unlock(name) }

func (a *localAdmin) ListRecordings() ([]Recording, error) { return a.life.recordings(false) }

func (a *localAdmin) Close() error {
	if a.closeDB {
		return a.db.Close()
	}
	return nil
}

type socketAdmin struct {
	client *http.Client
	dir    io.Closer // keeps a long data directory reachable (see unixPath)
}

// call is a device call: no body, the device errors mapped back.
func (a *socketAdmin) call(method, path string, out any) error {
	return a.do(method, path, nil, out, devices.ErrUnknownDevice, devices.ErrExists)
}

// do sends in (if not nil) as JSON and decodes the answer into out; a 404
// or 409 comes back wrapping notFound or exists, so callers can branch.
func (a *socketAdmin) do(method, path string, in, out any, notFound, exists error) error {
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
			return fmt.Errorf("%w (%s)", notFound, e.Error)
		case http.StatusConflict:
			return fmt.Errorf("%w (%s)", exists, e.Error)
		}
		return errors.New(e.Error)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (a *socketAdmin) AddDevice(name string) (*NewDevice, error) {
	var d NewDevice
	return &d, a.call("POST", "/devices/"+name, &d)
}

func (a *socketAdmin) ListDevices() ([]DeviceStatus, error) {
	var ds []DeviceStatus
	return ds, a.call("GET", "/devices", &ds)
}

func (a *socketAdmin) RevokeDevice(name string) error {
	return a.call("POST", "/devices/"+name+"/revoke", nil)
}

func (a *socketAdmin) UnlockDevice(name string) error {
	return a.call("POST", "/devices/"+name+"/unlock", nil)
}

func (a *socketAdmin) ListRecordings() ([]Recording, error) {
	var rs []Recording
	return rs, a.call("GET", "/recordings", &rs)
}

func (a *socketAdmin) Close() error { return a.dir.Close() }

// ExportStored exports recording id (hex) from the receiver's local store
// in data: the segments are found through the admin interface, so it
// works while serve runs (database: as for OpenAdminDatabase). Segments in
// an S3 store are not reachable here.
func ExportStored(ctx context.Context, data, database, id, out string, ids []*crypto.Identity) (*ExportReport, error) {
	a, err := OpenAdminDatabase(data, database)
	if err != nil {
		return nil, err
	}
	rs, err := a.ListRecordings()
	var deleted []Recording
	if err == nil {
		deleted, err = a.ListDeletedRecordings()
	}
	a.Close()
	if err != nil {
		return nil, err
	}
	for _, r := range deleted {
		if r.ID == id {
			return nil, fmt.Errorf("recording %s was deleted on %s: restore it first (recordings restore %s) before %s", id, r.Deleted.Format(time.RFC3339), id, r.PurgeAfter.Format(time.RFC3339))
		}
	}
	for _, r := range rs {
		if r.ID != id {
			continue
		}
		var paths []string
		for _, k := range r.Keys {
			p := filepath.Join(data, StoreDir, filepath.FromSlash(k))
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("recording %s: segment %s is not in the local store (an S3 store? download the segments and use export): %w", id, k, err)
			}
			paths = append(paths, p)
		}
		return Export(ctx, out, ids, paths, ExportOptions{})
	}
	return nil, fmt.Errorf("no recording %s on this receiver (see recordings list)", id)
}
