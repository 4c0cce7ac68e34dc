package viewtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func TestRoundTrip(t *testing.T) {
	k := newKey(t)
	tok, err := Mint(k, IssuerReceiver, "coach.anna@school", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "ubxv1.") || strings.Count(tok, ".") != 2 {
		t.Fatalf("token shape %q", tok)
	}
	other := newKey(t)
	v := NewVerifier(TrustedKey{IssuerLocal, other.Public().(ed25519.PublicKey)}, TrustedKey{IssuerReceiver, k.Public().(ed25519.PublicKey)})
	c, err := v.Verify(tok, t0.Add(59*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "coach.anna@school" || c.Issuer != IssuerReceiver || c.IssuedAt != t0.Unix() || !c.Expiry().Equal(t0.Add(time.Hour)) || c.ID == "" {
		t.Fatalf("claims %+v", c)
	}
	tok2, _ := Mint(k, IssuerReceiver, "coach.anna@school", time.Hour, t0)
	c2, _ := v.Verify(tok2, t0)
	if c2.ID == c.ID {
		t.Fatal("two tokens share a jti")
	}
}

func TestMintRefuses(t *testing.T) {
	k := newKey(t)
	for _, tc := range []struct {
		name   string
		key    ed25519.PrivateKey
		iss    string
		viewer string
		ttl    time.Duration
		want   error
	}{
		{"empty name", k, IssuerLocal, "", time.Hour, ErrBadName},
		{"long name", k, IssuerLocal, strings.Repeat("a", 65), time.Hour, ErrBadName},
		{"space in name", k, IssuerLocal, "anna b", time.Hour, ErrBadName},
		{"zero ttl", k, IssuerLocal, "anna", 0, ErrBadTTL},
		{"negative ttl", k, IssuerLocal, "anna", -time.Second, ErrBadTTL},
		{"ttl above 12h", k, IssuerLocal, "anna", MaxTTL + time.Second, ErrBadTTL},
		{"no key", nil, IssuerLocal, "anna", time.Hour, nil},
		{"no issuer", k, "", "anna", time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Mint(tc.key, tc.iss, tc.viewer, tc.ttl, t0)
			if err == nil || tok != "" {
				t.Fatalf("minted %q", tok)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Mint(k, IssuerLocal, strings.Repeat("a", 64), MaxTTL, t0); err != nil {
		t.Fatalf("the limits themselves are refused: %v", err)
	}
}

// forge signs arbitrary claims JSON with k, bypassing Mint's checks.
func forge(k ed25519.PrivateKey, claims string) string {
	signed := prefix + b64.EncodeToString([]byte(claims))
	return signed + "." + b64.EncodeToString(ed25519.Sign(k, []byte(signed)))
}

func TestVerifyErrors(t *testing.T) {
	k := newKey(t)
	v := NewVerifier(TrustedKey{IssuerReceiver, k.Public().(ed25519.PublicKey)})
	good, err := Mint(k, IssuerReceiver, "anna", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	claims, _ := b64.DecodeString(parts[1])
	tampered := strings.Replace(string(claims), `"anna"`, `"boss"`, 1)
	sig, _ := b64.DecodeString(parts[2])
	sig[0] ^= 1
	wrongKey, _ := Mint(newKey(t), IssuerReceiver, "anna", time.Hour, t0)
	// Signed by the receiver's key, but claiming the box's local issuer
	// (or another): the key is trusted for "receiver" only.
	localByReceiverKey, _ := Mint(k, IssuerLocal, "anna", time.Hour, t0)
	otherIssuer, _ := Mint(k, "receiver:other", "anna", time.Hour, t0)
	claimsJSON := func(c Claims) string { b, _ := json.Marshal(c); return string(b) }
	for _, tc := range []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"empty", "", t0, ErrMalformed},
		{"other prefix", "ubxv2." + parts[1] + "." + parts[2], t0, ErrMalformed},
		{"no signature", parts[0] + "." + parts[1], t0, ErrMalformed},
		{"extra part", good + ".x", t0, ErrMalformed},
		{"claims not base64", "ubxv1.!!!." + parts[2], t0, ErrMalformed},
		{"signature not base64", "ubxv1." + parts[1] + ".!!!", t0, ErrMalformed},
		{"short signature", "ubxv1." + parts[1] + "." + b64.EncodeToString(sig[:10]), t0, ErrMalformed},
		{"huge", "ubxv1." + strings.Repeat("A", 5000) + "." + parts[2], t0, ErrMalformed},
		{"tampered claims", "ubxv1." + b64.EncodeToString([]byte(tampered)) + "." + parts[2], t0, ErrBadSignature},
		{"tampered signature", "ubxv1." + parts[1] + "." + b64.EncodeToString(sig), t0, ErrBadSignature},
		{"wrong key", wrongKey, t0, ErrBadSignature},
		{"box:local token signed by the receiver key", localByReceiverKey, t0, ErrWrongIssuer},
		{"other issuer signed by the receiver key", otherIssuer, t0, ErrWrongIssuer},
		{"expired", good, t0.Add(time.Hour), ErrExpired},
		{"long expired", good, t0.Add(48 * time.Hour), ErrExpired},
		{"issued in the future", good, t0.Add(-61 * time.Second), ErrNotYetValid},
		{"signed non-JSON", forge(k, "not json"), t0, ErrMalformed},
		{"signed unknown field", forge(k, `{"sub":"anna","iss":"receiver","iat":1,"exp":2,"jti":"x","admin":true}`), t0, ErrMalformed},
		{"signed bad name", forge(k, claimsJSON(Claims{Subject: "a b", Issuer: "receiver", IssuedAt: t0.Unix(), Expires: t0.Unix() + 60, ID: "x"})), t0, ErrMalformed},
		{"signed no id", forge(k, claimsJSON(Claims{Subject: "anna", Issuer: "receiver", IssuedAt: t0.Unix(), Expires: t0.Unix() + 60})), t0, ErrMalformed},
		{"signed lifetime above 12h", forge(k, claimsJSON(Claims{Subject: "anna", Issuer: "receiver", IssuedAt: t0.Unix(), Expires: t0.Unix() + 13*3600, ID: "x"})), t0, ErrMalformed},
		{"signed exp before iat", forge(k, claimsJSON(Claims{Subject: "anna", Issuer: "receiver", IssuedAt: t0.Unix(), Expires: t0.Unix() - 1, ID: "x"})), t0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if c != (Claims{}) {
				t.Fatalf("claims %+v returned with an error", c)
			}
		})
	}
	// Within the allowed skew the token is accepted.
	if _, err := v.Verify(good, t0.Add(-59*time.Second)); err != nil {
		t.Fatalf("59 s of clock skew: %v", err)
	}
	// A verifier without keys trusts nothing.
	if _, err := NewVerifier().Verify(good, t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("empty verifier: %v", err)
	}
}

// VerifyIgnoringExpiry accepts an expired token up to MaxTTL after its
// expiry, and checks everything else as Verify does.
func TestVerifyIgnoringExpiry(t *testing.T) {
	k := newKey(t)
	v := NewVerifier(TrustedKey{IssuerReceiver, k.Public().(ed25519.PublicKey)})
	good, _ := Mint(k, IssuerReceiver, "anna", time.Hour, t0)
	wrongKey, _ := Mint(newKey(t), IssuerReceiver, "anna", time.Hour, t0)
	local, _ := Mint(k, IssuerLocal, "anna", time.Hour, t0)
	for _, tc := range []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"valid", good, t0.Add(time.Minute), nil},
		{"expired a minute ago", good, t0.Add(time.Hour + time.Minute), nil},
		{"expired almost MaxTTL ago", good, t0.Add(time.Hour + MaxTTL - time.Second), nil},
		{"expired MaxTTL ago", good, t0.Add(time.Hour + MaxTTL), ErrExpired},
		{"wrong key", wrongKey, t0.Add(2 * time.Hour), ErrBadSignature},
		{"wrong issuer", local, t0.Add(2 * time.Hour), ErrWrongIssuer},
		{"issued in the future", good, t0.Add(-61 * time.Second), ErrNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.VerifyIgnoringExpiry(tc.token, tc.now)
			if !errors.Is(err, tc.want) || (err == nil && c.Subject != "anna") {
				t.Fatalf("claims %+v, error %v, want %v", c, err, tc.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := Mint(k, IssuerLocal, "anna", time.Hour, t0)
	for _, s := range []string{"", "ubxv1.", "ubxv1..", "ubxv1.e30.", good, good + "x", strings.ReplaceAll(good, ".", "")} {
		f.Add(s)
	}
	v := NewVerifier(TrustedKey{IssuerLocal, k.Public().(ed25519.PublicKey)})
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s, t0)
		if err == nil && (c.Subject != "anna" || s != good) {
			t.Fatalf("accepted %q as %+v", s, c)
		}
	})
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadBoxVerifier(dir); err == nil || !strings.Contains(err.Error(), "enroll the box or run `uploadbox viewer token` first") {
		t.Fatalf("no keys: %v", err)
	}
	tok, err := MintLocal(dir, "anna", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{LocalKeyFile, LocalPublicFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	v, err := LoadBoxVerifier(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok, t0)
	if err != nil || c.Issuer != IssuerLocal || c.Subject != "anna" {
		t.Fatalf("local token: %+v %v", c, err)
	}
	// The key is reused, not remade.
	tok2, err := MintLocal(dir, "bob", time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok2, t0); err != nil {
		t.Fatalf("second local token: %v", err)
	}
	// The receiver's key from enrollment is trusted alongside.
	rk := newKey(t)
	if err := os.WriteFile(filepath.Join(dir, ReceiverKeyFile), []byte(FormatPublicKey(rk.Public().(ed25519.PublicKey))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err = LoadBoxVerifier(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := Mint(rk, IssuerReceiver, "carl", time.Hour, t0)
	for _, tk := range []string{tok, rt} {
		if _, err := v.Verify(tk, t0); err != nil {
			t.Fatal(err)
		}
	}
	// Each key only for its issuer: a box:local token signed by the
	// receiver's key, and a receiver token signed by the local key, are
	// refused.
	localKey, err := ReadKeyFile(filepath.Join(dir, LocalKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	forgedLocal, _ := Mint(rk, IssuerLocal, "carl", time.Hour, t0)
	forgedReceiver, _ := Mint(localKey, IssuerReceiver, "carl", time.Hour, t0)
	for _, tk := range []string{forgedLocal, forgedReceiver} {
		if _, err := v.Verify(tk, t0); !errors.Is(err, ErrWrongIssuer) {
			t.Errorf("token signed by the other issuer's key: %v, want ErrWrongIssuer", err)
		}
	}
	// A key file others can read is refused.
	os.Chmod(filepath.Join(dir, LocalKeyFile), 0o644)
	if _, err := MintLocal(dir, "anna", time.Hour, t0); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key: %v", err)
	}
	// A damaged public key is an error, not silently skipped.
	os.WriteFile(filepath.Join(dir, ReceiverKeyFile), []byte("ubx-viewer-token-pub-ed25519:xyz\n"), 0o600)
	if _, err := LoadBoxVerifier(dir); err == nil {
		t.Fatal("damaged token.pub accepted")
	}
	if _, err := ParsePublicKey("ubx-dev-pub-ed25519:AAAA"); err == nil {
		t.Fatal("foreign key line accepted")
	}
}

// TestRoleClaim: a token may carry the account's role; the verifier (the
// box's too) accepts it and returns it, and a token without one verifies
// as before (no "role" in its claims).
func TestRoleClaim(t *testing.T) {
	k := newKey(t)
	v := NewVerifier(TrustedKey{IssuerReceiver, k.Public().(ed25519.PublicKey)})
	tok, err := MintRole(k, IssuerReceiver, "tess", "teacher", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(tok, t0); err != nil || c.Role != "teacher" || c.Subject != "tess" {
		t.Fatalf("token with a role: %+v %v", c, err)
	}
	plain, _ := Mint(k, IssuerReceiver, "coach", time.Hour, t0)
	_, payload, _, _ := SplitSigned(plain, prefix, "CLAIMS", maxToken)
	if strings.Contains(string(payload), "role") {
		t.Fatalf("a token without a role names one: %s", payload)
	}
	if c, err := v.Verify(plain, t0); err != nil || c.Role != "" {
		t.Fatalf("token without a role: %+v %v", c, err)
	}
}
