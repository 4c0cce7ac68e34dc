package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/agent/talkback"
)

// talkbackBench measures talk-back's mouth-to-ear latency through the
// daemon against a baseline measured in the same run, in interleaved
// rounds: a pion coach whose grant has --talk starts a 440 Hz tone (Opus,
// 20 ms packets); the latency is the time from its first packet to the
// first 440 Hz sample the box plays. The baseline is the same pion sender
// to a bare pion peer in the bench process that hands its packets to
// agent/talkback's Player (the same decoder, floor and tones) writing the
// same WAV sink: no daemon, live server, WHEP, TLS, token or consent. Each
// box plays into a WAV file sink, written in real time a 20 ms frame at a
// time (see talkRound).
func talkbackBench(bin string, rounds int) error {
	dir, err := os.MkdirTemp("", "uploadbox-bench-talkback-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wav := filepath.Join(dir, "talk.wav")
	box, liveAddr, err := startLiveBox(bin, dir, "talkback_device: \"file:"+wav+"\"")
	if err != nil {
		return err
	}
	defer box.stop()
	client := box.liveClient()
	tok, err := box.viewerToken("coach")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := livetest.Options{Audio: true, Talk: true, Loopback: true}
	r, err := livetest.Offer(ctx, client, "https://"+liveAddr+"/whep", tok, opts)
	if err != nil {
		return err
	}
	r.Viewer.Close()
	id, err := box.pending("coach")
	if err != nil || id == "" {
		return fmt.Errorf("no pending request: %v", err)
	}
	if out, err := box.ctl("consent", "accept", id, "--talk"); err != nil {
		return fmt.Errorf("accept: %v: %s", err, out)
	}
	r, err = livetest.Offer(ctx, client, "https://"+liveAddr+"/whep", tok, opts)
	if err != nil || r.Status != http.StatusCreated || r.Header.Get("Talk") != "allowed" {
		return fmt.Errorf("the coach's offer: %v %d %q", err, r.Status, r.Header.Get("Talk"))
	}
	defer r.Viewer.Close()
	if _, err := r.Viewer.WaitPackets(ctx, "video"); err != nil {
		return err
	}

	bareWAV := filepath.Join(dir, "bare.wav")
	bare, err := startBareTalk(ctx, bareWAV)
	if err != nil {
		return fmt.Errorf("bare talk-back: %w", err)
	}
	defer bare.stop()
	br, err := livetest.Offer(ctx, http.DefaultClient, "http://"+bare.addr+"/", "", livetest.Options{Talk: true, Loopback: true})
	if err != nil || br.Status != http.StatusCreated {
		return fmt.Errorf("bare talk-back: the coach's offer: %v %+v", err, br)
	}
	defer br.Viewer.Close()
	for br.Viewer.PC.ConnectionState() != webrtc.PeerConnectionStateConnected {
		if ctx.Err() != nil {
			return fmt.Errorf("bare talk-back: the coach never connected (%s)", br.Viewer.PC.ConnectionState())
		}
		time.Sleep(10 * time.Millisecond)
	}

	var lat, base, ratio []float64
	for i := range rounds {
		d, err := talkRound(ctx, r.Viewer, wav)
		if err != nil {
			return fmt.Errorf("round %d through the daemon: %w", i, err)
		}
		b, err := talkRound(ctx, br.Viewer, bareWAV)
		if err != nil {
			return fmt.Errorf("round %d bare: %w", i, err)
		}
		lat, base, ratio = append(lat, ms(d)), append(base, ms(b)), append(ratio, float64(d)/float64(b))
	}
	fmt.Printf("talk-back: pion coach, Opus 20 ms packets, loopback, WAV sink; %d interleaved rounds each, median (range):\n", rounds)
	for _, l := range []struct {
		what       string
		s          spread
		unit, note string
	}{
		{"tone start -> first 440 Hz sample played, through the daemon", spreadOf(lat), "ms", "   goal <= 150; one packet is 20 ms"},
		{"the same, bare (pion peer -> talk-back Player -> WAV)", spreadOf(base), "ms", ""},
		{"daemon / bare, per round", spreadOf(ratio), "x ", ""},
	} {
		fmt.Printf("  %-60s %s%s\n", l.what, l.s.format(l.unit), l.note)
	}
	return nil
}

// talkRound has v speak 440 Hz into the box whose talk-back sink is the
// WAV file wav and returns the time from its first packet to the first
// 440 Hz sample played. The file is written in real time a 20 ms frame at
// a time: the round starts right after the file grew, so the file's
// length then is "now", and a sample's position after it, plus the frame
// it waits to be written, is when it is played.
func talkRound(ctx context.Context, v *livetest.Viewer, wav string) (time.Duration, error) {
	played := func() int64 {
		fi, err := os.Stat(wav)
		if err != nil {
			return 0
		}
		return (fi.Size() - 44) / 2
	}
	time.Sleep(talkback.FloorIdle + 500*time.Millisecond) // the floor is free again
	for p := played(); played() == p; {
		time.Sleep(200 * time.Microsecond)
	}
	from, at := played(), time.Now()
	first, err := v.Speak(ctx, 440, 600*time.Millisecond)
	if err != nil {
		return 0, err
	}
	time.Sleep(300 * time.Millisecond)
	pcm, err := talkback.ReadWAV(wav)
	if err != nil {
		return 0, err
	}
	// A 10 ms window stepped by 1 ms passes the threshold once about
	// 1.7 ms of the full tone is in it.
	const win = talkback.SampleRate / 100
	onset := -1
	for j := int(from) - win; j+win <= len(pcm); j += win / 10 {
		if talkback.Power(pcm[j:j+win], 440) > 1e6 {
			onset = max(int(from), j+win*83/100)
			break
		}
	}
	if onset < 0 {
		return 0, errors.New("no 440 Hz in what the box played")
	}
	// The frame that ended at sample from was written at at: sample p is
	// written a frame after its place, at + (p-from)/rate + Frame (as a
	// sound card would start playing it).
	heard := time.Duration(onset-int(from))*time.Second/talkback.SampleRate + talkback.Frame
	return heard - first.Sub(at), nil
}

// bareTalk is the baseline's box: an HTTP listener on loopback taking one
// SDP offer (signalling only, outside the measured path) and a pion peer
// answering it whose incoming Opus goes to a talk-back Player.
type bareTalk struct {
	addr string
	srv  *http.Server
	pcs  chan *webrtc.PeerConnection
	stop func()
}

func startBareTalk(ctx context.Context, wav string) (*bareTalk, error) {
	sink, err := talkback.OpenSink(talkback.FilePrefix + wav)
	if err != nil {
		return nil, err
	}
	player := talkback.NewPlayer(sink, talkback.Options{})
	ctx, cancel := context.WithCancel(ctx)
	played := make(chan error, 1)
	go func() { played <- player.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, errors.Join(err, <-played)
	}
	b := &bareTalk{addr: ln.Addr().String(), pcs: make(chan *webrtc.PeerConnection, 1)}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer, err := b.answer(r, player)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Location", "/session")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answer)
	}), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- b.srv.Serve(ln) }()
	b.stop = func() {
		b.srv.Close()
		<-served
		select {
		case pc := <-b.pcs:
			pc.Close()
		default:
		}
		cancel()
		<-played
	}
	return b, nil
}

// answer answers the offer in r's body with a peer connection whose audio
// track, if Opus, is played by player.
func (b *bareTalk) answer(r *http.Request, player *talkback.Player) (string, error) {
	offer, err := io.ReadAll(r.Body)
	if err != nil {
		return "", err
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return "", err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	select {
	case b.pcs <- pc:
	default:
		pc.Close()
		return "", errors.New("one offer only")
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeAudio || !strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeOpus) {
			return
		}
		voice := player.Speak("coach", "bare")
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				voice.Close("viewer left")
				return
			}
			voice.Packet(pkt.Payload)
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return "", err
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-r.Context().Done():
		return "", r.Context().Err()
	}
	return pc.LocalDescription().SDP, nil
}
