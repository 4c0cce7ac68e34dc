package netns

import (
	"context"
	"net"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
)

// WebRTCNet is a pion network (webrtc.SettingEngine.SetNet) inside n: a
// peer connection in this process gathers n's interfaces and opens its
// sockets (host candidates, STUN, TURN) in n.
func (n *NS) WebRTCNet() (transport.Net, error) {
	w := &webrtcNet{ns: n}
	// The interface list is read over netlink, so inside n.
	err := n.Do(func() error {
		var err error
		w.Net, err = stdnet.NewNet()
		return err
	})
	return w, err
}

// webrtcNet is stdnet's network with every socket opened inside ns.
type webrtcNet struct {
	*stdnet.Net
	ns *NS
}

func (w *webrtcNet) ListenPacket(network, address string) (c net.PacketConn, err error) {
	err = w.ns.Do(func() error { c, err = w.Net.ListenPacket(network, address); return err })
	return c, err
}

func (w *webrtcNet) ListenUDP(network string, laddr *net.UDPAddr) (c transport.UDPConn, err error) {
	err = w.ns.Do(func() error { c, err = w.Net.ListenUDP(network, laddr); return err })
	return c, err
}

func (w *webrtcNet) ListenTCP(network string, laddr *net.TCPAddr) (l transport.TCPListener, err error) {
	err = w.ns.Do(func() error { l, err = w.Net.ListenTCP(network, laddr); return err })
	return l, err
}

func (w *webrtcNet) Dial(network, address string) (c net.Conn, err error) {
	err = w.ns.Do(func() error { c, err = w.Net.Dial(network, address); return err })
	return c, err
}

func (w *webrtcNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (c transport.UDPConn, err error) {
	err = w.ns.Do(func() error { c, err = w.Net.DialUDP(network, laddr, raddr); return err })
	return c, err
}

func (w *webrtcNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (c transport.TCPConn, err error) {
	err = w.ns.Do(func() error { c, err = w.Net.DialTCP(network, laddr, raddr); return err })
	return c, err
}

func (w *webrtcNet) CreateDialer(d *net.Dialer) transport.Dialer {
	return nsDialer{d: w.Net.CreateDialer(d), ns: w.ns}
}

func (w *webrtcNet) CreateListenConfig(lc *net.ListenConfig) transport.ListenConfig {
	return nsListenConfig{lc: w.Net.CreateListenConfig(lc), ns: w.ns}
}

type nsListenConfig struct {
	lc transport.ListenConfig
	ns *NS
}

func (l nsListenConfig) Listen(ctx context.Context, network, address string) (ln net.Listener, err error) {
	err = l.ns.Do(func() error { ln, err = l.lc.Listen(ctx, network, address); return err })
	return ln, err
}

func (l nsListenConfig) ListenPacket(ctx context.Context, network, address string) (c net.PacketConn, err error) {
	err = l.ns.Do(func() error { c, err = l.lc.ListenPacket(ctx, network, address); return err })
	return c, err
}

type nsDialer struct {
	d  transport.Dialer
	ns *NS
}

func (d nsDialer) Dial(network, address string) (c net.Conn, err error) {
	err = d.ns.Do(func() error { c, err = d.d.Dial(network, address); return err })
	return c, err
}

var _ transport.Net = (*webrtcNet)(nil)
