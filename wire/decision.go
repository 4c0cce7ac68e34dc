package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

// A decision statement is a teacher's decision on live viewing, signed by
// the receiver with its token key (the key whose public half the box
// stored at enrollment as token.pub and trusts for viewer tokens) and
// carried to the box over the control connection (OpDecision). The box
// checks it offline: the signature, that it names this box, that it is
// fresh, and that its nonce was never used.
//
// Encoding: "ubxd1." + base64url(JSON Decision) + "." + base64url(Ed25519
// signature over DecisionDomain || the JSON bytes). The domain separates
// statements from viewer tokens, which are signed over "ubxv1." + base64url
// of their claims with the same key: neither verifies as the other.
const (
	// DecisionDomain prefixes the signed bytes of a statement.
	DecisionDomain = "uploadbox.decision.v1\x00"
	// MaxDecisionLife bounds a statement's validity (Expires - IssuedAt).
	MaxDecisionLife = 60 * time.Second
	// DecisionSkew is how far the box's clock may be from the receiver's.
	DecisionSkew   = 30 * time.Second
	decisionPrefix = "ubxd1."
	maxStatement   = 4096
)

// OpDecision is the control request that brings a teacher's decision to
// the box: params DecisionParams, result DecisionResult (also on a
// refusal, with Reason).
const OpDecision = "consent.decision"

// What a teacher can decide.
const (
	DecisionAccept       = "accept"        // the pending request, video and audio as asked
	DecisionVideoOnly    = "video_only"    // the pending request, no audio
	DecisionDecline      = "decline"       // the pending request
	DecisionEndAll       = "end_all"       // every grant and pending request of the box
	DecisionStartSession = "start_session" // start recording (the box's default length)
	DecisionStopSession  = "stop_session"  // stop recording
)

// GrantLesson is the grant length "until the lesson ends": the recording
// session's end.
const GrantLesson = "lesson"

// MaxGrant bounds a grant length a statement may ask for.
const MaxGrant = 8 * time.Hour

// Anonymisation modes a start_session statement may name.
const (
	AnonymiseOff   = "off"
	AnonymiseWhole = "whole"
	AnonymiseMasks = "masks"
)

// Reasons of a refused decision (DecisionResult.Reason).
const (
	DecisionMalformed      = "malformed"       // not a statement, or a field out of shape
	DecisionForged         = "forged"          // the signature does not verify with token.pub
	DecisionStale          = "stale"           // expired, or issued in the future
	DecisionWrongDevice    = "wrong-device"    // it names another box
	DecisionReplayed       = "replayed"        // its nonce was used before
	DecisionRemoteOff      = "remote-off"      // consent.remote_decisions is false on the box
	DecisionUnknownRequest = "unknown-request" // no such request on the box
	DecisionNotPending     = "not-pending"     // the request was decided already
	DecisionRefused        = "refused"         // the box could not act (no session, …); Error says why
)

// Errors of VerifyDecision, wrapped with detail.
var (
	ErrDecisionMalformed = errors.New("decision statement is malformed")
	ErrDecisionForged    = errors.New("decision statement's signature does not verify with the receiver's token key")
	ErrDecisionStale     = errors.New("decision statement is not valid now (expired, or issued in the future: check the clocks)")
)

// Decision is what a statement says.
type Decision struct {
	// Teacher is the receiver account that decided.
	Teacher string `json:"teacher"`
	// Device is the box the decision is for.
	Device string `json:"device"`
	// Request is the consent request decided (accept, video_only,
	// decline): 16 hex digits.
	Request string `json:"request,omitempty"`
	// Decision is one of the Decision constants.
	Decision string `json:"decision"`
	// Grant is the grant length for accept and video_only: a duration
	// such as "15m" or "45m" (at most MaxGrant), or GrantLesson; empty:
	// the box's live.grant_default.
	Grant string `json:"grant,omitempty"`
	// Talk, on accept and video_only, lets the viewer speak to the
	// teacher (talk-back) for the grant.
	Talk bool `json:"talk,omitempty"`
	// Anonymise, on start_session, is the session's anonymisation mode
	// (AnonymiseOff, AnonymiseWhole, AnonymiseMasks); empty: the box's
	// recording.anonymise.
	Anonymise string    `json:"anonymise,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	Expires   time.Time `json:"expires"`
	// Nonce is random; the box refuses a nonce it has seen.
	Nonce string `json:"nonce"`
}

// DecisionParams are the params of OpDecision.
type DecisionParams struct {
	Statement string `json:"statement"`
}

// DecisionResult is the box's answer to OpDecision.
type DecisionResult struct {
	Decision string `json:"decision"`
	Request  string `json:"request,omitempty"`
	Viewer   string `json:"viewer,omitempty"`
	// State is the request's state after the decision.
	State string `json:"state,omitempty"`
	// Expires and Audio describe the grant an accept gave.
	Expires time.Time `json:"expires,omitzero"`
	Audio   bool      `json:"audio,omitempty"`
	// Talk: the grant lets the viewer speak (talk-back).
	Talk bool `json:"talk,omitempty"`
	// Ended counts the grants and requests end_all ended.
	Ended int `json:"ended,omitempty"`
	// Reason is set when the decision was refused (Decision* reasons).
	Reason string `json:"reason,omitempty"`
}

var (
	decisionB64   = base64.RawURLEncoding.Strict()
	teacherName   = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)
	requestID     = regexp.MustCompile(`^[0-9a-f]{16}$`)
	decisionKinds = map[string]bool{DecisionAccept: true, DecisionVideoOnly: true, DecisionDecline: true, DecisionEndAll: true, DecisionStartSession: true, DecisionStopSession: true}
)

// ForRequest reports whether decision kind decides one request.
func ForRequest(kind string) bool {
	return kind == DecisionAccept || kind == DecisionVideoOnly || kind == DecisionDecline
}

// GrantLength is the grant length d asks for: 0 for the box's default,
// lesson true for GrantLesson.
func (d Decision) GrantLength() (length time.Duration, lesson bool, err error) {
	switch d.Grant {
	case "":
		return 0, false, nil
	case GrantLesson:
		return 0, true, nil
	}
	length, err = time.ParseDuration(d.Grant)
	if err != nil || length < time.Minute || length > MaxGrant {
		return 0, false, fmt.Errorf("%w: grant %q: give a length from 1m to %s, or %q", ErrDecisionMalformed, d.Grant, MaxGrant, GrantLesson)
	}
	return length, false, nil
}

// check reports the first field out of shape.
func (d Decision) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrDecisionMalformed, fmt.Sprintf(format, args...))
	}
	switch {
	case !teacherName.MatchString(d.Teacher):
		return bad("teacher %q: 1-64 characters of [A-Za-z0-9._@-]", d.Teacher)
	case d.Device == "" || len(d.Device) > 128 || !utf8.ValidString(d.Device) ||
		strings.IndexFunc(d.Device, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return bad("device %q: 1-128 printable characters", d.Device)
	case !decisionKinds[d.Decision]:
		return bad("decision %q: want accept, video_only, decline, end_all, start_session or stop_session", d.Decision)
	case ForRequest(d.Decision) && !requestID.MatchString(d.Request):
		return bad("%s needs the request id (16 hex digits), got %q", d.Decision, d.Request)
	case !ForRequest(d.Decision) && d.Request != "":
		return bad("%s decides no single request, but names %q", d.Decision, d.Request)
	case d.Grant != "" && d.Decision != DecisionAccept && d.Decision != DecisionVideoOnly:
		return bad("%s takes no grant length", d.Decision)
	case d.Talk && d.Decision != DecisionAccept && d.Decision != DecisionVideoOnly:
		return bad("%s cannot let a viewer speak (talk is for accept and video_only)", d.Decision)
	case d.Anonymise != "" && d.Decision != DecisionStartSession:
		return bad("%s takes no anonymisation mode (anonymise is for start_session)", d.Decision)
	case d.Anonymise != "" && d.Anonymise != AnonymiseOff && d.Anonymise != AnonymiseWhole && d.Anonymise != AnonymiseMasks:
		return bad("anonymise %q: want off, whole or masks", d.Anonymise)
	case len(d.Nonce) < 16 || len(d.Nonce) > 64:
		return bad("nonce: 16-64 characters")
	case d.IssuedAt.IsZero() || !d.Expires.After(d.IssuedAt) || d.Expires.Sub(d.IssuedAt) > MaxDecisionLife:
		return bad("validity %s to %s: it must end after it starts, at most %s later", d.IssuedAt.Format(time.RFC3339), d.Expires.Format(time.RFC3339), MaxDecisionLife)
	}
	_, _, err := d.GrantLength()
	return err
}

// SignDecision encodes d and signs it with the receiver's token key.
func SignDecision(key ed25519.PrivateKey, d Decision) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("sign decision: the key is not an Ed25519 private key")
	}
	if err := d.check(); err != nil {
		return "", fmt.Errorf("sign decision: %w", err)
	}
	payload, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(key, append([]byte(DecisionDomain), payload...))
	return decisionPrefix + decisionB64.EncodeToString(payload) + "." + decisionB64.EncodeToString(sig), nil
}

// MintDecision makes and signs a statement of teacher's decision for
// device, valid from now for life (at most MaxDecisionLife; 0: 30 s), with
// a fresh nonce. request and grant are as in Decision.
func MintDecision(key ed25519.PrivateKey, teacher, device, request, decision, grant string, now time.Time, life time.Duration) (string, Decision, error) {
	return MintDecisionOf(key, Decision{Teacher: teacher, Device: device, Request: request, Decision: decision, Grant: grant}, now, life)
}

// MintDecisionOf makes and signs a statement of d (what it decides: its
// teacher, device, request, decision, grant, talk and anonymise), valid
// from now for life (at most MaxDecisionLife; 0: 30 s), with a fresh
// nonce; d's own validity and nonce are replaced.
func MintDecisionOf(key ed25519.PrivateKey, d Decision, now time.Time, life time.Duration) (string, Decision, error) {
	if life == 0 {
		life = 30 * time.Second
	}
	if life < 0 || life > MaxDecisionLife {
		return "", Decision{}, fmt.Errorf("mint decision: life %s: use up to %s", life, MaxDecisionLife)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", Decision{}, err
	}
	now = now.UTC().Truncate(time.Millisecond)
	d.IssuedAt, d.Expires, d.Nonce = now, now.Add(life), decisionB64.EncodeToString(nonce)
	s, err := SignDecision(key, d)
	return s, d, err
}

// VerifyDecision checks statement's signature with the receiver's token
// key pub, its shape, and that now lies in its validity (DecisionSkew
// allowed either side), and returns what it says. Errors wrap
// ErrDecisionMalformed, ErrDecisionForged or ErrDecisionStale. The caller
// checks the device and spends the nonce.
func VerifyDecision(pub ed25519.PublicKey, statement string, now time.Time) (Decision, error) {
	var d Decision
	if len(pub) != ed25519.PublicKeySize {
		return d, errors.New("verify decision: no receiver token key (is the box enrolled?)")
	}
	_, payload, sig, err := viewtoken.SplitSigned(statement, decisionPrefix, "STATEMENT", maxStatement)
	if err != nil {
		return d, fmt.Errorf("%w: %v", ErrDecisionMalformed, err)
	}
	// The signature first, over the domain and the payload (not, as in a
	// viewer token, over its encoding): nothing unsigned is looked at.
	if !ed25519.Verify(pub, append([]byte(DecisionDomain), payload...), sig) {
		return d, ErrDecisionForged
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil || dec.More() {
		return Decision{}, fmt.Errorf("%w: not the expected JSON object", ErrDecisionMalformed)
	}
	if err := d.check(); err != nil {
		return Decision{}, err
	}
	if now.Before(d.IssuedAt.Add(-DecisionSkew)) || now.After(d.Expires.Add(DecisionSkew)) {
		return Decision{}, fmt.Errorf("%w: valid %s to %s, the box's clock says %s", ErrDecisionStale,
			d.IssuedAt.Format(time.RFC3339), d.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return d, nil
}

// ForgetAfter is when the box may forget d's nonce: once no clock within
// DecisionSkew could take d as valid.
func (d Decision) ForgetAfter() time.Time { return d.Expires.Add(DecisionSkew) }
