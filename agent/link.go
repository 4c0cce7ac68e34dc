package agent

import (
	"context"
	"time"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/netfail"
	"github.com/uploadbox/uploadbox/wire"
)

// linkLoop keeps the control connection to the receiver while the box is
// enrolled and link.enabled is on (changing it takes a restart). A box
// enrolled while the daemon runs connects within a few seconds.
func (a *Agent) linkLoop(ctx context.Context) error {
	cfg := a.Config()
	if !cfg.LinkOn() {
		return nil
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		st, err := a.enrolled()
		if err == nil {
			name := ""
			if st.DeviceCert.Leaf != nil {
				name = st.DeviceCert.Leaf.Subject.CommonName
			}
			connects := 0 // OnChange runs on the client's goroutine only
			c := link.New(link.Options{
				Receiver:     st.Receiver,
				TLS:          st.TLSConfig(),
				Hello:        wire.Hello{Device: name, Version: cli.Version, Capabilities: []string{wire.OpWHEP, wire.OpDecision}},
				PingInterval: cfg.Link.PingInterval.D(),
				PingTimeout:  cfg.Link.PingTimeout.D(),
				RetryMax:     cfg.Link.RetryMax.D(),
				Classify:     netfail.Classify,
				Serve:        a.serveRequest,
				OnChange: func(s link.State) {
					a.linkConnected(s, &connects)
					v := 0.0
					if s.Connected {
						v = 1
					}
					a.m.controlConnected.Set(v)
				},
				Logger: a.log,
			})
			a.mu.Lock()
			a.link = c
			a.mu.Unlock()
			return c.Run(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// linkState is the control connection's state; nil if it does not run.
func (a *Agent) linkState() *link.State {
	a.mu.Lock()
	c := a.link
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	st := c.State()
	return &st
}
