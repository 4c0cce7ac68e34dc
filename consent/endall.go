package consent

import (
	"errors"
	"fmt"
	"slices"
)

// EndAll ends every live grant now, as Revoke does one viewer's: watchers
// get EndRevoked and each end is audited "consent.revoke" with by. It
// returns the viewers whose grants ended, in the order they were granted;
// none is not an error. Pending requests stay pending.
func (l *Ledger) EndAll(by string) ([]string, error) {
	if by == "" {
		return nil, fmt.Errorf("end all viewing: %w", ErrNoDecider)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	var viewers []string
	var errs []error
	for _, r := range l.sortedActiveLocked() {
		if r.State != StateAccepted {
			continue
		}
		if !slices.Contains(viewers, r.Viewer) {
			viewers = append(viewers, r.Viewer)
		}
		errs = append(errs, l.endLocked(r, StateRevoked, EndRevoked, "consent.revoke", by, now))
	}
	if len(viewers) > 0 {
		l.log.Info("all viewing ended", "viewers", len(viewers), "by", by)
	}
	if err := errors.Join(errs...); err != nil {
		return viewers, fmt.Errorf("end all viewing (the grants are ended, recording it failed): %w", err)
	}
	return viewers, nil
}
