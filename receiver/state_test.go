package receiver_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
)

// TestStateChoice: a data directory keeps the store it started with. One
// whose state is in PostgreSQL refuses to open without --database (rather
// than start afresh on an empty bbolt file), naming the database without
// its password; one holding a bbolt state refuses --database; TURN status
// without a server says no server runs.
func TestStateChoice(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	const secret = "pw-kept-out"
	url := strings.Replace(kvtest.URL(t), "postgres:///", "postgres://postgres:"+secret+"@/", 1)
	dir := t.TempDir()

	pg := filepath.Join(dir, "pg")
	srv, err := receiver.Open(receiver.ServerConfig{Data: pg, Listen: "127.0.0.1:0", Database: url})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := os.Stat(filepath.Join(pg, receiver.DBFile)); err == nil {
		t.Fatalf("a receiver on PostgreSQL made %s", receiver.DBFile)
	}
	_, err = receiver.Open(receiver.ServerConfig{Data: pg, Listen: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "is in PostgreSQL (postgres://postgres:xxxxx@/") || !strings.Contains(err.Error(), "give --database") || strings.Contains(err.Error(), secret) {
		t.Fatalf("open without --database: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pg, receiver.DBFile)); err == nil {
		t.Fatalf("the refused open made %s", receiver.DBFile)
	}
	if _, err := receiver.OpenAdmin(pg); err == nil || !strings.Contains(err.Error(), "is in PostgreSQL") {
		t.Fatalf("OpenAdmin without --database: %v", err)
	}
	if _, err := receiver.TURNStatus(pg); err == nil || !strings.Contains(err.Error(), "no receiver runs") {
		t.Fatalf("TURN status without a server: %v", err)
	}

	bolt := filepath.Join(dir, "bolt")
	var log bytes.Buffer
	if srv, err = receiver.Open(receiver.ServerConfig{Data: bolt, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&log, nil))}); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if want := `msg="state in bbolt" component=receiver file=` + filepath.Join(bolt, receiver.DBFile); !strings.Contains(log.String(), want) {
		t.Fatalf("serve's log:\n%s\nwant %s", log.String(), want)
	}
	_, err = receiver.Open(receiver.ServerConfig{Data: bolt, Listen: "127.0.0.1:0", Database: url})
	if err == nil || !strings.Contains(err.Error(), "holds a bbolt state") || strings.Contains(err.Error(), secret) {
		t.Fatalf("--database on a bbolt data directory: %v", err)
	}
}
