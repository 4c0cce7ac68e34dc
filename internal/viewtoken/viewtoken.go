// Package viewtoken makes and checks viewer tokens: short-lived, signed
// statements that name a viewer, which the box verifies offline.
//
// A token is "ubxv1." + base64url(JSON claims) + "." + base64url(Ed25519
// signature over the first two parts). The receiver signs them after a
// password login with its token key (whose public half a box receives at
// enrollment); a test rig signs them with a local key the box trusts.
package viewtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Issuers.
const (
	IssuerReceiver = "receiver"
	IssuerLocal    = "box:local"
)

// Limits.
const (
	// MaxTTL bounds a token's lifetime, at minting and at verification.
	MaxTTL = 12 * time.Hour
	// ClockSkew is how far in the future a token's iat may lie.
	ClockSkew = 60 * time.Second
	prefix    = "ubxv1."
	maxToken  = 2048
)

// Errors callers branch on. Verify wraps them with detail.
var (
	ErrMalformed    = errors.New("viewer token is malformed")
	ErrBadSignature = errors.New("viewer token signature does not verify with any trusted key")
	ErrWrongIssuer  = errors.New("viewer token's issuer is not the one its signing key may issue for")
	ErrExpired      = errors.New("viewer token has expired")
	ErrNotYetValid  = errors.New("viewer token is not valid yet (check the clocks)")
	ErrBadName      = errors.New("viewer names are 1-64 characters of [A-Za-z0-9._@-]")
	ErrBadTTL       = errors.New("viewer token lifetime must be positive and at most 12h")
)

var validName = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// ValidName reports whether name is an acceptable viewer name.
func ValidName(name string) bool { return validName.MatchString(name) }

// Claims is what a token states.
type Claims struct {
	Subject  string `json:"sub"` // the viewer's name
	Issuer   string `json:"iss"` // IssuerReceiver or IssuerLocal
	IssuedAt int64  `json:"iat"` // Unix seconds
	Expires  int64  `json:"exp"` // Unix seconds
	ID       string `json:"jti"` // random, for audit entries
	// Role is the account's role when the receiver issued the token
	// ("viewer", "teacher", "admin"; empty in older tokens and in local
	// ones). It tells a page which view to show; the box ignores it, and
	// the receiver checks the account's current role on every request.
	Role string `json:"role,omitempty"`
}

// Expiry returns the claims' expiry as a time.
func (c Claims) Expiry() time.Time { return time.Unix(c.Expires, 0).UTC() }

var b64 = base64.RawURLEncoding.Strict()

// Mint signs a token for viewer, issued by iss, valid for ttl from now.
func Mint(key ed25519.PrivateKey, iss, viewer string, ttl time.Duration, now time.Time) (string, error) {
	return MintRole(key, iss, viewer, "", ttl, now)
}

// MintRole is Mint with the account's role in the claims (empty: none).
func MintRole(key ed25519.PrivateKey, iss, viewer, role string, ttl time.Duration, now time.Time) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("mint viewer token: the signing key is not an Ed25519 private key")
	}
	if !ValidName(viewer) {
		return "", fmt.Errorf("mint viewer token: %w: %q", ErrBadName, viewer)
	}
	if iss == "" {
		return "", errors.New("mint viewer token: the issuer is empty")
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("mint viewer token: %w (got %s)", ErrBadTTL, ttl)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	c := Claims{Subject: viewer, Issuer: iss, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: b64.EncodeToString(jti), Role: role}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := prefix + b64.EncodeToString(payload)
	return signed + "." + b64.EncodeToString(ed25519.Sign(key, []byte(signed))), nil
}

// TrustedKey is a public key and the one issuer whose tokens it signs: a
// token is accepted only if the key that signed it is trusted for the
// issuer the token names.
type TrustedKey struct {
	Issuer string
	Key    ed25519.PublicKey
}

// Verifier checks tokens against a fixed set of trusted keys.
type Verifier struct {
	keys []TrustedKey
}

// NewVerifier trusts keys, each for its issuer; keys of the wrong size or
// without an issuer are ignored.
func NewVerifier(keys ...TrustedKey) *Verifier {
	v := &Verifier{}
	for _, k := range keys {
		if len(k.Key) == ed25519.PublicKeySize && k.Issuer != "" {
			v.keys = append(v.keys, k)
		}
	}
	return v
}

// SplitSigned splits s, a signed text prefix + base64url(payload) + "." +
// base64url(Ed25519 signature) of at most max bytes, into the part the
// signature covers in a token (prefix and encoded payload), the payload
// and the signature. what names the payload in errors. Nothing is
// verified.
func SplitSigned(s, prefix, what string, max int) (signed string, payload, sig []byte, err error) {
	if len(s) > max {
		return "", nil, nil, fmt.Errorf("longer than %d bytes", max)
	}
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", nil, nil, fmt.Errorf("it does not start with %q", prefix)
	}
	payloadB64, sigB64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigB64, ".") {
		return "", nil, nil, fmt.Errorf("want %s%s.SIGNATURE", prefix, what)
	}
	if payload, err = b64.DecodeString(payloadB64); err != nil {
		return "", nil, nil, fmt.Errorf("%s is not base64url", strings.ToLower(what))
	}
	if sig, err = b64.DecodeString(sigB64); err != nil || len(sig) != ed25519.SignatureSize {
		return "", nil, nil, errors.New("signature is not 64 bytes of base64url")
	}
	return s[:len(prefix)+len(payloadB64)], payload, sig, nil
}

// Verify checks token's signature, its issuer against the signing key's,
// its shape and validity period at now and returns its claims. Errors
// wrap ErrMalformed, ErrBadSignature, ErrWrongIssuer, ErrExpired or
// ErrNotYetValid.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	return v.verify(token, now, 0)
}

// VerifyIgnoringExpiry is Verify for a token that may have expired up to
// MaxTTL ago: what a running live-view session asks of its own viewer's
// token, since the session is bound to its grant, not to the token. The
// signature, issuer and shape are checked as by Verify.
func (v *Verifier) VerifyIgnoringExpiry(token string, now time.Time) (Claims, error) {
	return v.verify(token, now, MaxTTL)
}

// verify checks token, accepting it up to grace after its expiry.
func (v *Verifier) verify(token string, now time.Time, grace time.Duration) (Claims, error) {
	var c Claims
	signed, payload, sig, err := SplitSigned(token, prefix, "CLAIMS", maxToken)
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// The signature first: nothing in unsigned claims is looked at.
	var issuers []string // of the keys the signature verifies with
	for _, k := range v.keys {
		if ed25519.Verify(k.Key, []byte(signed), sig) {
			issuers = append(issuers, k.Issuer)
		}
	}
	if len(issuers) == 0 {
		return c, ErrBadSignature
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return Claims{}, fmt.Errorf("%w: claims are not the expected JSON object", ErrMalformed)
	}
	switch {
	case !ValidName(c.Subject):
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, ErrBadName)
	case c.Issuer == "" || c.ID == "":
		return Claims{}, fmt.Errorf("%w: issuer or id missing", ErrMalformed)
	case !slices.Contains(issuers, c.Issuer):
		return Claims{}, fmt.Errorf("%w: it names issuer %q, its key signs for %s", ErrWrongIssuer, c.Issuer, strings.Join(issuers, ", "))
	case c.Expires <= c.IssuedAt || c.Expires-c.IssuedAt > int64(MaxTTL/time.Second):
		return Claims{}, fmt.Errorf("%w: lifetime %ds is outside (0, %s]", ErrMalformed, c.Expires-c.IssuedAt, MaxTTL)
	}
	t := now.Unix()
	if c.IssuedAt > t+int64(ClockSkew/time.Second) {
		return Claims{}, fmt.Errorf("%w: issued %s", ErrNotYetValid, time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339))
	}
	if t >= c.Expires+int64(grace/time.Second) {
		return Claims{}, fmt.Errorf("%w: at %s", ErrExpired, c.Expiry().Format(time.RFC3339))
	}
	return c, nil
}
