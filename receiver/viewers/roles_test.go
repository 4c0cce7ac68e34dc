package viewers

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// TestRoles: a new account is a viewer, and so is one stored before roles
// existed; SetRole changes it (audited with the old and new role) and
// refuses an unknown role or account; List shows it; the login answer and
// the token's claims carry it, and the box's verifier accepts the token.
func TestRoles(t *testing.T) {
	r, clk, logPath := open(t)
	if err := r.Add("anna", "lowercase12345"); err != nil {
		t.Fatal(err)
	}
	if role, err := r.Role("anna"); err != nil || role != RoleViewer {
		t.Fatalf("new account: %q %v", role, err)
	}
	if err := r.SetRole("anna", RoleTeacher); err != nil {
		t.Fatal(err)
	}
	if err := r.SetRole("anna", "principal"); !errors.Is(err, ErrBadRole) {
		t.Fatalf("unknown role: %v", err)
	}
	if err := r.SetRole("nobody", RoleTeacher); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("unknown account: %v", err)
	}
	if _, err := r.Role("nobody"); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("role of an unknown account: %v", err)
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || list[0].Role != RoleTeacher {
		t.Fatalf("list: %+v %v", list, err)
	}
	var got []string
	for _, e := range entries(t, logPath) {
		if e.Event == "viewer.role" {
			got = append(got, e.Identity+" "+e.Outcome+" "+e.Detail)
		}
	}
	want := []string{"anna ok role viewer -> teacher", "anna failed unknown role principal", "nobody failed role -> teacher"}
	if len(got) != len(want) {
		t.Fatalf("viewer.role audit %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("viewer.role audit %q, want %q", got, want)
		}
	}

	// A record from before roles (no "role" field) is a viewer.
	if err := r.db.Update(func(tx kv.Tx) error {
		return tx.Bucket(bucket).Put([]byte("old"), []byte(`{"name":"old","hash":"x","created":"2026-01-01T00:00:00Z","password_changed":"2026-01-01T00:00:00Z"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if role, err := r.Role("old"); err != nil || role != RoleViewer {
		t.Fatalf("an account stored before roles: %q %v", role, err)
	}

	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := NewLoginHandler(r, key, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/login", bytes.NewBufferString(`{"name":"anna","password":"lowercase12345"}`))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var lr LoginResponse
	if err := json.Unmarshal(w.Body.Bytes(), &lr); err != nil || w.Code != 200 || lr.Role != RoleTeacher {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	c, err := viewtoken.NewVerifier(viewtoken.TrustedKey{Issuer: viewtoken.IssuerReceiver, Key: pub}).Verify(lr.Token, clk.t)
	if err != nil || c.Role != RoleTeacher || c.Subject != "anna" {
		t.Fatalf("the token's claims %+v %v", c, err)
	}
	for _, s := range []string{"", "viewer", "teacher", "admin"} {
		if _, err := ParseRole(s); err != nil {
			t.Errorf("ParseRole(%q): %v", s, err)
		}
	}
}
