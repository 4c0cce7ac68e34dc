package livetest

import (
	"net/http"
	"testing"
)

func TestICEServersFromLinks(t *testing.T) {
	h := http.Header{}
	h.Add("Link", `<turn:203.0.113.5:3478?transport=udp>; rel="ice-server"; username="1765000000:viewer:room-7:coach-c"; credential="a+b/c=="; credential-type="password", </whep/x>; rel="self"`)
	h.Add("Link", `<stun:203.0.113.5:3478>; rel="ice-server"`)
	got := ICEServersFromLinks(h)
	if len(got) != 2 {
		t.Fatalf("parsed %+v, want 2 ICE servers", got)
	}
	if got[0].URLs[0] != "turn:203.0.113.5:3478?transport=udp" || got[0].Username != "1765000000:viewer:room-7:coach-c" || got[0].Credential != "a+b/c==" {
		t.Errorf("TURN server %+v", got[0])
	}
	if got[1].URLs[0] != "stun:203.0.113.5:3478" || got[1].Username != "" {
		t.Errorf("STUN server %+v", got[1])
	}
}
