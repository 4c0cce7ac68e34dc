package receiver_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/wire"
)

// controlIn is name's control connection as h's receiver lists it.
func controlIn(t *testing.T, h *harness, name string) receiver.ControlStatus {
	t.Helper()
	d, ok := listed(t, h, name)
	if !ok {
		t.Fatalf("%s not listed", name)
	}
	return d.Control
}

// twoReceivers starts A and B on one PostgreSQL state (B with a copy of
// A's keys; the box of A's harness is enrolled as room-9).
func twoReceivers(t *testing.T) (hA, hB *harness) {
	t.Helper()
	dsn := kvtest.URL(t)
	hA = startWith(t, receiver.ServerConfig{Database: dsn, PeerLease: time.Second})
	dataB := replicaData(t, hA)
	_, addrB, stopB := serve(t, receiver.ServerConfig{Data: dataB, Listen: "127.0.0.1:0", Database: dsn, PeerLease: time.Second})
	adminB, err := receiver.OpenAdmin(dataB)
	if err != nil {
		t.Fatal(err)
	}
	hB = &harness{data: dataB, addr: addrB, admin: adminB, stop: sync.OnceValue(stopB)}
	t.Cleanup(func() { hB.stop() })
	return hA, hB
}

// TestControlAcrossReceivers: two receivers share one PostgreSQL for their
// control connections; a request made on A for the box connected to B is
// answered by the box through B, A lists the box as connected (through B),
// a teacher's event stream on A follows the box on B (online, the state it
// pushes, offline), and once B stops, A finds it offline at once.
func TestControlAcrossReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	hA, hB := twoReceivers(t)
	// A teacher follows room-9 on A.
	if err := hA.admin.AddViewer("tess", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	if err := hA.admin.SetViewerRole("tess", "teacher"); err != nil {
		t.Fatal(err)
	}
	if err := hA.admin.AllowRoom("tess", "room-9"); err != nil {
		t.Fatal(err)
	}
	c, base := coachClient(t, hA), "https://"+hA.addr
	teacher := login(t, c, base, "tess")
	_, events := openEvents(t, c, base, teacher.Token)
	if events == nil {
		t.Fatal("no event stream on A")
	}
	if _, room := events.next(t); room.Online {
		t.Fatalf("first event on A %+v, want room-9 offline", room)
	}

	box := runLinkTo(t, hA, &url.URL{Scheme: "https", Host: hB.addr}, "room-9")
	waitFor(t, "connected to B", func() bool { return controlIn(t, hB, "room-9").Connected })
	// B records its claim in the database just after the box connected.
	waitFor(t, "connected through B on A", func() bool { return controlIn(t, hA, "room-9").Connected })
	if _, room := events.next(t); !room.Online || room.State != nil {
		t.Fatalf("on A after the box connected to B: %+v, want online without a state", room)
	}
	waitFor(t, "the box's side open", func() bool { return box.State().Connected })
	st := wire.ConsentState{Recording: true, Pending: []wire.ConsentPending{{Request: "0123456789abcdef", Viewer: "coach-c", AskedAt: time.Now().UTC()}},
		Watching: []wire.ConsentWatching{}, Cooldowns: []wire.ConsentCooldown{}, At: time.Now().UTC()}
	if r, err := box.Request(t.Context(), wire.OpConsentState, st); err != nil || r.Status != http.StatusOK {
		t.Fatalf("push to B: %+v %v", r, err)
	}
	if _, room := events.next(t); !room.Online || room.State == nil || len(room.State.Pending) != 1 || room.State.Pending[0].Request != "0123456789abcdef" {
		t.Fatalf("on A after the box pushed its state to B: %+v", room)
	}

	cs := controlIn(t, hA, "room-9")
	if !cs.Connected || cs.Receiver == "" || cs.Version != "test" {
		t.Fatalf("A lists room-9 as %+v, want connected through another receiver", cs)
	}
	if got := controlIn(t, hB, "room-9"); got.Receiver != "" {
		t.Fatalf("B lists its own connection as held by %q, want empty", got.Receiver)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r, err := hA.srv.Hub().Request(ctx, "room-9", "whep.offer", map[string]string{"a": "b"})
	if err != nil || r.Status != http.StatusNotImplemented || !strings.Contains(r.Error, "whep.offer") {
		t.Fatalf("request on A: %+v %v, want the box's answer (501 naming the op)", r, err)
	}
	const nowhere = "the box is offline (no control connection): no receiver holds room-8's control connection"
	if _, err := hA.srv.Hub().Request(ctx, "room-8", "x", nil); !errors.Is(err, receiver.ErrOffline) || err.Error() != nowhere {
		t.Fatalf("request to a box connected nowhere: %v, want ErrOffline: %q", err, nowhere)
	}

	// B stops: its connection ends and is released before Run returns.
	if err := hB.stop(); err != nil {
		t.Fatal(err)
	}
	if _, room := events.next(t); room.Online {
		t.Fatalf("on A after B stopped: %+v, want offline", room)
	}
	if cs := controlIn(t, hA, "room-9"); cs.Connected {
		t.Fatalf("A lists room-9 as %+v after B stopped, want offline", cs)
	}
	if _, err := hA.srv.Hub().Request(ctx, "room-9", "whep.offer", nil); !errors.Is(err, receiver.ErrOffline) {
		t.Fatalf("request on A after B stopped: %v, want ErrOffline", err)
	}
}

// TestControlMovesToAnotherReceiver: a box's newer connection to A ends its
// older one to B (whose box, here still running, hears why), as a newer
// connection does on one receiver.
func TestControlMovesToAnotherReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	hA, hB := twoReceivers(t)
	old := runLinkTo(t, hA, &url.URL{Scheme: "https", Host: hB.addr}, "room-9")
	waitFor(t, "connected through B on A", func() bool { return controlIn(t, hA, "room-9").Connected })
	runLink(t, hA, "room-9")
	waitFor(t, "the connection to B ended as moved", func() bool {
		return strings.Contains(old.State().LastError+old.State().Cause, "newer connection of the same device to another receiver")
	})
}
