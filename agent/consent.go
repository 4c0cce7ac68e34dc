package agent

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/agent/indicator"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
)

// ConsentAccept are the parameters of "consent.accept".
type ConsentAccept struct {
	ID      string `json:"id"`
	For     string `json:"for,omitempty"` // empty: live.grant_default
	NoAudio bool   `json:"no_audio,omitempty"`
	Talk    bool   `json:"talk,omitempty"` // the viewer may speak to the teacher (talk-back)
}

// ConsentID names a request ("consent.deny").
type ConsentID struct {
	ID string `json:"id"`
}

// ConsentViewer names a viewer ("consent.revoke").
type ConsentViewer struct {
	Viewer string `json:"viewer"`
}

// AuditList are the parameters of "audit.list".
type AuditList struct {
	Last int `json:"last,omitempty"` // the last N entries; 0: all
	// Since and Types select entries as audit.Filter does (`audit list`).
	Since time.Time `json:"since,omitzero"`
	Types []string  `json:"types,omitempty"`
}

// AuditReport is the answer to "audit.verify".
type AuditReport struct {
	Path    string `json:"path"`
	Entries int    `json:"entries"`
	First   uint64 `json:"first"`
	Last    uint64 `json:"last"`
	// Checkpoint is the last signed checkpoint the log was checked
	// against; nil before the first one.
	Checkpoint *audit.Checkpoint `json:"checkpoint,omitempty"`
}

func consentError(err error) error {
	switch {
	case errors.Is(err, consent.ErrUnknownRequest), errors.Is(err, consent.ErrNoGrant):
		return control.Errorf("not-found", "%v", err)
	case errors.Is(err, consent.ErrNotPending):
		return control.Errorf("conflict", "%v", err)
	}
	return err
}

// handleConsent answers the consent.*, audit.verify and audit.list calls.
func (a *Agent) handleConsent(r control.Request) (any, error) {
	defer a.updateIndicator()
	switch r.Method {
	case "consent.list":
		return a.ledger.List()
	case "consent.accept":
		var p ConsentAccept
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		var ttl time.Duration
		if p.For != "" {
			var err error
			if ttl, err = config.ParseDuration(p.For); err != nil || ttl <= 0 {
				return nil, control.Errorf("bad-request", "--for %q: give a positive duration such as 45m", p.For)
			}
		}
		g, err := a.ledger.AcceptWith(p.ID, consent.Terms{TTL: ttl, NoAudio: p.NoAudio, Talk: p.Talk}, r.Caller())
		if err != nil {
			return nil, consentError(err)
		}
		return g, nil
	case "consent.deny":
		var p ConsentID
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		if err := a.ledger.Deny(p.ID, r.Caller()); err != nil {
			return nil, consentError(err)
		}
		return a.ledger.Get(p.ID)
	case "consent.revoke":
		var p ConsentViewer
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		if err := a.ledger.Revoke(p.Viewer, r.Caller()); err != nil {
			return nil, consentError(err)
		}
		return struct{}{}, nil
	case "audit.verify":
		path := a.Config().Audit.Path
		// Checkpoints must be the device key's; before enrollment any
		// checkpoint is checked against the key it names.
		var key ed25519.PublicKey
		if st, err := a.enrolled(); err == nil {
			key = st.Device.Public().Bytes()
		}
		rep, err := audit.VerifyAnchored(path, key)
		if err != nil {
			return nil, control.Errorf("audit-broken", "audit log %s: %v", path, err)
		}
		return AuditReport{Path: path, Entries: rep.Entries, First: rep.First, Last: rep.Last, Checkpoint: rep.Checkpoint}, nil
	case "audit.list":
		var p AuditList
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		if p.Last < 0 {
			return nil, control.Errorf("bad-request", "--last %d: give a positive number of entries (0: all)", p.Last)
		}
		es, err := audit.List(a.Config().Audit.Path, audit.Filter{Since: p.Since, Types: p.Types, Last: p.Last})
		if err != nil {
			return nil, control.Errorf("audit-broken", "%v", err)
		}
		return es, nil
	}
	return nil, control.Errorf("unknown-method", "unknown control method %q", r.Method)
}

// updateIndicator shows the highest state that applies: someone watching,
// a request waiting for the teacher, a session recording, or idle.
func (a *Agent) updateIndicator() {
	if a.ind == nil {
		return
	}
	s := indicator.Idle
	if a.Capture() != nil {
		s = indicator.Recording
	}
	if rs, err := a.ledger.List(); err == nil {
		for _, r := range rs {
			if r.State == consent.StatePending {
				s = indicator.Pending
				break
			}
		}
	}
	if a.viewers.Load() > 0 {
		s = indicator.Watching
	}
	if err := a.ind.Set(s); err != nil {
		a.log.Error("privacy indicator", "err", err)
	}
	pending := 0.0
	if s == indicator.Pending {
		pending = 1
	}
	a.m.consentState.WithLabelValues("pending").Set(pending)
}

// openConsent opens the ledger and the indicator.
func (a *Agent) openConsent(cfg *config.Config) error {
	var err error
	a.ledger, err = consent.Open(consentPath(cfg), consent.Options{
		Audit: a.audit, DefaultTTL: cfg.Live.GrantDefault.D(), Cooldown: cfg.Consent.DeclineCooldown.D(), Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("consent ledger: %w", err)
	}
	// The daemon starts without a session: no grant outlives a restart.
	a.ledger.SessionEnded(consent.ByDaemon)
	a.ind, err = indicator.New(cfg.Indicator.Path)
	if err != nil {
		a.log.Error("privacy indicator cannot be driven: live view is refused until it can", "err", err)
	}
	a.ind.OnFail = a.indicatorFailed
	return nil
}

// indicatorFailed ends every live grant when the privacy indicator stops
// working: nobody may watch without the teacher being able to see it.
func (a *Agent) indicatorFailed(err error) {
	a.log.Error("privacy indicator stopped working: ending every live view", "err", err)
	rs, lerr := a.ledger.List()
	if lerr != nil {
		a.log.Error("consent ledger", "err", lerr)
		return
	}
	for _, r := range rs {
		if r.State == consent.StateAccepted {
			if err := a.ledger.Revoke(r.Viewer, consent.ByDaemon); err != nil && !errors.Is(err, consent.ErrNoGrant) {
				a.log.Error("end live view", "viewer", r.Viewer, "err", err)
			}
		}
	}
}

func consentPath(cfg *config.Config) string { return filepath.Join(cfg.StateDir, "consent.db") }
