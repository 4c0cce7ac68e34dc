package agent

import (
	"context"
	"fmt"

	"github.com/uploadbox/uploadbox/agent/live"
	"github.com/uploadbox/uploadbox/agent/talkback"
)

// talker hands the live view the talk-back player's voices.
type talker struct{ p *talkback.Player }

func (t talker) Speak(viewer, session string) live.Voice { return t.p.Speak(viewer, session) }

// startTalkback opens live.talkback_device and runs its player until ctx
// ends or stop is called (which waits for it and closes the device). With
// no device it returns a nil Talker: no viewer's audio is taken. The floor
// being taken and released is audited (live.talk_open, live.talk_close)
// and marks the viewer speaking in the consent state.
func (a *Agent) startTalkback(ctx context.Context, device string) (live.Talker, func(), error) {
	if device == "" {
		return nil, func() {}, nil
	}
	sink, err := talkback.OpenSink(device)
	if err != nil {
		return nil, nil, fmt.Errorf("live.talkback_device: %w", err)
	}
	p := talkback.NewPlayer(sink, talkback.Options{
		Opened: a.ledger.TalkOpened,
		Closed: a.ledger.TalkClosed,
		Logger: a.log,
	})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			a.log.Error("talk-back", "err", err)
		}
	}()
	a.log.Info("talk-back on", "device", device)
	return talker{p}, func() {
		cancel()
		<-done
	}, nil
}
