package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/agent/live"
	"github.com/uploadbox/uploadbox/wire"
)

// RelaySource is the source address the live view sees (and audits) for a
// WHEP request relayed by the receiver.
const RelaySource = "receiver-relay"

// serveRequest answers the receiver's requests on the control connection:
// wire.OpWHEP runs the relayed request through the live view's own handler
// (the same token check, consent gate and audit as the LAN endpoint), so
// that the receiver cannot admit anyone; wire.OpDecision is a teacher's
// decision the receiver signed, checked by the box before it acts
// (decision.go). Any other op is 501.
func (a *Agent) serveRequest(ctx context.Context, op string, params json.RawMessage) wire.Response {
	if op == wire.OpDecision {
		return a.serveDecision(params) // agent/decision.go
	}
	if op != wire.OpWHEP {
		return wire.Response{Status: http.StatusNotImplemented, Error: "op " + op + " is not served by this box"}
	}
	var in wire.WHEPRequest
	if err := json.Unmarshal(params, &in); err != nil {
		return wire.Response{Status: http.StatusBadRequest, Error: "malformed whep request: " + err.Error()}
	}
	a.mu.Lock()
	h := a.liveHandler
	a.mu.Unlock()
	if h == nil {
		return wire.Response{Status: http.StatusServiceUnavailable, Error: "the live view is off on this box (live.enabled)"}
	}
	out, err := RelayWHEP(ctx, h, in)
	if err != nil {
		return wire.Response{Status: http.StatusBadRequest, Error: err.Error()}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return wire.Response{Status: http.StatusInternalServerError, Error: err.Error()}
	}
	return wire.Response{Status: http.StatusOK, Result: b}
}

// RelayWHEP serves one relayed WHEP request with h in-process and returns
// what h wrote: status, the answer headers a viewer may see, and the body
// (cut at wire.MaxWHEPBody). The request's ICE servers (the receiver's
// TURN, with the box's credential for this session) reach the live view
// through the request's context, never through a header: a LAN viewer
// cannot hand the box a relay.
func RelayWHEP(ctx context.Context, h http.Handler, in wire.WHEPRequest) (wire.WHEPResponse, error) {
	if !strings.HasPrefix(in.Path, "/whep") || strings.Contains(in.Path, "..") || strings.ContainsAny(in.Path, "?#") {
		return wire.WHEPResponse{}, &badPath{in.Path}
	}
	if len(in.ICEServers) > 0 {
		servers, err := relayICEServers(in.ICEServers)
		if err != nil {
			return wire.WHEPResponse{}, err
		}
		ctx = live.WithICEServers(ctx, servers)
	}
	if len(in.Body) > wire.MaxWHEPBody {
		return wire.WHEPResponse{Status: http.StatusRequestEntityTooLarge}, nil
	}
	r, err := http.NewRequestWithContext(ctx, in.Method, in.Path, bytes.NewReader(in.Body))
	if err != nil {
		return wire.WHEPResponse{}, err
	}
	r.Header = wire.FilterHeader(in.Header, wire.WHEPHeaders)
	r.RemoteAddr = RelaySource
	rec := &relayWriter{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return wire.WHEPResponse{Status: rec.status, Header: wire.FilterHeader(rec.header, wire.WHEPAnswerHeaders), Body: rec.body.Bytes()}, nil
}

// relayICEServers checks the ICE servers of a relayed request: a few
// stun:, turn: or turns: URLs.
func relayICEServers(in []wire.ICEServer) ([]webrtc.ICEServer, error) {
	if len(in) > wire.MaxICEServers {
		return nil, fmt.Errorf("relayed request has %d ICE servers, more than %d", len(in), wire.MaxICEServers)
	}
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		if len(s.URLs) == 0 || len(s.URLs) > wire.MaxICEServers {
			return nil, fmt.Errorf("relayed ICE server with %d URLs: want 1 to %d", len(s.URLs), wire.MaxICEServers)
		}
		for _, u := range s.URLs {
			scheme, _, _ := strings.Cut(u, ":")
			if scheme != "stun" && scheme != "turn" && scheme != "turns" {
				return nil, fmt.Errorf("relayed ICE server URL %q: want stun:, turn: or turns:", u)
			}
		}
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out, nil
}

type badPath struct{ path string }

func (e *badPath) Error() string { return "whep request path " + e.path + " is not under /whep" }

// relayWriter is the http.ResponseWriter of a relayed request.
type relayWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *relayWriter) Header() http.Header { return w.header }
func (w *relayWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *relayWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if room := wire.MaxWHEPBody - w.body.Len(); room < len(p) {
		w.body.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return w.body.Write(p)
}
