package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/peer"
	"github.com/uploadbox/uploadbox/wire"
)

// usePeers joins s to the other receivers whose state is in pg: requests
// for boxes they hold are forwarded to them, theirs for boxes connected
// here are answered (receiver/peer). Open calls it when the state is in
// PostgreSQL; Run runs the forwarder.
func (s *Server) usePeers(pg *kv.Postgres) error {
	f, err := peer.New(pg.Pool(), func(ctx context.Context, device, op string, params json.RawMessage) (wire.Response, error) {
		resp, err := s.hub.requestLocal(ctx, device, op, params)
		if errors.Is(err, ErrOffline) {
			// The caller says offline itself: only the detail travels.
			err = fmt.Errorf("the receiver holding it lost it: %s", strings.TrimPrefix(err.Error(), ErrOffline.Error()+": "))
		}
		return resp, err
	}, peer.Config{Lease: s.cfg.PeerLease, Logger: s.log, Changed: s.hub.rooms.changed, Lost: s.hub.dropStale})
	if err != nil {
		return err
	}
	s.peers = f
	s.hub.peer = f
	s.log.Info("control connections shared with the other receivers on the database", "replica", f.ID())
	return nil
}

// runPeers runs the forwarder until stop is called; stop returns once it
// has answered the calls it was running. Without peers both do nothing.
func (s *Server) runPeers(ctx context.Context) (stop func()) {
	if s.peers == nil {
		return func() {}
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- s.peers.Run(pctx) }()
	return func() { cancel(); <-done }
}
