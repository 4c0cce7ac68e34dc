package netns

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Crossnet is a receiver with a box and a coach on two other networks:
//
//	box 10.201.0.2/30 ── 10.201.0.1 [recv, 10.201.1.1 on lo] 10.201.0.5 ── 10.201.0.6/30 coach
//
// Box and coach route everything through the receiver's namespace, which
// does not forward (net.ipv4.ip_forward=0): both reach Service, neither
// reaches the other, so media between them must go through a relay
// listening on Service.
type Crossnet struct {
	Recv, Box, Coach *NS
	// Service is the receiver's address, reachable from both sides (on
	// the receiver's loopback, like a public address behind its links).
	Service netip.Addr
	// BoxAddr and CoachAddr are the box's and the coach's own addresses.
	BoxAddr, CoachAddr netip.Addr
}

// The addresses are the same in every Crossnet: namespaces do not share
// addresses, so two tests' topologies never collide.
var (
	service   = netip.MustParseAddr("10.201.1.1")
	recvBox   = netip.MustParsePrefix("10.201.0.1/30")
	boxAddr   = netip.MustParsePrefix("10.201.0.2/30")
	recvCoach = netip.MustParsePrefix("10.201.0.5/30")
	coachAddr = netip.MustParsePrefix("10.201.0.6/30")
)

// NewCrossnet makes the three namespaces and their links; everything is
// removed when tb's test ends.
func NewCrossnet(tb TB) (*Crossnet, error) {
	c := &Crossnet{Service: service, BoxAddr: boxAddr.Addr(), CoachAddr: coachAddr.Addr()}
	var err error
	if c.Recv, err = New(tb, "ubx-recv"); err != nil {
		return nil, err
	}
	if c.Box, err = New(tb, "ubx-box"); err != nil {
		return nil, err
	}
	if c.Coach, err = New(tb, "ubx-coach"); err != nil {
		return nil, err
	}
	if err := Link(c.Recv, "tobox", recvBox, c.Box, "torecv", boxAddr); err != nil {
		return nil, err
	}
	if err := Link(c.Recv, "tocoach", recvCoach, c.Coach, "torecv", coachAddr); err != nil {
		return nil, err
	}
	if err := c.Recv.IP("addr", "add", service.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	if err := c.Box.IP("route", "add", "default", "via", recvBox.Addr().String()); err != nil {
		return nil, err
	}
	if err := c.Coach.IP("route", "add", "default", "via", recvCoach.Addr().String()); err != nil {
		return nil, err
	}
	// A new namespace starts with forwarding off; say so rather than trust it.
	if err := c.Recv.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644)
	}); err != nil {
		return nil, fmt.Errorf("turn forwarding off in %s: %w", c.Recv.Name, err)
	}
	return c, nil
}

// Forwarding reads net.ipv4.ip_forward inside n.
func (n *NS) Forwarding() (bool, error) {
	var v []byte
	err := n.Do(func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	})
	return strings.TrimSpace(string(v)) == "1", err
}

// Link joins a and b with a veth pair: aName with address aAddr in a,
// bName with bAddr in b, both up. The pair is made inside the namespaces,
// so the names need to be unique only there.
func Link(a *NS, aName string, aAddr netip.Prefix, b *NS, bName string, bAddr netip.Prefix) error {
	if err := ip("link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name); err != nil {
		return err
	}
	for _, s := range []struct {
		n    *NS
		name string
		addr netip.Prefix
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if err := s.n.IP("addr", "add", s.addr.String(), "dev", s.name); err != nil {
			return err
		}
		if err := s.n.IP("link", "set", s.name, "up"); err != nil {
			return err
		}
	}
	return nil
}
