// Package tus is a tus 1.0 client (core, creation, termination) for resumable
// uploads: it creates an upload, sends it in PATCH chunks and, after any
// failure, asks the server for its offset and continues from there, so bytes
// the server confirmed are never sent again.
package tus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/internal/netfail"
)

// Version is the tus protocol version this client speaks.
const Version = "1.0.0"

const (
	defaultChunkSize     = 16 << 20
	defaultBackoffMin    = 500 * time.Millisecond
	defaultBackoffMax    = 30 * time.Second
	defaultMaxAttempts   = 10
	defaultMaxRetryAfter = 5 * time.Minute
	offsetContentType    = "application/offset+octet-stream"
)

// Options tunes a Client. The zero value gives the defaults.
type Options struct {
	// ChunkSize is the largest PATCH body (default 16 MiB). Each PATCH
	// is a round trip and, at the receiver, a lock, a look-up and a saved
	// hash state; a cut one keeps what arrived, so a larger one costs
	// no more bytes after a cut, and the box holds none of it in memory.
	ChunkSize int64
	// BackoffMin and BackoffMax bound the exponential backoff between
	// attempts (defaults 500 ms and 30 s); the delay before retry n is
	// uniformly random in [0, min(BackoffMax, BackoffMin·2^n)) ("full jitter").
	BackoffMin, BackoffMax time.Duration
	// MaxAttempts is how many failed attempts in a row, without the server's
	// offset advancing, Upload tolerates before it gives up (default 10;
	// negative means no limit).
	MaxAttempts int
	// MaxElapsed, if positive, is how long Upload keeps retrying in total.
	MaxElapsed time.Duration
	// MaxRetryAfter caps a server's Retry-After (default 5 min).
	MaxRetryAfter time.Duration
	// StallTimeout gives up a request that made no progress (no body
	// byte taken, no answer) for this long (default DefaultStallTimeout;
	// negative: never); Upload retries a HEAD or PATCH given up.
	StallTimeout time.Duration
	// Header, if set, is called for each request; its headers (auth tokens)
	// are added to the request.
	Header func() http.Header
	// Sleep waits for d or until ctx is done (default: a timer). Tests inject it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock used for Retry-After dates and MaxElapsed (default time.Now).
	Now func() time.Time
	// Jitter returns a random duration in [0, d) (default math/rand/v2).
	Jitter func(d time.Duration) time.Duration
	// Logger receives retry and resume events (default: discarded).
	Logger *slog.Logger
}

// Stats counts what a Client did, for benchmarks and metrics.
type Stats struct {
	// BytesSent is the number of body bytes handed to the transport in PATCH
	// requests, including bytes lost in cut connections and sent again.
	BytesSent int64
	// Retries is the number of failed attempts that Upload retried.
	Retries int64
}

// Client talks tus 1.0 to one endpoint. It is safe for concurrent use.
type Client struct {
	hc       *http.Client
	endpoint *url.URL
	opts     Options
	log      *slog.Logger

	bytesSent atomic.Int64
	retries   atomic.Int64
}

// NewClient returns a client for the tus creation endpoint. A nil httpClient
// means http.DefaultClient.
func NewClient(httpClient *http.Client, endpoint *url.URL, opts Options) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = defaultChunkSize
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = defaultBackoffMin
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = defaultBackoffMax
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = opts.BackoffMin
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = defaultMaxAttempts
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = defaultMaxRetryAfter
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return time.Duration(rand.Int64N(int64(d)))
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ep := *endpoint
	return &Client{hc: httpClient, endpoint: &ep, opts: opts, log: log.With("component", "tus")}
}

// Stats returns the counters accumulated since the client was made.
func (c *Client) Stats() Stats {
	return Stats{BytesSent: c.bytesSent.Load(), Retries: c.retries.Load()}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("tus: %s %s: %w", method, u, err)
	}
	if c.opts.Header != nil {
		for k, vs := range c.opts.Header() {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
	}
	req.Header.Set("Tus-Resumable", Version)
	return req, nil
}

// do sends req and returns the response with its body read (up to a snippet)
// and closed, so that the connection can be reused.
func (c *Client) do(req *http.Request) (*http.Response, string, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, bodySnippetLen))
	// Drain a little more so that short bodies do not cost the connection.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	return resp, string(buf), nil
}

func statusErr(req *http.Request, resp *http.Response, body string) *StatusError {
	return &StatusError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Body: body, RetryAfter: resp.Header.Get("Retry-After")}
}

// Create makes a new upload of size bytes with the given metadata and returns
// its absolute URL. Metadata keys must be printable ASCII without spaces or
// commas. Create is not retried: a repeated POST could leave a second upload.
func (c *Client) Create(ctx context.Context, size int64, metadata map[string]string) (string, error) {
	if size < 0 {
		return "", fmt.Errorf("tus: create: negative size %d", size)
	}
	md, err := encodeMetadata(metadata)
	if err != nil {
		return "", err
	}
	ctx, stall := watchStall(ctx, c.opts.StallTimeout)
	defer stall.stop()
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	if md != "" {
		req.Header.Set("Upload-Metadata", md)
	}
	resp, body, err := c.do(req)
	if err != nil {
		return "", fmt.Errorf("tus: create upload at %s: %w", c.endpoint.Redacted(), stalled(ctx, err))
	}
	if resp.StatusCode != http.StatusCreated {
		return "", statusErr(req, resp, body)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", protocolErr(req.Method, req.URL.Redacted(), "201 without a Location header")
	}
	u, err := resolveLocation(c.endpoint, loc)
	if err != nil {
		return "", protocolErr(req.Method, req.URL.Redacted(), "Location header: %v", err)
	}
	return u.String(), nil
}

// uploadURL checks that a caller's upload URL belongs to the endpoint's host.
func (c *Client) uploadURL(op, raw string) (*url.URL, error) {
	u, err := resolveLocation(c.endpoint, raw)
	if err != nil {
		return nil, fmt.Errorf("tus: %s: upload URL: %w", op, err)
	}
	return u, nil
}

// Offset asks the server (HEAD) how many bytes of the upload it holds.
func (c *Client) Offset(ctx context.Context, uploadURL string) (int64, error) {
	u, err := c.uploadURL("offset", uploadURL)
	if err != nil {
		return 0, err
	}
	off, _, err := c.head(ctx, u.String())
	return off, err
}

// head returns the server's offset and upload length (-1 if the server sent
// none, as with a deferred length).
func (c *Client) head(ctx context.Context, u string) (offset, length int64, err error) {
	ctx, stall := watchStall(ctx, c.opts.StallTimeout)
	defer stall.stop()
	req, err := c.newRequest(ctx, http.MethodHead, u, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, body, err := c.do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("tus: HEAD %s: %w", req.URL.Redacted(), stalled(ctx, err))
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return 0, 0, statusErr(req, resp, body)
	}
	length = -1
	if v := resp.Header.Get("Upload-Length"); v != "" {
		length, err = parseOffset(v, -1)
		if err != nil {
			return 0, 0, protocolErr(req.Method, req.URL.Redacted(), "Upload-Length header: %v", err)
		}
	}
	v, ok := resp.Header["Upload-Offset"]
	if !ok || len(v) != 1 {
		return 0, 0, protocolErr(req.Method, req.URL.Redacted(), "want exactly one Upload-Offset header, got %d", len(v))
	}
	offset, err = parseOffset(v[0], length)
	if err != nil {
		return 0, 0, protocolErr(req.Method, req.URL.Redacted(), "Upload-Offset header: %v", err)
	}
	return offset, length, nil
}

// Terminate deletes the upload (termination extension). A 404 or 410 counts
// as success: the upload is gone either way.
func (c *Client) Terminate(ctx context.Context, uploadURL string) error {
	u, err := c.uploadURL("terminate", uploadURL)
	if err != nil {
		return err
	}
	req, err := c.newRequest(ctx, http.MethodDelete, u.String(), nil)
	if err != nil {
		return err
	}
	resp, body, err := c.do(req)
	if err != nil {
		return fmt.Errorf("tus: DELETE %s: %w", req.URL.Redacted(), err)
	}
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusNotFound, http.StatusGone:
		return nil
	}
	return statusErr(req, resp, body)
}

// countingReader counts the bytes the transport actually took.
type countingReader struct {
	r        io.Reader
	n        *atomic.Int64
	progress func() // if set, called after each read
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n.Add(int64(n))
	if cr.progress != nil {
		cr.progress()
	}
	return n, err
}

// patch sends r[off:off+n] and returns the new offset the server confirmed.
func (c *Client) patch(ctx context.Context, u string, r io.ReaderAt, off, n, size int64) (int64, error) {
	ctx, stall := watchStall(ctx, c.opts.StallTimeout)
	defer stall.stop()
	body := &countingReader{r: io.NewSectionReader(r, off, n), n: &c.bytesSent, progress: stall.touch}
	req, err := c.newRequest(ctx, http.MethodPatch, u, body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = n
	if n == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", offsetContentType)
	req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
	resp, respBody, err := c.do(req)
	if err != nil {
		return 0, fmt.Errorf("tus: PATCH %s at offset %d: %w", req.URL.Redacted(), off, stalled(ctx, err))
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return 0, statusErr(req, resp, respBody)
	}
	v, ok := resp.Header["Upload-Offset"]
	if !ok || len(v) != 1 {
		return 0, protocolErr(req.Method, req.URL.Redacted(), "want exactly one Upload-Offset header, got %d", len(v))
	}
	newOff, err := parseOffset(v[0], size)
	if err != nil {
		return 0, protocolErr(req.Method, req.URL.Redacted(), "Upload-Offset header: %v", err)
	}
	if newOff < off || newOff > off+n {
		return 0, protocolErr(req.Method, req.URL.Redacted(), "Upload-Offset %d outside the chunk [%d, %d]", newOff, off, off+n)
	}
	return newOff, nil
}

// Upload sends r[0:size] to the upload at uploadURL. It starts from the
// server's offset (HEAD) and, after a network error, a 5xx, 408, 409, 423,
// 429, 460 or tusd's 400 ERR_UPLOAD_INTERRUPTED, asks for the offset again and
// continues from there after an exponential, jittered backoff (or the
// server's Retry-After on 429 and 503). Other 4xx responses and protocol
// violations are permanent (*StatusError or ErrProtocol). Only bytes from the
// server's offset on are sent; if the server's offset falls back (a server
// that lost unsynced data), the lost bytes are sent again. progress, if not
// nil, is called with each new offset the server confirmed.
func (c *Client) Upload(ctx context.Context, uploadURL string, r io.ReaderAt, size int64, progress func(off int64)) error {
	if size < 0 {
		return fmt.Errorf("tus: upload: negative size %d", size)
	}
	pu, err := c.uploadURL("upload", uploadURL)
	if err != nil {
		return err
	}
	u := pu.String()
	log := c.log.With("url", pu.Redacted())
	start := c.opts.Now()
	failures := 0 // consecutive failed attempts without progress
	confirmed := int64(-1)

	for {
		err := c.attempt(ctx, u, r, size, &confirmed, &failures, progress)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("tus: upload %s stopped at offset %d: %w", pu.Redacted(), max(confirmed, 0), context.Cause(ctx))
		}
		if !retryable(err) {
			return err
		}
		failures++
		if c.opts.MaxAttempts > 0 && failures >= c.opts.MaxAttempts {
			return fmt.Errorf("%w: upload %s after %d failed attempts without progress: %w", ErrGaveUp, pu.Redacted(), failures, err)
		}
		delay := c.backoff(failures)
		if ra, ok := c.retryAfter(err); ok {
			delay = ra
		}
		if c.opts.MaxElapsed > 0 && c.opts.Now().Add(delay).Sub(start) > c.opts.MaxElapsed {
			return fmt.Errorf("%w: upload %s: retry budget of %s spent: %w", ErrGaveUp, pu.Redacted(), c.opts.MaxElapsed, err)
		}
		c.retries.Add(1)
		log.Warn("upload attempt failed, retrying", append(netfail.Attrs(err), "attempt", failures, "delay", delay, "offset", confirmed)...)
		if err := c.opts.Sleep(ctx, delay); err != nil {
			return fmt.Errorf("tus: upload %s stopped at offset %d: %w", pu.Redacted(), max(confirmed, 0), context.Cause(ctx))
		}
	}
}

// attempt asks the server's offset and PATCHes until done or an error.
func (c *Client) attempt(ctx context.Context, u string, r io.ReaderAt, size int64, confirmed *int64, failures *int, progress func(int64)) error {
	off, length, err := c.head(ctx, u)
	if err != nil {
		return err
	}
	if length >= 0 && length != size {
		return protocolErr(http.MethodHead, u, "server has Upload-Length %d, the upload is %d bytes", length, size)
	}
	if off > size {
		return protocolErr(http.MethodHead, u, "server offset %d beyond the upload size %d", off, size)
	}
	if off < *confirmed {
		// The server lost bytes it had confirmed: resending them is the
		// only way forward, but it is worth a loud log line.
		c.log.Warn("server offset moved backwards", "url", u, "confirmed", *confirmed, "offset", off)
	}
	c.advance(off, confirmed, failures, progress)
	for off < size {
		n := min(c.opts.ChunkSize, size-off)
		newOff, err := c.patch(ctx, u, r, off, n, size)
		if err != nil {
			return err
		}
		off = newOff
		c.advance(off, confirmed, failures, progress)
	}
	return nil
}

func (c *Client) advance(off int64, confirmed *int64, failures *int, progress func(int64)) {
	if off > *confirmed {
		if *confirmed >= 0 {
			*failures = 0
		}
		*confirmed = off
		if progress != nil {
			progress(off)
		}
	}
}

func (c *Client) backoff(failures int) time.Duration {
	d := c.opts.BackoffMax
	if shift := failures - 1; shift < 32 {
		if e := c.opts.BackoffMin << shift; e > 0 && e < d {
			d = e
		}
	}
	return c.opts.Jitter(d)
}

func (c *Client) retryAfter(err error) (time.Duration, bool) {
	var se *StatusError
	if !errors.As(err, &se) || se.RetryAfter == "" {
		return 0, false
	}
	if se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	d, err := parseRetryAfter(se.RetryAfter, c.opts.Now())
	if err != nil {
		c.log.Warn("ignoring bad Retry-After header", "error", err)
		return 0, false
	}
	return min(d, c.opts.MaxRetryAfter), true
}

// retryable reports whether err may go away if the upload is resumed.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrMetadata) {
		return false
	}
	// A certificate the pinned CA does not vouch for will not get better.
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || CertificateRefused(err) {
		return false
	}
	// Network and transport errors (reset, EOF, TLS alerts, timeouts).
	return true
}
