package live

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// A connection over the per-address cap is closed at once; closing one
// gives its slot back.
func TestCapPerAddress(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := CapPerAddress(raw, 2, nil)
	accepted := make(chan net.Conn, 8)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closed reports whether the server closed c (EOF or reset) within 5 s.
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted
	if over := dial(); !closed(over) {
		t.Fatal("a third connection from one address was kept open, cap is 2")
	}
	first.Close()
	c := dial()
	var got net.Conn
	select {
	case got = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after one of the two closed")
	}
	if _, err := got.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("the connection after a slot came back: %v", err)
	}
	second.Close()
	got.Close()
}
