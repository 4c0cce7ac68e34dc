package consent

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// States of a request.
const (
	StatePending   = "pending"   // waiting for the teacher
	StateAccepted  = "accepted"  // a grant; live until Expires unless it ended earlier
	StateDenied    = "denied"    // the teacher said no
	StateExpired   = "expired"   // the grant ran out, or its recording session ended
	StateRevoked   = "revoked"   // the teacher ended the grant
	StateCancelled = "cancelled" // still pending when the recording session ended
)

// Reasons a Denied error carries. Declined, revoked and ended hold for
// the viewer's cooldown (Options.Cooldown): asking again in it is answered
// with the same reason and creates no request.
const (
	ReasonPending   = "pending"    // a request waits for the teacher's decision
	ReasonNoSession = "no session" // nothing is being recorded, so there is nothing to watch
	ReasonDeclined  = "declined"   // the teacher declined the viewer's request
	ReasonRevoked   = "revoked"    // the teacher ended the viewer's grant
	ReasonEnded     = "ended"      // the teacher ended all viewing
)

// Reasons Watch delivers when a grant ends.
const (
	EndRevoked = "revoked"
	EndExpired = "expired"
	EndSession = "session ended"
	EndAll     = "ended"         // the teacher ended all viewing (EndAllViewing)
	EndNoGrant = "no grant"      // Watch found no live grant
	EndClosed  = "ledger closed" // the ledger was closed; treat it as revoked
)

// Defaults for Options.
const (
	DefaultTTL      = 60 * time.Minute
	MaxTTL          = 8 * time.Hour
	DefaultCooldown = 10 * time.Minute
)

// UntilSessionEnd is the grant length that lasts until the recording
// session ends (still at most Options.MaxTTL).
const UntilSessionEnd time.Duration = 1<<63 - 1

// MaxNonces bounds the statement nonces remembered at once (UseNonce).
const MaxNonces = 4096

// Errors callers branch on.
var (
	ErrUnknownRequest = errors.New("no such consent request (check the id against the list of requests)")
	ErrNotPending     = errors.New("consent request is not pending (only a pending request can be accepted or denied)")
	ErrNoGrant        = errors.New("no live grant")
	ErrNoSession      = errors.New("no recording session is running")
	ErrBadViewer      = errors.New("viewer names are 1-128 printable characters")
	ErrClosed         = errors.New("consent ledger is closed")
	ErrNoDecider      = errors.New("consent decision without a decider (say who decided: the caller's uid, an account, or ByDaemon)")
	ErrReplayed       = errors.New("this statement was already used (its nonce is spent)")
	ErrTooManyNonces  = errors.New("too many decision statements in their validity window; try again in a minute")
)

// ByDaemon is the decider of what the daemon does itself: expiries, and
// grants it ends because a session ended or the privacy indicator failed.
const ByDaemon = "daemon"

// ByViewer names a viewer as the one who did what an entry records: a
// request, a join, a leave.
func ByViewer(name string) string { return "viewer:" + name }

// ByTeacher names a teacher account of the receiver that decided through a
// signed statement.
func ByTeacher(name string) string { return "teacher:" + name }

// Options configure a Ledger.
type Options struct {
	Audit      *audit.Log       // log every event is appended to (required)
	DefaultTTL time.Duration    // grant length when Accept gets 0; default 60m
	MaxTTL     time.Duration    // longest grant; default 8h
	Cooldown   time.Duration    // a declined, revoked or ended viewer's asks are refused this long; default 10m
	Now        func() time.Time // default time.Now; tests inject a clock
	Logger     *slog.Logger
}

// Request is one viewer's request and, once accepted, the grant it became.
type Request struct {
	ID      string    `json:"id"`
	Viewer  string    `json:"viewer"`
	Audio   bool      `json:"audio"`          // asked for audio; once accepted: audio is granted
	Talk    bool      `json:"talk,omitempty"` // once accepted: the viewer may speak to the teacher (talk-back)
	Created time.Time `json:"created"`
	State   string    `json:"state"` // one of the State constants
	Decided time.Time `json:"decided,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`   // when an accepted grant ended early or was recorded as expired
	Reason  string    `json:"reason,omitempty"` // why it ended: EndRevoked, EndExpired, EndSession or EndAll
}

// Grant is a live permission for one viewer to watch.
type Grant struct {
	ID      string // the request it was granted for
	Viewer  string
	Audio   bool // audio may be sent as well as video
	Talk    bool // the viewer may speak to the teacher (talk-back)
	Expires time.Time
}

// Terms are what Accept grants.
type Terms struct {
	// TTL is the grant's length (0: Options.DefaultTTL; UntilSessionEnd).
	TTL time.Duration
	// NoAudio withholds audio; a request that did not ask for audio never
	// gets it.
	NoAudio bool
	// Talk lets the viewer speak to the teacher (talk-back) while the
	// grant lasts.
	Talk bool
}

// Denied is the error Ask returns when viewer may not watch (yet).
type Denied struct {
	Reason  string    // one of the Reason constants
	Request string    // id of the pending request, or of the one declined, revoked or ended
	Until   time.Time // end of the cooldown (declined, revoked, ended)
}

func (d *Denied) Error() string {
	if d.Request != "" {
		return fmt.Sprintf("consent: %s (request %s)", d.Reason, d.Request)
	}
	return "consent: " + d.Reason
}

// record is a Request as stored: Seq orders requests created in the same
// instant.
type record struct {
	Request
	Seq uint64 `json:"seq"`
}

// session is the recording session state, stored so that a restart keeps
// it until the daemon says otherwise.
type session struct {
	Running bool      `json:"running"`
	End     time.Time `json:"end,omitzero"` // zero: open-ended
}

// cooldown is a viewer's refusal that holds until Until: asking again
// before then is answered with Reason and creates no request.
type cooldown struct {
	Reason  string    `json:"reason"`  // ReasonDeclined, ReasonRevoked or ReasonEnded
	Request string    `json:"request"` // the request declined, revoked or ended; accepting it again lifts the cooldown
	By      string    `json:"by"`
	Until   time.Time `json:"until"`
}

var (
	bucketRequests  = []byte("requests")
	bucketMeta      = []byte("meta")
	bucketCooldowns = []byte("cooldowns") // by viewer
	bucketNonces    = []byte("nonces")    // spent statement nonces, value: RFC 3339 time they may be forgotten
	keySession      = []byte("session")
)

// Ledger is the consent ledger. It is safe for concurrent use.
type Ledger struct {
	path string
	db   *bolt.DB
	opts Options
	log  *slog.Logger
	kick chan struct{} // wakes Run when the next deadline may have moved

	mu       sync.Mutex
	closed   bool
	session  session
	active   map[string]*record             // pending and accepted requests by id
	cool     map[string]cooldown            // by viewer
	nonces   map[string]time.Time           // spent nonces until they may be forgotten
	maxNonce int                            // MaxNonces; tests lower it
	watchers map[string]map[*watcher]string // by grant id; value: the viewer
	decided  chan struct{}                  // closed and replaced whenever a pending request is decided
	changes  map[chan struct{}]struct{}     // Changes subscribers (changes.go)
	speaking string                         // the viewer whose voice is played (TalkOpened), if any
}

type watcher struct {
	ch   chan string
	done bool
}

// Open opens (creating, 0600) the ledger at path. Grants that expired
// while the ledger was closed are recorded as expired (and audited) now.
func Open(path string, opts Options) (*Ledger, error) {
	if opts.Audit == nil {
		return nil, errors.New("consent ledger: Options.Audit is required (every consent event must be audited)")
	}
	if opts.DefaultTTL < 0 || opts.MaxTTL < 0 {
		return nil, fmt.Errorf("consent ledger: negative TTL (DefaultTTL %v, MaxTTL %v)", opts.DefaultTTL, opts.MaxTTL)
	}
	if opts.MaxTTL == 0 {
		opts.MaxTTL = MaxTTL
	}
	if opts.DefaultTTL == 0 {
		opts.DefaultTTL = min(DefaultTTL, opts.MaxTTL)
	}
	if opts.DefaultTTL > opts.MaxTTL {
		return nil, fmt.Errorf("consent ledger: DefaultTTL %v is longer than MaxTTL %v", opts.DefaultTTL, opts.MaxTTL)
	}
	if opts.Cooldown < 0 {
		return nil, fmt.Errorf("consent ledger: negative Cooldown %v", opts.Cooldown)
	}
	if opts.Cooldown == 0 {
		opts.Cooldown = DefaultCooldown
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The timeout turns a second opener (another daemon) into an error
	// instead of a hang on the file lock.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open consent ledger %s: %w (is another uploadbox daemon using it?)", path, err)
	}
	l := &Ledger{
		path:     path,
		db:       db,
		opts:     opts,
		log:      log.With("component", "consent"),
		kick:     make(chan struct{}, 1),
		active:   map[string]*record{},
		cool:     map[string]cooldown{},
		nonces:   map[string]time.Time{},
		maxNonce: MaxNonces,
		watchers: map[string]map[*watcher]string{},
		decided:  make(chan struct{}),
	}
	if err := l.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open consent ledger %s: %w", path, err)
	}
	l.mu.Lock()
	err = l.sweepLocked(l.now())
	l.mu.Unlock()
	if err != nil {
		// The grants are ended in memory, so nothing is revived; the
		// failure to record that is logged, not fatal.
		l.log.Error("recording expired grants failed", "err", err)
	}
	return l, nil
}

// load reads the session and the pending and accepted requests.
func (l *Ledger) load() error {
	return l.db.Update(func(tx *bolt.Tx) error {
		reqs, err := tx.CreateBucketIfNotExists(bucketRequests)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySession); v != nil {
			if err := json.Unmarshal(v, &l.session); err != nil {
				return fmt.Errorf("damaged session record: %w", err)
			}
		}
		cools, err := tx.CreateBucketIfNotExists(bucketCooldowns)
		if err != nil {
			return err
		}
		err = cools.ForEach(func(k, v []byte) error {
			var c cooldown
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("cooldown of %s: damaged record: %w", k, err)
			}
			l.cool[string(k)] = c
			return nil
		})
		if err != nil {
			return err
		}
		nonces, err := tx.CreateBucketIfNotExists(bucketNonces)
		if err != nil {
			return err
		}
		err = nonces.ForEach(func(k, v []byte) error {
			t, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return fmt.Errorf("nonce %x: damaged record: %w", k, err)
			}
			l.nonces[string(k)] = t
			return nil
		})
		if err != nil {
			return err
		}
		return reqs.ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("request %s: damaged record: %w", k, err)
			}
			if r.State == StatePending || r.State == StateAccepted {
				l.active[r.ID] = &r
			}
			return nil
		})
	})
}

// Close ends every watch (reason EndClosed) and closes the database.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for id := range l.watchers {
		l.notifyLocked(id, EndClosed)
	}
	l.decidedLocked()
	l.wake()
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close consent ledger %s: %w", l.path, err)
	}
	return nil
}

// now returns the current time in UTC without a monotonic reading, so
// that times compare the same before and after they are stored.
func (l *Ledger) now() time.Time { return l.opts.Now().UTC() }

func checkViewer(viewer string) error {
	if viewer == "" || len(viewer) > 128 || !utf8.ValidString(viewer) ||
		strings.IndexFunc(viewer, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: %q", ErrBadViewer, viewer)
	}
	return nil
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// sessionRunningLocked says whether a recording session runs at now.
func (l *Ledger) sessionRunningLocked(now time.Time) bool {
	return l.session.Running && (l.session.End.IsZero() || now.Before(l.session.End))
}

// liveLocked returns viewer's live grant, if any. Callers sweep first.
func (l *Ledger) liveLocked(viewer string, now time.Time) *record {
	for _, r := range l.active {
		if r.Viewer == viewer && r.State == StateAccepted && now.Before(r.Expires) {
			return r
		}
	}
	return nil
}

func (l *Ledger) pendingLocked(viewer string) *record {
	for _, r := range l.active {
		if r.Viewer == viewer && r.State == StatePending {
			return r
		}
	}
	return nil
}

// sortedActiveLocked returns the active records oldest first, so events
// for several of them are audited in a stable order.
func (l *Ledger) sortedActiveLocked() []*record {
	rs := make([]*record, 0, len(l.active))
	for _, r := range l.active {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(a.Seq, b.Seq) })
	return rs
}

// Ask is what the live view calls before it sends viewer any media;
// wantAudio says the viewer asks for audio too. With a live grant for
// viewer it returns the grant (Audio only if both granted and wanted).
// Otherwise it returns a *Denied error and, unless one is already pending
// for viewer, creates a pending request for the teacher to decide. While
// no recording session runs the reason is ReasonNoSession, and while the
// viewer's cooldown holds (declined, revoked, ended) it is that reason;
// neither creates a request. Any other error (bad viewer name, audit log
// unwritable) also means: do not send media.
func (l *Ledger) Ask(viewer string, wantAudio bool) (Grant, error) {
	if err := checkViewer(viewer); err != nil {
		return Grant{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Grant{}, ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	if !l.sessionRunningLocked(now) {
		return Grant{}, &Denied{Reason: ReasonNoSession}
	}
	if g := l.liveLocked(viewer, now); g != nil {
		return Grant{ID: g.ID, Viewer: g.Viewer, Audio: g.Audio && wantAudio, Talk: g.Talk, Expires: g.Expires}, nil
	}
	if c, ok := l.cooldownLocked(viewer, now); ok {
		return Grant{}, &Denied{Reason: c.Reason, Request: c.Request, Until: c.Until}
	}
	if p := l.pendingLocked(viewer); p != nil {
		return Grant{}, &Denied{Reason: ReasonPending, Request: p.ID}
	}
	id, err := newID()
	if err != nil {
		return Grant{}, fmt.Errorf("consent request for %s: %w", viewer, err)
	}
	r := &record{Request: Request{ID: id, Viewer: viewer, Audio: wantAudio, Created: now, State: StatePending}}
	err = l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRequests)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		r.Seq = seq
		if err := put(tx, r); err != nil {
			return err
		}
		// Audited inside the transaction: a request that cannot be
		// audited is not stored.
		return l.auditLocked("consent.request", viewer, ByViewer(viewer), fmt.Sprintf("request=%s audio=%t", id, wantAudio), now)
	})
	if err != nil {
		return Grant{}, fmt.Errorf("consent request for %s: %w", viewer, err)
	}
	l.active[id] = r
	l.changedLocked()
	l.log.Info("consent requested", "viewer", viewer, "request", id, "audio", wantAudio)
	return Grant{}, &Denied{Reason: ReasonPending, Request: id}
}

// List returns every request, newest first. The pending ones are what the
// teacher decides on.
func (l *Ledger) List() ([]Request, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	l.sweepAndLogLocked(l.now())
	var rs []record
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRequests).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("request %s: damaged record: %w", k, err)
			}
			rs = append(rs, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list consent requests in %s: %w", l.path, err)
	}
	slices.SortFunc(rs, func(a, b record) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(b.Seq, a.Seq)
	})
	out := make([]Request, len(rs))
	for i, r := range rs {
		out[i] = r.Request
	}
	return out, nil
}

// Get returns the request with id.
func (l *Ledger) Get(id string) (Request, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Request{}, ErrClosed
	}
	l.sweepAndLogLocked(l.now())
	r, err := l.lookupLocked(id)
	return r.Request, err
}

// lookupLocked reads the stored request id.
func (l *Ledger) lookupLocked(id string) (record, error) {
	var r record
	err := l.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRequests).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrUnknownRequest, id)
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("request %s: damaged record: %w", id, err)
		}
		return nil
	})
	return r, err
}

// pendingRequestLocked returns the pending request id, or an error naming
// it when it is unknown or no longer pending.
func (l *Ledger) pendingRequestLocked(id string) (*record, error) {
	if r, ok := l.active[id]; ok {
		if r.State == StatePending {
			return r, nil
		}
		return nil, fmt.Errorf("%w: request %s is %s", ErrNotPending, id, r.State)
	}
	r, err := l.lookupLocked(id)
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: request %s is %s", ErrNotPending, id, r.State)
}

// Accept is AcceptWith without talk-back.
func (l *Ledger) Accept(id string, ttl time.Duration, noAudio bool, by string) (Grant, error) {
	return l.AcceptWith(id, Terms{TTL: ttl, NoAudio: noAudio}, by)
}

// AcceptWith turns the pending request id into a grant on terms t, lasting
// t.TTL, cut short by the end of the recording session and by
// Options.MaxTTL. by names who decided (e.g. "uid:1000(alice)"); it is
// audited, with "talk=yes" when the grant lets the viewer speak. The
// request a viewer's cooldown holds (the one declined, revoked or ended)
// may be accepted again, which lifts the cooldown: that is how a teacher
// lets in a viewer they refused.
func (l *Ledger) AcceptWith(id string, t Terms, by string) (Grant, error) {
	ttl, noAudio := t.TTL, t.NoAudio
	if by == "" {
		return Grant{}, fmt.Errorf("accept consent request %s: %w", id, ErrNoDecider)
	}
	if ttl < 0 {
		return Grant{}, fmt.Errorf("accept consent request %s: negative duration %v", id, ttl)
	}
	if ttl == 0 {
		ttl = l.opts.DefaultTTL
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Grant{}, ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	r, err := l.acceptableLocked(id, now)
	if err != nil {
		return Grant{}, fmt.Errorf("accept consent request: %w", err)
	}
	if !l.sessionRunningLocked(now) {
		return Grant{}, fmt.Errorf("accept consent request %s: %w", id, ErrNoSession)
	}
	expires := now.Add(min(ttl, l.opts.MaxTTL))
	if end := l.session.End; !end.IsZero() && end.Before(expires) {
		expires = end
	}
	nr := *r
	nr.State, nr.Decided, nr.Expires = StateAccepted, now, expires
	nr.Ended, nr.Reason = time.Time{}, ""
	nr.Audio = r.Audio && !noAudio
	nr.Talk = t.Talk
	detail := fmt.Sprintf("request=%s audio=%t expires=%s%s", id, nr.Audio, expires.Format(time.RFC3339), talkDetail(nr.Talk))
	if r.State != StatePending {
		detail += " was=" + r.State
	}
	err = l.db.Update(func(tx *bolt.Tx) error {
		if err := put(tx, &nr); err != nil {
			return err
		}
		if r.State != StatePending {
			if err := tx.Bucket(bucketCooldowns).Delete([]byte(nr.Viewer)); err != nil {
				return err
			}
		}
		// A grant that cannot be audited is not given.
		return l.auditLocked("consent.accept", nr.Viewer, by, detail, now)
	})
	if err != nil {
		return Grant{}, fmt.Errorf("accept consent request %s: %w", id, err)
	}
	if r.State != StatePending {
		delete(l.cool, nr.Viewer)
	}
	l.active[id] = &nr
	l.decidedLocked()
	l.wake()
	l.log.Info("consent granted", "viewer", nr.Viewer, "request", id, "audio", nr.Audio, "talk", nr.Talk, "expires", expires, "by", by)
	return Grant{ID: id, Viewer: nr.Viewer, Audio: nr.Audio, Talk: nr.Talk, Expires: expires}, nil
}

// talkDetail is the audit detail's mark of a grant that lets its viewer
// speak; empty for one that does not.
func talkDetail(talk bool) string {
	if talk {
		return " talk=yes"
	}
	return ""
}

// acceptableLocked returns request id if it is pending, or if it is the
// request viewer's cooldown holds (accepting it again lifts the cooldown);
// otherwise an error naming it.
func (l *Ledger) acceptableLocked(id string, now time.Time) (*record, error) {
	r, err := l.pendingRequestLocked(id)
	if !errors.Is(err, ErrNotPending) {
		return r, err
	}
	stored, lerr := l.lookupLocked(id)
	if lerr != nil {
		return nil, err
	}
	if c, ok := l.cooldownLocked(stored.Viewer, now); ok && c.Request == id && !l.hasActiveLocked(stored.Viewer) {
		return &stored, nil
	}
	return nil, err
}

// hasActiveLocked says whether viewer has a pending request or a grant.
func (l *Ledger) hasActiveLocked(viewer string) bool {
	for _, r := range l.active {
		if r.Viewer == viewer {
			return true
		}
	}
	return false
}

// cooldownLocked returns viewer's cooldown if it still holds at now, and
// forgets one that ran out.
func (l *Ledger) cooldownLocked(viewer string, now time.Time) (cooldown, bool) {
	c, ok := l.cool[viewer]
	if !ok {
		return c, false
	}
	if now.Before(c.Until) {
		return c, true
	}
	delete(l.cool, viewer)
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCooldowns).Delete([]byte(viewer)) }); err != nil {
		l.log.Warn("forgetting a cooldown that ran out failed", "viewer", viewer, "err", err)
	}
	return c, false
}

// coolLocked starts viewer's cooldown: until it ends, Ask answers reason
// and creates no request. What the daemon does itself (ByDaemon) starts
// none: only a person's no is one.
func (l *Ledger) coolLocked(viewer, reason, request, by string, now time.Time) error {
	if by == ByDaemon {
		return nil
	}
	c := cooldown{Reason: reason, Request: request, By: by, Until: now.Add(l.opts.Cooldown)}
	// Memory first: the refusal holds in this process even if storing fails.
	l.cool[viewer] = c
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCooldowns).Put([]byte(viewer), v) })
}

// liftCooldownsLocked forgets every cooldown.
func (l *Ledger) liftCooldownsLocked() error {
	if len(l.cool) == 0 {
		return nil
	}
	clear(l.cool)
	return l.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketCooldowns); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketCooldowns)
		return err
	})
}

// Deny refuses the pending request id; by names who decided. Until
// Options.Cooldown has passed the viewer's asks are answered
// ReasonDeclined and create no request.
func (l *Ledger) Deny(id, by string) error {
	if by == "" {
		return fmt.Errorf("deny consent request %s: %w", id, ErrNoDecider)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	r, err := l.pendingRequestLocked(id)
	if err != nil {
		return fmt.Errorf("deny consent request: %w", err)
	}
	nr := *r
	nr.State, nr.Decided = StateDenied, now
	err = errors.Join(l.coolLocked(nr.Viewer, ReasonDeclined, id, by, now),
		l.finishLocked(&nr, "consent.deny", by, fmt.Sprintf("request=%s", id), now))
	l.decidedLocked()
	if err != nil {
		return fmt.Errorf("deny consent request %s: %w", id, err)
	}
	l.log.Info("consent denied", "viewer", nr.Viewer, "request", id, "by", by)
	return nil
}

// decidedLocked wakes every AwaitDecision.
func (l *Ledger) decidedLocked() {
	close(l.decided)
	l.decided = make(chan struct{})
	l.changedLocked()
}

// AwaitDecision waits until request id is no longer pending (accepted,
// denied, or cancelled because the session ended) or ctx ends. It lets a
// viewer's offer wait for the teacher instead of polling; whether the
// viewer may watch is still decided by Ask.
func (l *Ledger) AwaitDecision(ctx context.Context, id string) error {
	for {
		l.mu.Lock()
		r, ok := l.active[id]
		pending := ok && r.State == StatePending && !l.closed
		ch := l.decided
		l.mu.Unlock()
		if !pending {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Revoke ends every live grant of viewer now; watchers get EndRevoked.
// by names who decided; unless it is ByDaemon, the viewer's asks are
// answered ReasonRevoked for Options.Cooldown. It returns an error
// wrapping ErrNoGrant if viewer has none.
func (l *Ledger) Revoke(viewer, by string) error {
	if err := checkViewer(viewer); err != nil {
		return err
	}
	if by == "" {
		return fmt.Errorf("revoke consent of %s: %w", viewer, ErrNoDecider)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	var errs []error
	n := 0
	for _, r := range l.sortedActiveLocked() {
		if r.Viewer != viewer || r.State != StateAccepted {
			continue
		}
		n++
		errs = append(errs, l.coolLocked(viewer, ReasonRevoked, r.ID, by, now),
			l.endLocked(r, StateRevoked, EndRevoked, "consent.revoke", by, now))
	}
	if n == 0 {
		return fmt.Errorf("revoke consent: %w for viewer %q", ErrNoGrant, viewer)
	}
	l.log.Info("consent revoked", "viewer", viewer, "grants", n, "by", by)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("revoke consent of %s (the grant is ended, recording it failed): %w", viewer, err)
	}
	return nil
}

// EndAllViewing ends every live grant now (watchers get EndAll) and
// declines every pending request; by names who decided. Each viewer
// concerned is answered ReasonEnded for Options.Cooldown. It returns how
// many grants and requests it ended; none is not an error.
func (l *Ledger) EndAllViewing(by string) (int, error) {
	if by == "" {
		return 0, fmt.Errorf("end all viewing: %w", ErrNoDecider)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	var errs []error
	n := 0
	l.endActiveLocked(StateRevoked, StateDenied, EndAll, "consent.end_all", by, "declined (all viewing ended)", now, func(r *record) error {
		n++
		return l.coolLocked(r.Viewer, ReasonEnded, r.ID, by, now)
	}, &errs)
	l.log.Info("all viewing ended", "grants_and_requests", n, "by", by)
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("end all viewing (the grants are ended, recording it failed): %w", err)
	}
	return n, nil
}

// Watch returns a channel that receives the reason (EndRevoked,
// EndExpired, EndSession, EndClosed) and is then closed when viewer's
// current grant ends; with no live grant, EndNoGrant at once. Expiry is
// delivered by Run, which must be running. cancel stops the watch (the
// channel is then left open); it may be called more than once.
func (l *Ledger) Watch(viewer string) (ended <-chan string, cancel func()) {
	w := &watcher{ch: make(chan string, 1)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		w.finish(EndClosed)
		return w.ch, func() {}
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	g := l.liveLocked(viewer, now)
	if g == nil {
		w.finish(EndNoGrant)
		return w.ch, func() {}
	}
	ws := l.watchers[g.ID]
	if ws == nil {
		ws = map[*watcher]string{}
		l.watchers[g.ID] = ws
	}
	ws[w] = viewer
	id := g.ID
	return w.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if ws := l.watchers[id]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(l.watchers, id)
			}
		}
	}
}

func (w *watcher) finish(reason string) {
	if w.done {
		return
	}
	w.done = true
	w.ch <- reason // buffered for exactly this one send
	close(w.ch)
}

// notifyLocked ends every watch of grant id.
func (l *Ledger) notifyLocked(id, reason string) {
	for w := range l.watchers[id] {
		w.finish(reason)
	}
	delete(l.watchers, id)
	l.changedLocked()
}

// Joined records that viewer's peer connection session started (by the
// viewer).
func (l *Ledger) Joined(viewer, session string) {
	l.auditOnly("live.join", viewer, ByViewer(viewer), "session="+session)
}

// Left records that viewer's peer connection session ended, why ("viewer
// left", "revoked", "replaced", …) and by whom: the viewer (ByViewer) or
// the daemon that closed it (ByDaemon; the consent entry before it names
// who revoked).
func (l *Ledger) Left(viewer, session, reason, by string) {
	l.auditOnly("live.leave", viewer, by, "session="+session+" reason="+strings.ReplaceAll(reason, " ", "_"))
}

// TalkOpened records that the box started playing viewer's voice (the
// viewer took the floor in live session session); Snapshot names viewer
// as speaking until TalkClosed.
func (l *Ledger) TalkOpened(viewer, session string) {
	l.mu.Lock()
	l.speaking = viewer
	l.mu.Unlock()
	l.auditOnly("live.talk_open", viewer, ByViewer(viewer), "session="+session)
}

// TalkClosed records that the box stopped playing viewer's voice after
// d, and why ("silence", "revoked", "viewer left", …).
func (l *Ledger) TalkClosed(viewer, session, reason string, d time.Duration) {
	l.mu.Lock()
	if l.speaking == viewer {
		l.speaking = ""
	}
	l.mu.Unlock()
	l.auditOnly("live.talk_close", viewer, ByDaemon, fmt.Sprintf("session=%s duration=%s reason=%s", session, d.Round(time.Millisecond), strings.ReplaceAll(reason, " ", "_")))
}

func (l *Ledger) auditOnly(event, viewer, by, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.auditLocked(event, viewer, by, detail, l.now()); err != nil {
		l.log.Error("audit failed", "event", event, "viewer", viewer, "err", err)
	}
	l.changedLocked() // a viewer joined or left
}

// SessionStarted records that a recording session runs until end (zero:
// open-ended). Live grants are cut short to end.
func (l *Ledger) SessionStarted(end time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if !end.IsZero() {
		end = end.UTC()
	}
	l.session = session{Running: true, End: end}
	// Memory first: the cap holds in this process even if storing fails.
	var capped []*record
	for _, r := range l.active {
		if r.State == StateAccepted && !end.IsZero() && end.Before(r.Expires) {
			r.Expires = end
			capped = append(capped, r)
		}
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		for _, r := range capped {
			if err := put(tx, r); err != nil {
				return err
			}
		}
		return putSession(tx, l.session)
	})
	if err != nil {
		l.log.Error("recording session start failed", "err", err)
	}
	l.wake()
	l.changedLocked()
	l.log.Info("recording session started", "end", end)
}

// SessionEnded ends every live grant now (EndSession, audited
// "consent.end" with by, who ended the session) and cancels pending
// requests. Until the next SessionStarted, Ask returns ReasonNoSession.
// A session a person stopped (by is not ByDaemon) lifts every cooldown:
// the next lesson starts fresh. One the daemon ended (its time was up, the
// daemon stopped or restarted) keeps them, so that a restart never undoes
// a teacher's no.
func (l *Ledger) SessionEnded(by string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	now := l.now()
	// Said only when a session ran (the daemon calls this at every start).
	running := l.session.Running
	l.sweepAndLogLocked(now)
	err := l.endSessionLocked(now, by)
	if by != ByDaemon {
		err = errors.Join(err, l.liftCooldownsLocked())
	}
	if err != nil {
		l.log.Error("recording session end failed", "err", err)
	}
	if running {
		l.log.Info("recording session ended")
	}
}

func (l *Ledger) endSessionLocked(now time.Time, by string) error {
	l.session = session{}
	err := l.db.Update(func(tx *bolt.Tx) error { return putSession(tx, l.session) })
	errs := []error{err}
	l.endActiveLocked(StateExpired, StateCancelled, EndSession, "consent.end", by, "cancelled (session ended)", now, nil, &errs)
	return errors.Join(errs...)
}

// endActiveLocked ends every live grant (as grantState) and every pending
// request (as pendingState, audited with what), with reason, audited as
// event by by, after calling each (if set) for it; errors are appended to
// errs. It wakes every AwaitDecision.
func (l *Ledger) endActiveLocked(grantState, pendingState, reason, event, by, what string, now time.Time, each func(*record) error, errs *[]error) {
	for _, r := range l.sortedActiveLocked() {
		if each != nil {
			*errs = append(*errs, each(r))
		}
		switch r.State {
		case StateAccepted:
			*errs = append(*errs, l.endLocked(r, grantState, reason, event, by, now))
		case StatePending:
			nr := *r
			nr.State, nr.Ended, nr.Reason = pendingState, now, reason
			if pendingState == StateDenied {
				nr.Decided = now
			}
			*errs = append(*errs, l.finishLocked(&nr, event, by, fmt.Sprintf("request=%s %s", r.ID, what), now))
		}
	}
	l.decidedLocked()
}

// endLocked ends the accepted grant r: watchers are told first, so media
// stops even if recording the end fails.
func (l *Ledger) endLocked(r *record, state, reason, event, by string, now time.Time) error {
	nr := *r
	nr.State, nr.Ended, nr.Reason = state, now, reason
	if reason == EndSession && now.Before(nr.Expires) {
		nr.Expires = now
	}
	l.notifyLocked(r.ID, reason)
	detail := fmt.Sprintf("request=%s audio=%t expires=%s%s", r.ID, r.Audio, r.Expires.Format(time.RFC3339), talkDetail(r.Talk))
	return l.finishLocked(&nr, event, by, detail, now)
}

// finishLocked moves a request out of the active set and stores and
// audits its final state. The in-memory state changes even if storing or
// auditing fails: every final state is more restrictive than before.
func (l *Ledger) finishLocked(nr *record, event, by, detail string, now time.Time) error {
	delete(l.active, nr.ID)
	err := l.db.Update(func(tx *bolt.Tx) error { return put(tx, nr) })
	return errors.Join(err, l.auditLocked(event, nr.Viewer, by, detail, now))
}

// sweepLocked records every grant whose time is up as expired, and ends
// the session when its end has passed.
func (l *Ledger) sweepLocked(now time.Time) error {
	var errs []error
	for _, r := range l.sortedActiveLocked() {
		if r.State == StateAccepted && !now.Before(r.Expires) {
			errs = append(errs, l.endLocked(r, StateExpired, EndExpired, "consent.expire", ByDaemon, now))
		}
	}
	if l.session.Running && !l.sessionRunningLocked(now) {
		errs = append(errs, l.endSessionLocked(now, ByDaemon))
	}
	return errors.Join(errs...)
}

func (l *Ledger) sweepAndLogLocked(now time.Time) {
	if err := l.sweepLocked(now); err != nil {
		l.log.Error("recording expired grants failed", "err", err)
	}
}

// nextDeadlineLocked is the earliest grant expiry or session end.
func (l *Ledger) nextDeadlineLocked() (time.Time, bool) {
	var next time.Time
	for _, r := range l.active {
		if r.State == StateAccepted && (next.IsZero() || r.Expires.Before(next)) {
			next = r.Expires
		}
	}
	if l.session.Running && !l.session.End.IsZero() && (next.IsZero() || l.session.End.Before(next)) {
		next = l.session.End
	}
	return next, !next.IsZero()
}

func (l *Ledger) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// maxWait bounds Run's sleep so that a wall-clock step (NTP) delays an
// expiry notice by at most this much.
const maxWait = time.Minute

// Run ends grants on time: it sleeps until the next expiry (or session
// end), records it, audits "consent.expire" and notifies the watchers. It
// returns nil when ctx is cancelled or the ledger is closed.
func (l *Ledger) Run(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil
		}
		l.sweepAndLogLocked(l.now())
		next, ok := l.nextDeadlineLocked()
		l.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if ok {
			timer = time.NewTimer(min(max(next.Sub(l.now()), 0), maxWait))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-fire:
		case <-l.kick:
			if timer != nil {
				timer.Stop()
			}
		}
	}
}

// UseNonce spends a decision statement's nonce: ErrReplayed if it was
// spent before. It is remembered (in the ledger's file, so across
// restarts) until forget, when the statement has expired anyway; at most
// MaxNonces at once (ErrTooManyNonces).
func (l *Ledger) UseNonce(nonce string, forget time.Time) error {
	if nonce == "" || len(nonce) > 128 {
		return errors.New("statement nonce: want 1-128 bytes")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	now := l.now()
	if _, ok := l.nonces[nonce]; ok {
		return ErrReplayed
	}
	var gone []string
	for n, t := range l.nonces {
		if !now.Before(t) {
			gone = append(gone, n)
		}
	}
	if len(l.nonces)-len(gone) >= l.maxNonce {
		return ErrTooManyNonces
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNonces)
		for _, n := range gone {
			if err := b.Delete([]byte(n)); err != nil {
				return err
			}
		}
		return b.Put([]byte(nonce), []byte(forget.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		// Not spent: refused, so that it cannot be used twice.
		return fmt.Errorf("record statement nonce in %s: %w", l.path, err)
	}
	for _, n := range gone {
		delete(l.nonces, n)
	}
	l.nonces[nonce] = forget
	return nil
}

// auditLocked appends event about viewer; by is who did or decided it.
func (l *Ledger) auditLocked(event, viewer, by, detail string, now time.Time) error {
	_, err := l.opts.Audit.Append(audit.Entry{Time: now, Event: event, Identity: viewer, Source: "local", By: by, Outcome: "ok", Detail: detail})
	if err != nil {
		return fmt.Errorf("audit %s of %s: %w", event, viewer, err)
	}
	return nil
}

func put(tx *bolt.Tx, r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRequests).Put([]byte(r.ID), v)
}

func putSession(tx *bolt.Tx, s session) error {
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keySession, v)
}

// VerifyAudit checks the hash chain of the audit log at path; a broken
// chain is an *audit.VerifyError naming the first bad entry.
func VerifyAudit(path string) (audit.Report, error) {
	return audit.VerifyFile(path)
}
