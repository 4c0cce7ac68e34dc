package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pion/transport/v5"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/netns"
)

// cleanups is the namespaces' netns.TB in this program: run at the end.
type cleanups []func()

func (c *cleanups) Cleanup(f func()) { *c = append(*c, f) }

func (c *cleanups) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}

// relayRig is the receiver, the box and two viewers' networks: the
// coach's, which reaches the box only through the receiver's TURN relay,
// and the receiver's own, which reaches the box directly. Both paths run
// against the same receiver and daemon, so they can alternate.
type relayRig struct {
	box   *benchBox
	url   string // the receiver's WHEP relay of the box's room
	paths [2]viewPath
}

// viewPath is where a viewer runs.
type viewPath struct {
	ns     *netns.NS
	client *http.Client
	net    transport.Net
}

const (
	relayed = 0
	direct  = 1
)

const benchPassword = "Correct-Horse-Battery-9"

func startRelayRig(bin, dir string, cl *cleanups) (*relayRig, error) {
	n, err := netns.NewCrossnet(cl)
	if err != nil {
		return nil, fmt.Errorf("the relay bench needs network namespaces: %w", err)
	}
	on := benchNet{recv: n.Recv, box: n.Box, listen: n.Service.String() + ":0",
		serve: []string{"--auth-rate", "10000/min", "--auth-burst", "1000", "--turn-listen", n.Service.String() + ":0"}}
	box, err := startBoxOn(on, bin, dir, "live: {enabled: true, listen: \""+n.BoxAddr.String()+":8444\", max_viewers: 8}\n")
	if err != nil {
		return nil, err
	}
	cl.Cleanup(box.stop)
	if out, err := box.ctl("session", "start", "--for", "30m"); err != nil {
		return nil, fmt.Errorf("session start: %v: %s", err, out)
	}
	pem, err := os.ReadFile(filepath.Join(box.state, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	r := &relayRig{box: box, url: "https://" + box.addr + "/v1/rooms/bench/whep"}
	for i, ns := range map[int]*netns.NS{relayed: n.Coach, direct: n.Recv} {
		w, err := ns.WebRTCNet()
		if err != nil {
			return nil, err
		}
		r.paths[i] = viewPath{ns: ns, net: w, client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			DialContext:     ns.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}}
	}
	return r, nil
}

// token adds viewer name at the receiver, allows it the box's room and
// logs it in.
func (r *relayRig) token(name string) (string, error) {
	urcv := filepath.Join(filepath.Dir(r.box.ub), "uploadbox-receiver")
	add := exec.Command(urcv, "viewers", "add", name, "--password-stdin", "--data", r.box.data)
	add.Stdin = strings.NewReader(benchPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		return "", fmt.Errorf("viewers add: %v: %s", err, out)
	}
	if out, err := exec.Command(urcv, "viewers", "allow", name, "bench", "--data", r.box.data).CombinedOutput(); err != nil {
		return "", fmt.Errorf("viewers allow: %v: %s", err, out)
	}
	body, _ := json.Marshal(map[string]string{"name": name, "password": benchPassword})
	resp, err := r.paths[relayed].client.Post("https://"+r.box.addr+"/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var lr struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login %s: HTTP %d %v", name, resp.StatusCode, err)
	}
	return lr.Token, nil
}

// accept accepts viewer's pending request once the box lists it.
func (r *relayRig) accept(ctx context.Context, viewer string) error {
	for ctx.Err() == nil {
		out, err := r.box.ctl("consent", "list")
		if err != nil {
			return fmt.Errorf("consent list: %v", err)
		}
		var rs []struct{ ID, Viewer, State string }
		json.Unmarshal(out, &rs)
		for _, q := range rs {
			if q.Viewer == viewer && q.State == "pending" {
				if out, err := r.box.ctl("consent", "accept", q.ID, "--for", "30m"); err != nil {
					return fmt.Errorf("accept: %v: %s", err, out)
				}
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no request of %s: %w", viewer, ctx.Err())
}

// watch has viewer name ask on path p (an offer held until the teacher
// decides), accepts it and returns the viewer with its first video packet
// and the time from the accept to that packet.
func (r *relayRig) watch(ctx context.Context, p viewPath, name string) (*livetest.Viewer, string, time.Duration, error) {
	tok, err := r.token(name)
	if err != nil {
		return nil, "", 0, err
	}
	type result struct {
		r   *livetest.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := livetest.Offer(ctx, p.client, r.url, tok, livetest.Options{Audio: true, Net: p.net, Wait: 20 * time.Second})
		done <- result{resp, err}
	}()
	if err := r.accept(ctx, name); err != nil {
		return nil, "", 0, err
	}
	accepted := time.Now()
	res := <-done
	if res.err != nil {
		return nil, "", 0, res.err
	}
	if res.r.Status != http.StatusCreated {
		res.r.Viewer.Close()
		return nil, "", 0, fmt.Errorf("%s on %s: HTTP %d %s", name, p.ns.Name, res.r.Status, res.r.Body)
	}
	v := res.r.Viewer
	first, err := v.WaitPackets(ctx, "video")
	if err != nil {
		v.Close()
		return nil, "", 0, fmt.Errorf("%s on %s (ICE %s): %w", name, p.ns.Name, v.PC.ICEConnectionState(), err)
	}
	return v, tok, first.Sub(accepted), nil
}

// pageFirstFrame opens the coach page in Chromium on path p, signs in as
// a new viewer name, asks for the box's room, accepts and returns the time
// from the accept to the first frame Chromium showed, and the candidate
// types of the pair it selected.
func (r *relayRig) pageFirstFrame(ctx context.Context, p viewPath, name, modules string) (time.Duration, string, error) {
	if _, err := r.token(name); err != nil { // adds and allows the viewer
		return 0, "", err
	}
	page, err := livetest.OpenPage(ctx, "https://"+r.box.addr+"/", livetest.BrowserOptions{NodeModules: modules, Wrap: p.ns.Wrap()})
	if err != nil {
		return 0, "", err
	}
	defer page.Close()
	if _, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.SignIn }); err != nil {
		return 0, "", err
	}
	for _, f := range [][2]string{{"#name", name}, {"#password", benchPassword}} {
		if err := page.Fill(ctx, f[0], f[1]); err != nil {
			return 0, "", err
		}
	}
	if err := page.Click(ctx, "#signin-button"); err != nil {
		return 0, "", err
	}
	if _, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) == 1 && s.Rooms[0].Ask }); err != nil {
		return 0, "", err
	}
	if err := page.Click(ctx, `button.ask[data-room="bench"]`); err != nil {
		return 0, "", err
	}
	if _, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.State == "waiting" }); err != nil {
		return 0, "", err
	}
	if err := r.accept(ctx, name); err != nil {
		return 0, "", err
	}
	accepted := time.Now()
	st, err := page.Wait(ctx, func(s livetest.PageState) bool { return !s.FirstFrame.IsZero() && s.Local != "" })
	if err != nil {
		return 0, "", fmt.Errorf("%s on %s: no frame in Chromium: %w", name, p.ns.Name, err)
	}
	if out, err := r.box.ctl("consent", "revoke", name); err != nil {
		return 0, "", fmt.Errorf("revoke: %v: %s", err, out)
	}
	return livetest.FirstShown(st, time.Second/30).Sub(accepted), st.Local + "/" + st.Remote, nil
}

// silence revokes viewer name and returns the time from the revoke to its
// last RTP packet (1.5 s after the revoke).
func (r *relayRig) silence(v *livetest.Viewer, name string) (time.Duration, error) {
	time.Sleep(500 * time.Millisecond)
	revoked := time.Now()
	if out, err := r.box.ctl("consent", "revoke", name); err != nil {
		return 0, fmt.Errorf("revoke: %v: %s", err, out)
	}
	time.Sleep(1500 * time.Millisecond)
	last := revoked
	for _, k := range []string{"video", "audio"} {
		if l := v.Last(k); l.After(last) {
			last = l
		}
	}
	return last.Sub(revoked), nil
}

// relayBench measures the live view through the receiver's TURN relay
// against the direct path, alternating: accept -> first video packet
// (median of rounds), revoke -> last packet (max of rounds), and the
// receiver's and the box's CPU with viewers through the relay against
// viewers on the direct path.
func relayBench(bin string, rounds int, modules string) error {
	var cl cleanups
	defer cl.run()
	dir, err := os.MkdirTemp("", "uploadbox-bench-relay-")
	if err != nil {
		return err
	}
	cl.Cleanup(func() { os.RemoveAll(dir) })
	r, err := startRelayRig(bin, dir, &cl)
	if err != nil {
		return err
	}
	var firsts, silences [2][]time.Duration
	pairs := [2]map[string]int{{}, {}}
	for i := range rounds {
		for path := range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			first, pair, err := r.pageFirstFrame(ctx, r.paths[path], fmt.Sprintf("c%d-%d", path, i), modules)
			if err != nil {
				cancel()
				return fmt.Errorf("round %d: %w", i, err)
			}
			pairs[path]["Chromium "+pair]++
			// A pion viewer with a grant, then the revoke: pion has each
			// packet's arrival time.
			name := fmt.Sprintf("p%d-%d", path, i)
			v, _, _, err := r.watch(ctx, r.paths[path], name)
			if err != nil {
				cancel()
				return fmt.Errorf("round %d: %w", i, err)
			}
			l, rm := v.CandidateTypes()
			pairs[path]["pion "+l+"/"+rm]++
			s, err := r.silence(v, name)
			v.Close()
			cancel()
			if err != nil {
				return err
			}
			firsts[path] = append(firsts[path], first)
			silences[path] = append(silences[path], s)
		}
	}
	// No viewer, viewers through the relay, viewers on the direct path,
	// in turn, so that drift of the machine's load affects all alike; the
	// no-viewer phase is the baseline the viewers' cost is measured from.
	const viewers, span, reps = 2, 15 * time.Second, 3
	var cpu [2]cpuUse
	var base cpuUse
	for rep := range reps {
		c, err := r.viewersCPU(direct, 0, span, rep)
		if err != nil {
			return err
		}
		base.add(c)
		for path := range 2 {
			c, err := r.viewersCPU(path, viewers, span, rep)
			if err != nil {
				return err
			}
			cpu[path].add(c)
		}
	}
	fmt.Printf("live view through the receiver's TURN relay vs the direct path (test source 1280x720 30 fps; box and coach on two networks; the coach page in Chromium and pion viewers, %d rounds each, alternating):\n", rounds)
	for path, label := range []string{"relay ", "direct"} {
		f := slices.Sorted(slices.Values(firsts[path]))
		fmt.Printf("  %s accept -> first frame shown, median   %6.0f ms   (goal <= 600; range %.0f–%.0f; pairs %v)\n",
			label, ms(f[len(f)/2]), ms(f[0]), ms(f[len(f)-1]), pairs[path])
	}
	for path, label := range []string{"relay ", "direct"} {
		fmt.Printf("  %s revoke -> last RTP packet, max       %6.0f ms   (goal <= 1000)\n", label, ms(slices.Max(silences[path])))
	}
	rel, dct := cpu[relayed], cpu[direct]
	// Per viewer: CPU over the no-viewer baseline, in % of one core.
	perViewer := func(c cpuUse) float64 { return 100 * (c.total() - base.total()) / viewers / (reps * span.Seconds()) }
	fmt.Printf("  receiver + box CPU per viewer, relay / direct %5.2f     (relay %.2f %%, direct %.2f %% of a core per viewer over no viewer; %d viewers, %d × %s each, no viewer/relay/direct in turn)\n",
		perViewer(rel)/perViewer(dct), perViewer(rel), perViewer(dct), viewers, reps, span)
	fmt.Printf("  receiver + box CPU, relay / direct         %6.2f      (all of it: relay %.2f s = receiver %.2f + box %.2f, direct %.2f s = receiver %.2f + box %.2f, no viewer %.2f s = receiver %.2f + box %.2f)\n",
		rel.total()/dct.total(), rel.total(), rel.recv, rel.box, dct.total(), dct.recv, dct.box, base.total(), base.recv, base.box)
	return nil
}

// cpuUse is CPU seconds of the receiver and the box.
type cpuUse struct{ recv, box float64 }

func (c *cpuUse) add(o cpuUse)  { c.recv += o.recv; c.box += o.box }
func (c cpuUse) total() float64 { return c.recv + c.box }

// viewersCPU connects n granted viewers on path and returns the
// receiver's and the box's CPU over span.
func (r *relayRig) viewersCPU(path, n int, span time.Duration, rep int) (cpuUse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := r.paths[path]
	type joined struct {
		v   *livetest.Viewer
		tok string
	}
	var vs []joined
	defer func() {
		// DELETE ends the session on the box at once, so the next phase
		// starts clean.
		for _, j := range vs {
			j.v.Delete(context.Background(), p.client, j.tok)
			j.v.Close()
		}
	}()
	for i := range n {
		v, tok, _, err := r.watch(ctx, p, fmt.Sprintf("cpu-%d-%d-%d", rep, path, i))
		if err != nil {
			return cpuUse{}, err
		}
		vs = append(vs, joined{v, tok})
	}
	time.Sleep(2 * time.Second)
	var before, after cpuUse
	var err error
	if before, err = r.cpu(); err != nil {
		return cpuUse{}, err
	}
	time.Sleep(span)
	if after, err = r.cpu(); err != nil {
		return cpuUse{}, err
	}
	for _, j := range vs {
		if j.v.Packets("video") == 0 {
			return cpuUse{}, fmt.Errorf("a viewer on %s received no video", p.ns.Name)
		}
	}
	return cpuUse{recv: after.recv - before.recv, box: after.box - before.box}, nil
}

func (r *relayRig) cpu() (cpuUse, error) {
	rc, err := procCPU(r.box.srv.Process.Pid)
	if err != nil {
		return cpuUse{}, err
	}
	bc, err := procCPU(r.box.daemon.Process.Pid)
	return cpuUse{recv: rc, box: bc}, err
}
