// Package live is the box's live-view server: WHEP (draft-ietf-wish-whep)
// over HTTP, gated by consent. A viewer POSTs an SDP offer with its bearer
// token; the server asks the Gate, and only with a live grant does it add
// the shared media tracks to a new peer connection and answer 201. When the
// grant ends the viewer's peer connection is closed at once, so no frame
// or audio sample reaches a viewer without a live grant.
//
// Media comes from the single encoder's fan-out: one capture subscription
// feeds one H.264 and one Opus track that every peer connection shares.
// A small viewer page is served at "/".
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/capture"
)

// Authenticator checks a viewer's bearer token.
type Authenticator interface {
	// Viewer returns the viewer the token was issued to, or an error for
	// a bad or expired token. It admits a new offer.
	Viewer(token string) (name string, err error)
	// Owner is Viewer without the expiry check (signature, issuer and
	// shape are still checked). A running session is bound to its grant,
	// not to the token that opened it: its own viewer may ask for its
	// status and end it with that token after it expired.
	Owner(token string) (name string, err error)
}

// Gate is the consent check asked before any media is sent.
type Gate interface {
	// Admit is asked before any media is sent. On success the Admission
	// says whether audio is allowed, and its Ended channel receives a
	// reason and is closed when the grant is revoked or expires or the
	// recording session ends. A refusal is an error that errors.As's to
	// *Refusal.
	Admit(viewer string, wantAudio bool) (Admission, error)
	// Joined and Left are audit hooks called when a viewer's session
	// starts and ends; reason says why it ended ("viewer left",
	// "replaced", "revoked", "connect timeout", …).
	Joined(viewer, session string)
	Left(viewer, session, reason string)
}

// Waiter is a Gate that can wait for the teacher's decision on a pending
// request, so an offer sent with Prefer: wait=N is answered as soon as the
// teacher decides instead of the viewer polling.
type Waiter interface {
	// AwaitDecision returns nil once request is no longer pending, or
	// ctx's error.
	AwaitDecision(ctx context.Context, request string) error
}

// Admission is a live grant as the live view sees it.
type Admission struct {
	// Audio says whether the viewer may hear the audio.
	Audio bool
	// Talk says whether the viewer may speak to the teacher (talk-back):
	// only then is the viewer's audio taken (see Config.Talk).
	Talk bool
	// Ended receives the reason and is closed when the grant ends.
	Ended <-chan string
	// Expires is when the grant ends unless the teacher ends it sooner
	// (zero: not known); the session's status reports it.
	Expires time.Time
	// Cancel releases the admission once the session is over; it may be
	// nil.
	Cancel func()
}

// Refusal is the Gate's answer when a viewer has no live grant.
type Refusal struct {
	// Reason is machine-readable: "pending", "denied", "no session", …
	Reason string
	// Request is the id of the pending request the teacher sees, if any.
	Request string
}

// Error describes the refusal.
func (r *Refusal) Error() string {
	if r.Request != "" {
		return fmt.Sprintf("live view refused: %s (request %s)", r.Reason, r.Request)
	}
	return "live view refused: " + r.Reason
}

// Talker plays the voice of viewers whose grant lets them speak
// (talk-back: agent/talkback).
type Talker interface {
	// Speak returns the voice of viewer's session; the session hands it
	// every Opus packet the viewer sends and closes it when it ends.
	Speak(viewer, session string) Voice
}

// Voice is one session's audio to the box.
type Voice interface {
	// Packet takes one Opus payload.
	Packet(payload []byte)
	// Close ends the voice at once; reason is audited.
	Close(reason string)
	// Floor is "free", "yours" (this voice is played) or "taken".
	Floor() string
}

// Source gives access to the running capture.
type Source interface {
	// Subscribe returns a live subscription to the running capture, or an
	// error when no recording session runs.
	Subscribe() (*capture.Subscription, error)
}

// DefaultMaxViewers is Config.MaxViewers when it is zero.
const DefaultMaxViewers = 4

// Config configures a Server.
type Config struct {
	// MaxViewers limits the number of viewers at once (default 4); a
	// viewer over it gets 503 with reason "too many viewers". A viewer
	// has at most one session: a new offer replaces the viewer's session
	// (ended with reason "replaced") and takes no second slot.
	MaxViewers int
	// ICEServers are the STUN and TURN servers; empty means host
	// candidates only.
	ICEServers []webrtc.ICEServer
	// Loopback adds loopback ICE candidates, for a viewer on the box
	// itself and for tests.
	Loopback bool
	// ConnectTimeout is how long a new peer connection may take to
	// connect before it is dropped (default 15 s).
	ConnectTimeout time.Duration
	// Identity is the DTLS certificate of every peer connection (see
	// LoadOrCreateIdentity); nil: a fresh one per session.
	Identity *Identity

	// Auth checks bearer tokens (required).
	Auth Authenticator
	// Gate is the consent check (required).
	Gate Gate
	// Source is the running capture (required). It is subscribed to when
	// the first viewer's peer connection connects and unsubscribed when
	// the last viewer leaves; a Subscribe error ends that viewer's session
	// with reason "not recording".
	Source Source
	// Talk, if set, plays the voice of viewers whose Admission has Talk;
	// nil: no viewer's audio is ever taken (answers say Talk: unavailable).
	Talk Talker
	// Indicator, if set, is called with the number of viewers whenever it
	// changes (a privacy LED). A viewer counts from the 201 until its
	// session ends, so the indicator is on before any media flows. It must
	// not call back into the Server.
	Indicator func(watching int)
	// AuthFailed, if set, is told of every request whose bearer token is
	// missing or refused, with the remote address and why (never the
	// token), so that it can be audited.
	AuthFailed func(remote string, err error)
	// Logger receives the server's log (default: discard). Tokens are
	// never logged; viewer names are.
	Logger *slog.Logger
}

// Server is the WHEP live-view server. Create it with New.
type Server struct {
	cfg   Config
	log   *slog.Logger
	api   *webrtc.API
	video *webrtc.TrackLocalStaticSample
	audio *webrtc.TrackLocalStaticSample

	mu       sync.Mutex
	sessions map[string]*session
	gone     *endedSessions
	// offering holds the viewers whose POST is between the limit check
	// and its session: at most one each.
	offering map[string]bool
	feed     *feeder // nil while nobody watches
	closed   bool

	indMu   sync.Mutex // orders Indicator calls
	indLast int        // last count reported, -1 before the first
	wg      sync.WaitGroup
}

// Codec parameters of the shared tracks.
const (
	h264Fmtp       = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	h264PT         = 102
	opusPT         = 111
	streamID       = "uploadbox"
	defaultConnect = 15 * time.Second
)

// New checks cfg and creates a Server. Nothing listens: serve Handler.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Auth == nil {
		errs = append(errs, errors.New("live: Config.Auth is required"))
	}
	if cfg.Gate == nil {
		errs = append(errs, errors.New("live: Config.Gate is required"))
	}
	if cfg.Source == nil {
		errs = append(errs, errors.New("live: Config.Source is required"))
	}
	if cfg.MaxViewers < 0 {
		errs = append(errs, fmt.Errorf("live: MaxViewers %d is negative; use 0 for the default (%d)", cfg.MaxViewers, DefaultMaxViewers))
	}
	if err := checkICEServers(cfg.ICEServers); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxViewers == 0 {
		cfg.MaxViewers = DefaultMaxViewers
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnect
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	api, err := newAPI(cfg.Loopback)
	if err != nil {
		return nil, err
	}
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: h264Fmtp,
	}, "video", streamID)
	if err != nil {
		return nil, fmt.Errorf("live: video track: %w", err)
	}
	audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
	}, "audio", streamID)
	if err != nil {
		return nil, fmt.Errorf("live: audio track: %w", err)
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "live"),
		api:      api,
		video:    video,
		audio:    audio,
		sessions: make(map[string]*session),
		offering: make(map[string]bool),
		gone:     newEndedSessions(256),
		indLast:  -1,
	}, nil
}

// checkICEServers reports bad STUN/TURN URLs or credentials now rather
// than on the first viewer's offer.
func checkICEServers(servers []webrtc.ICEServer) error {
	if len(servers) == 0 {
		return nil
	}
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		return fmt.Errorf("live: ICEServers: %w (want stun:HOST:PORT or turn:HOST:PORT with username and credential)", err)
	}
	return pc.Close()
}

// newAPI builds the WebRTC API with H.264 (constrained baseline,
// packetization mode 1) and Opus only.
func newAPI(loopback bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: h264Fmtp,
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}},
		},
		PayloadType: h264PT,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("live: register H.264: %w", err)
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		},
		PayloadType: opusPT,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("live: register Opus: %w", err)
	}
	// Only what a send-only server needs per viewer: NACK (resend lost
	// packets) and RTCP sender reports (lip sync). pion's default set adds
	// per-packet stats and transport-wide congestion feedback, which cost
	// CPU for every viewer and which nothing here reads.
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, ir); err != nil {
		return nil, fmt.Errorf("live: interceptors: %w", err)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("live: interceptors: %w", err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(loopback)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// Viewers is the number of viewers with a session.
func (s *Server) Viewers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close ends every session, closing its peer connection, and stops the
// feeder. Later offers get 503. It returns after the server's goroutines
// exited.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	var errs []error
	for _, sess := range all {
		errs = append(errs, s.end(sess, "server closed"))
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// indicate tells the Indicator the number of viewers if it changed. Calls
// are serialised and each reads the count afresh, so the last call always
// reports the current state.
func (s *Server) indicate() {
	if s.cfg.Indicator == nil {
		return
	}
	s.indMu.Lock()
	defer s.indMu.Unlock()
	if n := s.Viewers(); n != s.indLast {
		s.indLast = n
		s.cfg.Indicator(n)
	}
}
