// Package turn is the TURN server embedded in the receiver (pion/turn):
// it relays a live view's media, DTLS-SRTP ciphertext between the box and
// the viewer, when NAT keeps them from reaching each other directly.
//
// Credentials follow the TURN REST scheme: the username is
// "EXPIRY:NAME" (EXPIRY in Unix seconds), the password
// base64(HMAC-SHA1(secret, username)), with a secret made at random when
// the server starts. The receiver hands them out only inside a WHEP
// exchange (Server.Issue). Allocations are capped in total and per
// credential, each one is audited, and refusals go to the coalescing
// failure log.
package turn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// Realm is the TURN realm (RFC 8489 long-term credentials).
const Realm = "uploadbox"

// Defaults of Config.
const (
	DefaultTTL              = 10 * time.Minute
	DefaultMaxAllocations   = 100
	DefaultMaxPerCredential = 4
	// MaxTTL bounds the credentials' lifetime.
	MaxTTL = 24 * time.Hour
)

// pendingFor is how long a slot taken by an allocate request that passed
// the caps waits for its allocation before it is given back (the
// allocation failed).
const pendingFor = 5 * time.Second

// AuditLog takes allocations and releases: the receiver's audit chain (an
// *audit.Log, or the chain the receivers share in PostgreSQL).
type AuditLog interface {
	Append(audit.Entry) (audit.Entry, error)
}

// FailureLog takes refusals (audit.Failures through the receiver's guard,
// which coalesces them per source).
type FailureLog interface {
	Record(audit.Entry) (wrote bool, err error)
}

// Config configures a Server.
type Config struct {
	// Listen is the address of the TURN listeners, UDP and TCP on the same
	// host and port; port 0 picks one free for both.
	Listen string
	// PublicIP is the IPv4 address put in the relay addresses and the
	// URLs handed out; default the listen IP (required when that is
	// unspecified, e.g. ":3478").
	PublicIP net.IP
	// MinPort and MaxPort bound the relay ports (both 0: any free port).
	MinPort, MaxPort int
	// TTL is the credentials' lifetime (default DefaultTTL).
	TTL time.Duration
	// MaxAllocations caps the allocations at once (default
	// DefaultMaxAllocations); MaxPerCredential caps them per username
	// (default DefaultMaxPerCredential).
	MaxAllocations   int
	MaxPerCredential int
	// Audit gets every allocation and its release (required).
	Audit AuditLog
	// Failures gets refused credentials and allocations over the caps
	// (default: appended to Audit one by one).
	Failures FailureLog
	Logger   *slog.Logger
}

// Server is the TURN server. Create it with Listen; Close stops it.
type Server struct {
	cfg    Config
	log    *slog.Logger
	secret []byte
	srv    *turn.Server
	udp    net.PacketConn
	tcp    *trackedListener
	addr   string
	urls   []string

	mu      sync.Mutex
	active  map[string]*allocation // by five-tuple (see tupleKey)
	per     map[string]int         // active allocations by username
	pending []reservation
	relays  map[string]*countedConn // by relay address, until its allocation is made

	allocated, refused   atomic.Uint64
	toPeers, fromPeers   atomic.Int64
	packetsTo, packetsFr atomic.Int64
}

type reservation struct {
	username string
	at       time.Time
}

type allocation struct {
	name      Name
	username  string
	client    string
	transport string
	relay     string
	conn      *countedConn
	created   time.Time
}

// Listen validates cfg, opens the UDP and TCP listeners and starts the
// server.
func Listen(cfg Config) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Audit == nil {
		return nil, errors.New("turn: Config.Audit is required")
	}
	if cfg.Failures == nil {
		cfg.Failures = appendFailures{cfg.Audit}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("component", "turn"), secret: secret,
		active: map[string]*allocation{}, per: map[string]int{}, relays: map[string]*countedConn{},
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(s.addr)
	bind := host
	if ip := net.ParseIP(host); ip == nil || ip.To4() == nil || ip.IsUnspecified() {
		bind = "0.0.0.0"
	}
	gen := &relayGenerator{s: s, bind: bind, public: cfg.PublicIP, min: cfg.MinPort, max: cfg.MaxPort}
	pub := net.JoinHostPort(cfg.PublicIP.String(), port)
	s.urls = []string{"turn:" + pub + "?transport=udp", "turn:" + pub + "?transport=tcp"}
	var err error
	s.srv, err = turn.NewServer(turn.ServerConfig{
		Realm:             Realm,
		AuthHandler:       s.authenticate,
		QuotaHandler:      s.quota,
		EventHandler:      turn.EventHandler{OnAuth: s.onAuth, OnAllocationCreated: s.onCreated, OnAllocationDeleted: s.onDeleted},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: s.udp, RelayAddressGenerator: gen, PermissionHandler: s.permit}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: s.permit}},
		// pion's own log names usernames and addresses at error level;
		// what matters is audited instead.
		LoggerFactory: &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled},
	})
	if err != nil {
		s.udp.Close()
		s.tcp.Close()
		return nil, fmt.Errorf("turn: %w", err)
	}
	return s, nil
}

// Check fills in the defaults and reports every bad setting at once,
// named by the serve flag that sets it.
func (c *Config) Check() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("--turn-listen %q: %w (want HOST:PORT, e.g. :3478)", c.Listen, err))
	}
	if c.PublicIP == nil && err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			c.PublicIP = ip
		} else {
			errs = append(errs, fmt.Errorf("--turn-listen %q has no IP to advertise: give --turn-public-ip", c.Listen))
		}
	}
	if c.PublicIP != nil && (c.PublicIP.To4() == nil || c.PublicIP.IsUnspecified()) {
		errs = append(errs, fmt.Errorf("--turn-public-ip %s: give the IPv4 address viewers and boxes reach (relays are IPv4)", c.PublicIP))
	}
	if c.MinPort != 0 || c.MaxPort != 0 {
		if c.MinPort < 1 || c.MaxPort > 65535 || c.MinPort > c.MaxPort {
			errs = append(errs, fmt.Errorf("--turn-relay-ports %d-%d: give MIN-MAX within 1-65535, MIN <= MAX", c.MinPort, c.MaxPort))
		}
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Minute || c.TTL > MaxTTL {
		errs = append(errs, fmt.Errorf("--turn-ttl %s: use 1m to %s", c.TTL, MaxTTL))
	}
	if c.MaxAllocations == 0 {
		c.MaxAllocations = DefaultMaxAllocations
	}
	if c.MaxPerCredential == 0 {
		c.MaxPerCredential = DefaultMaxPerCredential
	}
	if c.MaxAllocations < 1 {
		errs = append(errs, fmt.Errorf("--turn-max-allocations %d: give at least 1", c.MaxAllocations))
	}
	if c.MaxPerCredential < 1 {
		errs = append(errs, fmt.Errorf("--turn-max-per-credential %d: give at least 1", c.MaxPerCredential))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

type appendFailures struct{ log AuditLog }

func (a appendFailures) Record(e audit.Entry) (bool, error) {
	_, err := a.log.Append(e)
	return err == nil, err
}

// listen binds UDP and TCP on the same port; with port 0 it retries when
// the port UDP got is taken for TCP.
func (s *Server) listen() error {
	host, port, _ := net.SplitHostPort(s.cfg.Listen)
	for try := 0; ; try++ {
		udp, err := net.ListenPacket("udp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("turn: listen udp %s: %w", s.cfg.Listen, err)
		}
		_, got, _ := net.SplitHostPort(udp.LocalAddr().String())
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err != nil {
			udp.Close()
			if port == "0" && try < 10 {
				continue
			}
			return fmt.Errorf("turn: listen tcp %s: %w", net.JoinHostPort(host, got), err)
		}
		s.udp, s.tcp = udp, &trackedListener{Listener: tcp, conns: map[net.Conn]struct{}{}}
		s.addr = net.JoinHostPort(host, got)
		return nil
	}
}

// Addr is the address the server listens on (UDP and TCP), with the port
// it got.
func (s *Server) Addr() string { return s.addr }

// URLs are the TURN URLs handed out: UDP and TCP at the public IP.
func (s *Server) URLs() []string { return append([]string(nil), s.urls...) }

// Close stops the server: the listeners, every allocation and every TCP
// connection.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.tcp.closeConns()
	return err
}

// permit is pion's PermissionHandler: a relay may send to any peer but
// the receiver's own loopback (unless the relays are on loopback, a test
// setup), an unspecified or a multicast address, so that a credential
// reaches no service on the receiver's host.
func (s *Server) permit(_ net.Addr, peer net.IP) bool {
	switch {
	case peer.IsUnspecified(), peer.IsMulticast():
		return false
	case peer.IsLoopback():
		return s.cfg.PublicIP.IsLoopback()
	}
	return true
}

// Name is whom a credential is for: a viewer of a room, or the box (the
// room's device) serving that viewer's session.
type Name struct {
	Room   string
	Viewer string
	Box    bool
}

func (n Name) String() string {
	kind := "viewer"
	if n.Box {
		kind = "box"
	}
	return kind + ":" + n.Room + ":" + n.Viewer
}

// identity is who the audit entries name: the viewer, or the box.
func (n Name) identity() string {
	if n.Box {
		return n.Room
	}
	return n.Viewer
}

func (n Name) detail() string {
	if n.Box {
		return "box " + n.Room + " for viewer " + n.Viewer
	}
	return "viewer " + n.Viewer + " in room " + n.Room
}

func parseName(s string) (Name, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" || (parts[0] != "viewer" && parts[0] != "box") {
		return Name{}, false
	}
	return Name{Room: parts[1], Viewer: parts[2], Box: parts[0] == "box"}, true
}

// Credential is one short-lived TURN credential with the URLs it is for.
type Credential struct {
	URLs     []string
	Username string
	Password string
	Expires  time.Time
}

// Issue makes a credential for n, valid for the configured TTL.
func (s *Server) Issue(n Name) (Credential, error) {
	if n.Room == "" || n.Viewer == "" || strings.Contains(n.Room+n.Viewer, ":") {
		return Credential{}, fmt.Errorf("turn: credential name %q: room and viewer must be non-empty, without ':'", n.String())
	}
	exp := time.Now().Add(s.cfg.TTL).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10) + ":" + n.String()
	return Credential{URLs: s.URLs(), Username: user, Password: s.password(user), Expires: exp}, nil
}

func (s *Server) password(username string) string {
	mac := hmac.New(sha1.New, s.secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits "EXPIRY:NAME".
func parseUsername(u string) (time.Time, Name, bool) {
	exp, rest, ok := strings.Cut(u, ":")
	if !ok {
		return time.Time{}, Name{}, false
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, Name{}, false
	}
	n, ok := parseName(rest)
	return time.Unix(sec, 0), n, ok
}

// authenticate is pion's AuthHandler: the key of username's password, or
// a refusal for a malformed or expired username. An allocation made while
// its credential was valid may still be refreshed (and its permissions
// and channels made) by the same client after the expiry, so that a view
// outlives the credential it started with; a new allocation may not.
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	exp, n, ok := parseUsername(username)
	if !ok {
		s.refuse(src, "", "malformed credential username")
		return nil, false
	}
	if !time.Now().Before(exp) && !s.holds(src, username) {
		s.refuse(src, n.identity(), "expired credential ("+n.detail()+")")
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, s.password(username)), true
}

// holds reports whether the client at src has an allocation made with
// username.
func (s *Server) holds(src net.Addr, username string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.active {
		if a.client == src.String() && a.username == username {
			return true
		}
	}
	return false
}

// onAuth sees the verdict of the message integrity check: false is a
// wrong password.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if verdict {
		return
	}
	_, n, _ := parseUsername(username)
	s.refuse(src, n.identity(), method+": wrong credential password")
}

func (s *Server) refuse(src net.Addr, identity, detail string) {
	s.refused.Add(1)
	if _, err := s.cfg.Failures.Record(audit.Entry{Event: "turn.auth", Identity: identity, Source: src.String(), Outcome: "denied", Detail: detail}); err != nil {
		s.log.Error("audit turn refusal", "err", err)
	}
}

// quota is pion's QuotaHandler: it takes a slot for an allocate request
// under both caps, or refuses it (486).
func (s *Server) quota(username, _ string, src net.Addr) bool {
	now := time.Now()
	s.mu.Lock()
	kept := s.pending[:0]
	for _, r := range s.pending {
		if now.Sub(r.at) < pendingFor {
			kept = append(kept, r)
		}
	}
	s.pending = kept
	mine := s.per[username]
	for _, r := range s.pending {
		if r.username == username {
			mine++
		}
	}
	var why string
	switch {
	case len(s.active)+len(s.pending) >= s.cfg.MaxAllocations:
		why = fmt.Sprintf("the server's cap of %d allocations is reached", s.cfg.MaxAllocations)
	case mine >= s.cfg.MaxPerCredential:
		why = fmt.Sprintf("the credential's cap of %d allocations is reached", s.cfg.MaxPerCredential)
	default:
		s.pending = append(s.pending, reservation{username, now})
	}
	s.mu.Unlock()
	if why == "" {
		return true
	}
	_, n, _ := parseUsername(username)
	s.refused.Add(1)
	if _, err := s.cfg.Failures.Record(audit.Entry{Event: "turn.allocate", Identity: n.identity(), Source: src.String(), Outcome: "denied", Detail: why + " (" + n.detail() + ")"}); err != nil {
		s.log.Error("audit turn refusal", "err", err)
	}
	return false
}

func tupleKey(src, dst net.Addr, protocol string) string {
	return protocol + " " + src.String() + " " + dst.String()
}

func (s *Server) onCreated(src, dst net.Addr, protocol, username, _ string, relay net.Addr, _ int) {
	_, n, _ := parseUsername(username)
	transport := src.Network()
	a := &allocation{name: n, username: username, client: src.String(), transport: transport, relay: relay.String(), created: time.Now()}
	s.mu.Lock()
	for i, r := range s.pending {
		if r.username == username {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			break
		}
	}
	a.conn = s.relays[a.relay]
	delete(s.relays, a.relay)
	s.active[tupleKey(src, dst, protocol)] = a
	s.per[username]++
	s.mu.Unlock()
	s.allocated.Add(1)
	if _, err := s.cfg.Audit.Append(audit.Entry{Event: "turn.allocate", Identity: n.identity(), Source: a.client, Outcome: "ok",
		Detail: n.detail() + ", relay " + a.relay + " over " + transport}); err != nil {
		s.log.Error("audit turn allocation", "err", err)
	}
	s.log.Info("turn allocation", "identity", n.identity(), "room", n.Room, "client", a.client, "relay", a.relay)
}

func (s *Server) onDeleted(src, dst net.Addr, protocol, username, _ string) {
	key := tupleKey(src, dst, protocol)
	s.mu.Lock()
	a := s.active[key]
	delete(s.active, key)
	if a != nil {
		if s.per[username]--; s.per[username] <= 0 {
			delete(s.per, username)
		}
	}
	s.mu.Unlock()
	if a == nil {
		return
	}
	var to, from int64
	if a.conn != nil {
		to, from = a.conn.to.Load(), a.conn.from.Load()
	}
	if _, err := s.cfg.Audit.Append(audit.Entry{Event: "turn.release", Identity: a.name.identity(), Source: a.client, Outcome: "ok",
		Detail: fmt.Sprintf("%s, relay %s, %d bytes to peers, %d from peers, %s", a.name.detail(), a.relay, to, from, time.Since(a.created).Round(time.Second))}); err != nil {
		s.log.Error("audit turn release", "err", err)
	}
}

// Status is what the server reports: its addresses, counters since start
// and the allocations at the time.
type Status struct {
	Listen string   `json:"listen"`
	URLs   []string `json:"urls"`
	// Allocations made since start, and requests refused (bad or expired
	// credentials, caps).
	Allocated uint64 `json:"allocated"`
	Refused   uint64 `json:"refused"`
	// Bytes and packets relayed since start: from clients to their peers
	// and back.
	BytesToPeers     int64        `json:"bytes_to_peers"`
	BytesFromPeers   int64        `json:"bytes_from_peers"`
	PacketsToPeers   int64        `json:"packets_to_peers"`
	PacketsFromPeers int64        `json:"packets_from_peers"`
	Active           []Allocation `json:"active"`
}

// Allocation is one active allocation.
type Allocation struct {
	Room      string    `json:"room"`
	Viewer    string    `json:"viewer"`
	Box       bool      `json:"box"`
	Client    string    `json:"client"`
	Transport string    `json:"transport"`
	Relay     string    `json:"relay"`
	Created   time.Time `json:"created"`
	// Bytes relayed by this allocation to its peers and from them.
	BytesToPeers   int64 `json:"bytes_to_peers"`
	BytesFromPeers int64 `json:"bytes_from_peers"`
}

// Status reports the counters and the active allocations.
func (s *Server) Status() Status {
	st := Status{
		Listen: s.addr, URLs: s.URLs(), Allocated: s.allocated.Load(), Refused: s.refused.Load(),
		BytesToPeers: s.toPeers.Load(), BytesFromPeers: s.fromPeers.Load(),
		PacketsToPeers: s.packetsTo.Load(), PacketsFromPeers: s.packetsFr.Load(),
		Active: []Allocation{},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.active {
		out := Allocation{Room: a.name.Room, Viewer: a.name.Viewer, Box: a.name.Box, Client: a.client, Transport: a.transport, Relay: a.relay, Created: a.created}
		if a.conn != nil {
			out.BytesToPeers, out.BytesFromPeers = a.conn.to.Load(), a.conn.from.Load()
		}
		st.Active = append(st.Active, out)
	}
	slices.SortFunc(st.Active, func(a, b Allocation) int { return a.Created.Compare(b.Created) })
	return st
}
