package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/uploadbox/uploadbox/wire"
)

// renewLoop renews the device certificate at two thirds of its lifetime
// (wire.RenewAt), over the box's mutual TLS, keeping the device key. The
// uploader and the control connection present the new certificate from
// their next handshake on; connections already open go on. A certificate
// renewed by hand (uploadbox enroll --renew) is picked up from the state
// directory. A failed renewal is retried after a twentieth of the
// certificate's lifetime (1s to 5 minutes) until it expires.
func (a *Agent) renewLoop(ctx context.Context) error {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for {
		st, err := a.enrolled()
		if err != nil {
			if !wait(2 * time.Second) {
				return nil
			}
			continue
		}
		if changed, err := st.ReloadCertificate(); err != nil {
			a.log.Warn("device certificate in the state directory not used", "err", err)
		} else if changed {
			a.log.Info("device certificate renewed by hand picked up", "serial", st.Certificate().SerialNumber.String(), "not_after", st.Certificate().NotAfter)
		}
		cur := st.Certificate()
		if due := time.Until(wire.RenewAt(cur)); due > 0 {
			// Wake at the due time, and now and then before it to pick up
			// a certificate renewed by hand.
			if !wait(min(due, time.Minute)) {
				return nil
			}
			continue
		}
		cert, err := st.Renew(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			retry := min(max(cur.NotAfter.Sub(cur.NotBefore.Add(wire.DeviceCertBackdate))/20, time.Second), 5*time.Minute)
			a.log.Warn("device certificate renewal failed; retrying", "err", err, "expires", cur.NotAfter, "retry_in", retry)
			a.auditEvent("cert.renew", "", "failed", err.Error())
			if !wait(retry) {
				return nil
			}
			continue
		}
		a.log.Info("device certificate renewed", "serial", cert.SerialNumber.String(), "not_after", cert.NotAfter)
		a.auditEvent("cert.renew", "", "ok", fmt.Sprintf("serial %s valid until %s", cert.SerialNumber, cert.NotAfter.UTC().Format(time.RFC3339)))
	}
}
