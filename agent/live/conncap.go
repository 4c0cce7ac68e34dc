package live

import (
	"log/slog"
	"net"
	"sync"
)

// CapPerAddress wraps ln so that at most max connections from one remote
// address (IP, any port) are open at once; a connection over the cap is
// closed as soon as it is accepted, before its TLS handshake. It keeps one
// host from holding every connection the box can serve.
func CapPerAddress(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &capListener{Listener: ln, max: max, log: log, open: map[string]int{}, warned: map[string]bool{}}
}

type capListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu     sync.Mutex
	open   map[string]int
	warned map[string]bool // refused since the address was last under the cap
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := remoteHost(c)
		l.mu.Lock()
		if l.open[host] >= l.max {
			warn := !l.warned[host]
			l.warned[host] = true
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("live view connection refused: too many from one address", "remote", host, "max", l.max)
			}
			continue
		}
		l.open[host]++
		l.mu.Unlock()
		return &capConn{Conn: c, l: l, host: host}, nil
	}
}

func (l *capListener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[host]--; l.open[host] <= 0 {
		delete(l.open, host)
		delete(l.warned, host)
	}
}

func remoteHost(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// capConn gives its slot back once, when it is closed.
type capConn struct {
	net.Conn
	l    *capListener
	host string
	once sync.Once
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.host) })
	return err
}
