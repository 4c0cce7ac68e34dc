package agent

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends a state to systemd (Type=notify); without NOTIFY_SOCKET it
// does nothing.
func notify(state string) {
	daemon.SdNotify(false, state)
}

// watchdog pings systemd's watchdog at a third of WatchdogSec while the
// daemon is healthy: the spool index answers and the control socket is up.
// Without a watchdog it waits for ctx.
func (a *Agent) watchdog(ctx context.Context) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := a.spool.Stats(); err != nil {
				a.log.Error("watchdog: spool index does not answer; not pinging", "err", err)
				continue
			}
			notify("WATCHDOG=1")
		}
	}
}
