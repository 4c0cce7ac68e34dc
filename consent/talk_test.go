package consent

import (
	"strings"
	"testing"
	"time"
)

func TestTalk(t *testing.T) {
	tests := []struct {
		name string
		talk bool
	}{
		{"granted with talk", true},
		{"granted without talk", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, newClock().Now)
			l := r.l
			l.SessionStarted(time.Time{})
			id := pending(t, l, "coach", true)
			g, err := l.AcceptWith(id, Terms{Talk: tt.talk}, "uid:1000(teacher)")
			if err != nil {
				t.Fatal(err)
			}
			if g.Talk != tt.talk {
				t.Fatalf("AcceptWith gave talk=%v, want %v", g.Talk, tt.talk)
			}
			got, err := l.Ask("coach", false)
			if err != nil {
				t.Fatal(err)
			}
			if got.Talk != tt.talk {
				t.Fatalf("Ask talk = %v, want %v", got.Talk, tt.talk)
			}
			// Stored: a restart keeps what the teacher granted.
			r.reopen()
			l = r.l
			if req := mustState(t, l, id, StateAccepted); req.Talk != tt.talk {
				t.Fatalf("stored request talk = %v, want %v", req.Talk, tt.talk)
			}
			// The talk-back ends with the grant: no grant, no talk.
			l.SessionStarted(time.Time{})
			if err := l.Revoke("coach", "uid:1000(teacher)"); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Ask("coach", false); !isDenied(err, ReasonRevoked) {
				t.Fatalf("Ask after revoke = %v, want revoked", err)
			}
			var accept, revoke string
			for _, e := range r.events() {
				switch e.Event {
				case "consent.accept":
					accept = e.Detail
				case "consent.revoke":
					revoke = e.Detail
				}
			}
			for what, d := range map[string]string{"accept": accept, "revoke": revoke} {
				if strings.Contains(d, "talk=yes") != tt.talk {
					t.Fatalf("audited %s %q: talk=yes present = %v, want %v", what, d, !tt.talk, tt.talk)
				}
			}
		})
	}
}

func TestSpeaking(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	changes, cancel := l.Changes()
	defer cancel()
	l.TalkOpened("coach", "S1")
	<-changes
	s, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.Speaking != "coach" {
		t.Fatalf("Snapshot.Speaking = %q after TalkOpened, want coach", s.Speaking)
	}
	l.TalkClosed("coach", "S1", "revoked", 1500*time.Millisecond)
	<-changes
	if s, _ = l.Snapshot(); s.Speaking != "" {
		t.Fatalf("Snapshot.Speaking = %q after TalkClosed, want none", s.Speaking)
	}
	var got []string
	for _, e := range r.events() {
		got = append(got, e.Event+" "+e.Identity+" "+e.Detail)
	}
	want := []string{"live.talk_open coach session=S1", "live.talk_close coach session=S1 duration=1.5s reason=revoked"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audited:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
