package receiver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Limits on what one device may hold in unfinished uploads.
const (
	// DefaultUploadQuota is the default of ServerConfig.UploadQuota: four
	// uploads of the largest segment the receiver accepts.
	DefaultUploadQuota = 4 * MaxSegmentSize
	// MaxOpenUploads is how many uploads one device may have open at once.
	MaxOpenUploads = 64
	// DefaultUploadExpiry is the default of ServerConfig.UploadExpiry.
	DefaultUploadExpiry = 24 * time.Hour
	// DefaultPatchTimeout is the default of ServerConfig.PatchTimeout.
	DefaultPatchTimeout = 30 * time.Second
)

// An upload is open from its creation until it is committed, refused,
// deleted or expired. Each open upload has a row in ownersBucket under
// "SERIAL/ID" (so one device's rows are one key range, for the quota) and
// one in openBucket under "ID" naming the serial.
var (
	ownersBucket = []byte("upload-owners")
	openBucket   = []byte("upload-open")
)

// uploadOwner is what the receiver keeps about an open upload.
type uploadOwner struct {
	Serial  string    `json:"serial"` // the creating device's certificate serial
	Device  string    `json:"device"` // its registry name, for the audit log
	Size    int64     `json:"size"`   // declared Upload-Length
	Created time.Time `json:"created"`
}

func initUploads(db kv.DB) error {
	return db.Update(func(tx kv.Tx) error {
		for _, b := range [][]byte{ownersBucket, openBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func ownerKey(serial, id string) []byte { return []byte(serial + "/" + id) }

// owner returns the open upload id's owner, if it is open.
func (s *Server) owner(id string) (*uploadOwner, bool) {
	var o *uploadOwner
	s.db.View(func(tx kv.Tx) error {
		serial := tx.Bucket(openBucket).Get([]byte(id))
		if serial == nil {
			return nil
		}
		v := tx.Bucket(ownersBucket).Get(ownerKey(string(serial), id))
		if v == nil {
			return nil
		}
		o = &uploadOwner{}
		if json.Unmarshal(v, o) != nil {
			o = nil
		}
		return nil
	})
	return o, o != nil
}

// forgetUpload deletes an upload's ownership rows (inside tx).
func forgetUpload(tx kv.Tx, id string) error {
	open := tx.Bucket(openBucket)
	serial := open.Get([]byte(id))
	if serial == nil {
		return nil
	}
	if err := tx.Bucket(ownersBucket).Delete(ownerKey(string(serial), id)); err != nil {
		return err
	}
	return open.Delete([]byte(id))
}

// tusRefusal is a creation the receiver refuses: tusd sends its
// HTTPResponse, the JSON Refusal.
func tusRefusal(code int, reason, msg string) tusd.Error {
	body, _ := json.Marshal(Refusal{Error: msg, Reason: reason})
	return tusd.Error{
		ErrorCode: "ERR_" + strings.ToUpper(strings.ReplaceAll(reason, "-", "_")),
		Message:   msg,
		HTTPResponse: tusd.HTTPResponse{
			StatusCode: code,
			Body:       string(body) + "\n",
			Header:     tusd.HTTPHeader{"Content-Type": "application/json"},
		},
	}
}

var errQuota = errors.New("quota")

// claimUpload chooses a new upload's id and records its owner, unless the
// device would exceed its quota of open uploads (count and bytes): then
// refused says why. Check and record are one transaction, so concurrent
// creations cannot both squeeze under the limit.
func (s *Server) claimUpload(d *devices.Device, size int64) (id, refused string, err error) {
	var idb [16]byte
	rand.Read(idb[:])
	id = hex.EncodeToString(idb[:])
	var msg string
	err = s.db.Update(func(tx kv.Tx) error {
		owners := tx.Bucket(ownersBucket)
		var n int
		var used int64
		// Uploads made under a certificate the device renewed count too.
		serials := []string{d.CertSerial}
		for _, r := range d.Renewed {
			serials = append(serials, r.Serial)
		}
		c := owners.Cursor()
		for _, serial := range serials {
			prefix := []byte(serial + "/")
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				var o uploadOwner
				if json.Unmarshal(v, &o) == nil {
					n++
					used += o.Size
				}
			}
		}
		switch {
		case n >= MaxOpenUploads:
			msg = fmt.Sprintf("device %s already has %d unfinished uploads (the limit): commit, resume or delete one", d.Name, n)
			return errQuota
		case used+size > s.cfg.UploadQuota:
			msg = fmt.Sprintf("device %s has %d bytes in unfinished uploads; %d more would exceed its quota of %d bytes: commit, resume or delete one", d.Name, used, size, s.cfg.UploadQuota)
			return errQuota
		}
		v, err := json.Marshal(uploadOwner{Serial: d.CertSerial, Device: d.Name, Size: size, Created: time.Now().UTC()})
		if err != nil {
			return err
		}
		if err := owners.Put(ownerKey(d.CertSerial, id), v); err != nil {
			return err
		}
		return tx.Bucket(openBucket).Put([]byte(id), []byte(d.CertSerial))
	})
	if errors.Is(err, errQuota) {
		return "", msg, nil
	}
	if err != nil {
		return "", "", fmt.Errorf("record upload owner: %w", err)
	}
	return id, "", nil
}

// ownUploads lets a device reach only the uploads it created. A request
// for another device's upload (or for any id that is not open) is served
// by tusd as for an id that names nothing, so the answer is exactly that of
// a missing upload; another device's is audited as upload.denied.
func (s *Server) ownUploads(tus http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.Trim(r.URL.Path, "/")
		if id == "" { // creation: preCreate records the owner
			tus.ServeHTTP(w, r)
			return
		}
		d := r.Context().Value(deviceKey).(*devices.Device)
		o, ok := s.owner(id)
		if ok && d.HasSerial(o.Serial) {
			tus.ServeHTTP(w, r)
			return
		}
		if ok {
			s.denyUpload(d, r.RemoteAddr, r.Method, o)
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = "/"+missingUploadID(), ""
		tus.ServeHTTP(w, r2)
	})
}

// missingUploadID is a fresh random id no upload has (ids are 128 random
// bits); a new one each time, so that denied requests never share a lock.
func missingUploadID() string {
	var b [16]byte
	rand.Read(b[:])
	return "missing-" + hex.EncodeToString(b[:])
}

// denyUpload audits a device's request for another device's upload. The
// upload id stays out of the entry: the owner's name says enough.
func (s *Server) denyUpload(d *devices.Device, source, what string, o *uploadOwner) {
	if _, err := s.fails.Record(audit.Entry{Event: "upload.denied", Identity: d.Name, Source: source, Outcome: "denied",
		Detail: fmt.Sprintf("%s of an upload of device %s", what, o.Device)}); err != nil {
		s.log.Warn("audit upload.denied", "err", err)
	}
}

// lockUpload takes the tus lock of an upload (the handler's own locker),
// waiting at most until ctx is done. A PATCH holding it is asked to stop:
// tusd saves the bytes it received and releases the lock.
func (s *Server) lockUpload(ctx context.Context, id string) (tusd.Lock, error) {
	lock, err := s.locker.NewLock(id)
	if err != nil {
		return nil, err
	}
	if err := lock.Lock(ctx, func() {}); err != nil {
		return nil, err
	}
	return lock, nil
}

// removeUpload deletes an upload's hash state, its staged bytes and its
// ownership rows; the caller holds its lock.
func (s *Server) removeUpload(ctx context.Context, id string) error {
	if err := s.removeStaged(ctx, id); err != nil {
		return err
	}
	return s.db.Update(func(tx kv.Tx) error { return forgetUpload(tx, id) })
}

// removeStaged deletes an upload's hash state and its staged bytes, whose
// ownership rows are gone already (a commit's transaction ended them); the
// caller holds its lock.
func (s *Server) removeStaged(ctx context.Context, id string) error {
	// The hash state first: without it the upload is only read whole.
	if err := s.hashing.Forget(ctx, id); err != nil {
		return err
	}
	return s.tusStore.remove(ctx, id)
}

// expireUploads removes the uploads opened before cutoff, and staged
// uploads without an owner (left by an older receiver) created before it.
// A PATCH still running on an expired upload is stopped (tusd keeps its
// lock until then); if it does not stop in time, the next round removes it.
// An upload whose adopting commit a crash cut short is settled first
// (settleAdopted).
func (s *Server) expireUploads(ctx context.Context, cutoff time.Time) (int, error) {
	var ids []string
	known := map[string]bool{}
	err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(ownersBucket).ForEach(func(k, v []byte) error {
			_, id, _ := strings.Cut(string(k), "/")
			known[id] = true
			var o uploadOwner
			if json.Unmarshal(v, &o) != nil || o.Created.Before(cutoff) {
				ids = append(ids, id)
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	staged, err := s.tusStore.stale(ctx, cutoff)
	if err != nil {
		return 0, fmt.Errorf("expire uploads: %w", err)
	}
	for _, id := range staged {
		if !known[id] {
			ids = append(ids, id)
		}
	}
	n := 0
	for _, id := range ids {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		lock, err := s.lockUpload(lctx, id)
		cancel()
		if err != nil {
			continue
		}
		err = s.settleAdopted(ctx, id)
		if err == nil {
			err = s.removeUpload(ctx, id)
		}
		lock.Unlock()
		if err != nil {
			return n, fmt.Errorf("expire upload: %w", err)
		}
		n++
	}
	return n, nil
}

// runJanitor expires uploads until ctx is done, checking a few times per
// expiry period.
func (s *Server) runJanitor(ctx context.Context) {
	every := min(max(s.cfg.UploadExpiry/4, time.Second), 10*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.expireUploads(ctx, time.Now().Add(-s.cfg.UploadExpiry))
			if err != nil {
				s.log.Warn("expiring unfinished uploads", "err", err)
			}
			if n > 0 {
				s.log.Info("unfinished uploads expired", "count", n, "older_than", s.cfg.UploadExpiry)
			}
		}
	}
}

// uploadDefaults fills in the upload limits left zero and refuses
// negative ones.
func (cfg *ServerConfig) uploadDefaults() error {
	var errs []error
	if cfg.UploadQuota < 0 {
		errs = append(errs, fmt.Errorf("serve: --upload-quota %d: must be a positive number of bytes", cfg.UploadQuota))
	}
	if cfg.UploadExpiry < 0 {
		errs = append(errs, fmt.Errorf("serve: --upload-expiry %s: must be positive", cfg.UploadExpiry))
	}
	if cfg.PatchTimeout < 0 {
		errs = append(errs, fmt.Errorf("serve: --patch-timeout %s: must be positive", cfg.PatchTimeout))
	}
	if cfg.UploadQuota == 0 {
		cfg.UploadQuota = DefaultUploadQuota
	}
	if cfg.UploadExpiry == 0 {
		cfg.UploadExpiry = DefaultUploadExpiry
	}
	if cfg.PatchTimeout == 0 {
		cfg.PatchTimeout = DefaultPatchTimeout
	}
	return errors.Join(errs...)
}
