package receiver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// runLink runs the box's control connection until the test ends.
func runLink(t *testing.T, h *harness, name string) *link.Client {
	t.Helper()
	return runLinkTo(t, h, h.box.Receiver, name)
}

// runLinkTo is runLink to the receiver at u (another receiver on h's
// database, with h's keys).
func runLinkTo(t *testing.T, h *harness, u *url.URL, name string) *link.Client {
	t.Helper()
	c := link.New(link.Options{
		Receiver: u, TLS: h.box.TLSConfig(),
		Hello:        wire.Hello{Device: name, Version: "test"},
		PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, RetryMax: time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("never %s", what)
}

func connectedIn(t *testing.T, h *harness, name string) bool {
	d, _ := listed(t, h, name)
	return d.Control.Connected
}

// listed is name as h's devices list shows it.
func listed(t *testing.T, h *harness, name string) (receiver.DeviceStatus, bool) {
	ds, err := h.admin.ListDevices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d, true
		}
	}
	return receiver.DeviceStatus{}, false
}

// TestControlRequestResponse: a request the receiver sends over a box's
// control connection comes back as the box's response to that request.
func TestControlRequestResponse(t *testing.T) {
	h := start(t)
	runLink(t, h, "room-9")
	waitFor(t, "connected", func() bool { return connectedIn(t, h, "room-9") })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, op := range []string{"whep.offer", "other"} {
		r, err := h.srv.Hub().Request(ctx, "room-9", op, map[string]string{"a": "b"})
		if err != nil || r.Status != http.StatusNotImplemented || !strings.Contains(r.Error, op) {
			t.Fatalf("request %s: %+v %v", op, r, err)
		}
	}
	if _, err := h.srv.Hub().Request(ctx, "room-8", "x", nil); !errors.Is(err, receiver.ErrOffline) {
		t.Fatalf("request to a box without a connection: %v", err)
	}
}

// TestControlNewConnectionReplacesOld: a second connection of the same
// device closes the first, which hears why.
func TestControlNewConnectionReplacesOld(t *testing.T) {
	h := start(t)
	first := runLink(t, h, "room-9")
	waitFor(t, "first connected", func() bool { return first.State().Connected })
	second := runLink(t, h, "room-9")
	waitFor(t, "second connected", func() bool { return second.State().Connects >= 1 })
	waitFor(t, "first replaced", func() bool {
		st := first.State()
		return !st.Connected && strings.Contains(st.LastError, "replaced")
	})
}

// TestControlRefusesBadHello: the first message must be a hello of the
// current version naming the certificate's device; anything else is
// answered with an error and the connection closed.
func TestControlRefusesBadHello(t *testing.T) {
	h := start(t)
	tc := h.box.TLSConfig()
	tc.NextProtos = []string{"http/1.1"}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	tests := []struct {
		name, msg, code string
	}{
		{"other device", `{"v":1,"type":"hello","body":{"device":"room-1","version":"x","capabilities":[]}}`, wire.CodeRefused},
		{"unknown version", `{"v":9,"type":"hello","body":{"device":"room-9"}}`, wire.CodeUnknownVersion},
		{"unknown type", `{"v":1,"type":"shell","body":{}}`, wire.CodeUnknownType},
		{"long version", `{"v":1,"type":"hello","body":{"device":"room-9","version":"` + strings.Repeat("x", 65) + `"}}`, wire.CodeBadMessage},
		{"not a hello", `{"v":1,"type":"request","id":"r1","body":{"op":"x"}}`, wire.CodeBadMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, "https://"+h.addr+wire.ControlPath, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{wire.ControlSubprotocol}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if err := conn.Write(ctx, websocket.MessageText, []byte(tt.msg)); err != nil {
				t.Fatal(err)
			}
			_, data, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e, err := wire.ParseEnvelope(data)
			var ce wire.ControlError
			if err != nil || e.Type != wire.TypeError || e.Decode(&ce) != nil || ce.Code != tt.code {
				t.Fatalf("answer %s (%v), want an error %s", data, err, tt.code)
			}
			if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after a bad hello: %v, want a close with policy violation", err)
			}
			if connectedIn(t, h, "room-9") {
				t.Fatal("a refused hello shows as connected")
			}
		})
	}
	// Without a device certificate there is no upgrade.
	anon := tc.Clone()
	anon.Certificates, anon.GetClientCertificate = nil, nil
	_, resp, err := websocket.Dial(t.Context(), "https://"+h.addr+wire.ControlPath, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: anon}}, Subprotocols: []string{wire.ControlSubprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("control connection without a certificate: %v %v", resp, err)
	}
}

// TestControlRequestFailsWhenTheBoxGoes: a request in flight when the
// box's control connection closes (the box killed) fails at once as
// offline, not at its deadline, so that a relayed status poll tells the
// coach's page the box is offline.
func TestControlRequestFailsWhenTheBoxGoes(t *testing.T) {
	h := start(t)
	held, block := make(chan struct{}), make(chan struct{})
	c := link.New(link.Options{
		Receiver: h.box.Receiver, TLS: h.box.TLSConfig(),
		Hello:        wire.Hello{Device: "room-9", Version: "test"},
		PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, RetryMax: time.Second,
		Serve: func(ctx context.Context, op string, _ json.RawMessage) wire.Response {
			close(held)
			<-block // never answers while the test runs
			return wire.Response{Status: http.StatusOK}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	defer close(block) // before the link's Run is waited for
	waitFor(t, "connected", func() bool { return connectedIn(t, h, "room-9") })
	errc := make(chan error, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		_, err := h.srv.Hub().Request(rctx, "room-9", "whep", nil)
		errc <- err
	}()
	<-held
	cancel() // the box goes away with the request unanswered
	select {
	case err := <-errc:
		if !errors.Is(err, receiver.ErrOffline) {
			t.Fatalf("request in flight when the box went: %v, want ErrOffline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request in flight still waits 30 s after the box's connection closed")
	}
}
