// Package livetest is a WHEP viewer for tests and benchmarks of the live
// view: a real pion peer connection that POSTs an offer and counts the RTP
// packets it receives per media kind.
package livetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"
)

// Options configure a Viewer's offer.
type Options struct {
	// Net, if set, is the network the peer connection gathers candidates
	// and opens sockets on (a test's network namespace: internal/netns).
	Net transport.Net
	// Audio adds a recvonly audio transceiver to the offer.
	Audio bool
	// Talk makes the offer's audio section send too (sendrecv with Audio,
	// sendonly without), from Viewer.Mic: a viewer who may speak.
	Talk bool
	// Loopback lets the viewer use loopback ICE candidates (a server on
	// 127.0.0.1).
	Loopback bool
	// NoAnswer leaves the answer unapplied: a viewer that never connects.
	NoAnswer bool
	// Wait asks the server to hold the offer up to this long for the
	// teacher's decision (Prefer: wait=N).
	Wait time.Duration
	// ICEServers are the viewer's STUN/TURN servers (see
	// ICEServersFromLinks); RelayOnly gathers relay candidates only, so
	// that the media must go through a TURN server.
	ICEServers []webrtc.ICEServer
	RelayOnly  bool
}

// Response is the server's answer to an offer. Viewer is set whatever the
// status, so a test can check that a refused viewer receives nothing; the
// answer was applied only for a 201 without Options.NoAnswer. The caller
// closes the Viewer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Viewer *Viewer
}

// Viewer is a connected WHEP viewer.
type Viewer struct {
	// PC is the viewer's peer connection.
	PC *webrtc.PeerConnection
	// Location is the absolute URL of the session resource.
	Location string
	// Answer is the server's SDP answer.
	Answer string
	// Started is when the offer was sent.
	Started time.Time
	// Mic is the viewer's Opus track to the box (Options.Talk); see Speak.
	Mic *webrtc.TrackLocalStaticSample

	mu    sync.Mutex
	kinds map[string]*counter
	cond  chan struct{} // closed and replaced on every first packet of a kind
	wg    sync.WaitGroup
	once  sync.Once
}

type counter struct {
	packets     atomic.Int64
	first, last atomic.Int64 // unix nanos
}

// Offer creates a peer connection, POSTs its offer to endpoint with token as
// the bearer token and, on 201, applies the answer. A non-201 answer is
// not an error: inspect Response.Status.
func Offer(ctx context.Context, client *http.Client, endpoint, token string, opts Options) (*Response, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	if opts.Net != nil {
		se.SetNet(opts.Net)
	}
	se.SetIncludeLoopbackCandidate(opts.Loopback)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
	conf := webrtc.Configuration{ICEServers: opts.ICEServers}
	if opts.RelayOnly {
		conf.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(conf)
	if err != nil {
		return nil, err
	}
	v := &Viewer{PC: pc, kinds: map[string]*counter{"video": {}, "audio": {}}, cond: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			v.Close()
		}
	}()
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		c := v.kinds[tr.Kind().String()]
		if c == nil {
			return
		}
		v.wg.Add(1)
		defer v.wg.Done()
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			now := time.Now().UnixNano()
			if c.packets.Add(1) == 1 {
				c.first.Store(now)
				v.mu.Lock()
				close(v.cond)
				v.cond = make(chan struct{})
				v.mu.Unlock()
			}
			c.last.Store(now)
		}
	})
	recv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recv); err != nil {
		return nil, err
	}
	switch {
	case opts.Talk:
		v.Mic, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "viewer")
		if err != nil {
			return nil, err
		}
		dir := webrtc.RTPTransceiverDirectionSendonly
		if opts.Audio {
			dir = webrtc.RTPTransceiverDirectionSendrecv
		}
		if _, err := pc.AddTransceiverFromTrack(v.Mic, webrtc.RTPTransceiverInit{Direction: dir}); err != nil {
			return nil, err
		}
	case opts.Audio:
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recv); err != nil {
			return nil, err
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewBufferString(pc.LocalDescription().SDP))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if opts.Wait > 0 {
		req.Header.Set("Prefer", fmt.Sprintf("wait=%d", int(opts.Wait/time.Second)))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	v.Started = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: body, Viewer: v}
	if resp.StatusCode != http.StatusCreated {
		ok = true
		return r, nil
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Path == "" {
		return nil, fmt.Errorf("201 without a usable Location header %q", resp.Header.Get("Location"))
	}
	v.Location = resp.Request.URL.ResolveReference(loc).String()
	v.Answer = string(body)
	if opts.NoAnswer {
		ok = true
		return r, nil
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: v.Answer}); err != nil {
		return nil, fmt.Errorf("apply answer: %w", err)
	}
	ok = true
	return r, nil
}

// Packets is the number of RTP packets received of kind "video" or
// "audio".
func (v *Viewer) Packets(kind string) int64 {
	if c := v.kinds[kind]; c != nil {
		return c.packets.Load()
	}
	return 0
}

// First is when the first RTP packet of kind arrived (zero before any).
func (v *Viewer) First(kind string) time.Time { return v.stamp(kind, true) }

// Last is when the latest RTP packet of kind arrived (zero before any).
func (v *Viewer) Last(kind string) time.Time { return v.stamp(kind, false) }

func (v *Viewer) stamp(kind string, first bool) time.Time {
	c := v.kinds[kind]
	if c == nil {
		return time.Time{}
	}
	n := c.last.Load()
	if first {
		n = c.first.Load()
	}
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// WaitPackets waits until kind has at least one packet or ctx is done, and
// returns the time of the first.
func (v *Viewer) WaitPackets(ctx context.Context, kind string) (time.Time, error) {
	for {
		v.mu.Lock()
		ch := v.cond
		v.mu.Unlock()
		if t := v.First(kind); !t.IsZero() {
			return t, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no %s RTP packet: %w", kind, ctx.Err())
		}
	}
}

// CandidateTypes are the types ("host", "srflx", "prflx" or "relay") of
// the local and remote candidates of the ICE pair the viewer selected,
// empty before one is selected: "relay" on either side means the media
// goes through a TURN server.
func (v *Viewer) CandidateTypes() (local, remote string) {
	for _, tr := range v.PC.GetTransceivers() {
		r := tr.Receiver()
		if r == nil || r.Transport() == nil {
			continue
		}
		p, err := r.Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || p == nil {
			continue
		}
		return p.Local.Typ.String(), p.Remote.Typ.String()
	}
	return "", ""
}

// Delete ends the session with DELETE on its Location.
func (v *Viewer) Delete(ctx context.Context, client *http.Client, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, v.Location, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Close closes the peer connection and waits for its readers.
func (v *Viewer) Close() error {
	var err error
	v.once.Do(func() {
		err = v.PC.Close()
		v.wg.Wait()
	})
	if errors.Is(err, webrtc.ErrConnectionClosed) {
		return nil
	}
	return err
}

// ICEServersFromLinks reads the ICE servers of a WHEP answer's Link
// headers (RFC 9725 section 4.4): <URL>; rel="ice-server" with username,
// credential and credential-type="password" for TURN.
func ICEServersFromLinks(h http.Header) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, v := range h.Values("Link") {
		for _, link := range splitOutside(v, ',') {
			parts := splitOutside(link, ';')
			if len(parts) == 0 {
				continue
			}
			u := strings.TrimSpace(parts[0])
			if !strings.HasPrefix(u, "<") || !strings.HasSuffix(u, ">") {
				continue
			}
			params := map[string]string{}
			for _, p := range parts[1:] {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				params[strings.ToLower(k)] = strings.Trim(val, `"`)
			}
			if params["rel"] != "ice-server" {
				continue
			}
			out = append(out, webrtc.ICEServer{URLs: []string{u[1 : len(u)-1]}, Username: params["username"], Credential: params["credential"]})
		}
	}
	return out
}

// splitOutside splits s at sep where sep is outside <...> and "...".
func splitOutside(s string, sep byte) []string {
	var out []string
	var quoted, bracket bool
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' && !bracket:
			quoted = !quoted
		case c == '<' && !quoted:
			bracket = true
		case c == '>' && !quoted:
			bracket = false
		case c == sep && !quoted && !bracket:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
