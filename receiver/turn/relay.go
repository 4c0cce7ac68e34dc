package turn

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pion/turn/v4"
)

// relayGenerator makes each allocation's relay socket: UDP on bind, in
// [min, max] when a range is set, advertised at public, wrapped to count
// the bytes it relays.
type relayGenerator struct {
	s        *Server
	bind     string
	public   net.IP
	min, max int
}

var _ turn.RelayAddressGenerator = (*relayGenerator)(nil)

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocatePacketConn(network string, requested int) (net.PacketConn, net.Addr, error) {
	var ports []int
	switch {
	case requested != 0:
		ports = []int{requested}
	case g.min == 0:
		ports = []int{0}
	default:
		// Every port of the range once, in random order: a busy range
		// fails only when it is full.
		ports = rand.Perm(g.max - g.min + 1)
		for i := range ports {
			ports[i] += g.min
		}
	}
	var err error
	for _, p := range ports {
		var c net.PacketConn
		if c, err = net.ListenPacket(network, net.JoinHostPort(g.bind, strconv.Itoa(p))); err != nil {
			continue
		}
		addr := *c.LocalAddr().(*net.UDPAddr)
		addr.IP = g.public
		cc := &countedConn{PacketConn: c, s: g.s}
		g.s.mu.Lock()
		g.s.relays[addr.String()] = cc
		g.s.mu.Unlock()
		return cc, &addr, nil
	}
	return nil, nil, errors.Join(errors.New("no free relay port"), err)
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("TCP relays (RFC 6062) are not served")
}

// countedConn counts the bytes an allocation relays: read from its peers
// (sent on to the client) and written to them.
type countedConn struct {
	net.PacketConn
	s        *Server
	to, from atomic.Int64
}

func (c *countedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if n > 0 {
		c.from.Add(int64(n))
		c.s.fromPeers.Add(int64(n))
		c.s.packetsFr.Add(1)
	}
	return n, addr, err
}

// WriteTo counts before it writes, so that a peer that got the datagram
// finds it counted.
func (c *countedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.count(int64(len(p)), 1)
	n, err := c.PacketConn.WriteTo(p, addr)
	if n < len(p) {
		c.count(int64(n-len(p)), -1)
	}
	return n, err
}

func (c *countedConn) count(bytes, packets int64) {
	c.to.Add(bytes)
	c.s.toPeers.Add(bytes)
	c.s.packetsTo.Add(packets)
}

// Close also forgets the socket if its allocation was never made.
func (c *countedConn) Close() error {
	c.s.mu.Lock()
	for k, v := range c.s.relays {
		if v == c {
			delete(c.s.relays, k)
		}
	}
	c.s.mu.Unlock()
	return c.PacketConn.Close()
}

// trackedListener keeps the TCP connections it accepted so that Close
// ends them: pion's server closes only the listener.
type trackedListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackedListener) closeConns() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackedListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
