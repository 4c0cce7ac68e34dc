package rrproxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"
)

// echoName serves "NAME: line" back for every line, until the test ends.
func echoName(t *testing.T, name string) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					fmt.Fprintf(c, "%s: %s\n", name, s.Text())
				}
			}()
		}
	}()
	return ln
}

func ask(t *testing.T, addr, line string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, line)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	return got
}

// TestRoundRobin: connections alternate between backends; a dead backend
// is skipped; SetBackends takes effect for new connections.
func TestRoundRobin(t *testing.T) {
	a, b := echoName(t, "a"), echoName(t, "b")
	p, err := Start(a.Addr().String(), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		seen[ask(t, p.Addr(), "hi")]++
	}
	if seen["a: hi\n"] != 2 || seen["b: hi\n"] != 2 {
		t.Fatalf("4 connections over 2 backends: %v", seen)
	}
	b.Close() // b dies: every connection goes to a
	for i := 0; i < 3; i++ {
		if got := ask(t, p.Addr(), "x"); got != "a: x\n" {
			t.Fatalf("with b down: %q", got)
		}
	}
	c := echoName(t, "c")
	p.SetBackends(c.Addr().String())
	if got := ask(t, p.Addr(), "y"); got != "c: y\n" {
		t.Fatalf("after SetBackends: %q", got)
	}
	if n := p.Connections()[a.Addr().String()]; n != 5 {
		t.Fatalf("a was given %d connections, want 5", n)
	}
}
