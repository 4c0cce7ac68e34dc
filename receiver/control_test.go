package receiver

import (
	"context"
	"errors"
	"testing"
)

func TestHubReplacesADevicesConnection(t *testing.T) {
	var h Hub
	conn := func(device, source string) (*controlConn, context.Context) {
		ctx, end := context.WithCancelCause(context.Background())
		return &controlConn{device: device, source: source, end: end}, ctx
	}
	first, firstCtx := conn("room-7", "10.0.0.1:1")
	other, otherCtx := conn("room-8", "10.0.0.2:1")
	if r := h.attach(first); r != nil {
		t.Fatalf("first connection replaced %+v", r)
	}
	h.attach(other)
	second, secondCtx := conn("room-7", "10.0.0.1:2")
	if r := h.attach(second); r != first {
		t.Fatalf("second connection replaced %+v, want the first", r)
	}
	if !errors.Is(context.Cause(firstCtx), errReplaced) {
		t.Fatalf("the replaced connection was not ended: cause %v", context.Cause(firstCtx))
	}
	if secondCtx.Err() != nil || otherCtx.Err() != nil {
		t.Fatal("a live connection was ended")
	}
	// The replaced connection's handler ends later: it must not remove
	// the connection that replaced it.
	if h.detach(first) {
		t.Fatal("detaching the replaced connection removed its device's entry")
	}
	if st, ok := h.status("room-7"); !ok || st.Source != "10.0.0.1:2" {
		t.Fatalf("room-7: %+v %v, want connected from 10.0.0.1:2", st, ok)
	}
	h.drop("room-7", errRevoked)
	if !errors.Is(context.Cause(secondCtx), errRevoked) {
		t.Fatalf("drop did not end the connection: %v", context.Cause(secondCtx))
	}
	if !h.detach(second) {
		t.Fatal("the current connection was not detached")
	}
	if _, ok := h.status("room-7"); ok {
		t.Fatal("room-7 still connected after detach")
	}
	if _, ok := h.status("room-8"); !ok {
		t.Fatal("room-8 lost its connection")
	}
	if _, err := h.Request(context.Background(), "room-7", "x", nil); !errors.Is(err, ErrOffline) {
		t.Fatalf("request to an offline device: %v", err)
	}
}
