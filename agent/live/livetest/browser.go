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
	"strings"
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
	// Ends is #status's data-ends: the grant's end while watching.
	Ends string `json:"ends"`
	// Rooms are the rooms the coach page lists.
	Rooms []Room `json:"rooms"`
	// SignIn says the coach page's sign-in form shows.
	SignIn bool `json:"signin"`
	// ScrollWidth is document.documentElement.scrollWidth: wider than the
	// viewport means something overflows sideways.
	ScrollWidth int `json:"scrollWidth"`
	// Loads counts the page's load events: 1 unless it reloaded.
	Loads int `json:"loads"`
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
	// Local and Remote are the candidate types ("host", "srflx", "prflx",
	// "relay") of the ICE pair the browser selected, empty before.
	Local  string `json:"local"`
	Remote string `json:"remote"`
	// Teacher is the teacher's view while it shows (a teacher signed in
	// on the receiver's page), nil otherwise.
	Teacher *TeacherView `json:"teacher"`
	// Fleet is the administrator's fleet view while it shows (an admin
	// signed in on the receiver's page), nil otherwise.
	Fleet *FleetView `json:"fleet"`
	// Talk is the push-to-talk button (nil on a page without one).
	Talk *TalkButton `json:"talk"`
}

// TalkButton is the viewer page's push-to-talk button (#talk).
type TalkButton struct {
	// State is its data-talk: off, idle, talking, taken or not-allowed;
	// Text what it says.
	State string `json:"state"`
	Text  string `json:"text"`
	// Shown: visible; Enabled: not disabled.
	Shown   bool `json:"shown"`
	Enabled bool `json:"enabled"`
	// Note and NoteReason are #talk-note's text (while shown) and
	// data-reason: why the microphone could not be used.
	Note       string `json:"note"`
	NoteReason string `json:"noteReason"`
	// Sent is the audio packets the browser sent (getStats outbound-rtp).
	Sent int `json:"sent"`
}

// FleetView is the fleet view of the receiver's page (fleet.js).
type FleetView struct {
	// State and Text are #f-status's: loading, live, reconnecting, error
	// or signin-expired.
	State string `json:"state"`
	Text  string `json:"text"`
	// Boxes are the rows in the page's order.
	Boxes []FleetBox `json:"boxes"`
}

// FleetBox is one box's row on the fleet page.
type FleetBox struct {
	Device string `json:"device"`
	// Health is alert, offline, stale or online.
	Health string `json:"health"`
	Online bool   `json:"online"`
	// Text is the row's text as shown.
	Text string `json:"text"`
	// Alerts are the kinds of the alerts shown under the box.
	Alerts []string `json:"alerts"`
}

// TeacherView is the teacher's view of the receiver's page (teacher.js).
type TeacherView struct {
	// State, Reason and Text are #t-status's: connecting, live,
	// reconnecting or error.
	State  string        `json:"state"`
	Reason string        `json:"reason"`
	Text   string        `json:"text"`
	Rooms  []TeacherRoom `json:"rooms"`
}

// TeacherRoom is one room the teacher answers for.
type TeacherRoom struct {
	Device    string `json:"device"`
	Online    bool   `json:"online"`
	Recording bool   `json:"recording"`
	// Until is the recording's end as the box reported it (RFC 3339).
	Until     string            `json:"until"`
	Pending   []TeacherRequest  `json:"pending"`
	Watching  []TeacherWatcher  `json:"watching"`
	Cooldowns []TeacherCooldown `json:"cooldowns"`
	// Result is the outcome of the teacher's last button for the room.
	Result *struct {
		Action  string `json:"action"`
		Outcome string `json:"outcome"`
		Reason  string `json:"reason"`
		Text    string `json:"text"`
	} `json:"result"`
	// Anonymise is the running session's mode (data-anonymise), RecText
	// the recording line as shown; StartMode and StartModes are the
	// choice for Start recording (select[data-t-anonymise]) and its
	// options.
	Anonymise  string   `json:"anonymise"`
	RecText    string   `json:"recText"`
	StartMode  string   `json:"startMode"`
	StartModes []string `json:"startModes"`
}

// TeacherRequest is a pending request on the teacher's page.
type TeacherRequest struct {
	Request string `json:"request"`
	Viewer  string `json:"viewer"`
	Audio   bool   `json:"audio"`
	// Shown is when the page first showed it, ms since the epoch (the
	// browser's clock).
	Shown int64 `json:"shown"`
	// Talk says its "Coach may speak" box shows ticked (nil: no such box).
	Talk *bool `json:"talk"`
}

// TeacherWatcher is someone watching now, on the teacher's page.
type TeacherWatcher struct {
	Viewer string `json:"viewer"`
	Audio  bool   `json:"audio"`
	Until  string `json:"until"`
	// Talk: the page says the viewer may speak; Speaking: speaking now.
	Talk     bool `json:"talk"`
	Speaking bool `json:"speaking"`
	// Text is the line as shown.
	Text string `json:"text"`
}

// TeacherCooldown is a viewer who may not ask again yet.
type TeacherCooldown struct {
	Viewer string `json:"viewer"`
	Reason string `json:"reason"`
}

// Room finds the teacher's room device, nil when the view lacks it.
func (v *TeacherView) Room(device string) *TeacherRoom {
	if v == nil {
		return nil
	}
	for i := range v.Rooms {
		if v.Rooms[i].Device == device {
			return &v.Rooms[i]
		}
	}
	return nil
}

// Room is one room on the coach page.
type Room struct {
	Name   string `json:"name"`
	Online bool   `json:"online"`
	// Recording is "true" or "false" when the page shows whether the room
	// records a lesson, "" when it does not know.
	Recording string `json:"recording"`
	// Ask says its "Ask to watch" button shows and is enabled.
	Ask bool `json:"ask"`
}

// BrowserOptions configure OpenPage.
type BrowserOptions struct {
	// Width and Height set the window (default: playwright's 1280x720).
	Width, Height int
	// NodeModules is the node_modules folder holding playwright-core.
	NodeModules string
	// Chromium is the browser binary (default /usr/bin/chromium).
	Chromium string
	// Wrap, if set, is the command line node runs under, such as
	// `ip netns exec NAME` for a browser inside a network namespace.
	Wrap []string
	// Args are extra Chromium flags, such as a fake microphone's
	// (--use-fake-device-for-media-stream …).
	Args []string
}

// Page is the viewer page open in Chromium.
type Page struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuf
	states chan PageState
	acks   chan ack
	done   chan error

	cmdMu sync.Mutex // one command at a time
	cmdID int

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
	if opts.Width > 0 && opts.Height > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("VIEWPORT=%dx%d", opts.Width, opts.Height))
	}
	if len(opts.Args) > 0 {
		cmd.Env = append(cmd.Env, "CHROMIUM_ARGS="+strings.Join(opts.Args, "\n"))
	}
	p := &Page{cmd: cmd, stderr: &syncBuf{}, states: make(chan PageState, 256), acks: make(chan ack, 1), done: make(chan error, 1)}
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
			var a ack
			if err := json.Unmarshal(sc.Bytes(), &a); err == nil && a.ID != nil {
				select {
				case p.acks <- a:
				default: // nobody waits for it
				}
				continue
			}
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

// ack answers a command.
type ack struct {
	ID    *int   `json:"ack"`
	Error string `json:"error"`
}

// Fill types value into the element sel (a CSS selector) names.
func (p *Page) Fill(ctx context.Context, sel, value string) error {
	return p.do(ctx, map[string]string{"op": "fill", "sel": sel, "value": value})
}

// Click clicks the element sel names.
func (p *Page) Click(ctx context.Context, sel string) error {
	return p.do(ctx, map[string]string{"op": "click", "sel": sel})
}

// Select picks the option value in the <select> sel names.
func (p *Page) Select(ctx context.Context, sel, value string) error {
	return p.do(ctx, map[string]string{"op": "select", "sel": sel, "value": value})
}

// Press holds the mouse button down on the element sel names (a
// push-to-talk button); Lift lets it go.
func (p *Page) Press(ctx context.Context, sel string) error {
	return p.do(ctx, map[string]string{"op": "down", "sel": sel})
}

// Lift releases the mouse button Press held.
func (p *Page) Lift(ctx context.Context) error {
	return p.do(ctx, map[string]string{"op": "up"})
}

// TouchStart puts a finger on the centre of the element sel names and
// holds it there (touch events: the page sees pointer events of type
// touch); TouchEnd lifts it.
func (p *Page) TouchStart(ctx context.Context, sel string) error {
	return p.do(ctx, map[string]string{"op": "touchstart", "sel": sel})
}

// TouchEnd lifts the finger TouchStart put down.
func (p *Page) TouchEnd(ctx context.Context) error {
	return p.do(ctx, map[string]string{"op": "touchend"})
}

// KeyDown holds key (playwright's name, such as "Space") down on the
// page; KeyUp releases it.
func (p *Page) KeyDown(ctx context.Context, key string) error {
	return p.do(ctx, map[string]string{"op": "keydown", "value": key})
}

// KeyUp releases key.
func (p *Page) KeyUp(ctx context.Context, key string) error {
	return p.do(ctx, map[string]string{"op": "keyup", "value": key})
}

// Screenshot saves a PNG of the whole page to path.
func (p *Page) Screenshot(ctx context.Context, path string) error {
	return p.do(ctx, map[string]string{"op": "screenshot", "path": path})
}

// do sends one command to viewer.cjs and waits for its answer.
func (p *Page) do(ctx context.Context, c map[string]string) error {
	p.cmdMu.Lock()
	defer p.cmdMu.Unlock()
	p.cmdID++
	id := p.cmdID
	msg := map[string]any{"id": id}
	for k, v := range c {
		msg[k] = v
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s: %w", c["op"], err)
	}
	for {
		select {
		case a := <-p.acks:
			if *a.ID != id {
				continue
			}
			if a.Error != "" {
				return fmt.Errorf("%s %s: %s", c["op"], c["sel"], a.Error)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %w", c["op"], c["sel"], ctx.Err())
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
