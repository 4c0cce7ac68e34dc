package receiver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
)

func head(n int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "entry %d", n))
	return hex.EncodeToString(h[:])
}

// boxCheckpoint returns a function that signs, with h's box key, the
// checkpoint of seq over the head of entry n (at seq minutes past a fixed
// time).
func boxCheckpoint(t *testing.T, h *harness) func(seq uint64, n int) audit.Checkpoint {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return func(seq uint64, n int) audit.Checkpoint {
		t.Helper()
		c, err := audit.SignCheckpoint(h.box.Device.Signer(), seq, head(n), t0.Add(time.Duration(seq)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// TestAuditCheckpointEndpoint: the receiver stores a box's checkpoint
// only if the box's enrolled key signed it and it does not go back.
func TestAuditCheckpointEndpoint(t *testing.T) {
	h := start(t)
	up := uploader.New(h.box, nil, nil)
	mk := boxCheckpoint(t, h)
	// The newest checkpoint held, through the admin socket (a file with
	// bbolt, a row with PostgreSQL).
	stored := func() audit.Checkpoint {
		t.Helper()
		c, err := h.admin.DeviceCheckpoint("room-9")
		if err != nil || c == nil {
			t.Fatalf("stored checkpoint: %+v %v", c, err)
		}
		return *c
	}
	send := func(c audit.Checkpoint) error { return up.SendCheckpoint(t.Context(), c) }

	if err := send(mk(5, 5)); err != nil {
		t.Fatal(err)
	}
	if c := stored(); c.Seq != 5 {
		t.Fatalf("stored %+v", c)
	}
	if err := send(mk(5, 5)); err != nil {
		t.Fatalf("the same checkpoint again: %v", err)
	}
	if err := send(mk(9, 9)); err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	foreign, _ := audit.SignCheckpoint(other, 12, head(12), time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC))
	tampered := mk(12, 12)
	tampered.Seq = 13
	for _, tc := range []struct {
		name string
		c    audit.Checkpoint
		want string
	}{
		{"older", mk(7, 7), "HTTP 409"},
		{"forked at the same seq", mk(9, 99), "HTTP 409"},
		{"signed by another key", foreign, "HTTP 422"},
		{"signature does not match", tampered, "HTTP 422"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := send(tc.c)
			if !errors.Is(err, uploader.ErrCheckpointRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
			if c := stored(); c.Seq != 9 || c.Hash != head(9) {
				t.Fatalf("a refused checkpoint replaced the stored one: %+v", c)
			}
		})
	}
	// Malformed bodies are 400; without a device certificate 401.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.box.TLSConfig()}}
	for _, body := range []string{"{", `{"seq":1}`, strings.Repeat("x", 5000)} {
		resp, err := client.Post("https://"+h.addr+"/v1/audit/checkpoint", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("body %.20q: HTTP %d, want 400", body, resp.StatusCode)
		}
	}
	anon := h.box.TLSConfig()
	anon.Certificates, anon.GetClientCertificate = nil, nil
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: anon}}).Post("https://"+h.addr+"/v1/audit/checkpoint", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a device certificate: HTTP %d", resp.StatusCode)
	}
	// Refusals are audited.
	if n := strings.Count(h.auditText(t), `"event":"device.audit-checkpoint"`); n != 4 {
		t.Fatalf("%d refusals audited, want 4", n)
	}
}

// TestReceiverCheckpointsAtShutdown: a stopped receiver has signed its
// audit head with the receipt key; cutting entries off is then reported.
func TestReceiverCheckpointsAtShutdown(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(string) { close(ready) }) }()
	<-ready
	a, err := receiver.OpenAdmin(data) // through the admin socket
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := a.AddDevice(fmt.Sprintf("box-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep, err := receiver.VerifyAudit(data, "")
	if err != nil || rep.Checkpoint == nil || rep.Checkpoint.Seq != rep.Last {
		t.Fatalf("after shutdown: %+v %v", rep, err)
	}
	path := filepath.Join(data, receiver.AuditFile)
	b, _ := os.ReadFile(path)
	ls := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
	os.WriteFile(path, []byte(strings.Join(ls[:len(ls)-2], "")), 0o600)
	if _, err := receiver.VerifyAudit(data, ""); err == nil || !strings.Contains(err.Error(), "2 entries missing after the last checkpoint") {
		t.Fatalf("cut log: %v", err)
	}
}
