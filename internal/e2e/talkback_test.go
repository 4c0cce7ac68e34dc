package e2e

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/agent/talkback"
)

// talkFile is the talk-back WAV a daemon writes in real time.
type talkFile string

// samples is what was played so far.
func (f talkFile) samples(t *testing.T) []int16 {
	t.Helper()
	pcm, err := talkback.ReadWAV(string(f))
	if err != nil {
		t.Fatal(err)
	}
	return pcm
}

// waitPlayed waits until the file holds at least n samples (it grows in
// real time, silence included, so this is a bounded wait for time to pass
// at the box) and returns them all.
func (f talkFile) waitPlayed(t *testing.T, n int) []int16 {
	t.Helper()
	deadline := time.Now().Add(time.Duration(n)*time.Second/talkback.SampleRate + 10*time.Second)
	for {
		pcm := f.samples(t)
		if len(pcm) >= n {
			return pcm
		}
		if time.Now().After(deadline) {
			t.Fatalf("the talk-back file stopped growing at %d samples, short of %d", len(pcm), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// playedFrom waits until the box has played d past sample n and returns
// those samples.
func (f talkFile) playedFrom(t *testing.T, n int, d time.Duration) []int16 {
	t.Helper()
	end := n + int(d.Seconds()*second)
	return f.waitPlayed(t, end)[n:end]
}

// waitVoice waits until the box has played viewer's 440 Hz, loud, past
// sample from.
func (f talkFile) waitVoice(t *testing.T, from int, viewer string) {
	t.Helper()
	for n := from + second/2; ; n += second / 2 {
		if p := talkback.Power(f.waitPlayed(t, n)[from:n], 440); p > 100*toneAbsent {
			return
		}
		if n > from+10*second {
			t.Fatalf("%s's voice never reached the box", viewer)
		}
	}
}

// talkOffer sends an offer whose audio section sends and receives, as a
// push-to-talk page does, and waits for video.
func (lb liveBox) talkOffer(t *testing.T, token string) *livetest.Response {
	t.Helper()
	r, err := livetest.Offer(t.Context(), lb.client, "https://"+lb.live+"/whep", token, livetest.Options{Audio: true, Talk: true, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Viewer.Close() })
	if r.Status != http.StatusCreated {
		return r
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := r.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatal(err)
	}
	return r
}

// The level under which a tone counts as absent: the decoded 440 Hz tone
// has a power near 3e7, the box's silence 0.
const toneAbsent = 1e4

const second = talkback.SampleRate

// TestTalkback (issue 16): a coach whose grant has --talk speaks (a pion
// peer sending Opus at 440 Hz) and the box plays it (the daemon's
// talkback_device is a WAV file: an FFT finds 440 Hz ± 5 Hz); a coach
// granted without --talk is answered as not sending and nothing of it is
// played; a revoke silences the coach within 1 s; it is all audited.
func TestTalkback(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	dir := t.TempDir()
	wav := talkFile(filepath.Join(dir, "talk.wav"))
	b, lb, p := startLiveBox(t, dir, "talkback_device: file:"+string(wav))
	tokenA := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-a", "--ttl", "1h", "--state", b.state))
	tokenB := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-b", "--ttl", "1h", "--state", b.state))
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")

	_, reqA := refusal(t, lb.talkOffer(t, tokenA))
	_, reqB := refusal(t, lb.talkOffer(t, tokenB))
	if reqA == "" || reqB == "" {
		t.Fatalf("no pending requests: %q %q", reqA, reqB)
	}
	out := run(t, "uploadbox", "consent", "accept", reqA, "--talk", "--socket", lb.socket)
	if !strings.Contains(out, "may speak to the teacher") {
		t.Fatalf("consent accept --talk: %q", out)
	}
	run(t, "uploadbox", "consent", "accept", reqB, "--socket", lb.socket)
	var reqs []struct {
		Viewer string
		Talk   bool
	}
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	talk := map[string]bool{}
	for _, r := range reqs {
		talk[r.Viewer] = r.Talk
	}
	if len(talk) != 2 || !talk["coach-a"] || talk["coach-b"] {
		t.Fatalf("consent list: %+v, want coach-a with talk, coach-b without", reqs)
	}
	if list := run(t, "uploadbox", "consent", "list", "--socket", lb.socket); !strings.Contains(list, "TALK") {
		t.Fatalf("consent list has no TALK column:\n%s", list)
	}

	// coach-a may speak: 440 Hz is played.
	a := lb.talkOffer(t, tokenA)
	if a.Status != http.StatusCreated || a.Header.Get("Talk") != "allowed" {
		t.Fatalf("coach-a's offer: HTTP %d, Talk %q %s", a.Status, a.Header.Get("Talk"), a.Body)
	}
	from := len(wav.samples(t))
	if _, err := a.Viewer.Speak(t.Context(), 440, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	played := wav.playedFrom(t, from, 3*time.Second)
	if f, p := talkback.Peak(played, 100, 4000), talkback.Power(played, 440); f < 435 || f > 445 || p < 100*toneAbsent {
		t.Fatalf("coach-a's voice: strongest frequency %.1f Hz, power at 440 Hz %.3g; want 440 ± 5 Hz, loud", f, p)
	}

	// coach-b may not: its audio is answered as not sent, and nothing is
	// played even when it sends anyway.
	bv := lb.talkOffer(t, tokenB)
	if bv.Status != http.StatusCreated || bv.Header.Get("Talk") != "not-granted" {
		t.Fatalf("coach-b's offer: HTTP %d, Talk %q", bv.Status, bv.Header.Get("Talk"))
	}
	from = len(wav.samples(t))
	if _, err := bv.Viewer.Speak(t.Context(), 440, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	played = wav.playedFrom(t, from, 3*time.Second)
	if p := talkback.Power(played, 440); p > toneAbsent {
		t.Fatalf("coach-b, granted without --talk, was played: power at 440 Hz %.3g", p)
	}

	// coach-a speaks and is revoked: silent within 1 s of the revoke's
	// return.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	spoke := make(chan error, 1)
	go func() {
		_, err := a.Viewer.Speak(ctx, 440, 20*time.Second)
		spoke <- err
	}()
	from = len(wav.samples(t))
	wav.waitVoice(t, from, "coach-a")
	if out := run(t, "uploadbox", "status", "--socket", lb.socket); !strings.Contains(out, "talk-back: file:"+string(wav)+", coach-a speaking\n") {
		t.Errorf("status while coach-a speaks:\n%s", out)
	}
	if code, raw := liveGet(t, lb, a.Viewer.Location, tokenA); code != http.StatusOK || !strings.Contains(raw, `"talk":true`) || !strings.Contains(raw, `"floor":"yours"`) {
		t.Errorf("coach-a's session while it speaks: HTTP %d %s, want talk and floor yours", code, raw)
	}
	run(t, "uploadbox", "consent", "revoke", "coach-a", "--socket", lb.socket)
	revoked := len(wav.samples(t))
	after := wav.playedFrom(t, revoked, 4*time.Second)[second:]
	cancel()
	if err := <-spoke; err != nil {
		t.Log("coach-a's sender after the revoke:", err)
	}
	if p := talkback.Power(after, 440); p > toneAbsent {
		t.Fatalf("coach-a still played more than 1 s after the revoke: power at 440 Hz %.3g", p)
	}

	// The audit chain: the grant with talk, the floor taken and released.
	var es []auditEntry
	ctl(t, lb.boxDirs, &es, "consent", "audit", "--last", "0")
	var got []string
	for _, e := range es {
		switch e.Event {
		case "consent.accept", "consent.revoke":
			got = append(got, e.Event+" "+e.Identity+" talk="+boolWord(strings.Contains(e.Detail, "talk=yes")))
		case "live.talk_open":
			got = append(got, e.Event+" "+e.Identity)
		case "live.talk_close":
			_, reason, _ := strings.Cut(e.Detail, "reason=")
			got = append(got, e.Event+" "+e.Identity+" "+reason)
		}
	}
	// coach-a fell silent between its two turns (and, on a loaded
	// machine, maybe within one): a release and a new opening.
	var turns []string
	for i := 0; i < len(got); i++ {
		if i+1 < len(got) && got[i] == "live.talk_close coach-a silence" && got[i+1] == "live.talk_open coach-a" {
			i++
			continue
		}
		turns = append(turns, got[i])
	}
	if !slices.Contains(got, "live.talk_close coach-a silence") {
		t.Errorf("coach-a's floor was not released between its turns: %q", got)
	}
	got = turns
	want := []string{
		"consent.accept coach-a talk=yes", "consent.accept coach-b talk=no",
		"live.talk_open coach-a", "consent.revoke coach-a talk=yes", "live.talk_close coach-a revoked",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// coach-c's grant with talk runs out while it speaks: the box is
	// silent within 1 s of the grant's end, and the end is audited.
	tokenC := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-c", "--ttl", "1h", "--state", b.state))
	_, reqC := refusal(t, lb.talkOffer(t, tokenC))
	var grant struct {
		Expires time.Time `json:"expires"`
		Talk    bool      `json:"talk"`
	}
	ctl(t, lb.boxDirs, &grant, "consent", "accept", reqC, "--talk", "--for", "15s")
	if !grant.Talk || grant.Expires.IsZero() {
		t.Fatalf("consent accept --talk --for 15s: %+v", grant)
	}
	c := lb.talkOffer(t, tokenC)
	if c.Status != http.StatusCreated || c.Header.Get("Talk") != "allowed" {
		t.Fatalf("coach-c's offer: HTTP %d, Talk %q %s", c.Status, c.Header.Get("Talk"), c.Body)
	}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go func() {
		_, err := c.Viewer.Speak(ctx, 440, 40*time.Second)
		spoke <- err
	}()
	wav.waitVoice(t, len(wav.samples(t)), "coach-c")
	// The file grows in real time: the sample played 1 s after the
	// grant's end is as far past this one as that moment is past now.
	n, now := len(wav.samples(t)), time.Now()
	if !now.Before(grant.Expires) {
		t.Fatalf("coach-c's voice reached the box only after its grant ended (%s)", grant.Expires)
	}
	end := n + int((grant.Expires.Sub(now)+time.Second).Seconds()*second)
	after = wav.playedFrom(t, end, 3*time.Second)
	cancel()
	if err := <-spoke; err != nil {
		t.Log("coach-c's sender after its grant ended:", err)
	}
	if p := talkback.Power(after, 440); p > toneAbsent {
		t.Fatalf("coach-c still played more than 1 s after its grant ended: power at 440 Hz %.3g", p)
	}
	// The expiry is audited by the daemon's own timer: wait for it (bounded)
	// rather than assume it landed while the file was read.
	want = []string{"consent.expire talk=yes", "live.talk_close expired"}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		es = nil
		ctl(t, lb.boxDirs, &es, "consent", "audit", "--last", "0")
		got = nil
		for _, e := range es {
			if e.Identity != "coach-c" {
				continue
			}
			switch e.Event {
			case "consent.expire":
				got = append(got, e.Event+" talk="+boolWord(strings.Contains(e.Detail, "talk=yes")))
			case "live.talk_close":
				_, reason, _ := strings.Cut(e.Detail, "reason=")
				got = append(got, e.Event+" "+reason)
			}
		}
		if slices.Equal(got[max(len(got)-2, 0):], want) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("coach-c's audit ends %q, want %q", got, want)
			break
		}
	}

	// The daemon stops: the file's header gets its real sizes.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	raw, err := os.ReadFile(string(wav))
	if err != nil {
		t.Fatal(err)
	}
	if data := binary.LittleEndian.Uint32(raw[40:]); int(data) != len(raw)-44 || binary.LittleEndian.Uint32(raw[4:]) != data+36 {
		t.Errorf("WAV header after the daemon stopped: data size %d for %d bytes", data, len(raw)-44)
	}

	// An output the daemon cannot open stops it, naming it.
	cfg, _ := os.ReadFile(lb.config)
	bad := filepath.Join(dir, "missing", "talk.wav")
	os.WriteFile(lb.config, []byte(strings.Replace(string(cfg), "file:"+string(wav), "file:"+bad, 1)), 0o600)
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	failed, err := exec.CommandContext(ctx, filepath.Join(binDir, "uploadbox"), "run", "--config", lb.config).CombinedOutput()
	if ctx.Err() != nil || err == nil || !strings.Contains(string(failed), "live.talkback_device: talk-back file "+bad) {
		t.Fatalf("daemon with an output it cannot open: %v, output lacks the device:\n%s", err, failed)
	}
}

// liveGet GETs url from the box's live view with token.
func liveGet(t *testing.T, lb liveBox, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := lb.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func boolWord(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
