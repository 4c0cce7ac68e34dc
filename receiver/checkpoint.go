package receiver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
)

// CheckpointsDir, inside the data directory, holds per device the newest
// audit checkpoint its box sent (NAME.json): the anchor `devices
// audit-check` verifies that box's audit log against.
const CheckpointsDir = "audit-checkpoints"

// DeviceCheckpointPath is where the receiver in data keeps device's
// newest audit checkpoint.
func DeviceCheckpointPath(data, device string) string {
	return filepath.Join(data, CheckpointsDir, device+".json")
}

// checkpointMu serialises the read-compare-replace of stored checkpoints.
var checkpointMu sync.Mutex

// CheckpointResponse answers a stored (or repeated) checkpoint.
type CheckpointResponse struct {
	Seq    uint64 `json:"seq"`
	Stored bool   `json:"stored"` // false: the receiver held this one already
}

// handleAuditCheckpoint stores a box's audit checkpoint: 200 stored (or
// already held), 400 malformed, 422 not signed by the device's enrolled
// key, 409 older than or forked from the one held.
func (s *Server) handleAuditCheckpoint(w http.ResponseWriter, r *http.Request) {
	d := r.Context().Value(deviceKey).(*devices.Device)
	body, err := io.ReadAll(io.LimitReader(r.Body, audit.MaxCheckpointSize+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, "read checkpoint: "+err.Error())
		return
	}
	c, err := audit.ParseCheckpoint(body)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	refuse := func(code int, err error) {
		if _, aerr := s.audit.Append(audit.Entry{Event: "device.audit-checkpoint", Identity: d.Name, Source: r.RemoteAddr,
			Outcome: "refused", Detail: fmt.Sprintf("seq %d: %v", c.Seq, err)}); aerr != nil {
			s.log.Error("audit log append failed", "err", aerr)
		}
		httpError(w, code, err.Error())
	}
	if len(d.PublicKey) != ed25519.PublicKeySize {
		refuse(http.StatusUnprocessableEntity, fmt.Errorf("device %s has no enrolled key to check the checkpoint against", d.Name))
		return
	}
	if err := c.Verify(ed25519.PublicKey(d.PublicKey)); err != nil {
		refuse(http.StatusUnprocessableEntity, fmt.Errorf("checkpoint not signed by device %s's enrolled key: %w", d.Name, err))
		return
	}
	same, err := keepDeviceCheckpoint(s.db, s.cfg.Data, d.Name, c)
	var nf *notFollowing
	switch {
	case errors.As(err, &nf):
		refuse(http.StatusConflict, nf.err)
		return
	case err != nil:
		s.log.Error("store audit checkpoint", "device", d.Name, "err", err)
		httpError(w, http.StatusInternalServerError, "cannot store the checkpoint")
		return
	case !same:
		s.log.Debug("audit checkpoint stored", "device", d.Name, "seq", c.Seq)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(CheckpointResponse{Seq: c.Seq, Stored: !same})
}

// runCheckpoints signs the receiver's audit chain (its file, or the chain
// shared in PostgreSQL) with the receipt key every AuditCheckpointEvery,
// and once more when ctx ends.
func (s *Server) runCheckpoints(ctx context.Context) {
	checkpoint := func() (audit.Checkpoint, bool, error) { return s.audit.Checkpoint(s.receiptKey) }
	audit.RunCheckpoints(ctx, s.cfg.AuditCheckpointEvery, checkpoint, func(c audit.Checkpoint, written bool, err error) {
		switch {
		case err != nil:
			s.log.Error("audit checkpoint not written: check the audit log with uploadbox-receiver audit verify", "err", err)
		case written:
			s.log.Debug("audit checkpoint written", "seq", c.Seq)
		}
	})
}

// VerifyAudit verifies the audit chain of the receiver in data (with
// database, the chain the receivers share in that PostgreSQL database):
// its hash chain, and that it still holds what the last checkpoint
// (signed with the receipt key) covers.
func VerifyAudit(data, database string) (audit.Report, error) {
	path := filepath.Join(data, AuditFile)
	var pub ed25519.PublicKey
	if database != "" {
		key, err := loadReceiptKey(filepath.Join(data, ReceiptKeyFile))
		if err != nil {
			return audit.Report{}, fmt.Errorf("the audit checkpoints are signed with the receipt key: %w", err)
		}
		pub = key.Public().(ed25519.PublicKey)
	} else if cps, err := audit.ReadCheckpoints(audit.CheckpointPath(path)); err != nil {
		return audit.Report{}, err
	} else if len(cps) > 0 {
		key, err := loadReceiptKey(filepath.Join(data, ReceiptKeyFile))
		if err != nil {
			return audit.Report{}, fmt.Errorf("audit checkpoints are signed with the receipt key: %w", err)
		}
		pub = key.Public().(ed25519.PublicKey)
	}
	c, close, err := openAuditChain(data, database)
	if err != nil {
		return audit.Report{}, err
	}
	defer close()
	return c.VerifyAnchored(pub)
}

// AuditCheck is the result of checking a box's audit log against the
// checkpoint the receiver holds for it.
type AuditCheck struct {
	Device     string            `json:"device"`
	File       string            `json:"file"`
	Entries    int               `json:"entries"`
	First      uint64            `json:"first"`
	Last       uint64            `json:"last"`
	Checkpoint *audit.Checkpoint `json:"checkpoint,omitempty"`
	OK         bool              `json:"ok"`
	Missing    uint64            `json:"missing,omitempty"` // entries missing after the checkpoint
	Problem    string            `json:"problem,omitempty"`
}

// CheckDeviceAudit verifies the box audit log in file against the newest
// checkpoint device sent to the receiver in data, after checking that
// checkpoint against the device's enrolled key. A log that fails is
// reported in the result (OK false, Problem); err is for what could not
// be checked at all. database is as for OpenAdminDatabase.
func CheckDeviceAudit(data, database, device, file string) (*AuditCheck, error) {
	a, err := OpenAdminDatabase(data, database)
	if err != nil {
		return nil, err
	}
	ds, err := a.ListDevices()
	var held *audit.Checkpoint
	if err == nil {
		held, err = a.DeviceCheckpoint(device)
	}
	a.Close()
	if err != nil {
		return nil, err
	}
	// The checkpoint may be signed by the key the box held before a
	// re-key: any key of its history that is not compromised is good.
	var keys []ed25519.PublicKey
	found := false
	for _, d := range ds {
		if d.Name == device {
			found = true
			if len(d.PublicKey) == ed25519.PublicKeySize {
				keys = append(keys, d.PublicKey)
			}
			for _, k := range d.History {
				if k.Compromised.IsZero() {
					keys = append(keys, k.PublicKey)
				}
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s (see devices list)", devices.ErrUnknownDevice, device)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("device %s has not enrolled yet: it has no key and no checkpoint", device)
	}
	if held == nil {
		return nil, fmt.Errorf("device %s has sent no audit checkpoint yet (its daemon sends one at least every 10 minutes once it reaches the receiver)", device)
	}
	c := *held
	verr := c.Verify(keys[0])
	for _, k := range keys[1:] {
		if verr != nil && c.Verify(k) == nil {
			verr = nil
		}
	}
	if verr != nil {
		return nil, fmt.Errorf("the stored checkpoint of %s: %w", device, verr)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--file: %w", err)
	}
	defer f.Close()
	rep, err := audit.VerifyCheckpointed(f, []audit.Checkpoint{c})
	res := &AuditCheck{Device: device, File: file, Entries: rep.Entries, First: rep.First, Last: rep.Last, Checkpoint: &c, OK: err == nil}
	if err != nil {
		res.Problem = err.Error()
		var ce *audit.CheckpointError
		if errors.As(err, &ce) {
			res.Missing = ce.Missing
		}
	}
	return res, nil
}

// loadReceiptKey reads the receipt key without creating one.
func loadReceiptKey(path string) (ed25519.PrivateKey, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return loadOrCreateReceiptKey(path)
}

// checkpointInterval checks serve's --audit-checkpoint-every.
func checkpointInterval(d time.Duration) (time.Duration, error) {
	if d == 0 {
		return audit.MaxCheckpointInterval, nil
	}
	if d < time.Second || d > audit.MaxCheckpointInterval {
		return 0, fmt.Errorf("--audit-checkpoint-every %s: use 1s to %s", d, audit.MaxCheckpointInterval)
	}
	return d, nil
}
