package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// browserPlay is what Chromium reports after playing an export for 2 s.
type browserPlay struct {
	Duration      float64 `json:"duration"`
	Width         int     `json:"width"`
	Height        int     `json:"height"`
	CurrentTime   float64 `json:"currentTime"`
	FramesDecoded int     `json:"framesDecoded"`
	AudioBytes    int     `json:"audioBytes"`
	VideoBytes    int     `json:"videoBytes"`
}

const playerPage = `<!doctype html><meta charset="utf-8"><title>export</title>
<video src="/rec.mp4" muted playsinline preload="auto"></video>`

// playInBrowser serves mp4 on loopback and plays it in Debian's Chromium
// through playwright-core (installed by scripts/setup.sh).
func playInBrowser(t *testing.T, mp4 string) browserPlay {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the browser check (scripts/setup.sh installs it): %v", err)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("Debian chromium is required for the browser check (scripts/setup.sh installs it): %v", err)
	}
	modules, err := filepath.Abs("../../.cache/npm/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(modules, "playwright-core")); err != nil {
		t.Fatalf("playwright-core is required in .cache/npm (run scripts/setup.sh): %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(playerPage))
	})
	mux.HandleFunc("/rec.mp4", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeFile(w, r, mp4)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	cmd := exec.CommandContext(t.Context(), node, "testdata/play.cjs", "http://"+ln.Addr().String()+"/")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("chromium could not play the export: %v\n%s", err, msg)
	}
	var p browserPlay
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("play.cjs output %q: %v", out, err)
	}
	return p
}
