package receiver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
)

// A data directory whose path is too long for a unix socket address still
// gets its admin socket, and admin commands reach the running server
// through it (not by opening the database, which the server holds).
func TestAdminSocketInLongDataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60), "receiver")
	if len(filepath.Join(data, receiver.AdminSocket)) <= 107 {
		t.Fatal("the test's data path is not long enough")
	}
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a string) { ready <- a }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(data, receiver.AdminSocket))
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", st, err)
	}
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatalf("admin while serve runs: %v", err)
	}
	if _, err := admin.AddDevice("room-long"); err != nil {
		t.Fatal(err)
	}
	devs, err := admin.ListDevices()
	if err != nil || len(devs) != 1 {
		t.Fatalf("devices %v, %v", devs, err)
	}
	admin.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := os.Stat(filepath.Join(data, receiver.AdminSocket)); !os.IsNotExist(err) {
		t.Errorf("admin socket left after serve stopped: %v", err)
	}
}
