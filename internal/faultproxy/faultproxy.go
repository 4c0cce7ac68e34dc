// Package faultproxy is a TCP proxy on loopback for tests and benchmarks
// that need a slow or failing network between a box and its receiver.
package faultproxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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
	// resume is closed when a stall ends; nil while not stalled.
	resume chan struct{}
	done   chan struct{}
}

// cutRcvBuf is the receive buffer of the proxy's client-side sockets when
// it cuts: bytes the proxy's own kernel took in and had not forwarded when
// a cut lands are lost with it, so a cut would cost what the test's proxy
// held as well as what the sender did, and on a loaded machine (the proxy
// waiting on a slow receiver, Linux growing its buffer) that could be
// megabytes. Kept small, the proxy stands for a wire and a cut costs what
// the sender had on its way.
const cutRcvBuf = 64 << 10

// Start listens on 127.0.0.1:0 and forwards to target.
func Start(target string, opts Options) (*Proxy, error) {
	var lc net.ListenConfig
	if opts.CutEvery > 0 {
		// Set on the listener, before any connection, so that accepted
		// sockets inherit it and advertise a window that fits it.
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, cutRcvBuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, opts: opts, addr: target, open: map[net.Conn]bool{}, done: make(chan struct{})}
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cuts reports how many times the proxy cut its connections.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Close stops accepting and closes every connection.
func (p *Proxy) Close() error {
	p.close.Do(func() {
		close(p.done)
		p.ln.Close()
		p.cutAll()
	})
	return nil
}

// Sent reports how many bytes were handed upstream so far.
func (p *Proxy) Sent() int64 { return p.sent.Load() }

// Cut closes every open connection now, as a network fault would; new
// connections are accepted as before.
func (p *Proxy) Cut() { p.cutAll() }

// Stall holds every byte in both directions, on open and new connections,
// without closing anything (a link that went dead without a reset), until
// Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Resume forwards again what a Stall held, and what follows.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

// wait returns when the proxy is not stalled; false if it closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	ch := p.resume
	p.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-p.done:
		return false
	}
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
			if !p.wait() {
				return
			}
			chunk, cut := buf[:n], false
			if upstream {
				// Counted before the write: whoever sees the echo of these
				// bytes sees them counted. A cut due inside this chunk lets
				// only the bytes up to it through, then closes every
				// connection, so nothing after it reaches either side.
				total := p.sent.Add(int64(n))
				if c := p.cuts.Load(); p.opts.CutEvery > 0 && c < int64(p.opts.Cuts) && total >= (c+1)*p.opts.CutEvery && p.cuts.CompareAndSwap(c, c+1) {
					chunk, cut = chunk[:n-int(total-(c+1)*p.opts.CutEvery)], true
				}
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
			if cut {
				p.cutAll()
				return
			}
			if p.opts.Rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(p.opts.Rate))
			}
		}
		if err != nil {
			return
		}
	}
}
