package viewers

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

var cheap = Params{Time: 1, Memory: 64, Threads: 1}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T) (*Registry, *clock, string) {
	t.Helper()
	dir := t.TempDir()
	db := kvtest.Open(t)
	logPath := filepath.Join(dir, "audit.jsonl")
	log, err := audit.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	r, err := New(db, log, WithHashParams(cheap), WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	return r, c, logPath
}

func entries(t *testing.T, path string) []audit.Entry {
	t.Helper()
	if _, err := audit.VerifyFile(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e audit.Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		password string
		medium   bool
		high     bool
	}{
		{"", false, false},
		{"short1A!", false, false},
		{"alllowercaseletters", false, false},
		{"lowercase12345", true, false},
		{"Lowercase12345", true, false},
		{"Lowercase1234567", true, true},
		{"lowercase-and-digits-42", true, true},
		{"ÄÖÜäöüßéèêëïîç1", true, false},
		{strings.Repeat("aA1", 400), false, false}, // longer than the maximum
	} {
		t.Run(tc.password, func(t *testing.T) {
			if err := Medium.Check(tc.password); (err == nil) != tc.medium || (err != nil && !errors.Is(err, ErrWeakPassword)) {
				t.Fatalf("medium: %v", err)
			}
			if err := High.Check(tc.password); (err == nil) != tc.high || (err != nil && !errors.Is(err, ErrWeakPassword)) {
				t.Fatalf("high: %v", err)
			}
		})
	}
	if _, err := ParsePolicy("low"); err == nil {
		t.Fatal("policy low accepted")
	}
	if p, err := ParsePolicy("HIGH"); err != nil || p != High {
		t.Fatalf("HIGH: %v %v", p, err)
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		p, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) < 20 || High.Check(p) != nil || seen[p] {
			t.Fatalf("generated %q", p)
		}
		seen[p] = true
	}
}

func TestHash(t *testing.T) {
	h, err := hashPassword("correct horse", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(h, "correct") {
		t.Fatalf("encoded hash %q", h)
	}
	h2, _ := hashPassword("correct horse", cheap)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		pw, enc string
		ok      bool
		err     bool
	}{
		{"correct horse", h, true, false},
		{"correct horsE", h, false, false},
		{"", h, false, false},
		{"correct horse", "$argon2i$v=19$m=64,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", false, true},
		{"correct horse", "$argon2id$v=19$m=99999999,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", false, true},
		{"correct horse", "$argon2id$v=19$m=64,t=1,p=1$!!$AAAA", false, true},
		{"correct horse", "", false, true},
	} {
		ok, err := checkPassword(tc.pw, tc.enc)
		if ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("checkPassword(%q, %q) = %v, %v", tc.pw, tc.enc, ok, err)
		}
	}
	// The default cost is what the brief asks for.
	if DefaultParams.Memory != 64<<10 || DefaultParams.Time < 2 || DefaultParams.Time > 3 || DefaultParams.Threads != 2 {
		t.Fatalf("default params %+v", DefaultParams)
	}
}

func TestAccounts(t *testing.T) {
	r, _, logPath := open(t)
	if err := r.Add("anna", "short"); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("weak password: %v", err)
	}
	if err := r.Add("an na", "Long-enough-pass1"); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	if err := r.Add("anna", "lowercase12345"); err != nil {
		t.Fatal(err)
	}
	if err := r.Add("anna", "lowercase12345"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	// The stored policy applies to everything after it.
	if err := r.SetPolicy(High); err != nil {
		t.Fatal(err)
	}
	if p, _ := r.Policy(); p != High {
		t.Fatalf("policy %v", p)
	}
	if err := r.Add("bob", "lowercase12345"); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("medium password under high policy: %v", err)
	}
	if err := r.SetPassword("anna", "lowercase12345"); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("passwd under high policy: %v", err)
	}
	if err := r.SetPassword("anna", "Lowercase-123456"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetPassword("nobody", "Lowercase-123456"); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("passwd of unknown: %v", err)
	}
	if err := r.Login("anna", "lowercase12345", "10.0.0.1:5"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password: %v", err)
	}
	if err := r.Login("anna", "Lowercase-123456", "10.0.0.1:5"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := r.Unlock("anna"); err == nil {
		t.Fatal("unlocked an account that is not locked")
	}
	vs, err := r.List()
	if err != nil || len(vs) != 1 || vs[0].Name != "anna" || vs[0].Locked || vs[0].LastLogin.IsZero() || vs[0].Failures != 0 {
		t.Fatalf("list: %+v %v", vs, err)
	}
	b, _ := json.Marshal(vs)
	if strings.Contains(string(b), "argon2") {
		t.Fatalf("list shows a hash: %s", b)
	}
	var events []string
	for _, e := range entries(t, logPath) {
		events = append(events, e.Event+":"+e.Identity+":"+e.Outcome)
	}
	want := []string{"viewer.add:anna:failed", "viewer.add:anna:ok", "viewer.add:anna:failed", "viewer.policy::ok",
		"viewer.add:bob:failed", "viewer.passwd:anna:failed", "viewer.passwd:anna:ok", "viewer.passwd:nobody:failed",
		"viewer.login:anna:denied", "viewer.login:anna:ok", "viewer.unlock:anna:failed"}
	if strings.Join(events, " ") != strings.Join(want, " ") {
		t.Fatalf("audit\n got %v\nwant %v", events, want)
	}
	data, _ := os.ReadFile(logPath)
	if strings.Contains(string(data), "lowercase12345") || strings.Contains(string(data), "Lowercase-123456") {
		t.Fatal("a password is in the audit log")
	}
}

func TestLockout(t *testing.T) {
	r, c, logPath := open(t)
	const pw = "lowercase12345"
	if err := r.Add("anna", pw); err != nil {
		t.Fatal(err)
	}
	// Failures older than the window do not count.
	for range MaxFailures - 1 {
		if err := r.Login("anna", "wrong", "192.0.2.1:1"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	c.t = c.t.Add(FailureWindow + time.Second)
	if err := r.Login("anna", "wrong", "192.0.2.1:1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("a failure after the window locked: %v", err)
	}
	if err := r.Login("anna", pw, "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	// A success clears the count; five in the window lock.
	for i := range MaxFailures {
		err := r.Login("anna", "wrong", "192.0.2.2:2")
		want := ErrBadCredentials
		if i == MaxFailures-1 {
			want = ErrLocked
		}
		if !errors.Is(err, want) {
			t.Fatalf("failure %d: %v, want %v", i+1, err, want)
		}
		c.t = c.t.Add(time.Minute)
	}
	if err := r.Login("anna", pw, "192.0.2.1:1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("right password on a locked account: %v", err)
	}
	// Time alone does not unlock.
	c.t = c.t.Add(24 * time.Hour)
	if err := r.Login("anna", pw, "192.0.2.1:1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("a day later: %v", err)
	}
	vs, _ := r.List()
	if !vs[0].Locked || vs[0].Failures != MaxFailures {
		t.Fatalf("list of a locked viewer: %+v", vs[0])
	}
	if err := r.Unlock("anna"); err != nil {
		t.Fatal(err)
	}
	if err := r.Login("anna", pw, "192.0.2.1:1"); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	// Unknown names answer like existing ones: refused, then locked after
	// MaxFailures, until an administrator unlocks the name.
	for i := range MaxFailures + 1 {
		want := ErrBadCredentials
		if i >= MaxFailures-1 {
			want = ErrLocked
		}
		if err := r.Login("ghost", pw, "192.0.2.3:3"); !errors.Is(err, want) {
			t.Fatalf("unknown name, attempt %d: %v, want %v", i+1, err, want)
		}
	}
	if err := r.Unlock("ghost"); err != nil {
		t.Fatalf("unlock an unknown name: %v", err)
	}
	if err := r.Login("ghost", pw, "192.0.2.3:3"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown name after unlock: %v", err)
	}
	if err := r.Login("bad name", pw, "192.0.2.3:3"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	var logins, locked, withSource int
	for _, e := range entries(t, logPath) {
		if e.Event != "viewer.login" {
			continue
		}
		logins++
		if e.Outcome == "locked" {
			locked++
		}
		if strings.HasPrefix(e.Source, "192.0.2.") {
			withSource++
		}
	}
	// 4+1+1 before, 5 to lock, 2 while locked, 1 after unlock, 7 ghost
	// (2 of them locked), 1 malformed: 22.
	if logins != 22 || locked != 5 || withSource != logins {
		t.Fatalf("audit: %d logins, %d locked, %d with a source", logins, locked, withSource)
	}
}

func TestLoginHandler(t *testing.T) {
	r, c, logPath := open(t)
	if err := r.Add("anna", "lowercase12345"); err != nil {
		t.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := NewLoginHandler(r, key, 13*time.Hour, nil); err == nil {
		t.Fatal("a 13 h token lifetime was accepted")
	}
	h, err := NewLoginHandler(r, key, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, map[string]any) {
		req := httptest.NewRequest("POST", "/v1/login", bytes.NewBufferString(body))
		req.RemoteAddr = "198.51.100.7:4444"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var out map[string]any
		json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	code, out := post(`{"name":"anna","password":"lowercase12345"}`)
	if code != http.StatusOK {
		t.Fatalf("login: %d %v", code, out)
	}
	claims, err := viewtoken.NewVerifier(viewtoken.TrustedKey{Issuer: viewtoken.IssuerReceiver, Key: pub}).Verify(out["token"].(string), c.t)
	if err != nil || claims.Subject != "anna" || claims.Issuer != viewtoken.IssuerReceiver || claims.Expiry().Sub(c.t) != DefaultTokenTTL {
		t.Fatalf("token: %+v %v", claims, err)
	}
	if exp, _ := time.Parse(time.RFC3339, out["expires"].(string)); !exp.Equal(claims.Expiry()) {
		t.Fatalf("expires %v, token says %v", out["expires"], claims.Expiry())
	}
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"not JSON", `name=anna`, http.StatusBadRequest},
		{"unknown field", `{"name":"anna","password":"x","admin":true}`, http.StatusBadRequest},
		{"unknown viewer", `{"name":"zed","password":"lowercase12345"}`, http.StatusUnauthorized},
		{"wrong password", `{"name":"anna","password":"nope"}`, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := post(tc.body)
			if code != tc.code || out["token"] != nil {
				t.Fatalf("%d %v, want %d", code, out, tc.code)
			}
		})
	}
	for range MaxFailures - 1 {
		post(`{"name":"anna","password":"nope"}`)
	}
	if code, out := post(`{"name":"anna","password":"lowercase12345"}`); code != http.StatusLocked || out["reason"] != "locked" {
		t.Fatalf("locked account: %d %v", code, out)
	}
	n := 0
	for _, e := range entries(t, logPath) {
		if e.Event == "viewer.login" && e.Source == "198.51.100.7:4444" {
			n++
		}
	}
	if n != 1+4+(MaxFailures-1)+1 {
		t.Fatalf("%d login attempts audited", n)
	}
}

// TestLoginQueueBounded: with every hashing slot and waiting place taken,
// a further login gets ErrBusy at once instead of waiting without bound.
func TestLoginQueueBounded(t *testing.T) {
	r, _, _ := open(t)
	WithQueue(1, 1)(r)
	r.slots, r.queue = make(chan struct{}, r.running), make(chan struct{}, r.running+r.waiting)
	if err := r.Add("anna", "lowercase12345"); err != nil {
		t.Fatal(err)
	}
	// Fill the queue as two logins in progress would.
	r.queue <- struct{}{}
	r.queue <- struct{}{}
	for _, name := range []string{"anna", "ghost"} {
		if err := r.Login(name, "lowercase12345", "192.0.2.1:1"); !errors.Is(err, ErrBusy) {
			t.Fatalf("%s with a full queue: %v, want ErrBusy", name, err)
		}
	}
	<-r.queue
	if err := r.Login("anna", "lowercase12345", "192.0.2.1:1"); err != nil {
		t.Fatalf("with a free place: %v", err)
	}
}
