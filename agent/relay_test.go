package agent

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/wire"
)

func TestRelayWHEP(t *testing.T) {
	var seen *http.Request
	var seenBody string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		b, _ := io.ReadAll(r.Body)
		seenBody = string(b)
		w.Header().Set("Location", "/whep/S1")
		w.Header().Set("Content-Type", "application/sdp")
		w.Header().Set("X-Debug", "no")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, strings.Repeat("a", wire.MaxWHEPBody+10))
	})
	out, err := RelayWHEP(t.Context(), h, wire.WHEPRequest{Method: "POST", Path: "/whep",
		Header: http.Header{"Authorization": {"Bearer t"}, "Content-Type": {"application/sdp"}, "Cookie": {"c"}}, Body: []byte("offer")})
	if err != nil {
		t.Fatal(err)
	}
	if seen.Header.Get("Authorization") != "Bearer t" || seen.Header.Get("Cookie") != "" || seen.RemoteAddr != RelaySource || seenBody != "offer" {
		t.Errorf("handler saw %v from %s body %q: want Authorization kept, Cookie dropped, source %s", seen.Header, seen.RemoteAddr, seenBody, RelaySource)
	}
	if out.Status != 201 || out.Header.Get("Location") != "/whep/S1" || out.Header.Get("X-Debug") != "" || len(out.Body) != wire.MaxWHEPBody {
		t.Errorf("answer %d %v %d bytes", out.Status, out.Header, len(out.Body))
	}
	for _, p := range []string{"/", "/admin", "/whep/../x", "/whep?x=1"} {
		if _, err := RelayWHEP(t.Context(), h, wire.WHEPRequest{Method: "GET", Path: p}); err == nil {
			t.Errorf("path %q relayed, want refused", p)
		}
	}
}

// TestRelayICEServers: a relayed request's ICE servers must be a few
// stun:/turn: URLs; anything else refuses the request.
func TestRelayICEServers(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) })
	turn := wire.ICEServer{URLs: []string{"turn:198.51.100.1:3478?transport=udp", "turn:198.51.100.1:3478?transport=tcp"}, Username: "1:box:r:v", Credential: "x"}
	for _, tc := range []struct {
		name    string
		servers []wire.ICEServer
		ok      bool
	}{
		{"turn", []wire.ICEServer{turn}, true},
		{"none", nil, true},
		{"http url", []wire.ICEServer{{URLs: []string{"http://198.51.100.1/"}}}, false},
		{"no url", []wire.ICEServer{{}}, false},
		{"too many", []wire.ICEServer{turn, turn, turn, turn, turn}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RelayWHEP(t.Context(), h, wire.WHEPRequest{Method: "POST", Path: "/whep", ICEServers: tc.servers})
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %t", err, tc.ok)
			}
		})
	}
}
