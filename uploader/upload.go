package uploader

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/netfail"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// Result is what happened to one segment.
type Result struct {
	Name     string
	Size     int64
	Outcome  string // OK or TRUNCATED, as the receiver classified it
	Repeated bool   // the receiver had it already (a commit after a crash)
	Key      string // where the receiver stored it
	// Quarantined, if set, is why the receiver refused the segment for
	// good: it stays on disk in the quarantined state, nothing was wiped.
	Quarantined *spool.Refusal
}

// Summary is the result of one drain.
type Summary struct {
	Segments    int // committed and wiped
	Bytes       int64
	Quarantined int   // refused for good and set aside
	BytesSent   int64 // including re-sent bytes after faults
	Retries     int64
}

// Uploader drains a spool to the receiver.
type Uploader struct {
	st     *State
	sp     *spool.Spool
	http   *http.Client
	tus    *tus.Client
	log    *slog.Logger
	commit *url.URL
	opts   options
}

type options struct {
	backoffMax    time.Duration
	onCommit      func(time.Duration)
	commitTimeout time.Duration
}

// Option adjusts an Uploader.
type Option func(*options)

// WithBackoffMax bounds the wait between two upload attempts.
func WithBackoffMax(d time.Duration) Option { return func(o *options) { o.backoffMax = d } }

// WithCommitObserver is called with the latency of every successful commit
// (request to verified receipt), for metrics.
func WithCommitObserver(f func(time.Duration)) Option { return func(o *options) { o.onCommit = f } }

// New wires an uploader from an enrolled state and an open spool.
func New(st *State, sp *spool.Spool, log *slog.Logger, opts ...Option) *Uploader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	hc := st.HTTPClient()
	return &Uploader{
		st:     st,
		sp:     sp,
		http:   hc,
		tus:    tus.NewClient(hc, st.Receiver.JoinPath("/v1/uploads/"), tus.Options{Logger: log, BackoffMax: o.backoffMax}),
		log:    log.With("component", "uploader"),
		commit: st.Receiver.JoinPath("/v1/commit"),
		opts:   o,
	}
}

// Stats returns the transfer counters (bytes sent, retries) since New.
func (u *Uploader) Stats() tus.Stats { return u.tus.Stats() }

// Drain uploads every pending segment, oldest first, and returns when the
// spool holds nothing to upload. Each segment is wiped only after a
// receipt for exactly its bytes was verified and stored durably. A segment
// the receiver refuses for good is quarantined (reported with
// Result.Quarantined) and the drain goes on with the next one; a refusal
// of the box itself (errors.Is(err, ErrDeviceRefused)) or a fault that may
// pass ends the drain with an error, the segment still queued.
//
// While a segment's commit runs (the receiver checks and stores it, the
// box checks the receipt, stores it and wipes), the next segment's bytes
// are already sent: at most one commit is outstanding, segments are
// committed, reported and wiped in queue order, and a segment is committed
// only after the commit before it succeeded. When that commit is refused
// (resume, fresh upload) the segment sent meanwhile is set aside in the
// state it reached (uploading, its offset at the receiver) and the refused
// one is finished first; a drain that ends with an error leaves both
// queued, to resume from the receiver's offsets.
func (u *Uploader) Drain(ctx context.Context, report func(Result), progress func(name string, off, size int64)) (Summary, error) {
	d := &drain{u: u, report: report}
	// A segment committed while its wipe failed (a full disk could not
	// record the wipe) still holds a stored receipt: finish its wipe now,
	// not only at the next start.
	all, err := u.sp.All()
	if err != nil {
		return d.sum, err
	}
	for _, r := range all {
		if r.State == spool.Committed {
			if err := u.sp.Wipe(r.Name); err != nil {
				return d.sum, fmt.Errorf("wipe %s after its receipt: %w", r.Name, err)
			}
		}
	}
	// carry is a segment whose commit was refused: it gets its next
	// rounds before any other segment.
	var carry *segment
	for {
		seg := carry
		carry = nil
		if seg == nil {
			rec, ok, err := d.next()
			if err != nil {
				return d.stop(err)
			}
			if !ok {
				if d.inflight == nil {
					st := u.tus.Stats()
					d.sum.BytesSent, d.sum.Retries = st.BytesSent, st.Retries
					return d.sum, nil
				}
				if carry, err = d.settle(); err != nil {
					return d.sum, err
				}
				continue
			}
			if seg, err = u.open(rec); err != nil {
				return d.stop(failed(rec.Name, err))
			}
		}
		if d.inflight != nil && seg.rec.Offset == seg.rec.Size {
			// All its bytes were sent before: its first request may be a
			// commit (the receipt asked again), and only one is outstanding.
			if carry, err = d.settle(); err != nil || carry != nil {
				seg.close()
				if err != nil {
					return d.sum, err
				}
				continue
			}
		}
		created := d.createNext(ctx, seg)
		res, ready, err := u.send(ctx, seg, progress)
		created()
		// The commit before this segment's, oldest first.
		more, cerr := d.settle()
		if err == nil && !ready {
			// Settled without a commit of its own (quarantined): that
			// happened whatever became of the commit before.
			seg.close()
			d.done(seg.rec, res)
			seg = nil
		}
		if cerr != nil || more != nil {
			// This segment stays as it is (uploading, at the receiver's
			// offset; an error of its own is met again when it is taken
			// up) and follows the refused one.
			if seg != nil {
				seg.close()
			}
			if cerr != nil {
				return d.sum, cerr
			}
			carry = more
			continue
		}
		switch {
		case seg == nil:
		case err != nil:
			seg.close()
			return d.sum, failed(seg.rec.Name, err)
		default:
			// Every byte is sent: the file is open again only for another
			// round, and the wipe, not this loop, frees its blocks.
			seg.close()
			d.commit(ctx, seg)
		}
	}
}

// createNext creates, while seg is sent, the upload of the segment that
// follows it when that one has none yet, and records it: the next
// segment's bytes then follow seg's without the creation's round trip
// and the two durable writes (the receiver's and the spool's) in between.
// It returns a function that waits for that. A failure is only logged: the
// segment's own round creates its upload as before. An upload created
// but not recorded is deleted.
func (d *drain) createNext(ctx context.Context, seg *segment) (wait func()) {
	p, err := d.u.sp.Pending()
	if err != nil {
		return func() {}
	}
	var rec spool.Record
	for _, r := range p {
		if r.Name != seg.rec.Name && (d.inflight == nil || r.Name != d.inflight.seg.rec.Name) {
			rec = r
			break
		}
	}
	if rec.Name == "" || rec.UploadURL != "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		loc, err := d.u.tus.Create(ctx, rec.Size, uploadMetadata(rec))
		if err != nil {
			d.u.log.Debug("creating the next upload ahead failed; its own round creates it", "segment", rec.Name, "err", err)
			return
		}
		if err := d.u.sp.StartUpload(rec.Name, loc); err != nil {
			d.u.log.Debug("recording the next upload ahead failed; deleting it", "segment", rec.Name, "err", err)
			_ = d.u.tus.Terminate(ctx, loc)
		}
	}()
	return func() { <-done }
}

// drain is one Drain's bookkeeping: its summary and the commit in flight.
type drain struct {
	u        *Uploader
	report   func(Result)
	sum      Summary
	inflight *commitJob
}

// commitJob is a commit running while the next segment is sent.
type commitJob struct {
	seg  *segment
	done chan commitOutcome
}

type commitOutcome struct {
	res Result
	ref *RefusedError
	err error
}

// next returns the oldest segment that needs upload other than the one
// being committed.
func (d *drain) next() (spool.Record, bool, error) {
	p, err := d.u.sp.Pending()
	if err != nil {
		return spool.Record{}, false, err
	}
	for _, r := range p {
		if d.inflight == nil || r.Name != d.inflight.seg.rec.Name {
			return r, true, nil
		}
	}
	return spool.Record{}, false, nil
}

// commit starts seg's commit; the caller settles it before the next one.
func (d *drain) commit(ctx context.Context, seg *segment) {
	j := &commitJob{seg: seg, done: make(chan commitOutcome, 1)}
	rec := seg.rec
	go func() {
		res, ref, err := d.u.commitUpload(ctx, rec)
		j.done <- commitOutcome{res, ref, err}
	}()
	d.inflight = j
}

// settle waits for the commit in flight, if any, and acts on its outcome.
// more is its segment when the refusal calls for more upload rounds (its
// file still open).
func (d *drain) settle() (more *segment, err error) {
	j := d.inflight
	if j == nil {
		return nil, nil
	}
	d.inflight = nil
	o := <-j.done
	res, done, err := d.u.afterCommit(j.seg, o.res, o.ref, o.err)
	if !done {
		return j.seg, nil
	}
	j.seg.close()
	if err != nil {
		return nil, failed(j.seg.rec.Name, err)
	}
	d.done(j.seg.rec, res)
	return nil, nil
}

// stop ends a drain with err after the commit in flight, whose own error
// (it is the older segment) comes first.
func (d *drain) stop(err error) (Summary, error) {
	more, cerr := d.settle()
	if more != nil {
		more.close()
	}
	if cerr != nil {
		return d.sum, cerr
	}
	return d.sum, err
}

// done counts and reports a segment committed and wiped, or quarantined.
func (d *drain) done(rec spool.Record, res Result) {
	if res.Quarantined != nil {
		d.sum.Quarantined++
	} else {
		d.sum.Segments++
		d.sum.Bytes += rec.Size
	}
	if d.report != nil {
		d.report(res)
	}
}

// failed names the segment in err and marks a refused certificate as the
// box's problem.
func failed(name string, err error) error {
	if tus.CertificateRefused(err) {
		// The receiver refuses this box's certificate (revoked, not
		// active): the box's problem, not the segment's.
		err = fmt.Errorf("%w: %w", ErrDeviceRefused, err)
	}
	return fmt.Errorf("upload %s: %w", name, err)
}

// maxRounds bounds the upload-and-commit rounds of one segment in one
// drain (fresh starts and resumes after an unfinished commit).
const maxRounds = 2*spool.MaxFreshStarts + 4

// segment is one segment on its way through upload rounds and commits in
// one drain.
type segment struct {
	rec    spool.Record
	f      *os.File
	rounds int
	probed bool  // the receipt was asked for again once
	last   error // the last refusal, for giving up
}

func (u *Uploader) open(rec spool.Record) (*segment, error) {
	f, err := os.Open(u.sp.Path(rec))
	if err != nil {
		return nil, err
	}
	return &segment{rec: rec, f: f}, nil
}

// close closes the segment's file, if open; send opens it again.
func (s *segment) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// send runs upload rounds until every byte of the segment is at the
// receiver (ready: commit it next), or the segment was settled without a
// commit of its own (res: a receipt asked for again, a quarantine).
func (u *Uploader) send(ctx context.Context, s *segment, progress func(string, int64, int64)) (res Result, ready bool, err error) {
	rec := &s.rec
	for {
		if s.rounds >= maxRounds {
			return Result{}, false, fmt.Errorf("gave up for now after %d upload rounds: %w", maxRounds, s.last)
		}
		s.rounds++
		if rec.UploadURL == "" {
			loc, err := u.tus.Create(ctx, rec.Size, uploadMetadata(*rec))
			if err != nil {
				if ref := tusRefusal(err); ref != nil && ref.action == actDeviceRefused {
					return Result{}, false, ref
				}
				return Result{}, false, err
			}
			if err := u.sp.StartUpload(rec.Name, loc); err != nil {
				return Result{}, false, err
			}
			rec.UploadURL = loc
		}
		if s.f == nil {
			if s.f, err = os.Open(u.sp.Path(*rec)); err != nil {
				return Result{}, false, err
			}
		}
		err := u.tus.Upload(ctx, rec.UploadURL, s.f, rec.Size, func(off int64) {
			if progress != nil {
				progress(rec.Name, off, rec.Size)
			}
		})
		if err == nil {
			if err := u.sp.SetOffset(rec.Name, rec.Size); err != nil {
				return Result{}, false, err
			}
			return Result{}, true, nil
		}
		ref := tusRefusal(err)
		if ref == nil || (ref.action != actFresh && ref.action != actDeviceRefused) {
			return Result{}, false, err
		}
		if ref.action == actDeviceRefused {
			return Result{}, false, ref
		}
		// Every byte was sent before: the box may have stopped after
		// the receiver committed the upload (and removed it) but
		// before the receipt was stored. Asking for the receipt again
		// costs one request; re-sending costs the whole segment.
		if !s.probed && rec.Offset == rec.Size && rec.Size > 0 {
			s.probed = true
			res, cref, err := u.commitUpload(ctx, *rec)
			if err != nil || cref == nil {
				return res, false, err
			}
			u.log.Info("the receiver does not have the upload; sending the segment again", "segment", rec.Name, "status", cref.Status, "reason", cref.Reason)
		}
		// The receiver lost the upload (expired, or its files were
		// removed): start a new one.
		if res, done, err := u.freshStart(rec, ref); done || err != nil {
			return res, false, err
		}
		s.last = ref
	}
}

// afterCommit acts on a commit's outcome: done when the segment is settled
// (committed and wiped, quarantined) or the drain must stop (err); else
// the segment needs another upload round.
func (u *Uploader) afterCommit(s *segment, res Result, ref *RefusedError, err error) (Result, bool, error) {
	if err != nil || ref == nil {
		return res, true, err
	}
	rec := &s.rec
	s.last = ref
	u.log.Warn("commit refused", "segment", rec.Name, "status", ref.Status, "reason", ref.Reason, "action", ref.action, "message", ref.Message)
	switch ref.action {
	case actResume:
		// The next round's HEAD asks the receiver's offset again and
		// sends the rest from there.
		if ref.Offset != nil && *ref.Offset >= 0 && *ref.Offset <= rec.Size {
			if err := u.sp.SetOffset(rec.Name, *ref.Offset); err != nil {
				return Result{}, true, err
			}
		}
	case actFresh:
		if res, done, err := u.freshStart(rec, ref); done || err != nil {
			return res, true, err
		}
	case actQuarantine:
		res, err := u.quarantine(*rec, spool.Refusal{Status: ref.Status, Reason: ref.Reason, Message: ref.Message})
		return res, true, err
	default:
		return Result{}, true, ref
	}
	return Result{}, false, nil
}

// tusRefusal turns a tus status error into a refusal; nil for other errors.
func tusRefusal(err error) *RefusedError {
	var se *tus.StatusError
	if !errors.As(err, &se) {
		return nil
	}
	return refusalOf("tus "+se.Method, se.StatusCode, []byte(se.Body), false)
}

// freshStart forgets the segment's unusable upload so that the next round
// creates a new one; past spool.MaxFreshStarts it quarantines the segment
// instead (done is then true).
func (u *Uploader) freshStart(rec *spool.Record, ref *RefusedError) (res Result, done bool, err error) {
	if rec.FreshStarts >= spool.MaxFreshStarts {
		why := spool.Refusal{Status: ref.Status, Reason: ref.Reason,
			Message: fmt.Sprintf("%s (still refused after %d fresh uploads)", ref.Message, rec.FreshStarts)}
		res, err := u.quarantine(*rec, why)
		return res, true, err
	}
	n, err := u.sp.FreshStart(rec.Name)
	if err != nil {
		return Result{}, true, err
	}
	rec.UploadURL, rec.Offset, rec.FreshStarts = "", 0, n
	return Result{}, false, nil
}

func (u *Uploader) quarantine(rec spool.Record, why spool.Refusal) (Result, error) {
	if err := u.sp.Quarantine(rec.Name, why); err != nil {
		return Result{}, err
	}
	q, err := u.sp.Get(rec.Name)
	if err != nil {
		return Result{}, err
	}
	return Result{Name: rec.Name, Size: rec.Size, Quarantined: q.Refusal}, nil
}

// DefaultCommitTimeout bounds one commit request: a receiver that froze
// (a stopped process, a paused VM) keeps the connection open and never
// answers; the commit is tried again, on a new connection (through a load
// balancer, another receiver). A commit waits at most 20 s for the upload's
// lock and then reads and stores one segment.
const DefaultCommitTimeout = 2 * time.Minute

// WithCommitTimeout sets how long one commit request may take (default
// DefaultCommitTimeout).
func WithCommitTimeout(d time.Duration) Option { return func(o *options) { o.commitTimeout = d } }

// commitAttempt sends one commit request and reads its answer, within the
// commit timeout.
func (u *Uploader) commitAttempt(ctx context.Context, body []byte) (*http.Response, []byte, error) {
	d := u.opts.commitTimeout
	if d <= 0 {
		d = DefaultCommitTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.commit.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil && resp.StatusCode == http.StatusOK {
		return nil, nil, err
	}
	return resp, data, nil
}

// commitUpload asks for the receipt, checks it against the pinned receipt
// key and these exact bytes, stores it, and only then wipes the file. A
// refusal (after retrying server errors a few times) is returned as ref.
func (u *Uploader) commitUpload(ctx context.Context, rec spool.Record) (Result, *RefusedError, error) {
	alg, sum := rec.Hash()
	body, _ := json.Marshal(wire.NewCommitRequest(path.Base(rec.UploadURL), rec.Size, alg, sum))
	var cr wire.CommitResponse
	began := time.Now()
	for attempt := 0; ; attempt++ {
		resp, data, err := u.commitAttempt(ctx, body)
		if err != nil {
			if attempt < 5 && ctx.Err() == nil && !tus.CertificateRefused(err) {
				u.log.Warn("commit failed, retrying", append([]any{"segment", rec.Name}, netfail.Attrs(err)...)...)
				if err := sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond); err != nil {
					return Result{}, nil, err
				}
				continue
			}
			return Result{}, nil, fmt.Errorf("commit: %w", err)
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(data, &cr); err != nil {
				return Result{}, nil, fmt.Errorf("commit: bad response: %w", err)
			}
			break
		}
		ref := refusalOf("commit", resp.StatusCode, data, true)
		if resp.StatusCode >= 500 && ref.action == actLater && attempt < 5 {
			if err := sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond); err != nil {
				return Result{}, nil, err
			}
			continue
		}
		return Result{}, ref, nil
	}
	rb, err := base64.StdEncoding.DecodeString(cr.Receipt)
	if err != nil {
		return Result{}, nil, fmt.Errorf("commit: receipt is not base64: %w", err)
	}
	// v2 for a commit with the segment hash, v1 for SHA-256.
	r, err := wire.VerifyReceipt(u.st.ReceiptKey, rb, alg)
	if err != nil {
		return Result{}, nil, fmt.Errorf("commit: %w", err)
	}
	if err := r.Matches(u.signer(rec, r.Device), rec.RecordingID, rec.Sequence, alg, sum, rec.Size); err != nil {
		return Result{}, nil, fmt.Errorf("commit: %w", err)
	}
	if err := u.sp.Commit(rec.Name, rb); err != nil {
		return Result{}, nil, err
	}
	if u.opts.onCommit != nil {
		u.opts.onCommit(time.Since(began))
	}
	if err := u.sp.Wipe(rec.Name); err != nil {
		return Result{}, nil, err
	}
	if cr.Repeated {
		u.log.Info("segment committed and wiped: the receiver already had it (receipt checked)", "segment", rec.Name, "key", cr.Key, "outcome", cr.Outcome)
	} else {
		u.log.Info("segment committed and wiped", "segment", rec.Name, "key", cr.Key, "outcome", cr.Outcome)
	}
	return Result{Name: rec.Name, Size: rec.Size, Outcome: cr.Outcome, Repeated: cr.Repeated, Key: cr.Key}, nil, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// signer is the key a receipt must name for rec: the box's key, or, for a
// segment sealed before the box was re-keyed, the earlier key in the
// local file's header (the receipt's hash binds those very bytes).
func (u *Uploader) signer(rec spool.Record, named ed25519.PublicKey) ed25519.PublicKey {
	own := ed25519.PublicKey(u.st.Device.Public().Bytes())
	if named.Equal(own) {
		return own
	}
	f, err := os.Open(u.sp.Path(rec))
	if err != nil {
		return own
	}
	defer f.Close()
	hdr, err := crypto.ReadHeader(f)
	if err != nil {
		return own
	}
	return ed25519.PublicKey(hdr.Device.Bytes())
}

// uploadMetadata is the tus Upload-Metadata of rec's upload: its name, and
// for a record with a segment hash the announcement with which the
// receiver checks the commit by the hash its signature check computes,
// with no SHA-256 (a record an older release wrote keeps SHA-256).
func uploadMetadata(rec spool.Record) map[string]string {
	meta := map[string]string{"filename": rec.Name}
	if alg, _ := rec.Hash(); alg == wire.HashBLAKE3 {
		meta[wire.HashMetadata] = string(wire.HashBLAKE3)
	}
	return meta
}
