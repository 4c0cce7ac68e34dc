package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeHub stands for one receiver's local control connections: a handler
// per connected device.
type fakeHub struct {
	mu      sync.Mutex
	devices map[string]func(ctx context.Context, op string, params json.RawMessage) (wire.Response, error)
	calls   int
}

func (h *fakeHub) request(ctx context.Context, device, op string, params json.RawMessage) (wire.Response, error) {
	h.mu.Lock()
	fn := h.devices[device]
	h.calls++
	h.mu.Unlock()
	if fn == nil {
		return wire.Response{}, errors.New("offline here")
	}
	return fn(ctx, op, params)
}

func (h *fakeHub) set(device string, fn func(ctx context.Context, op string, params json.RawMessage) (wire.Response, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.devices == nil {
		h.devices = map[string]func(context.Context, string, json.RawMessage) (wire.Response, error){}
	}
	h.devices[device] = fn
}

// recv is the next value on ch; none within a minute fails the test.
func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatal("nothing received within a minute")
		return ""
	}
}

// echo answers with the device, op and params it was given.
func echo(device string) func(context.Context, string, json.RawMessage) (wire.Response, error) {
	return func(_ context.Context, op string, params json.RawMessage) (wire.Response, error) {
		r, _ := json.Marshal(map[string]any{"device": device, "op": op, "params": params})
		return wire.Response{Status: http.StatusOK, Result: r}, nil
	}
}

// replica is one receiver: its own pool on the shared database, a
// Forwarder running on it, and its fake hub.
type replica struct {
	f *Forwarder
	// changed and lost receive what Config.Changed and Lost are told.
	changed chan string
	lost    chan string
	hub     *fakeHub
	pool    *pgxpool.Pool
	stop    func() // cancels Run and waits for it (a killed replica: rows stay)
}

func startReplica(t *testing.T, dsn string, lease time.Duration) *replica {
	t.Helper()
	db, err := kv.OpenPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	pool := db.Pool()
	hub := &fakeHub{}
	changed, lost := make(chan string, 100), make(chan string, 100)
	f, err := New(pool, hub.request, Config{Lease: lease, Changed: func(d string) { changed <- d },
		Lost: func(d string, since time.Time) { lost <- d + " " + since.Format(time.RFC3339Nano) }})
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	<-f.Listening()
	var once sync.Once
	r := &replica{f: f, hub: hub, pool: pool, changed: changed, lost: lost}
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			pool.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

// connect makes device connected here, and returns when.
func (r *replica) connect(t *testing.T, device string, fn func(context.Context, string, json.RawMessage) (wire.Response, error)) time.Time {
	t.Helper()
	r.hub.set(device, fn)
	since := time.Now()
	if err := r.f.Claim(t.Context(), Holding{Device: device, Since: since, Source: "192.0.2.7:1234", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	return since
}

func TestForwarder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	pg := pgtest.Start(t)

	t.Run("answered by the holder", func(t *testing.T) {
		dsn := pg.NewDB(t)
		a, b := startReplica(t, dsn, 3*time.Second), startReplica(t, dsn, 3*time.Second)
		since := b.connect(t, "box-1", echo("box-1"))
		// A hears of the connection (B does not hear of its own).
		if d := recv(t, a.changed); d != "box-1" {
			t.Fatalf("A told of %q, want box-1", d)
		}
		// The consent state the box pushes to B is A's to show.
		if err := b.f.SetState(t.Context(), "box-1", since, json.RawMessage(`{"viewers":[]}`)); err != nil {
			t.Fatal(err)
		}
		if d := recv(t, a.changed); d != "box-1" {
			t.Fatalf("A told of %q, want box-1", d)
		}
		if h, _, err := a.f.Holder(t.Context(), "box-1"); err != nil || string(h.State) != `{"viewers":[]}` {
			t.Fatalf("state on A = %s %v, want B's", h.State, err)
		}
		resp, err := a.f.Request(t.Context(), "box-1", "whep", json.RawMessage(`{"sdp":"v=0 …"}`))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Device, Op string
			Params     json.RawMessage
		}
		if err := json.Unmarshal(resp.Result, &got); err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusOK || got.Device != "box-1" || got.Op != "whep" || string(got.Params) != `{"sdp":"v=0 …"}` {
			t.Fatalf("answer %d %s, want 200 from box-1's holder with the params byte for byte", resp.Status, resp.Result)
		}
		// What the holder claimed is what the others see.
		h, ok, err := a.f.Holder(t.Context(), "box-1")
		if err != nil || !ok || h.Replica != b.f.ID() || h.Source != "192.0.2.7:1234" || h.Version != "test" {
			t.Fatalf("Holder on A = %+v %v %v, want B's claim", h, ok, err)
		}
		if hs, err := a.f.Holders(t.Context()); err != nil || len(hs) != 1 || hs["box-1"].Replica != b.f.ID() {
			t.Fatalf("Holders on A = %v %v, want box-1 held by B", hs, err)
		}
		if hs, err := b.f.Holders(t.Context()); err != nil || len(hs) != 0 {
			t.Fatalf("Holders on B = %v %v, want none (its own are not listed)", hs, err)
		}

		// A control error from the box comes back as one.
		b.hub.set("box-1", func(context.Context, string, json.RawMessage) (wire.Response, error) {
			return wire.Response{}, &wire.ControlError{Code: wire.CodeRefused, Message: "not now"}
		})
		_, err = a.f.Request(t.Context(), "box-1", "whep", json.RawMessage(`{}`))
		var ce *wire.ControlError
		if !errors.As(err, &ce) || ce.Code != wire.CodeRefused || ce.Message != "not now" {
			t.Fatalf("err = %v, want the box's control error", err)
		}
		// The holder lost the box meanwhile: offline, with its reason.
		b.hub.set("box-1", nil)
		if _, err = a.f.Request(t.Context(), "box-1", "whep", json.RawMessage(`{}`)); !errors.Is(err, ErrOffline) {
			t.Fatalf("err = %v, want ErrOffline", err)
		}
		// Released: nobody holds it.
		if err := b.f.Release(t.Context(), "box-1", since); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := a.f.Holder(t.Context(), "box-1"); ok {
			t.Fatal("box-1 still held after Release")
		}
		if d := recv(t, a.changed); d != "box-1" {
			t.Fatalf("A told of %q, want box-1", d)
		}
		select {
		case d := <-b.changed:
			t.Fatalf("B told of its own box %q", d)
		default:
		}
		var left int
		if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM peer_calls`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d call rows left (%v), want every answered call deleted", left, err)
		}
	})

	t.Run("held nowhere is offline at once", func(t *testing.T) {
		dsn := pg.NewDB(t)
		a, b := startReplica(t, dsn, 3*time.Second), startReplica(t, dsn, 3*time.Second)
		// No deadline: only an immediate answer ends this call.
		_, err := a.f.Request(context.WithoutCancel(t.Context()), "box-9", "whep", json.RawMessage(`{}`))
		if !errors.Is(err, ErrOffline) {
			t.Fatalf("err = %v, want ErrOffline", err)
		}
		// A's own stale row does not make A call itself.
		if err := a.f.Claim(t.Context(), Holding{Device: "box-9", Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.f.Request(context.WithoutCancel(t.Context()), "box-9", "whep", json.RawMessage(`{}`)); !errors.Is(err, ErrOffline) {
			t.Fatalf("err = %v, want ErrOffline", err)
		}
		b.hub.mu.Lock()
		defer b.hub.mu.Unlock()
		if b.hub.calls != 0 {
			t.Fatalf("B's hub was asked %d times, want never", b.hub.calls)
		}
	})

	t.Run("newest connection holds the box", func(t *testing.T) {
		dsn := pg.NewDB(t)
		a, b := startReplica(t, dsn, 900*time.Millisecond), startReplica(t, dsn, 900*time.Millisecond)
		c := startReplica(t, dsn, 900*time.Millisecond)
		onB := b.connect(t, "box-2", echo("on B"))
		a.connect(t, "box-2", echo("on A")) // the box reconnected, through A
		// B's renewals (several leases' worth) and its late release of
		// the old connection leave A's row alone; B is told to close its
		// stale connection, once.
		for range 3 {
			if err := b.f.renew(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := recv(t, b.lost), "box-2 "+onB.Truncate(time.Microsecond).Format(time.RFC3339Nano); got != want {
			t.Fatalf("B told it lost %q, want %q", got, want)
		}
		select {
		case got := <-b.lost:
			t.Fatalf("B told again: %q", got)
		default:
		}
		if err := b.f.Release(t.Context(), "box-2", onB); err != nil {
			t.Fatal(err)
		}
		resp, err := c.f.Request(t.Context(), "box-2", "status", json.RawMessage(`{}`))
		if err != nil || string(resp.Result) != `{"device":"on A","op":"status","params":{}}` {
			t.Fatalf("answer %s %v, want A's", resp.Result, err)
		}
		// Rows lost while the database was away come back at the next
		// renewal.
		if _, err := a.pool.Exec(t.Context(), `DELETE FROM peer_holders WHERE device = 'box-2'`); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := c.f.Holder(t.Context(), "box-2"); ok {
			t.Fatal("box-2 still held after its row was deleted")
		}
		if err := a.f.renew(t.Context()); err != nil {
			t.Fatal(err)
		}
		if h, ok, err := c.f.Holder(t.Context(), "box-2"); err != nil || !ok || h.Replica != a.f.ID() {
			t.Fatalf("box-2 after A's renewal: %+v %v %v, want held by A again", h, ok, err)
		}
		// On one receiver too: the old connection's late release leaves
		// the newer one's row.
		first := a.connect(t, "box-5", echo("first"))
		a.connect(t, "box-5", echo("second"))
		if err := a.f.Release(t.Context(), "box-5", first); err != nil {
			t.Fatal(err)
		}
		if resp, err := c.f.Request(t.Context(), "box-5", "status", json.RawMessage(`{}`)); err != nil || string(resp.Result) != `{"device":"second","op":"status","params":{}}` {
			t.Fatalf("answer %s %v, want the second connection's", resp.Result, err)
		}
	})

	t.Run("killed holder answers offline within the lease", func(t *testing.T) {
		dsn := pg.NewDB(t)
		const lease = time.Second
		a, b := startReplica(t, dsn, lease), startReplica(t, dsn, lease)
		started := make(chan struct{})
		release := make(chan struct{})
		defer close(release)
		b.connect(t, "box-3", func(context.Context, string, json.RawMessage) (wire.Response, error) {
			close(started)
			<-release // a killed receiver never answers
			return wire.Response{Status: http.StatusOK}, nil
		})
		// The lease is renewed while B runs: several leases go by and
		// A still sees B holding the box.
		renewed := time.Now().Add(3 * lease)
		for time.Now().Before(renewed) {
			if _, ok, err := a.f.Holder(t.Context(), "box-3"); err != nil || !ok {
				t.Fatalf("box-3 not held by B while B runs (%v)", err)
			}
			time.Sleep(lease / 5)
		}
		// A call that reaches B, then B dies (its listener and renewals
		// stop, its pool closes; nothing is released).
		errc := make(chan error, 1)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		go func() {
			_, err := a.f.Request(ctx, "box-3", "whep", json.RawMessage(`{}`))
			errc <- err
		}()
		<-started
		killed := make(chan struct{})
		go func() { b.stop(); close(killed) }()
		if err := <-errc; !errors.Is(err, ErrOffline) {
			t.Fatalf("err = %v, want ErrOffline (well before the call's minute)", err)
		}
		if _, err := a.f.Request(ctx, "box-3", "whep", json.RawMessage(`{}`)); !errors.Is(err, ErrOffline) {
			t.Fatalf("a new call: err = %v, want ErrOffline at once", err)
		}
		if hs, err := a.f.Holders(t.Context()); err != nil || len(hs) != 0 {
			t.Fatalf("Holders = %v %v, want none once B's lease ran out", hs, err)
		}
		// A tells its hub of box-3 once more: when the lease ran out.
		recv(t, a.changed) // the connection
		if d := recv(t, a.changed); d != "box-3" {
			t.Fatalf("A told of %q, want box-3", d)
		}
		release <- struct{}{}
		<-killed
	})

	t.Run("deadline honoured", func(t *testing.T) {
		dsn := pg.NewDB(t)
		a, b := startReplica(t, dsn, 3*time.Second), startReplica(t, dsn, 3*time.Second)
		seen := make(chan time.Time, 1)
		b.connect(t, "box-4", func(ctx context.Context, _ string, _ json.RawMessage) (wire.Response, error) {
			d, _ := ctx.Deadline()
			seen <- d
			<-ctx.Done() // the box never answers
			return wire.Response{}, ctx.Err()
		})
		deadline := time.Now().Add(1500 * time.Millisecond)
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		defer cancel()
		_, err := a.f.Request(ctx, "box-4", "whep", json.RawMessage(`{}`))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the caller's deadline", err)
		}
		if got := <-seen; got.Sub(deadline).Abs() > time.Millisecond {
			t.Fatalf("the holder ran the call with deadline %s, want the caller's %s", got, deadline)
		}
	})

	t.Run("concurrent calls keep their answers", func(t *testing.T) {
		dsn := pg.NewDB(t)
		a, b := startReplica(t, dsn, 3*time.Second), startReplica(t, dsn, 3*time.Second)
		slow := func(device string) func(context.Context, string, json.RawMessage) (wire.Response, error) {
			return func(ctx context.Context, op string, params json.RawMessage) (wire.Response, error) {
				var p struct{ N int }
				json.Unmarshal(params, &p)
				// Later calls answer first.
				select {
				case <-time.After(time.Duration(40-p.N) * 5 * time.Millisecond):
				case <-ctx.Done():
				}
				return echo(device)(ctx, op, params)
			}
		}
		for i := range 4 {
			a.connect(t, fmt.Sprintf("a%d", i), slow(fmt.Sprintf("a%d", i)))
			b.connect(t, fmt.Sprintf("b%d", i), slow(fmt.Sprintf("b%d", i)))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 80)
		for n := range 40 {
			for _, call := range []struct {
				from   *replica
				device string
			}{{a, fmt.Sprintf("b%d", n%4)}, {b, fmt.Sprintf("a%d", n%4)}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					params := fmt.Sprintf(`{"n":%d}`, n)
					resp, err := call.from.f.Request(t.Context(), call.device, "op", json.RawMessage(params))
					want := fmt.Sprintf(`{"device":%q,"op":"op","params":%s}`, call.device, params)
					if err != nil || string(resp.Result) != want {
						errs <- fmt.Errorf("call %d to %s: %s %v, want %s", n, call.device, resp.Result, err, want)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
