package agent

import (
	"net/http"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/wire"
)

// TestDecisionTalk: a teacher's signed accept or video_only with talk
// gives a grant that lets the viewer speak, and the consent state pushed to
// the receiver says so; one without talk does not.
func TestDecisionTalk(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		talk     bool
	}{
		{"accept with talk", wire.DecisionAccept, true},
		{"video only with talk", wire.DecisionVideoOnly, true},
		{"accept without talk", wire.DecisionAccept, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newDecisionRig(t, true)
			l := r.a.ledger
			l.SessionStarted(time.Now().Add(time.Hour))
			req := pendingOf(t, l, "coach-a")
			now := time.Now().UTC().Truncate(time.Millisecond)
			s, err := wire.SignDecision(r.key, wire.Decision{
				Teacher: "tess", Device: "room-7", Request: req, Decision: tt.decision, Talk: tt.talk,
				IssuedAt: now, Expires: now.Add(30 * time.Second), Nonce: "nonce-" + tt.name,
			})
			if err != nil {
				t.Fatal(err)
			}
			resp, res := r.send(t, s)
			if resp.Status != http.StatusOK || res.State != consent.StateAccepted || res.Talk != tt.talk {
				t.Fatalf("decision: %+v %+v, want accepted with talk=%t", resp, res, tt.talk)
			}
			if g, err := l.Ask("coach-a", true); err != nil || g.Talk != tt.talk {
				t.Fatalf("Ask after the decision: %+v, %v, want talk=%t", g, err, tt.talk)
			}
			l.TalkOpened("coach-a", "S1")
			snap, err := l.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			st := consentState(snap)
			if len(st.Watching) != 1 || st.Watching[0].Talk != tt.talk || st.Watching[0].Speaking != tt.talk {
				t.Fatalf("consent state watching %+v, want talk=speaking=%t", st.Watching, tt.talk)
			}
		})
	}
}
