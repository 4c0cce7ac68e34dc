package receiver_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
)

// TestEnrollRefusesSmallOrderKey: a device public key of small order (the
// identity point 01 00…00) is refused at enrollment, although the proof —
// the signature R = base point, S = 1, made without any private key —
// verifies under Go's cofactorless ed25519.Verify for every message.
func TestEnrollRefusesSmallOrderKey(t *testing.T) {
	h := start(t)
	nd, err := h.admin.AddDevice("room-10")
	if err != nil {
		t.Fatal(err)
	}
	identity := make([]byte, 32)
	identity[0] = 1
	forged := make([]byte, 64)
	forged[0] = 0x58
	for i := 1; i < 32; i++ {
		forged[i] = 0x66
	}
	forged[32] = 1
	if !ed25519.Verify(identity, receiver.EnrollProof(nd.Token), forged) {
		t.Fatal("the forged proof no longer verifies under crypto/ed25519: this test shows nothing")
	}
	body, _ := json.Marshal(receiver.EnrollRequest{
		Token:     nd.Token,
		DeviceKey: "ubx-dev-pub-ed25519:" + base64.RawURLEncoding.EncodeToString(identity),
		Proof:     base64.StdEncoding.EncodeToString(forged),
	})
	cfg := h.box.TLSConfig().Clone()
	cfg.Certificates, cfg.GetClientCertificate = nil, nil
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := client.Post("https://"+h.addr+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "small order") {
		t.Fatalf("enroll with the identity point as device key: %d %s, want 400 naming the small order", resp.StatusCode, msg)
	}
}
