package link

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/coder/websocket"

	"github.com/uploadbox/uploadbox/wire"
)

// TestServeConcurrently: the box serves the receiver's requests each in
// its own goroutine, so a request held (a relayed offer waiting for the
// teacher) does not hold the next one; each answer carries its request's
// ID.
func TestServeConcurrently(t *testing.T) {
	release := make(chan struct{})
	answers := make(chan wire.Envelope, 2)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.ControlSubprotocol}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		conn.Read(ctx) // hello
		send := func(typ, id string, body any) {
			e, _ := wire.NewEnvelope(typ, id, body)
			b, _ := json.Marshal(e)
			conn.Write(ctx, websocket.MessageText, b)
		}
		send(wire.TypeWelcome, "", wire.Welcome{Device: "box"})
		send(wire.TypeRequest, "held", wire.Request{Op: "held"})
		send(wire.TypeRequest, "quick", wire.Request{Op: "quick"})
		for range 2 {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			e, _ := wire.ParseEnvelope(data)
			answers <- e
		}
		<-ctx.Done()
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := New(Options{
		Receiver: u, TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig,
		Hello: wire.Hello{Device: "box"},
		Serve: func(ctx context.Context, op string, _ json.RawMessage) wire.Response {
			if op == "held" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return wire.Response{Status: http.StatusOK, Error: op}
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	first := <-answers
	close(release)
	second := <-answers
	cancel()
	<-done
	var r1, r2 wire.Response
	first.Decode(&r1)
	second.Decode(&r2)
	if first.ID != "quick" || r1.Error != "quick" || second.ID != "held" || r2.Error != "held" {
		t.Fatalf("answers %s %+v then %s %+v: want quick, then held once released", first.ID, r1, second.ID, r2)
	}
}

// TestRequestNotConnected: the box's own request without an open
// connection fails at once (the state is pushed again on connect).
func TestRequestNotConnected(t *testing.T) {
	u, _ := url.Parse("https://127.0.0.1:1")
	c := New(Options{Receiver: u, TLS: &tls.Config{}})
	if _, err := c.Request(t.Context(), wire.OpConsentState, wire.ConsentState{}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Request while not connected: %v", err)
	}
}
