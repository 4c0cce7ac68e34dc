package main

import (
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

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// liveBench measures the live view through the daemon: time from the
// teacher's accept to the first frame Chromium shows (median of rounds),
// time from revoke to the last RTP packet (max of rounds), and the
// daemon's CPU with 4 viewers against 1 viewer, in the same run.
func liveBench(bin string, rounds int, modules string) error {
	dir, err := os.MkdirTemp("", "uploadbox-bench-live-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	box, liveAddr, err := startLiveBox(bin, dir, "max_viewers: 8")
	if err != nil {
		return err
	}
	defer box.stop()
	client := box.liveClient()
	token, pending := box.viewerToken, box.pending
	ctx := context.Background()
	var firsts, silences []time.Duration
	for i := range rounds {
		name := fmt.Sprintf("coach-%d", i)
		tok, err := token(name)
		if err != nil {
			return err
		}
		page, err := livetest.OpenPage(ctx, "https://"+liveAddr+"/#token="+tok, livetest.BrowserOptions{NodeModules: modules})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		id := ""
		for id == "" && wctx.Err() == nil {
			if id, err = pending(name); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		accepted := time.Now()
		if out, err := box.ctl("consent", "accept", id); err != nil {
			cancel()
			page.Close()
			return fmt.Errorf("accept: %v: %s", err, out)
		}
		st, err := page.Wait(wctx, func(s livetest.PageState) bool { return !s.FirstFrame.IsZero() })
		if err != nil {
			cancel()
			page.Close()
			return fmt.Errorf("round %d: no frame in Chromium: %v", i, err)
		}
		firsts = append(firsts, livetest.FirstShown(st, time.Second/30).Sub(accepted))
		page.Close()

		// A pion viewer with the same grant, then the revoke.
		r, err := livetest.Offer(wctx, client, "https://"+liveAddr+"/whep", tok, livetest.Options{Audio: true, Loopback: true})
		if err != nil || r.Status != http.StatusCreated {
			cancel()
			return fmt.Errorf("round %d: pion viewer: %v %d", i, err, r.Status)
		}
		r.Viewer.WaitPackets(wctx, "video")
		time.Sleep(500 * time.Millisecond)
		revoked := time.Now()
		if out, err := box.ctl("consent", "revoke", name); err != nil {
			cancel()
			r.Viewer.Close()
			return fmt.Errorf("revoke: %v: %s", err, out)
		}
		time.Sleep(1500 * time.Millisecond)
		last := revoked
		for _, k := range []string{"video", "audio"} {
			if l := r.Viewer.Last(k); l.After(last) {
				last = l
			}
		}
		silences = append(silences, last.Sub(revoked))
		r.Viewer.Close()
		cancel()
	}

	// 1 and 4 viewers alternately, three times, so that drift of the
	// machine's load affects both alike.
	var cpu1, cpu4 float64
	for rep := range 3 {
		c1, err := viewersCPU(box, client, liveAddr, token, pending, 1, rep)
		if err != nil {
			return err
		}
		c4, err := viewersCPU(box, client, liveAddr, token, pending, 4, rep)
		if err != nil {
			return err
		}
		cpu1, cpu4 = cpu1+c1, cpu4+c4
	}
	slices.Sort(firsts)
	fmt.Printf("live view through the daemon (test source 1280x720 30 fps, Chromium and pion on loopback, %d rounds):\n", rounds)
	fmt.Printf("  accept -> first frame shown, median  %6.0f ms   (goal <= 500; range %.0f–%.0f)\n",
		ms(firsts[len(firsts)/2]), ms(firsts[0]), ms(firsts[len(firsts)-1]))
	fmt.Printf("  revoke -> last RTP packet, max       %6.0f ms   (goal <= 1000)\n", ms(slices.Max(silences)))
	fmt.Printf("  daemon CPU, 4 viewers / 1 viewer     %6.2f      (goal <= 1.10; %.2f s vs %.2f s, 3 × 15 s each, alternating)\n", cpu4/cpu1, cpu4, cpu1)
	return nil
}

// startLiveBox is startBox with live view on a free loopback port (more
// keys of the live section in liveKeys) and a 30-minute session started.
func startLiveBox(bin, dir, liveKeys string) (*benchBox, string, error) {
	addr, err := freeLoopback()
	if err != nil {
		return nil, "", err
	}
	box, err := startBox(bin, dir, "live: {enabled: true, listen: \""+addr+"\", "+liveKeys+"}\n")
	if err != nil {
		return nil, "", err
	}
	if out, err := box.ctl("session", "start", "--for", "30m"); err != nil {
		box.stop()
		return nil, "", fmt.Errorf("session start: %v: %s", err, out)
	}
	return box, addr, nil
}

// liveClient is an HTTPS client that trusts the box's live view
// certificate (made at the daemon's first start).
func (b *benchBox) liveClient() *http.Client {
	var pem []byte
	for range 100 {
		if pem, _ = os.ReadFile(filepath.Join(b.state, "live.crt")); len(pem) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// viewerToken issues a box-local viewer token for name.
func (b *benchBox) viewerToken(name string) (string, error) {
	out, err := exec.Command(b.ub, "viewer", "token", "--name", name, "--ttl", "1h", "--state", b.state).Output()
	return strings.TrimSpace(string(out)), err
}

// pending is the id of viewer's pending request ("" if none).
func (b *benchBox) pending(viewer string) (string, error) {
	out, err := b.ctl("consent", "list")
	if err != nil {
		return "", err
	}
	var rs []struct{ ID, Viewer, State string }
	json.Unmarshal(out, &rs)
	for _, r := range rs {
		if r.Viewer == viewer && r.State == "pending" {
			return r.ID, nil
		}
	}
	return "", nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// viewersCPU connects n granted pion viewers and returns the daemon's CPU
// seconds over 15 s.
func viewersCPU(box *benchBox, client *http.Client, addr string, token func(string) (string, error), pending func(string) (string, error), n, rep int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var viewers []*livetest.Viewer
	var tokens []string
	defer func() {
		// DELETE ends the session on the box at once; a viewer that only
		// went away would be fed until ICE gives up, spoiling the next phase.
		for i, v := range viewers {
			v.Delete(context.Background(), client, tokens[i])
			v.Close()
		}
	}()
	for i := range n {
		name := fmt.Sprintf("cpu-%d-%d-%d", rep, n, i)
		tok, err := token(name)
		if err != nil {
			return 0, err
		}
		r, err := livetest.Offer(ctx, client, "https://"+addr+"/whep", tok, livetest.Options{Audio: true, Loopback: true})
		if err != nil {
			return 0, err
		}
		r.Viewer.Close()
		id, _ := pending(name)
		if out, err := box.ctl("consent", "accept", id); err != nil {
			return 0, fmt.Errorf("accept: %v: %s", err, out)
		}
		r, err = livetest.Offer(ctx, client, "https://"+addr+"/whep", tok, livetest.Options{Audio: true, Loopback: true})
		if err != nil || r.Status != http.StatusCreated {
			return 0, fmt.Errorf("viewer %d: %v", i, err)
		}
		viewers = append(viewers, r.Viewer)
		tokens = append(tokens, tok)
		r.Viewer.WaitPackets(ctx, "video")
	}
	time.Sleep(2 * time.Second)
	before, err := procCPU(box.daemon.Process.Pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(15 * time.Second)
	after, err := procCPU(box.daemon.Process.Pid)
	for _, v := range viewers {
		if v.Packets("video") == 0 {
			return 0, fmt.Errorf("a viewer received no video")
		}
	}
	return after - before, err
}

// procCPU is a process's user+system CPU time in seconds, from /proc.
func procCPU(pid int) (float64, error) {
	d, err := processCPU(pid)
	return d.Seconds(), err
}
