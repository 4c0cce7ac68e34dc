package live

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/uploadbox/uploadbox/capture"
)

// session is one viewer's peer connection.
type session struct {
	id     string
	viewer string
	audio  bool
	voice  Voice // the viewer's audio to the box; nil unless the grant lets the viewer speak
	pc     *webrtc.PeerConnection
	adm    Admission

	connected chan struct{} // closed when the peer connection first connects
	wasUp     atomic.Bool
	done      chan struct{} // closed by end
	ending    atomic.Bool
}

// errNotRecording is returned by startFeed when no recording session runs.
var errNotRecording = errors.New("no recording session runs")

// iceServersKey is the context key of WithICEServers.
type iceServersKey struct{}

// WithICEServers adds STUN/TURN servers for the session that a request
// with ctx opens, on top of Config.ICEServers. Only the box's own code can
// set them (the receiver's TURN credentials for a relayed offer): nothing
// in an HTTP request can.
func WithICEServers(ctx context.Context, servers []webrtc.ICEServer) context.Context {
	return context.WithValue(ctx, iceServersKey{}, servers)
}

// open creates the peer connection of an admitted viewer, answers offer and
// registers the session. The viewer is attached to the shared tracks here,
// after Admit succeeded, and never before. The viewer going away (ctx
// done) while ICE candidates are gathered ends it.
func (s *Server) open(ctx context.Context, viewer string, offer webrtc.SessionDescription, adm Admission, audio, talk bool) (*session, error) {
	servers := s.cfg.ICEServers
	if extra, _ := ctx.Value(iceServersKey{}).([]webrtc.ICEServer); len(extra) > 0 {
		servers = append(slices.Clip(servers), extra...)
	}
	pc, err := s.api.NewPeerConnection(s.cfg.Identity.configure(webrtc.Configuration{ICEServers: servers}))
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	id := newID()
	sess := &session{
		id: id, viewer: viewer, audio: audio, pc: pc, adm: adm,
		connected: make(chan struct{}), done: make(chan struct{}),
	}
	fail := func(err error) (*session, error) {
		sess.ending.Store(true) // never registered: nothing for end to undo
		pc.Close()
		return nil, err
	}
	if talk {
		sess.voice = s.cfg.Talk.Speak(viewer, id)
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			s.listen(sess, tr)
		})
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			if sess.wasUp.CompareAndSwap(false, true) {
				close(sess.connected)
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.end(sess, "connection "+st.String())
		}
	})
	if err := pc.SetRemoteDescription(offer); err != nil {
		return fail(fmt.Errorf("%w: %v", errBadOffer, err))
	}
	senders := []*webrtc.RTPSender{}
	vs, err := pc.AddTrack(s.video)
	if err != nil {
		return fail(fmt.Errorf("add video track: %w", err))
	}
	senders = append(senders, vs)
	if audio {
		as, err := pc.AddTrack(s.audio)
		if err != nil {
			return fail(fmt.Errorf("add audio track: %w", err))
		}
		senders = append(senders, as)
	}
	// An offered section this viewer gets no track for (audio without an
	// audio grant) is answered inactive, not sendonly without a source;
	// but the audio of a viewer who may speak is received.
	for _, tr := range pc.GetTransceivers() {
		if tr.Sender() == nil && !(talk && tr.Kind() == webrtc.RTPCodecTypeAudio) {
			if err := tr.Stop(); err != nil {
				return fail(fmt.Errorf("stop unused %s transceiver: %w", tr.Kind(), err))
			}
		}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", errBadOffer, err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(fmt.Errorf("set answer: %w", err))
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(errors.New("viewer went away while gathering ICE candidates"))
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fail(errClosed)
	}
	// The viewer's earlier session is replaced: one session per viewer.
	var replaced []*session
	for _, old := range s.sessions {
		if old.viewer == viewer {
			replaced = append(replaced, old)
		}
	}
	s.sessions[id] = sess
	delete(s.offering, viewer)
	s.wg.Add(1 + len(senders))
	s.mu.Unlock()
	for _, old := range replaced {
		if err := s.end(old, "replaced"); err != nil {
			s.log.Warn("end replaced live session", "session", old.id, "err", err)
		}
	}

	go func() {
		defer s.wg.Done()
		s.watch(sess)
	}()
	for _, snd := range senders {
		go func() {
			defer s.wg.Done()
			s.readRTCP(snd)
		}()
	}
	s.cfg.Gate.Joined(viewer, id)
	s.indicate()
	return sess, nil
}

// watch ends sess when its grant ends or it does not connect in time, and
// asks for a keyframe when it connects.
func (s *Server) watch(sess *session) {
	timer := time.NewTimer(s.cfg.ConnectTimeout)
	defer timer.Stop()
	connected := sess.connected
	for {
		select {
		case reason, ok := <-sess.adm.Ended:
			if !ok || reason == "" {
				reason = "grant ended"
			}
			s.end(sess, reason)
			return
		case <-sess.done:
			return
		case <-connected:
			connected = nil
			timer.Stop()
			if err := s.startFeed(sess); err != nil {
				s.log.Warn("live view without a recording", "viewer", sess.viewer, "err", err)
				s.end(sess, "not recording")
				return
			}
			s.log.Info("viewer connected", "viewer", sess.viewer, "session", sess.id)
		case <-timer.C:
			s.end(sess, "connect timeout")
			return
		}
	}
}

// readRTCP drains a sender's RTCP (the interceptors need it read) and turns
// a viewer's picture-loss report into a rate-limited keyframe request.
func (s *Server) readRTCP(snd *webrtc.RTPSender) {
	for {
		pkts, _, err := snd.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				s.requestKeyframe()
			}
		}
	}
}

// end closes the session's peer connection first, so no more media reaches
// the viewer, then does the bookkeeping. It is safe to call more than once
// and from pion's callbacks.
func (s *Server) end(sess *session, reason string) error {
	if !sess.ending.CompareAndSwap(false, true) {
		return nil
	}
	if sess.voice != nil {
		sess.voice.Close(reason) // silent from the next frame on
	}
	err := sess.pc.Close()

	s.mu.Lock()
	delete(s.sessions, sess.id)
	s.gone.add(sess.id, sess.viewer, reason)
	close(sess.done)
	var stop *feeder
	if len(s.sessions) == 0 && s.feed != nil {
		stop, s.feed = s.feed, nil
	}
	s.mu.Unlock()

	if stop != nil {
		stop.stop()
	}
	if sess.adm.Cancel != nil {
		sess.adm.Cancel()
	}
	s.cfg.Gate.Left(sess.viewer, sess.id, reason)
	s.indicate()
	s.log.Info("viewer left", "viewer", sess.viewer, "session", sess.id, "reason", reason)
	if err != nil {
		return fmt.Errorf("close peer connection of session %s: %w", sess.id, err)
	}
	return nil
}

// listen hands the viewer's Opus packets to its voice until the track
// ends (the session closed). Runs on pion's OnTrack goroutine.
func (s *Server) listen(sess *session, tr *webrtc.TrackRemote) {
	if tr.Kind() != webrtc.RTPCodecTypeAudio || !strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeOpus) {
		return
	}
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			sess.voice.Close("viewer left")
			return
		}
		if sess.ending.Load() {
			return
		}
		sess.voice.Packet(pkt.Payload)
	}
}

// feeder moves the frames of one live subscription to the shared tracks.
type feeder struct {
	sub  *capture.Subscription
	quit chan struct{}
}

func (f *feeder) stop() {
	close(f.quit)
	f.sub.Unsubscribe()
}

// startFeed makes sure frames flow once sess connected: the first
// connected viewer subscribes to the capture (which asks for a keyframe
// itself); a later one asks for a keyframe. Subscribing only now, not when
// the offer came, lets the forced keyframe reach the viewer instead of
// being spent, and rate-limited, before its connection is up.
func (s *Server) startFeed(sess *session) error {
	s.mu.Lock()
	if s.closed || s.sessions[sess.id] != sess {
		s.mu.Unlock()
		return nil // ending anyway
	}
	if f := s.feed; f != nil {
		s.mu.Unlock()
		f.sub.RequestKeyframe()
		return nil
	}
	defer s.mu.Unlock()
	sub, err := s.cfg.Source.Subscribe()
	if err != nil {
		return fmt.Errorf("%w: %v", errNotRecording, err)
	}
	f := &feeder{sub: sub, quit: make(chan struct{})}
	s.feed = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runFeed(f)
	}()
	return nil
}

// runFeed writes frames until the feeder is stopped or the capture ends;
// when the capture ends, every session ends with it.
func (s *Server) runFeed(f *feeder) {
	frames := f.sub.Frames()
	for {
		select {
		case <-f.quit:
			return
		case fr, ok := <-frames:
			if !ok {
				s.feedEnded(f)
				return
			}
			track := s.video
			if fr.Kind == capture.Audio {
				track = s.audio
			}
			if err := track.WriteSample(media.Sample{Data: fr.Data, Duration: fr.Duration}); err != nil {
				s.log.Debug("write sample", "kind", fr.Kind, "err", err)
			}
		}
	}
}

func (s *Server) feedEnded(f *feeder) {
	s.mu.Lock()
	if s.feed != f {
		s.mu.Unlock()
		return
	}
	s.feed = nil
	all := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	f.sub.Unsubscribe()
	s.log.Info("recording ended; closing live views", "viewers", len(all))
	for _, sess := range all {
		s.end(sess, "recording ended")
	}
}

// requestKeyframe asks the encoder for an IDR frame (capture rate-limits
// it) so a new viewer sees a picture at once.
func (s *Server) requestKeyframe() {
	s.mu.Lock()
	f := s.feed
	s.mu.Unlock()
	if f != nil {
		f.sub.RequestKeyframe()
	}
}
