package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/audit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is an injected clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rig is a ledger with its files, reopenable.
type rig struct {
	t         *testing.T
	dbPath    string
	auditPath string
	log       *audit.Log
	opts      Options
	l         *Ledger
}

func newRig(t *testing.T, now func() time.Time) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dbPath: filepath.Join(dir, "consent.db"), auditPath: filepath.Join(dir, "audit.jsonl")}
	var err error
	if r.log, err = audit.Open(r.auditPath); err != nil {
		t.Fatal(err)
	}
	r.opts = Options{Audit: r.log, Now: now}
	r.open()
	t.Cleanup(func() { r.l.Close() })
	return r
}

func (r *rig) open() {
	r.t.Helper()
	l, err := Open(r.dbPath, r.opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.l = l
}

func (r *rig) reopen() {
	r.t.Helper()
	if err := r.l.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.open()
}

// events returns the audit log's entries.
func (r *rig) events() []audit.Entry {
	r.t.Helper()
	data, err := os.ReadFile(r.auditPath)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []audit.Entry
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var e audit.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// pending asks for viewer and returns the pending request id.
func pending(t *testing.T, l *Ledger, viewer string, audio bool) string {
	t.Helper()
	_, err := l.Ask(viewer, audio)
	var d *Denied
	if !errors.As(err, &d) || d.Reason != ReasonPending || d.Request == "" {
		t.Fatalf("Ask(%s) = %v, want Denied pending with a request id", viewer, err)
	}
	return d.Request
}

// grant asks for viewer and accepts the request.
func grant(t *testing.T, l *Ledger, viewer string, ttl time.Duration) Grant {
	t.Helper()
	g, err := l.Accept(pending(t, l, viewer, true), ttl, false, "uid:1000(teacher)")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mustState(t *testing.T, l *Ledger, id, want string) Request {
	t.Helper()
	r, err := l.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != want {
		t.Fatalf("request %s is %s, want %s", id, r.State, want)
	}
	return r
}

// receive waits up to limit for a watch to end and checks it is closed.
func receive(t *testing.T, ch <-chan string, limit time.Duration) string {
	t.Helper()
	select {
	case reason, ok := <-ch:
		if !ok {
			t.Fatal("watch closed without a reason")
		}
		if _, ok := <-ch; ok {
			t.Fatal("watch delivered a second value")
		}
		return reason
	case <-time.After(limit):
		t.Fatalf("watch did not end within %v", limit)
		return ""
	}
}

func TestRequestAcceptGrant(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	l := r.l
	l.SessionStarted(time.Time{})
	id := pending(t, l, "coach-anna", true)
	if len(id) != 16 {
		t.Fatalf("request id %q, want 16 hex digits", id)
	}
	if again := pending(t, l, "coach-anna", true); again != id {
		t.Fatalf("second Ask made request %s, want the pending %s", again, id)
	}
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || list[0].State != StatePending || list[0].Viewer != "coach-anna" || !list[0].Audio {
		t.Fatalf("List = %+v", list)
	}
	g, err := l.Accept(id, 0, false, "uid:1000(teacher)")
	if err != nil {
		t.Fatal(err)
	}
	want := Grant{ID: id, Viewer: "coach-anna", Audio: true, Expires: c.Now().Add(60 * time.Minute)}
	if g != want {
		t.Fatalf("Accept = %+v, want %+v", g, want)
	}
	c.Add(59 * time.Minute)
	got, err := l.Ask("coach-anna", true)
	if err != nil || got != want {
		t.Fatalf("Ask after accept = %+v, %v; want %+v", got, err, want)
	}
	// Past the expiry the grant is gone even without Run.
	c.Add(time.Minute)
	id2 := pending(t, l, "coach-anna", true)
	if id2 == id {
		t.Fatal("expired request reused")
	}
	mustState(t, l, id, StateExpired)
}

func TestDeny(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	l := r.l
	l.SessionStarted(time.Time{})
	id := pending(t, l, "coach-ben", false)
	if err := l.Deny(id, "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	mustState(t, l, id, StateDenied)
	if err := l.Deny(id, "uid:1000(teacher)"); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), id) {
		t.Fatalf("Deny of denied request: %v, want ErrNotPending naming %s", err, id)
	}
	// A no sticks: asking again in the cooldown is answered "declined"
	// and creates no request, however often the page retries.
	until := c.Now().Add(DefaultCooldown)
	for range 5 {
		_, err := l.Ask("coach-ben", false)
		var d *Denied
		if !errors.As(err, &d) || d.Reason != ReasonDeclined || d.Request != id || !d.Until.Equal(until) {
			t.Fatalf("Ask after deny: %v (%+v), want declined naming %s until the cooldown ends", err, d, id)
		}
		c.Add(time.Minute)
	}
	if list, _ := l.List(); len(list) != 1 {
		t.Fatalf("asks in the cooldown made requests: %+v", list)
	}
	// After the cooldown the coach may ask again: a new pending request.
	c.Add(DefaultCooldown)
	id2 := pending(t, l, "coach-ben", false)
	if id2 == id {
		t.Fatalf("Ask after deny returned the denied request %s", id)
	}
	mustState(t, l, id2, StatePending)
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != id2 || list[1].ID != id {
		t.Fatalf("List not newest first: %+v", list)
	}
	// The first request is no longer the one a cooldown holds.
	if _, err := l.Accept(id, 0, false, "uid:1000(teacher)"); !errors.Is(err, ErrNotPending) {
		t.Fatalf("Accept of a denied request after its cooldown: %v, want ErrNotPending", err)
	}
}

func TestDecisionErrors(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	l.SessionStarted(time.Time{})
	id := pending(t, l, "coach-cy", true)
	if _, err := l.Accept(id, 0, false, "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		do   func() error
		want error
		in   string
	}{
		{"accept twice", func() error { _, err := l.Accept(id, 0, false, "uid:1000(teacher)"); return err }, ErrNotPending, id},
		{"deny accepted", func() error { return l.Deny(id, "uid:1000(teacher)") }, ErrNotPending, id},
		{"accept unknown", func() error { _, err := l.Accept("00ff00ff00ff00ff", 0, false, "uid:1000(teacher)"); return err }, ErrUnknownRequest, "00ff00ff00ff00ff"},
		{"deny unknown", func() error { return l.Deny("nope", "uid:1000(teacher)") }, ErrUnknownRequest, "nope"},
		{"negative ttl", func() error { _, err := l.Accept(id, -time.Minute, false, "uid:1000(teacher)"); return err }, nil, id},
		{"revoke without grant", func() error { return l.Revoke("coach-nobody", "uid:1000(teacher)") }, ErrNoGrant, "coach-nobody"},
		{"accept without a decider", func() error { _, err := l.Accept(id, 0, false, ""); return err }, ErrNoDecider, id},
		{"deny without a decider", func() error { return l.Deny(id, "") }, ErrNoDecider, id},
		{"revoke without a decider", func() error { return l.Revoke("coach-cy", "") }, ErrNoDecider, "coach-cy"},
		{"bad viewer", func() error { _, err := l.Ask("", true); return err }, ErrBadViewer, `""`},
		{"control characters", func() error { _, err := l.Ask("a\nb", true); return err }, ErrBadViewer, `a\nb`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.in) {
				t.Fatalf("error %v, want %v naming %s", err, tt.want, tt.in)
			}
		})
	}
}

func TestViewerCannotUseAnothersGrant(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	l.SessionStarted(time.Time{})
	a := grant(t, l, "coach-a", 0)
	idB := pending(t, l, "coach-b", true)
	if idB == a.ID {
		t.Fatal("B got A's request id")
	}
	if ch, cancel := l.Watch("coach-b"); receive(t, ch, time.Second) != EndNoGrant {
		t.Fatal("B can watch A's grant")
	} else {
		cancel()
	}
	// Revoking B (who has nothing) must not touch A.
	if err := l.Revoke("coach-b", "uid:1000(teacher)"); !errors.Is(err, ErrNoGrant) {
		t.Fatalf("Revoke(b) = %v", err)
	}
	if g, err := l.Ask("coach-a", true); err != nil || g.ID != a.ID {
		t.Fatalf("A's grant after B's attempts: %+v, %v", g, err)
	}
}

func TestAudio(t *testing.T) {
	tests := []struct {
		name               string
		asked, no, wantNow bool
		want               bool
	}{
		{"asked and granted", true, false, true, true},
		{"asked, teacher withholds audio", true, true, true, false},
		{"not asked, teacher allows", false, false, true, false},
		{"not asked, withheld", false, true, true, false},
		{"granted but not wanted now", true, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, newClock().Now)
			l := r.l
			l.SessionStarted(time.Time{})
			g, err := l.Accept(pending(t, l, "coach", tt.asked), 0, tt.no, "uid:1000(teacher)")
			if err != nil {
				t.Fatal(err)
			}
			if g.Audio != (tt.asked && !tt.no) {
				t.Fatalf("Accept gave audio=%v", g.Audio)
			}
			got, err := l.Ask("coach", tt.wantNow)
			if err != nil {
				t.Fatal(err)
			}
			if got.Audio != tt.want {
				t.Fatalf("Ask audio = %v, want %v", got.Audio, tt.want)
			}
		})
	}
}

func TestExpiryIsCapped(t *testing.T) {
	tests := []struct {
		name       string
		sessionEnd time.Duration // 0: open-ended
		ttl        time.Duration
		want       time.Duration
	}{
		{"default", 0, 0, 60 * time.Minute},
		{"explicit", 0, 15 * time.Minute, 15 * time.Minute},
		{"max", 0, 24 * time.Hour, 8 * time.Hour},
		{"session ends first", 20 * time.Minute, 0, 20 * time.Minute},
		{"ttl before session end", 2 * time.Hour, 30 * time.Minute, 30 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			r := newRig(t, c.Now)
			var end time.Time
			if tt.sessionEnd > 0 {
				end = c.Now().Add(tt.sessionEnd)
			}
			r.l.SessionStarted(end)
			g, err := r.l.Accept(pending(t, r.l, "coach", true), tt.ttl, false, "uid:1000(teacher)")
			if err != nil {
				t.Fatal(err)
			}
			if want := c.Now().Add(tt.want); !g.Expires.Equal(want) {
				t.Fatalf("expires %v, want %v", g.Expires, want)
			}
		})
	}
}

func TestSessionEnd(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	l := r.l
	if _, err := l.Ask("coach", true); !isDenied(err, ReasonNoSession) {
		t.Fatalf("Ask before any session: %v", err)
	}
	if list, _ := l.List(); len(list) != 0 {
		t.Fatalf("Ask without a session created requests: %+v", list)
	}
	l.SessionStarted(time.Time{})
	g := grant(t, l, "coach", 0)
	waiting := pending(t, l, "coach-2", true)
	ch, cancel := l.Watch("coach")
	defer cancel()
	l.SessionEnded(ByDaemon)
	if got := receive(t, ch, time.Second); got != EndSession {
		t.Fatalf("watch reason %q, want %q", got, EndSession)
	}
	if _, err := l.Ask("coach", true); !isDenied(err, ReasonNoSession) {
		t.Fatalf("Ask after session end: %v", err)
	}
	ended := mustState(t, l, g.ID, StateExpired)
	if ended.Reason != EndSession || !ended.Expires.Equal(c.Now()) {
		t.Fatalf("ended grant %+v", ended)
	}
	mustState(t, l, waiting, StateCancelled)
	if _, err := l.Accept(waiting, 0, false, "uid:1000(teacher)"); !errors.Is(err, ErrNotPending) {
		t.Fatalf("Accept after session end: %v", err)
	}

	// A session with an end: a new session cuts a longer grant short.
	l.SessionStarted(time.Time{})
	g = grant(t, l, "coach", 0)
	end := c.Now().Add(10 * time.Minute)
	l.SessionStarted(end)
	if got, err := l.Ask("coach", true); err != nil || !got.Expires.Equal(end) {
		t.Fatalf("grant after SessionStarted(end) = %+v, %v; want expiry %v", got, err, end)
	}
	// Once the end has passed, the session is over even without SessionEnded.
	c.Add(10 * time.Minute)
	if _, err := l.Ask("coach", true); !isDenied(err, ReasonNoSession) {
		t.Fatalf("Ask after the session's end: %v", err)
	}
	mustState(t, l, g.ID, StateExpired)
}

func isDenied(err error, reason string) bool {
	var d *Denied
	return errors.As(err, &d) && d.Reason == reason
}

func TestRevokeEndsWatchWithinOneSecond(t *testing.T) {
	r := newRig(t, time.Now)
	l := r.l
	l.SessionStarted(time.Time{})
	g := grant(t, l, "coach", 0)
	other := grant(t, l, "coach-other", 0)
	ch1, cancel1 := l.Watch("coach")
	defer cancel1()
	ch2, cancel2 := l.Watch("coach")
	defer cancel2()
	chOther, cancelOther := l.Watch("coach-other")
	defer cancelOther()

	start := time.Now()
	if err := l.Revoke("coach", "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan string{ch1, ch2} {
		if got := receive(t, ch, time.Second); got != EndRevoked {
			t.Fatalf("watch reason %q", got)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("revoke took %v to reach the watchers", d)
	}
	select {
	case reason := <-chOther:
		t.Fatalf("another viewer's watch ended: %q", reason)
	default:
	}
	mustState(t, l, g.ID, StateRevoked)
	mustState(t, l, other.ID, StateAccepted)
	if err := l.Revoke("coach", "uid:1000(teacher)"); !errors.Is(err, ErrNoGrant) {
		t.Fatalf("second revoke: %v", err)
	}
	// The next Ask is refused for the cooldown, not the revoked grant
	// revived nor a new request.
	if g2, err := l.Ask("coach", true); !isDenied(err, ReasonRevoked) {
		t.Fatalf("Ask after revoke = %+v, %v; want refused (revoked)", g2, err)
	}
	if list, _ := l.List(); len(list) != 2 {
		t.Fatalf("Ask after revoke made a request: %+v", list)
	}
}

func TestWatchCancel(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	l.SessionStarted(time.Time{})
	grant(t, l, "coach", 0)
	ch, cancel := l.Watch("coach")
	cancel()
	cancel()
	if err := l.Revoke("coach", "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-ch:
		t.Fatalf("cancelled watch received %q", v)
	default:
	}
	if ch, _ := l.Watch("coach"); receive(t, ch, time.Second) != EndNoGrant {
		t.Fatal("watch without a grant")
	}
	// Close ends the watches it still has.
	grant(t, l, "coach-2", 0)
	ch, cancel = l.Watch("coach-2")
	defer cancel()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, time.Second); got != EndClosed {
		t.Fatalf("watch after Close: %q", got)
	}
	if _, err := l.Ask("coach", true); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ask after Close: %v", err)
	}
}

// TestExpiryRealClock runs Run against the real clock with a short grant.
func TestExpiryRealClock(t *testing.T) {
	r := newRig(t, time.Now)
	l := r.l
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	l.SessionStarted(time.Time{})
	long := grant(t, l, "coach-long", 0)
	g := grant(t, l, "coach", 300*time.Millisecond)
	ch, stop := l.Watch("coach")
	defer stop()
	if got := receive(t, ch, 2*time.Second); got != EndExpired {
		t.Fatalf("watch reason %q", got)
	}
	at := time.Now()
	if at.Before(g.Expires) {
		t.Fatalf("grant ended %v before its expiry", g.Expires.Sub(at))
	}
	if late := at.Sub(g.Expires); late > time.Second {
		t.Fatalf("expiry reached the watcher %v late", late)
	}
	mustState(t, l, g.ID, StateExpired)
	mustState(t, l, long.ID, StateAccepted)
}

// TestExpiryOnTime runs Run on synctest's fake clock: the grant ends at
// exactly its expiry, and a shorter grant accepted later reschedules Run.
func TestExpiryOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, time.Now)
		l := r.l
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()

		l.SessionStarted(time.Time{})
		long := grant(t, l, "coach-long", 0) // 60 min
		synctest.Wait()                      // Run now sleeps towards the 60 min expiry
		short := grant(t, l, "coach", 30*time.Second)
		chShort, c1 := l.Watch("coach")
		defer c1()
		chLong, c2 := l.Watch("coach-long")
		defer c2()

		time.Sleep(time.Until(short.Expires) - time.Nanosecond)
		synctest.Wait()
		select {
		case v := <-chShort:
			t.Fatalf("grant ended early: %q", v)
		default:
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		select {
		case v := <-chShort:
			if v != EndExpired || !time.Now().Equal(short.Expires) {
				t.Fatalf("watch got %q at %v, want %q at %v", v, time.Now(), EndExpired, short.Expires)
			}
		default:
			t.Fatal("grant did not end at its expiry")
		}

		time.Sleep(time.Until(long.Expires))
		synctest.Wait()
		select {
		case v := <-chLong:
			if v != EndExpired {
				t.Fatalf("long watch got %q", v)
			}
		default:
			t.Fatal("long grant did not end at its expiry")
		}
		var expired []string
		for _, e := range r.events() {
			if e.Event == "consent.expire" {
				expired = append(expired, e.Identity+"@"+e.Time.Format(time.TimeOnly))
			}
		}
		want := []string{
			"coach@" + short.Expires.UTC().Format(time.TimeOnly),
			"coach-long@" + long.Expires.UTC().Format(time.TimeOnly),
		}
		if fmt.Sprint(expired) != fmt.Sprint(want) {
			t.Fatalf("audited expiries %v, want %v", expired, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestRestartNeverRevives(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	r.l.SessionStarted(time.Time{})
	short := grant(t, r.l, "coach-short", 10*time.Minute)
	revoked := grant(t, r.l, "coach-revoked", 0)
	valid := grant(t, r.l, "coach-valid", 0)
	if err := r.l.Revoke("coach-revoked", "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}

	c.Add(30 * time.Minute)
	r.reopen()
	mustState(t, r.l, short.ID, StateExpired)
	mustState(t, r.l, revoked.ID, StateRevoked)
	if g, err := r.l.Ask("coach-valid", true); err != nil || g != valid {
		t.Fatalf("still-valid grant after restart: %+v, %v; want %+v", g, err, valid)
	}

	// The clock going back does not revive what was recorded as ended.
	c.Add(-25 * time.Minute)
	r.reopen()
	// The revoked viewer's cooldown survives the restarts.
	for v, reason := range map[string]string{"coach-short": ReasonPending, "coach-revoked": ReasonRevoked} {
		if _, err := r.l.Ask(v, true); !isDenied(err, reason) {
			t.Fatalf("%s after restart with an earlier clock: %v, want %s", v, err, reason)
		}
		if ch, _ := r.l.Watch(v); receive(t, ch, time.Second) != EndNoGrant {
			t.Fatalf("%s can watch after restart", v)
		}
	}

	// The daemon starting without a session ends the surviving grant.
	r.reopen()
	r.l.SessionEnded(ByDaemon)
	mustState(t, r.l, valid.ID, StateExpired)
	r.reopen()
	if _, err := r.l.Ask("coach-valid", true); !isDenied(err, ReasonNoSession) {
		t.Fatalf("Ask after SessionEnded and restart: %v", err)
	}
	r.l.SessionStarted(time.Time{})
	if _, err := r.l.Ask("coach-valid", true); !isDenied(err, ReasonPending) {
		t.Fatalf("ended grant revived by a new session: %v", err)
	}
	n := 0
	for _, e := range r.events() {
		if e.Event == "consent.expire" && e.Identity == "coach-short" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("expiry of coach-short audited %d times, want 1", n)
	}
}

func TestAuditChain(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	l := r.l
	l.SessionStarted(time.Time{})
	id := pending(t, l, "coach-a", true)
	if err := l.Deny(id, "uid:1001(bea)"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ask("coach-a", true); !isDenied(err, ReasonDeclined) {
		t.Fatalf("Ask after deny: %v", err)
	}
	g, err := l.Accept(id, 5*time.Minute, true, ByTeacher("cara"))
	if err != nil {
		t.Fatal(err)
	}
	l.Joined("coach-a", "whep-1")
	l.Left("coach-a", "whep-1", "viewer left", ByViewer("coach-a"))
	if err := l.Revoke("coach-a", "uid:0(root)"); err != nil {
		t.Fatal(err)
	}
	grant(t, l, "coach-b", time.Minute)
	c.Add(time.Minute)
	if _, err := l.List(); err != nil { // sweeps the expired grant
		t.Fatal(err)
	}
	grant(t, l, "coach-c", 0)
	l.SessionEnded(ByDaemon)

	// Every decision names who made it; what the viewer did names nobody else.
	want := []string{
		"consent.request coach-a viewer:coach-a", "consent.deny coach-a uid:1001(bea)",
		"consent.accept coach-a teacher:cara",
		"live.join coach-a viewer:coach-a", "live.leave coach-a viewer:coach-a", "consent.revoke coach-a uid:0(root)",
		"consent.request coach-b viewer:coach-b", "consent.accept coach-b uid:1000(teacher)", "consent.expire coach-b daemon",
		"consent.request coach-c viewer:coach-c", "consent.accept coach-c uid:1000(teacher)", "consent.end coach-c daemon",
	}
	var got []string
	for _, e := range r.events() {
		got = append(got, e.Event+" "+e.Identity+" "+e.By)
		if e.Source != "local" || e.Outcome != "ok" {
			t.Errorf("entry %d: source %q outcome %q", e.Seq, e.Source, e.Outcome)
		}
		if e.Event == "live.leave" && e.Detail != "session=whep-1 reason=viewer_left" {
			t.Errorf("leave detail %q, want the session and why it ended", e.Detail)
		}
		if e.Event == "consent.accept" && e.Identity == "coach-a" {
			wantDetail := fmt.Sprintf("request=%s audio=false expires=%s was=denied", g.ID, g.Expires.Format(time.RFC3339))
			if e.Detail != wantDetail {
				t.Errorf("accept detail %q, want %q", e.Detail, wantDetail)
			}
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rep, err := VerifyAudit(r.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != len(want) || rep.Last != uint64(len(want)) {
		t.Fatalf("report %+v", rep)
	}

	// Editing one entry (the deny turned into an accept) breaks the chain there.
	data, err := os.ReadFile(r.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	lines[1] = strings.Replace(lines[1], `"consent.deny"`, `"consent.accept"`, 1)
	if err := os.WriteFile(r.auditPath, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = VerifyAudit(r.auditPath)
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 || ve.Seq != 2 {
		t.Fatalf("VerifyAudit after editing line 2: %v", err)
	}
}

// TestAuditFailureFailsClosed: with the audit log gone, no request or
// grant is given, and revoking still ends the grant.
func TestAuditFailureFailsClosed(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	l.SessionStarted(time.Time{})
	g := grant(t, l, "coach", 0)
	id := pending(t, l, "coach-2", true)
	ch, cancel := l.Watch("coach")
	defer cancel()
	if err := os.Remove(r.auditPath); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(id, 0, false, "uid:1000(teacher)"); err == nil || isDenied(err, ReasonPending) {
		t.Fatalf("Accept without an audit log: %v", err)
	}
	mustState(t, l, id, StatePending)
	if _, err := l.Ask("coach-3", true); err == nil || isDenied(err, ReasonPending) {
		t.Fatalf("Ask without an audit log: %v", err)
	}
	if err := l.Revoke("coach", "uid:1000(teacher)"); err == nil {
		t.Fatal("Revoke without an audit log reported success")
	}
	if got := receive(t, ch, time.Second); got != EndRevoked {
		t.Fatalf("watch reason %q", got)
	}
	mustState(t, l, g.ID, StateRevoked)
}

func TestConcurrent(t *testing.T) {
	r := newRig(t, time.Now)
	l := r.l
	l.SessionStarted(time.Time{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var wg sync.WaitGroup
	for i := range 4 {
		viewer := fmt.Sprintf("coach-%d", i)
		wg.Go(func() {
			for range 15 {
				_, err := l.Ask(viewer, true)
				var d *Denied
				if errors.As(err, &d) {
					// Racing the other goroutine's Accept is fine.
					if _, err := l.Accept(d.Request, 50*time.Millisecond, false, "uid:1000(teacher)"); err != nil && !errors.Is(err, ErrNotPending) {
						t.Error(err)
					}
				} else if err != nil {
					t.Error(err)
				}
				ch, stop := l.Watch(viewer)
				if err := l.Revoke(viewer, "uid:1000(teacher)"); err != nil && !errors.Is(err, ErrNoGrant) {
					t.Error(err)
				}
				<-ch // revoked, expired or no grant: it must end either way
				stop()
			}
		})
		wg.Go(func() {
			for range 15 {
				list, err := l.List()
				if err != nil {
					t.Error(err)
					return
				}
				for _, q := range list {
					if q.Viewer == viewer && q.State == StatePending {
						if _, err := l.Accept(q.ID, time.Second, false, "uid:1000(teacher)"); err != nil && !errors.Is(err, ErrNotPending) {
							t.Error(err)
						}
					}
				}
				l.Joined(viewer, "s")
			}
		})
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// At most one live grant per viewer, and the chain is intact.
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]int{}
	for _, q := range list {
		if q.State == StateAccepted {
			live[q.Viewer]++
		}
	}
	for v, n := range live {
		if n > 1 {
			t.Errorf("viewer %s has %d live grants", v, n)
		}
	}
	if _, err := VerifyAudit(r.auditPath); err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	log, err := audit.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no audit log", Options{}, "Audit is required"},
		{"negative ttl", Options{Audit: log, DefaultTTL: -time.Second}, "negative"},
		{"default above max", Options{Audit: log, DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour}, "longer than MaxTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(filepath.Join(dir, "x.db"), tt.opts)
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
	path := filepath.Join(dir, "consent.db")
	l, err := Open(path, Options{Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if l.opts.DefaultTTL != DefaultTTL || l.opts.MaxTTL != MaxTTL {
		t.Fatalf("defaults %v/%v", l.opts.DefaultTTL, l.opts.MaxTTL)
	}
}

// AwaitDecision returns as soon as the teacher decides, and not before.
func TestAwaitDecision(t *testing.T) {
	l := newRig(t, nil).l
	l.SessionStarted(time.Time{})
	d := &Denied{Request: pending(t, l, "coach", true)}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := l.AwaitDecision(ctx, d.Request); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AwaitDecision without a decision: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.AwaitDecision(t.Context(), d.Request) }()
	time.Sleep(50 * time.Millisecond)
	accepted := time.Now()
	if _, err := l.Accept(d.Request, 0, false, "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("AwaitDecision returned %v after the accept", time.Since(accepted))
	case <-time.After(time.Second):
		t.Fatal("AwaitDecision did not return after the accept")
	}
	if err := l.AwaitDecision(t.Context(), "no-such-id"); err != nil {
		t.Fatalf("unknown id: %v", err)
	}
}

// TestDecisionsStick: a teacher's no (decline, revoke, end all) is not
// turned into a new pending request by the viewer asking again, for the
// cooldown, across restarts; accepting the refused request again lets the
// viewer in; a session a person stops lifts the cooldowns.
func TestDecisionsStick(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	r.opts.Cooldown = 3 * time.Minute
	r.reopen()
	l := r.l
	l.SessionStarted(time.Time{})
	a := grant(t, l, "coach-a", 0)
	b := grant(t, l, "coach-b", 0)
	waiting := pending(t, l, "coach-c", true)
	chA, cancelA := l.Watch("coach-a")
	defer cancelA()

	n, err := l.EndAllViewing(ByTeacher("tess"))
	if err != nil || n != 3 {
		t.Fatalf("EndAllViewing = %d, %v; want 3 ended", n, err)
	}
	if got := receive(t, chA, time.Second); got != EndAll {
		t.Fatalf("watch reason %q, want %q", got, EndAll)
	}
	mustState(t, l, a.ID, StateRevoked)
	if q := mustState(t, l, waiting, StateDenied); q.Reason != EndAll {
		t.Fatalf("pending request after end all: %+v", q)
	}
	for v, id := range map[string]string{"coach-a": a.ID, "coach-b": b.ID, "coach-c": waiting} {
		_, err := l.Ask(v, true)
		var d *Denied
		if !errors.As(err, &d) || d.Reason != ReasonEnded || d.Request != id {
			t.Fatalf("Ask(%s) after end all: %v, want ended naming %s", v, err, id)
		}
	}
	if list, _ := l.List(); len(list) != 3 {
		t.Fatalf("asks after end all made requests: %+v", list)
	}
	if n, err := l.EndAllViewing(ByTeacher("tess")); err != nil || n != 0 {
		t.Fatalf("EndAllViewing with nothing to end = %d, %v", n, err)
	}

	// The cooldown survives a restart, and the daemon ending and starting
	// a session (as it does at every start).
	c.Add(time.Minute)
	r.reopen()
	l = r.l
	l.SessionEnded(ByDaemon)
	l.SessionStarted(time.Time{})
	if _, err := l.Ask("coach-b", true); !isDenied(err, ReasonEnded) {
		t.Fatalf("Ask after restart: %v, want ended", err)
	}

	// The teacher lets coach-b in after all: accepting the ended request
	// again; coach-b is admitted, the others are still refused.
	g, err := l.Accept(b.ID, 10*time.Minute, false, ByTeacher("tess"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.Ask("coach-b", true); err != nil || got.ID != b.ID || !got.Expires.Equal(g.Expires) {
		t.Fatalf("Ask after accepting again = %+v, %v", got, err)
	}
	if _, err := l.Accept(a.ID, 0, false, ByTeacher("tess")); err != nil {
		t.Fatalf("accepting coach-a's ended grant again: %v", err)
	}
	if _, err := l.Accept(a.ID, 0, false, ByTeacher("tess")); !errors.Is(err, ErrNotPending) {
		t.Fatalf("accepting twice: %v, want ErrNotPending", err)
	}
	if _, err := l.Ask("coach-c", true); !isDenied(err, ReasonEnded) {
		t.Fatalf("coach-c: %v", err)
	}

	// The daemon revoking (the indicator failed) is no one's no: no
	// cooldown. A teacher's revoke is.
	if err := l.Revoke("coach-a", ByDaemon); err != nil {
		t.Fatal(err)
	}
	pending(t, l, "coach-a", true)
	if err := l.Revoke("coach-b", "uid:1000(teacher)"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ask("coach-b", true); !isDenied(err, ReasonRevoked) {
		t.Fatalf("Ask after revoke: %v, want revoked", err)
	}

	// A session a person stops lifts the cooldowns: the next lesson
	// starts fresh.
	l.SessionEnded("uid:1000(teacher)")
	l.SessionStarted(time.Time{})
	pending(t, l, "coach-b", true)
	pending(t, l, "coach-c", true)

	// The cooldown runs out by itself, too.
	id := pending(t, l, "coach-d", true)
	if err := l.Deny(id, ByTeacher("tess")); err != nil {
		t.Fatal(err)
	}
	c.Add(3*time.Minute - time.Second)
	if _, err := l.Ask("coach-d", true); !isDenied(err, ReasonDeclined) {
		t.Fatalf("Ask just before the cooldown ends: %v", err)
	}
	c.Add(time.Second)
	pending(t, l, "coach-d", true)

	var ends int
	for _, e := range r.events() {
		if e.Event == "consent.end_all" {
			ends++
			if e.By != "teacher:tess" {
				t.Errorf("end_all entry by %q", e.By)
			}
		}
	}
	if ends != 3 {
		t.Errorf("%d consent.end_all entries, want 3", ends)
	}
}

func TestUseNonce(t *testing.T) {
	c := newClock()
	r := newRig(t, c.Now)
	forget := c.Now().Add(90 * time.Second)
	if err := r.l.UseNonce("n-1", forget); err != nil {
		t.Fatal(err)
	}
	if err := r.l.UseNonce("n-1", forget); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second use: %v, want ErrReplayed", err)
	}
	r.reopen()
	if err := r.l.UseNonce("n-1", forget); !errors.Is(err, ErrReplayed) {
		t.Fatalf("use after a restart: %v, want ErrReplayed", err)
	}
	if err := r.l.UseNonce("", forget); err == nil {
		t.Fatal("empty nonce accepted")
	}
	// Bounded: at most MaxNonces remembered; expired ones make room.
	r.l.maxNonce = 64
	for i := 1; i < r.l.maxNonce; i++ {
		if err := r.l.UseNonce(fmt.Sprintf("m-%d", i), forget); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.l.UseNonce("one-more", forget); !errors.Is(err, ErrTooManyNonces) {
		t.Fatalf("past the bound: %v, want ErrTooManyNonces", err)
	}
	c.Add(90 * time.Second)
	if err := r.l.UseNonce("one-more", c.Now().Add(time.Minute)); err != nil {
		t.Fatalf("after the others expired: %v", err)
	}
	if len(r.l.nonces) != 1 {
		t.Fatalf("%d nonces remembered, want the expired ones forgotten", len(r.l.nonces))
	}
}
