package turn

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/audit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	log, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Audit = log
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// client is a pion TURN client over UDP or TCP.
type client struct {
	*turn.Client
	conn net.PacketConn
}

func dial(t *testing.T, s *Server, transport, user, pass string) *client {
	t.Helper()
	var conn net.PacketConn
	if transport == "tcp" {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: s.Addr(), STUNServerAddr: s.Addr(), Conn: conn, Username: user, Password: pass, Realm: Realm,
		LoggerFactory: &logging.DefaultLoggerFactory{Writer: os.Stderr, DefaultLogLevel: logging.LogLevelDisabled},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	cl := &client{Client: c, conn: conn}
	t.Cleanup(cl.close)
	return cl
}

// allocate makes an allocation; the test's cleanup releases it.
func (c *client) allocate(t *testing.T) (net.PacketConn, error) {
	t.Helper()
	r, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { r.Close() })
	}
	return r, err
}

func (c *client) close() {
	c.Client.Close()
	c.conn.Close()
}

func entries(t *testing.T, path string) []audit.Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var e audit.Entry
		if len(line) > 0 && json.Unmarshal(line, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

func find(es []audit.Entry, event, outcome string) []audit.Entry {
	var out []audit.Entry
	for _, e := range es {
		if e.Event == event && e.Outcome == outcome {
			out = append(out, e)
		}
	}
	return out
}

// waitStatus polls Status until ok (allocations are released by the
// server's own goroutines after the client's refresh with lifetime 0).
func waitStatus(t *testing.T, s *Server, ok func(Status) bool) Status {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := s.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %+v", st)
		}
	}
}

// TestRelay: a good credential allocates over UDP and over TCP; a peer's
// datagrams go both ways through the relay; the counters and the audit
// log show the allocation with its viewer and room, and its release.
func TestRelay(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s, path := newServer(t, Config{})
			cred, err := s.Issue(Name{Room: "room-7", Viewer: "coach-c"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(cred.Username, ":viewer:room-7:coach-c") || len(cred.URLs) != 2 {
				t.Fatalf("credential %+v", cred)
			}
			c := dial(t, s, transport, cred.Username, cred.Password)
			relay, err := c.allocate(t)
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			if h, _, _ := net.SplitHostPort(relay.LocalAddr().String()); h != "127.0.0.1" {
				t.Errorf("relay address %s, want the public IP 127.0.0.1", relay.LocalAddr())
			}
			peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peer.SetDeadline(time.Now().Add(5 * time.Second))
			relay.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := relay.WriteTo([]byte("to the peer"), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			n, from, err := peer.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "to the peer" {
				t.Fatalf("peer read %q, %v", buf[:n], err)
			}
			if from.String() != relay.LocalAddr().String() {
				t.Errorf("peer got it from %s, want the relay %s", from, relay.LocalAddr())
			}
			// (pion's TCP client misreads a ChannelData frame of under 9
			// bytes: the reply is longer.)
			if _, err := peer.WriteTo([]byte("back from the peer"), from); err != nil {
				t.Fatal(err)
			}
			if n, _, err := relay.ReadFrom(buf); err != nil || string(buf[:n]) != "back from the peer" {
				t.Fatalf("client read %q, %v", buf[:n], err)
			}
			st := s.Status()
			if st.Allocated != 1 || len(st.Active) != 1 || st.BytesToPeers != int64(len("to the peer")) || st.BytesFromPeers != 18 {
				t.Fatalf("status %+v", st)
			}
			if a := st.Active[0]; a.Viewer != "coach-c" || a.Room != "room-7" || a.Box || a.Transport != transport || a.BytesToPeers != 11 {
				t.Errorf("allocation %+v", a)
			}
			got := find(entries(t, path), "turn.allocate", "ok")
			if len(got) != 1 || got[0].Identity != "coach-c" || !strings.Contains(got[0].Detail, "room room-7") {
				t.Fatalf("allocation audit: %+v", got)
			}
			relay.Close() // refresh with lifetime 0
			waitStatus(t, s, func(st Status) bool { return len(st.Active) == 0 })
			if rel := find(entries(t, path), "turn.release", "ok"); len(rel) != 1 || !strings.Contains(rel[0].Detail, "11 bytes to peers, 18 from peers") {
				t.Fatalf("release audit: %+v", rel)
			}
		})
	}
}

// TestBoxCredential: the box's credential for a viewer's session names
// the box (its room) in the audit.
func TestBoxCredential(t *testing.T) {
	s, path := newServer(t, Config{})
	cred, err := s.Issue(Name{Room: "room-7", Viewer: "coach-c", Box: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s, "udp", cred.Username, cred.Password).allocate(t); err != nil {
		t.Fatal(err)
	}
	got := find(entries(t, path), "turn.allocate", "ok")
	if len(got) != 1 || got[0].Identity != "room-7" || !strings.Contains(got[0].Detail, "box room-7 for viewer coach-c") {
		t.Fatalf("audit: %+v", got)
	}
	if _, err := s.Issue(Name{Room: "a:b", Viewer: "x"}); err == nil {
		t.Error("a name with ':' was issued a credential")
	}
}

// TestRefused: a wrong password, an expired username, a forged expiry and
// a malformed username get no allocation; each refusal is audited.
func TestRefused(t *testing.T) {
	s, path := newServer(t, Config{})
	good, err := s.Issue(Name{Room: "room-7", Viewer: "coach-c"})
	if err != nil {
		t.Fatal(err)
	}
	past := strconv.FormatInt(time.Now().Add(-time.Second).Unix(), 10) + ":viewer:room-7:coach-c"
	exp, _, _ := strings.Cut(good.Username, ":")
	later, _ := strconv.ParseInt(exp, 10, 64)
	extended := strconv.FormatInt(later+3600, 10) + ":viewer:room-7:coach-c"
	for _, tc := range []struct {
		name, user, pass, want string
	}{
		{"wrong password", good.Username, "not-the-password", "wrong credential password"},
		{"expired", past, s.password(past), "expired credential"},
		{"expiry moved with the old password", extended, good.Password, "wrong credential password"},
		{"malformed", "coach-c", s.password("coach-c"), "malformed"},
		{"other secret", good.Username, otherSecret(t, good.Username), "wrong credential password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, "udp", tc.user, tc.pass)
			if _, err := c.allocate(t); err == nil {
				t.Fatal("allocated")
			}
			var hit bool
			for _, e := range find(entries(t, path), "turn.auth", "denied") {
				hit = hit || strings.Contains(e.Detail, tc.want)
			}
			if !hit {
				t.Fatalf("no turn.auth refusal with %q in the audit log", tc.want)
			}
		})
	}
	if st := s.Status(); st.Allocated != 0 || len(st.Active) != 0 || st.Refused == 0 {
		t.Fatalf("status %+v", st)
	}
}

// otherSecret is the password another server (another secret) gives user.
func otherSecret(t *testing.T, user string) string {
	s, _ := newServer(t, Config{})
	return s.password(user)
}

// TestCaps: allocations are capped per credential and in total; a freed
// slot can be used again; refusals are audited.
func TestCaps(t *testing.T) {
	s, path := newServer(t, Config{MaxAllocations: 3, MaxPerCredential: 2})
	a, _ := s.Issue(Name{Room: "room-7", Viewer: "coach-a"})
	b, _ := s.Issue(Name{Room: "room-7", Viewer: "coach-b"})
	var held []net.PacketConn
	for range 2 {
		r, err := dial(t, s, "udp", a.Username, a.Password).allocate(t)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	if _, err := dial(t, s, "tcp", a.Username, a.Password).allocate(t); err == nil {
		t.Fatal("a third allocation with one credential (cap 2)")
	}
	if _, err := dial(t, s, "udp", b.Username, b.Password).allocate(t); err != nil {
		t.Fatalf("another credential under the total cap: %v", err)
	}
	if _, err := dial(t, s, "udp", b.Username, b.Password).allocate(t); err == nil {
		t.Fatal("a fourth allocation (total cap 3)")
	}
	denied := find(entries(t, path), "turn.allocate", "denied")
	if len(denied) != 2 || !strings.Contains(denied[0].Detail, "credential's cap of 2") || !strings.Contains(denied[1].Detail, "server's cap of 3") {
		t.Fatalf("refusals audited: %+v", denied)
	}
	held[0].Close()
	waitStatus(t, s, func(st Status) bool { return len(st.Active) == 2 })
	if _, err := dial(t, s, "udp", a.Username, a.Password).allocate(t); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}

// TestRefreshAfterExpiry: the client that holds an allocation may still
// authenticate with its expired credential (refreshes, permissions); no
// one else may, and no new allocation is made with it.
func TestRefreshAfterExpiry(t *testing.T) {
	s, _ := newServer(t, Config{})
	user := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ":viewer:room-7:coach-c"
	holder := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}
	s.active["x"] = &allocation{username: user, client: holder.String()}
	if _, ok := s.authenticate(user, Realm, holder); !ok {
		t.Error("the holder of an allocation cannot refresh it after its credential expired")
	}
	if _, ok := s.authenticate(user, Realm, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4001}); ok {
		t.Error("an expired credential authenticated another client")
	}
}

// TestRelayPorts: relays come from the configured range.
func TestRelayPorts(t *testing.T) {
	s, _ := newServer(t, Config{MinPort: 41000, MaxPort: 41009})
	cred, _ := s.Issue(Name{Room: "room-7", Viewer: "coach-c"})
	r, err := dial(t, s, "udp", cred.Username, cred.Password).allocate(t)
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(r.LocalAddr().String())
	if port, _ := strconv.Atoi(p); port < 41000 || port > 41009 {
		t.Fatalf("relay port %d outside 41000-41009", port)
	}
}

func TestConfig(t *testing.T) {
	log, err := audit.Open(filepath.Join(t.TempDir(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no port", Config{Listen: "127.0.0.1"}, "want HOST:PORT"},
		{"no IP to advertise", Config{Listen: ":0"}, "give --turn-public-ip"},
		{"IPv6 public", Config{Listen: ":0", PublicIP: net.ParseIP("::1")}, "IPv4"},
		{"range reversed", Config{Listen: "127.0.0.1:0", MinPort: 5000, MaxPort: 4000}, "MIN <= MAX"},
		{"range half", Config{Listen: "127.0.0.1:0", MinPort: 5000}, "MIN-MAX"},
		{"ttl", Config{Listen: "127.0.0.1:0", TTL: time.Second}, "1m to"},
		{"caps", Config{Listen: "127.0.0.1:0", MaxAllocations: -1}, "--turn-max-allocations -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Audit = log
			s, err := Listen(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
	// An unspecified listen address with a public IP is fine.
	s, err := Listen(Config{Listen: ":0", PublicIP: net.IPv4(127, 0, 0, 1), Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URLs()[0], "turn:127.0.0.1:") || !strings.HasSuffix(s.URLs()[0], "?transport=udp") {
		t.Fatalf("URLs %v", s.URLs())
	}
}

// TestPeers: relays on a public address do not send to the receiver's
// loopback, an unspecified or a multicast address.
func TestPeers(t *testing.T) {
	for _, tc := range []struct {
		public, peer string
		ok           bool
	}{
		{"198.51.100.1", "127.0.0.1", false},
		{"198.51.100.1", "0.0.0.0", false},
		{"198.51.100.1", "224.0.0.1", false},
		{"198.51.100.1", "203.0.113.9", true},
		{"198.51.100.1", "198.51.100.1", true},
		{"127.0.0.1", "127.0.0.1", true},
	} {
		s := &Server{cfg: Config{PublicIP: net.ParseIP(tc.public)}}
		if got := s.permit(nil, net.ParseIP(tc.peer)); got != tc.ok {
			t.Errorf("relay at %s, peer %s: permitted %t, want %t", tc.public, tc.peer, got, tc.ok)
		}
	}
}
