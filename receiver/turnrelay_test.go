package receiver_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/turn"
)

// TestTURNStatus: `turn status` reaches the running server's TURN server
// through the admin socket; with TURN off it says so, and with no server
// running it says that instead. The TURN server stops with serve.
func TestTURNStatus(t *testing.T) {
	for _, on := range []bool{true, false} {
		data := t.TempDir()
		cfg := receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"}
		if on {
			cfg.TURN = turn.Config{Listen: "127.0.0.1:0"}
		}
		srv, _, stop := serve(t, cfg)
		st, err := receiver.TURNStatus(data)
		if on {
			if err != nil || st.Listen != srv.TURNAddr() || !strings.HasPrefix(st.Listen, "127.0.0.1:") || len(st.URLs) != 2 {
				t.Fatalf("turn on: %+v, %v (TURNAddr %q)", st, err, srv.TURNAddr())
			}
		} else if !errors.Is(err, receiver.ErrTURNOff) || srv.TURNAddr() != "" {
			t.Fatalf("turn off: err %v, TURNAddr %q", err, srv.TURNAddr())
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if on {
			if c, err := net.Dial("tcp", st.Listen); err == nil {
				c.Close()
				t.Error("the TURN server still listens after serve stopped")
			}
		}
		if _, err := receiver.TURNStatus(data); err == nil || !strings.Contains(err.Error(), "no receiver runs") {
			t.Fatalf("turn status with serve stopped: %v", err)
		}
	}
}
