package wire

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

func TestDecisionSignVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	s, d, err := MintDecision(key, "tess", "room-7", "0123456789abcdef", DecisionAccept, "45m", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyDecision(pub, s, now.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got != d || got.Teacher != "tess" || got.Device != "room-7" || got.Grant != "45m" || got.Expires.Sub(got.IssuedAt) != 30*time.Second {
		t.Fatalf("verified %+v, minted %+v", got, d)
	}
	if l, lesson, err := got.GrantLength(); err != nil || lesson || l != 45*time.Minute {
		t.Fatalf("GrantLength = %s, %t, %v", l, lesson, err)
	}
	// Two statements of the same decision differ in their nonce.
	s2, d2, _ := MintDecision(key, "tess", "room-7", "0123456789abcdef", DecisionAccept, "45m", now, 0)
	if s2 == s || d2.Nonce == d.Nonce {
		t.Fatal("two statements share a nonce")
	}
}

// TestDecisionTalkSigned: a decision minted with talk carries it, signed:
// the verified statement lets the viewer speak, and a talk grant on a
// decision that grants nothing is refused at minting.
func TestDecisionTalkSigned(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, kind := range []string{DecisionAccept, DecisionVideoOnly} {
		s, d, err := MintDecisionOf(key, Decision{Teacher: "tess", Device: "room-7", Request: "0123456789abcdef", Decision: kind, Grant: "15m", Talk: true}, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := VerifyDecision(pub, s, now)
		if err != nil || !got.Talk || got != d || got.Expires.Sub(got.IssuedAt) != 30*time.Second || len(got.Nonce) < 16 {
			t.Fatalf("%s with talk: verified %+v (%v), minted %+v", kind, got, err, d)
		}
	}
	if _, _, err := MintDecisionOf(key, Decision{Teacher: "tess", Device: "room-7", Request: "0123456789abcdef", Decision: DecisionDecline, Talk: true}, now, 0); !errors.Is(err, ErrDecisionMalformed) {
		t.Fatalf("decline with talk minted: %v", err)
	}
}

func TestDecisionRefused(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	mint := func(k ed25519.PrivateKey) string {
		s, _, err := MintDecision(k, "tess", "room-7", "0123456789abcdef", DecisionDecline, "", now, 0)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := mint(key)
	payload, sig, _ := strings.Cut(strings.TrimPrefix(good, decisionPrefix), ".")
	// The same bytes with the decision changed: the signature no longer
	// covers them.
	raw, _ := decisionB64.DecodeString(payload)
	tampered := decisionPrefix + decisionB64.EncodeToString([]byte(strings.Replace(string(raw), `"decline"`, `"accept"`, 1))) + "." + sig

	// A viewer token signed with the very same key, presented as a
	// statement as it is, or re-wrapped in the statement's form.
	token, err := viewtoken.Mint(key, viewtoken.IssuerReceiver, "tess", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	rewrapped := decisionPrefix + parts[1] + "." + parts[2]

	tests := []struct {
		name      string
		statement string
		at        time.Time
		want      error
	}{
		{"another key", mint(other), now, ErrDecisionForged},
		{"tampered", tampered, now, ErrDecisionForged},
		{"viewer token", token, now, ErrDecisionMalformed},
		{"viewer token re-wrapped", rewrapped, now, ErrDecisionForged},
		{"expired", good, now.Add(30*time.Second + DecisionSkew + time.Second), ErrDecisionStale},
		{"from the future", good, now.Add(-DecisionSkew - time.Second), ErrDecisionStale},
		{"empty", "", now, ErrDecisionMalformed},
		{"two dots", good + ".x", now, ErrDecisionMalformed},
		{"short signature", decisionPrefix + payload + ".AAAA", now, ErrDecisionMalformed},
		{"huge", decisionPrefix + strings.Repeat("A", maxStatement), now, ErrDecisionMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyDecision(pub, tt.statement, tt.at); !errors.Is(err, tt.want) {
				t.Fatalf("VerifyDecision: %v, want %v", err, tt.want)
			}
		})
	}
	// Within the skew either side it is still valid.
	for _, at := range []time.Time{now.Add(-DecisionSkew), now.Add(30*time.Second + DecisionSkew)} {
		if _, err := VerifyDecision(pub, good, at); err != nil {
			t.Errorf("at %s: %v", at, err)
		}
	}

	// And the other way round: a statement is no viewer token.
	v := viewtoken.NewVerifier(viewtoken.TrustedKey{Issuer: viewtoken.IssuerReceiver, Key: pub})
	if _, err := v.Verify(good, now); err == nil {
		t.Fatal("a decision statement verified as a viewer token")
	}
	if _, err := v.Verify("ubxv1."+payload+"."+sig, now); !errors.Is(err, viewtoken.ErrBadSignature) {
		t.Fatalf("a statement re-wrapped as a viewer token: %v, want a bad signature", err)
	}
}

// Statements out of shape are refused at signing, so that the receiver
// never sends one, and at verifying, even when properly signed.
func TestDecisionShape(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	ok := Decision{Teacher: "tess", Device: "room-7", Request: "0123456789abcdef", Decision: DecisionAccept, Grant: GrantLesson,
		IssuedAt: now, Expires: now.Add(time.Minute), Nonce: "nonce-nonce-nonce-1"}
	tests := []struct {
		name string
		edit func(*Decision)
		in   string
	}{
		{"teacher", func(d *Decision) { d.Teacher = "t e" }, "teacher"},
		{"device", func(d *Decision) { d.Device = "" }, "device"},
		{"decision", func(d *Decision) { d.Decision = "maybe" }, "decision"},
		{"no request", func(d *Decision) { d.Request = "" }, "request id"},
		{"request with end_all", func(d *Decision) { d.Decision, d.Grant = DecisionEndAll, "" }, "decides no single request"},
		{"grant with decline", func(d *Decision) { d.Decision = DecisionDecline }, "no grant length"},
		{"grant too long", func(d *Decision) { d.Grant = "9h" }, "grant"},
		{"grant nonsense", func(d *Decision) { d.Grant = "soon" }, "grant"},
		{"long life", func(d *Decision) { d.Expires = now.Add(2 * time.Minute) }, "validity"},
		{"backwards", func(d *Decision) { d.Expires = now }, "validity"},
		{"short nonce", func(d *Decision) { d.Nonce = "n" }, "nonce"},
		{"talk with decline", func(d *Decision) { d.Decision, d.Grant, d.Talk = DecisionDecline, "", true }, "cannot let a viewer speak"},
		{"anonymise with accept", func(d *Decision) { d.Anonymise = AnonymiseWhole }, "no anonymisation mode"},
		{"anonymise unknown", func(d *Decision) { d.Decision, d.Request, d.Grant, d.Anonymise = DecisionStartSession, "", "", "blur" }, "want off, whole or masks"},
	}
	if _, err := SignDecision(key, ok); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ok
			tt.edit(&d)
			if _, err := SignDecision(key, d); !errors.Is(err, ErrDecisionMalformed) || !strings.Contains(err.Error(), tt.in) {
				t.Fatalf("SignDecision: %v, want malformed naming %s", err, tt.in)
			}
			// Signed anyway (as a broken receiver would): refused.
			s := signUnchecked(key, d)
			if _, err := VerifyDecision(pub, s, now); !errors.Is(err, ErrDecisionMalformed) {
				t.Fatalf("VerifyDecision: %v, want malformed", err)
			}
		})
	}
}

// signUnchecked signs d without checking its shape.
func signUnchecked(key ed25519.PrivateKey, d Decision) string {
	payload, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	sig := ed25519.Sign(key, append([]byte(DecisionDomain), payload...))
	return decisionPrefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}
