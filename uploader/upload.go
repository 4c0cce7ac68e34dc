package uploader

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
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

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/uploader/tus"
)

// Result is what happened to one segment.
type Result struct {
	Name     string
	Size     int64
	Outcome  string // OK or TRUNCATED, as the receiver classified it
	Repeated bool   // the receiver had it already (a commit after a crash)
	Key      string // where the receiver stored it
}

// Summary is the result of one drain.
type Summary struct {
	Segments  int
	Bytes     int64
	BytesSent int64 // including re-sent bytes after faults
	Retries   int64
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
	backoffMax time.Duration
	onCommit   func(time.Duration)
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
// receipt for exactly its bytes was verified and stored durably.
func (u *Uploader) Drain(ctx context.Context, report func(Result), progress func(name string, off, size int64)) (Summary, error) {
	var sum Summary
	for {
		rec, ok, err := u.sp.Next()
		if err != nil {
			return sum, err
		}
		if !ok {
			st := u.tus.Stats()
			sum.BytesSent, sum.Retries = st.BytesSent, st.Retries
			return sum, nil
		}
		res, err := u.one(ctx, rec, progress)
		if err != nil {
			return sum, fmt.Errorf("upload %s: %w", rec.Name, err)
		}
		sum.Segments++
		sum.Bytes += rec.Size
		if report != nil {
			report(res)
		}
	}
}

func (u *Uploader) one(ctx context.Context, rec spool.Record, progress func(string, int64, int64)) (Result, error) {
	f, err := os.Open(u.sp.Path(rec))
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// The server lost the upload (expired, or its files were
			// removed): start a new one; the spool forgets the old offset.
			rec.UploadURL = ""
		}
		if rec.UploadURL == "" {
			loc, err := u.tus.Create(ctx, rec.Size, map[string]string{"filename": rec.Name})
			if err != nil {
				return Result{}, err
			}
			if err := u.sp.StartUpload(rec.Name, loc); err != nil {
				return Result{}, err
			}
			rec.UploadURL = loc
		}
		err := u.tus.Upload(ctx, rec.UploadURL, f, rec.Size, func(off int64) {
			if progress != nil {
				progress(rec.Name, off, rec.Size)
			}
		})
		var se *tus.StatusError
		if errors.As(err, &se) && (se.StatusCode == http.StatusNotFound || se.StatusCode == http.StatusGone) && attempt < 3 {
			continue
		}
		if err != nil {
			return Result{}, err
		}
		if err := u.sp.SetOffset(rec.Name, rec.Size); err != nil {
			return Result{}, err
		}
		cr, err := u.commitUpload(ctx, rec)
		if errors.Is(err, errUploadGone) && attempt < 3 {
			continue
		}
		if err != nil {
			return Result{}, err
		}
		return cr, nil
	}
}

var errUploadGone = errors.New("the receiver no longer has the upload")

// commitUpload asks for the receipt, checks it against the pinned receipt
// key and these exact bytes, stores it, and only then wipes the file.
func (u *Uploader) commitUpload(ctx context.Context, rec spool.Record) (Result, error) {
	body, _ := json.Marshal(receiver.CommitRequest{UploadID: path.Base(rec.UploadURL), Size: rec.Size, SHA256: hex.EncodeToString(rec.SHA256[:])})
	var cr receiver.CommitResponse
	began := time.Now()
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.commit.String(), bytes.NewReader(body))
		if err != nil {
			return Result{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := u.http.Do(req)
		if err != nil {
			if attempt < 5 && ctx.Err() == nil {
				u.log.Warn("commit failed, retrying", "segment", rec.Name, "err", err)
				if err := sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond); err != nil {
					return Result{}, err
				}
				continue
			}
			return Result{}, fmt.Errorf("commit: %w", err)
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
		case resp.StatusCode == http.StatusNotFound:
			return Result{}, errUploadGone
		case resp.StatusCode >= 500 && attempt < 5:
			if err := sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond); err != nil {
				return Result{}, err
			}
			continue
		default:
			return Result{}, fmt.Errorf("commit refused (HTTP %d): %s", resp.StatusCode, bytes.TrimSpace(data))
		}
		if err := json.Unmarshal(data, &cr); err != nil {
			return Result{}, fmt.Errorf("commit: bad response: %w", err)
		}
		break
	}
	rb, err := base64.StdEncoding.DecodeString(cr.Receipt)
	if err != nil {
		return Result{}, fmt.Errorf("commit: receipt is not base64: %w", err)
	}
	r, err := receipt.Verify(u.st.ReceiptKey, rb)
	if err != nil {
		return Result{}, fmt.Errorf("commit: %w", err)
	}
	if err := r.Matches(ed25519.PublicKey(u.st.Device.Public().Bytes()), rec.RecordingID, rec.Sequence, rec.SHA256, rec.Size); err != nil {
		return Result{}, fmt.Errorf("commit: %w", err)
	}
	if err := u.sp.Commit(rec.Name, rb); err != nil {
		return Result{}, err
	}
	if u.opts.onCommit != nil {
		u.opts.onCommit(time.Since(began))
	}
	if err := u.sp.Wipe(rec.Name); err != nil {
		return Result{}, err
	}
	u.log.Info("segment committed and wiped", "segment", rec.Name, "key", cr.Key, "outcome", cr.Outcome)
	return Result{Name: rec.Name, Size: rec.Size, Outcome: cr.Outcome, Repeated: cr.Repeated, Key: cr.Key}, nil
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
