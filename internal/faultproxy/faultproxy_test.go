package faultproxy

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a loopback echo server.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestCutsAfterBytes(t *testing.T) {
	p, err := Start(echo(t), Options{CutEvery: 1000, Cuts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, werr := c.Write(make([]byte, 1500))
		_, rerr := io.ReadFull(c, make([]byte, 1500))
		c.Close()
		cut := werr != nil || rerr != nil
		if wantCut := i < 2; cut != wantCut {
			t.Fatalf("connection %d: cut=%v (write %v, read %v), want %v", i, cut, werr, rerr, wantCut)
		}
	}
	if p.Cuts() != 2 {
		t.Fatalf("cuts = %d, want 2", p.Cuts())
	}
}

func TestRate(t *testing.T) {
	p, err := Start(echo(t), Options{Rate: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	go c.Write(make([]byte, 50_000))
	if _, err := io.ReadFull(c, make([]byte, 50_000)); err != nil {
		t.Fatal(err)
	}
	// 50 kB at 100 kB/s: the sleeps after all but the last 32 KiB read add
	// up to well over 150 ms (unthrottled, loopback takes about 1 ms).
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("50 kB came back in %v: the rate limit does nothing", d)
	}
}

func TestStallHoldsBytesUntilResume(t *testing.T) {
	p, err := Start(echo(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Stall()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); n != 0 || !isTimeout(err) {
		t.Fatalf("a stalled link delivered %d bytes (%v)", n, err)
	}
	p.Resume()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after Resume: %q %v", buf, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestCutAndSent(t *testing.T) {
	p, err := Start(echo(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if p.Sent() != 4 {
		t.Fatalf("Sent = %d, want 4", p.Sent())
	}
	p.Cut()
	if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
		t.Fatal("the connection is open after Cut")
	}
}
