package wire

import (
	"net/http"
	"time"
)

// OpWHEP is the control request that relays one WHEP request (RFC 9725)
// from a viewer at the receiver to the box's live view: params WHEPRequest,
// result WHEPResponse. The box runs it through the same handler as its LAN
// endpoint, token check and consent gate included.
const OpWHEP = "whep"

// MaxWHEPBody bounds the body of a relayed WHEP request or answer (an SDP
// offer or answer, or a JSON problem), well within MaxControlMessage.
const MaxWHEPBody = 64 << 10

// MaxWHEPWait is the longest a relayed offer may be held for the
// teacher's decision (Prefer: wait=N), the box's live view maximum.
const MaxWHEPWait = 30 * time.Second

// WHEPHeaders are the request headers relayed to the box; any other is
// dropped.
var WHEPHeaders = []string{"Authorization", "Content-Type", "Prefer", "If-Match", "Accept"}

// WHEPAnswerHeaders are the box's answer headers relayed to the viewer.
var WHEPAnswerHeaders = []string{"Content-Type", "Location", "ETag", "Link", "Preference-Applied", "Allow", "WWW-Authenticate", "Cache-Control", "Accept-Patch", "Retry-After", "Talk"}

// WHEPRequest is one WHEP request: Path is the box's live view path
// ("/whep" or "/whep/{session}").
type WHEPRequest struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	// ICEServers are the receiver's TURN servers, with credentials made
	// for the box for this offer's session; the box adds them to that
	// session's peer connection. Only a relayed request carries them (the
	// box's LAN endpoint has no way to take any).
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
}

// MaxICEServers bounds WHEPRequest.ICEServers and the URLs of each.
const MaxICEServers = 4

// ICEServer is a STUN or TURN server with its short-lived credential, as
// in WebRTC's RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// WHEPResponse is the box's answer, status, headers and body as its live
// view wrote them.
type WHEPResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// FilterHeader copies the names of h listed in keep.
func FilterHeader(h http.Header, keep []string) http.Header {
	out := http.Header{}
	for _, k := range keep {
		if v := h.Values(k); len(v) > 0 {
			out[http.CanonicalHeaderKey(k)] = append([]string(nil), v...)
		}
	}
	return out
}
