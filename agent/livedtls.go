package agent

import (
	"fmt"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/live"
)

// loadDTLS loads the live view's DTLS identity from the state directory,
// making it at the first start. A failure (a key others can read) is the
// live view's error when it starts, as for its TLS key; with live view off
// it is only logged and shown by status.
func (a *Agent) loadDTLS(cfg *config.Config) {
	id, created, err := live.LoadOrCreateIdentity(cfg.StateDir, time.Now())
	if err != nil {
		a.dtlsErr = err
		a.log.Error("no live view DTLS identity: the live view cannot start", "err", err)
		return
	}
	a.dtls = id
	if created {
		a.log.Info("made the live view DTLS identity", "fingerprint", id.Fingerprint, "not_after", id.NotAfter.UTC().Format(time.RFC3339))
	}
}

// dtlsIdentity is the identity for the live view, or why there is none.
func (a *Agent) dtlsIdentity() (*live.Identity, error) {
	if a.dtls == nil {
		return nil, fmt.Errorf("live view: %w", a.dtlsErr)
	}
	return a.dtls, nil
}

// dtlsFingerprint is what status shows: the fingerprint, or why there is
// none.
func (a *Agent) dtlsFingerprint() (fp, problem string) {
	if a.dtls == nil {
		return "", a.dtlsErr.Error()
	}
	return a.dtls.Fingerprint, ""
}
