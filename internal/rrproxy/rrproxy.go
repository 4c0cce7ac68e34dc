// Package rrproxy is a round-robin TCP proxy for tests: the ordinary load
// balancer in front of several receivers. Each new connection goes to the
// next backend in turn; a backend that refuses the connection is skipped, as
// a load balancer's health check would. Bytes pass through untouched (TLS
// ends at the receivers).
package rrproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy listens on 127.0.0.1 and spreads connections over its backends.
type Proxy struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	counts   map[string]int
	wg       sync.WaitGroup
}

// Start listens on 127.0.0.1:0 in front of backends (host:port each).
func Start(backends ...string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}, counts: map[string]int{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetBackends replaces the backends (for a receiver restarted on a new port).
func (p *Proxy) SetBackends(backends ...string) {
	p.mu.Lock()
	p.backends = append([]string(nil), backends...)
	p.mu.Unlock()
}

// Connections is how many connections each backend was given.
func (p *Proxy) Connections() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Close stops listening and cuts every connection it carries.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil // closed: connections accepted from now on are cut
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.carry(c)
		}()
	}
}

// dial tries each backend once, starting at the next in turn.
func (p *Proxy) dial() (net.Conn, error) {
	p.mu.Lock()
	bs := append([]string(nil), p.backends...)
	start := p.next
	p.next++
	p.mu.Unlock()
	err := errors.New("rrproxy: no backends")
	for i := range bs {
		addr := bs[(start+i)%len(bs)]
		var b net.Conn
		if b, err = net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			p.mu.Lock()
			p.counts[addr]++
			p.mu.Unlock()
			return b, nil
		}
	}
	return nil, err
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *Proxy) carry(c net.Conn) {
	defer c.Close()
	b, err := p.dial()
	if err != nil {
		return
	}
	defer b.Close()
	if !p.track(c, b) {
		return
	}
	defer p.untrack(c, b)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close so the far side sees the end, then stop both.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}
