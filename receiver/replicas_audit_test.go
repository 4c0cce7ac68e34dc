package receiver_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
)

// TestDeviceCheckpointsAcrossReceivers: two receivers on one PostgreSQL
// keep one newest audit checkpoint per box between them. A box sends seq 5
// to A and seq 9 to B; A then refuses an older one (7) and one forked from
// B's (another head at 9) with 409, as B does, and both admin sockets
// name seq 9 as the one held.
func TestDeviceCheckpointsAcrossReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two receivers; skipped under -short")
	}
	url := kvtest.URL(t)
	h := startWith(t, receiver.ServerConfig{Database: url})
	dataB := replicaData(t, h)
	_, addrB, stopB := serve(t, receiver.ServerConfig{Data: dataB, Listen: "127.0.0.1:0", Database: url})
	defer stopB()

	mk := boxCheckpoint(t, h)
	send := func(addr string, c audit.Checkpoint) int {
		t.Helper()
		body, _ := json.Marshal(c)
		resp, err := h.box.HTTPClient().Post("https://"+addr+"/v1/audit/checkpoint", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(h.addr, mk(5, 5)); code != http.StatusOK {
		t.Fatalf("seq 5 to A: HTTP %d", code)
	}
	if code := send(addrB, mk(9, 9)); code != http.StatusOK {
		t.Fatalf("seq 9 to B: HTTP %d", code)
	}
	for _, tc := range []struct {
		name string
		c    audit.Checkpoint
	}{
		{"older than B's", mk(7, 7)},
		{"forked from B's", mk(9, 99)},
	} {
		for _, addr := range []string{h.addr, addrB} {
			if code := send(addr, tc.c); code != http.StatusConflict {
				t.Errorf("%s to %s: HTTP %d, want 409", tc.name, addr, code)
			}
		}
	}
	adminB, err := receiver.OpenAdmin(dataB)
	if err != nil {
		t.Fatal(err)
	}
	defer adminB.Close()
	for name, a := range map[string]receiver.Admin{"A": h.admin, "B": adminB} {
		c, err := a.DeviceCheckpoint("room-9")
		if err != nil || c == nil || c.Seq != 9 || c.Hash != head(9) {
			t.Errorf("%s holds %+v %v, want seq 9", name, c, err)
		}
	}
}
