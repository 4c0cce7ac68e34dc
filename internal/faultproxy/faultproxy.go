// Package faultproxy is a TCP proxy on loopback for tests and benchmarks
// that need a slow or failing network between a box and its receiver.
package faultproxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options shape the link. The zero value forwards unchanged.
type Options struct {
	// Rate limits each direction to about this many bytes per second.
	Rate int
	// CutEvery closes every open connection each time another CutEvery
	// bytes went upstream, at most Cuts times: a network fault that lands
	// in the middle of a request.
	CutEvery int64
	Cuts     int
}

// Proxy forwards connections from its own address to a target.
type Proxy struct {
	ln    net.Listener
	opts  Options
	addr  string
	mu    sync.Mutex
	open  map[net.Conn]bool
	sent  atomic.Int64
	cuts  atomic.Int64
	close sync.Once
	// stall, while not nil, holds every byte until it is closed.
	stall chan struct{}
}

// Start listens on 127.0.0.1:0 and forwards to target.
func Start(target string, opts Options) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, opts: opts, addr: target, open: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cuts reports how many times the proxy cut its connections.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Sent reports how many bytes went upstream so far.
func (p *Proxy) Sent() int64 { return p.sent.Load() }

// Cut closes every open connection now, as a network fault would; new
// connections are accepted as before.
func (p *Proxy) Cut() { p.cutAll() }

// Stall holds every byte in both directions, connections left open, until
// Resume: a link that stops answering without closing.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stall == nil {
		p.stall = make(chan struct{})
	}
}

// Resume lets stalled bytes through again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stall != nil {
		close(p.stall)
		p.stall = nil
	}
}

// held waits while the link is stalled.
func (p *Proxy) held() {
	p.mu.Lock()
	s := p.stall
	p.mu.Unlock()
	if s != nil {
		<-s
	}
}

// Close stops accepting and closes every connection.
func (p *Proxy) Close() error {
	p.close.Do(func() {
		p.ln.Close()
		p.Resume()
		p.cutAll()
	})
	return nil
}

func (p *Proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		c.Close()
	}
	clear(p.open)
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.addr)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.open[c], p.open[up] = true, true
		p.mu.Unlock()
		go p.pipe(up, c, true)
		go p.pipe(c, up, false)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, upstream bool) {
	defer func() {
		dst.Close()
		src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.held()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if p.opts.Rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(p.opts.Rate))
			}
			if upstream {
				total := p.sent.Add(int64(n))
				if c := p.cuts.Load(); p.opts.CutEvery > 0 && c < int64(p.opts.Cuts) && total >= (c+1)*p.opts.CutEvery && p.cuts.CompareAndSwap(c, c+1) {
					p.cutAll()
				}
			}
		}
		if err != nil {
			return
		}
	}
}
