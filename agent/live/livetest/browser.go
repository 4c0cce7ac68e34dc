package livetest

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

//go:embed viewer.cjs
var viewerScript []byte

// PageState is one observation of the viewer page in Chromium.
type PageState struct {
	// At is when the observation reached this process.
	At time.Time `json:"-"`
	// State, Reason and Text are the #status element's data-state,
	// data-reason and text.
	State  string `json:"state"`
	Reason string `json:"reason"`
	Text   string `json:"text"`
	// Frames is the video frames the browser decoded so far.
	Frames int `json:"frames"`
	// FirstFrame is when the page's <video> presented the frame that its
	// first requestVideoFrameCallback reported, zero before, and
	// FramesBefore how many frames it had presented before that one. On a
	// busy machine (or while Chromium opens an audio output that is not
	// there) the page's main thread can stall, so the callback comes late:
	// the first frame then showed about FramesBefore frame intervals
	// before FirstFrame.
	FirstFrame   time.Time `json:"-"`
	FirstMilli   int64     `json:"first"`
	FramesBefore int       `json:"before"`
}

// BrowserOptions configure OpenPage.
type BrowserOptions struct {
	// NodeModules is the node_modules folder holding playwright-core.
	NodeModules string
	// Chromium is the browser binary (default /usr/bin/chromium).
	Chromium string
	// Wrap, if set, is the command line node runs under, such as
	// `ip netns exec NAME` for a browser inside a network namespace.
	Wrap []string
}

// Page is the viewer page open in Chromium.
type Page struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuf
	states chan PageState
	done   chan error

	mu   sync.Mutex
	last PageState

	closeOnce sync.Once
	closeErr  error
}

// OpenPage starts Chromium (through node and playwright-core) on url, the
// viewer page, usually with #token=… so it starts at once. The page runs
// until Close or ctx ends.
func OpenPage(ctx context.Context, url string, opts BrowserOptions) (*Page, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node is required to drive Chromium (scripts/setup.sh installs it): %w", err)
	}
	if _, err := os.Stat(filepath.Join(opts.NodeModules, "playwright-core")); err != nil {
		return nil, fmt.Errorf("playwright-core is required in %s (run scripts/setup.sh): %w", opts.NodeModules, err)
	}
	chromium := opts.Chromium
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		return nil, fmt.Errorf("Debian chromium is required (scripts/setup.sh installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "livetest-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "viewer.cjs")
	if err := os.WriteFile(script, viewerScript, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := append(append(append([]string(nil), opts.Wrap...), node), script, url)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+opts.NodeModules, "CHROMIUM="+chromium)
	p := &Page{cmd: cmd, stderr: &syncBuf{}, states: make(chan PageState, 256), done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start node: %w", err)
	}
	go func() {
		defer os.RemoveAll(dir)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var s PageState
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				continue
			}
			s.At = time.Now()
			if s.FirstMilli > 0 {
				s.FirstFrame = time.UnixMilli(s.FirstMilli)
			}
			p.mu.Lock()
			p.last = s
			p.mu.Unlock()
			select {
			case p.states <- s:
			default: // a reader that fell behind still has Last
			}
		}
		close(p.states)
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// Wait returns the first observation for which ok is true, or an error
// when ctx ends or the browser exits first.
func (p *Page) Wait(ctx context.Context, ok func(PageState) bool) (PageState, error) {
	for {
		select {
		case s, open := <-p.states:
			if !open {
				return PageState{}, fmt.Errorf("the browser exited: %s", p.stderr.String())
			}
			if ok(s) {
				return s, nil
			}
		case <-ctx.Done():
			last := p.Last()
			return PageState{}, fmt.Errorf("page state %+v: %w (stderr: %s)", last, ctx.Err(), p.stderr.String())
		}
	}
}

// Last is the latest observation.
func (p *Page) Last() PageState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// Close closes the browser and waits for it to exit.
func (p *Page) Close() error {
	p.closeOnce.Do(func() {
		p.stdin.Close()
		for range p.states { // drain so the reader reaches cmd.Wait
		}
		err := <-p.done
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("viewer.cjs: %v: %s", err, p.stderr.String())
		}
		p.closeErr = err
	})
	return p.closeErr
}

type syncBuf struct {
	mu sync.Mutex
	b  []byte
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// FirstShown estimates when the page showed its first video frame from an
// observation with FirstFrame set and the stream's frame interval.
func FirstShown(s PageState, interval time.Duration) time.Time {
	return s.FirstFrame.Add(-time.Duration(s.FramesBefore) * interval)
}
