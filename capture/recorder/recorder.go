// Package recorder turns the encoded frames of a recording into sealed
// segment files: fMP4 from the segmenter goes through the sealing writer
// straight into the spool directory, so only ciphertext touches the disk.
package recorder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// Suffixes of segment files in the spool directory. A segment is written
// under PartialSuffix and renamed once sealed and synced; a file left with
// PartialSuffix after a crash holds a TRUNCATED segment whose flushed
// prefix is authentic.
const (
	SealedSuffix  = ".ubx"
	PartialSuffix = ".ubx.partial"
	// Codec is the media type recorded in every segment header; an
	// anonymised recording adds the mode as a parameter (CodecFor).
	Codec = "video/mp4"
)

// CodecFor is the header's codec field for a recording filtered by mode:
// Codec for anon.Off, else e.g. "video/mp4; anonymise=whole". The header
// is signed, so the mode a segment claims is the device's word.
func CodecFor(mode anon.Mode) string {
	if mode == "" || mode == anon.Off {
		return Codec
	}
	return Codec + "; anonymise=" + string(mode)
}

// AnonymiseOf reads the mode back from a header's codec field: anon.Off
// when the field names none.
func AnonymiseOf(codec string) anon.Mode {
	_, v, ok := strings.Cut(codec, "; anonymise=")
	if !ok {
		return anon.Off
	}
	return anon.Mode(v)
}

// Sealed describes a segment that was closed, synced and renamed.
type Sealed struct {
	Path        string
	RecordingID [16]byte
	Sequence    uint64
	Commitment  [crypto.CommitmentSize]byte
	Last        bool
	End         crypto.EndReason // why the recording ended; set on the last segment only
	Bytes       int64            // size of the sealed file
	Start       time.Duration    // media time of the segment's first frame
}

// file is what the recorder needs of a spool file; tests inject failures.
type file interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

// Config is a recorder's configuration.
type Config struct {
	Dir        string
	Recipients []*crypto.Recipient
	Device     *crypto.DeviceKey
	// Segment shapes the fMP4; its Align is set to the sealing chunk size.
	Segment segment.Config
	// BeforeSegment, if set, is called before each segment file is
	// created, with the path it will have while it is written (the
	// PartialSuffix name). An error stops the recording with that error
	// (the daemon refuses a segment when the spool is full); the segments
	// sealed before stay intact. It is asked before the previous segment
	// is sealed, so that a refusal seals that one as the last, with the
	// end reason "spool full" (or the error's EndReason, if it has one).
	BeforeSegment func(partialPath string) error
	// OnSealed, if set, is called for every sealed segment, in order.
	OnSealed func(Sealed)
	Logger   *slog.Logger
	// Anonymise is the capture's filter, recorded in every header (Start
	// sets it from the capture config).
	Anonymise anon.Mode

	// create opens a new spool file; nil means os.OpenFile.
	create func(path string) (file, error)
}

// Recorder writes one recording. It is used once.
type Recorder struct {
	cfg         Config
	log         *slog.Logger
	recordingID [16]byte
	prev        [crypto.CommitmentSize]byte
	seq         uint64
	wallStart   time.Time

	cur *output // the segment being written, if any
	// end, if set, says why the recording is ending when its last segment
	// is sealed (Session.Run sets it from its context's cause).
	end func() crypto.EndReason
	// before is the caller's BeforeSegment; cfg.BeforeSegment answers a
	// segment admitNext already asked about (asked) with its answer.
	before   func(partialPath string) error
	asked    string
	answer   error
	aborting bool // Close(false) now means "abandoned", not "cut"
	ended    bool // the last segment is sealed

	mu     sync.Mutex
	sealed []Sealed
}

// New checks the configuration and picks a fresh recording id.
func New(cfg Config) (*Recorder, error) {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("recorder: Dir is required"))
	} else if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("recorder: output directory %s does not exist or is not a directory", cfg.Dir))
	}
	if len(cfg.Recipients) == 0 {
		errs = append(errs, errors.New("recorder: at least one recipient is required"))
	}
	if cfg.Device == nil {
		errs = append(errs, errors.New("recorder: a device key is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Every fragment ends on a chunk boundary, so at its flush it reaches
	// the file whole and its fsync makes it durable.
	cfg.Segment.Align = crypto.ChunkSize
	if cfg.create == nil {
		cfg.create = func(path string) (file, error) {
			return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := crypto.NewRecordingID()
	if err != nil {
		return nil, err
	}
	r := &Recorder{cfg: cfg, log: log.With("component", "recorder"), recordingID: id}
	if cfg.BeforeSegment != nil {
		r.before, r.cfg.BeforeSegment = cfg.BeforeSegment, r.admission
	}
	return r, nil
}

// RecordingID returns the id written into every segment header.
func (r *Recorder) RecordingID() [16]byte { return r.recordingID }

// Sealed lists the segments sealed so far.
func (r *Recorder) Sealed() []Sealed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sealed(nil), r.sealed...)
}

// Run consumes frames until the channel is closed, then seals the last
// segment with the last flag. A write error (disk full, I/O error) stops
// the recording: Run returns it, segments sealed before stay intact, the
// failing segment is left under its partial name, and an empty last
// segment after it says "disk error". Cancelling ctx abandons the current
// segment the same way a power cut would.
func (r *Recorder) Run(ctx context.Context, frames <-chan capture.Frame) error {
	err := r.run(ctx, frames)
	if err != nil && ctx.Err() == nil {
		r.closeAfterError(err)
	}
	return err
}

func (r *Recorder) run(ctx context.Context, frames <-chan capture.Frame) error {
	r.wallStart = time.Now()
	seg := segment.New(r.cfg.Segment, r.open)
	for {
		select {
		case <-ctx.Done():
			r.abort()
			return ctx.Err()
		case f, ok := <-frames:
			if !ok {
				if err := seg.Close(); err != nil {
					return err
				}
				return nil
			}
			err := seg.Write(f)
			if errors.Is(err, segment.ErrFrame) {
				// One malformed frame from the encoder is skipped, not fatal.
				r.log.Warn("frame skipped", "kind", f.Kind, "err", err)
				continue
			}
			if err != nil {
				r.abort()
				return err // the segmenter's error names the segment
			}
		}
	}
}

func (r *Recorder) segmentName(seq uint64) string {
	return fmt.Sprintf("%s-%06d", cfgBase(r.cfg, r.recordingID), seq)
}

// cfgBase is the path prefix of recording id's segment files.
func cfgBase(cfg Config, id [16]byte) string {
	return filepath.Join(cfg.Dir, fmt.Sprintf("%x", id))
}

// open starts segment seq: a partial spool file with a sealing writer.
func (r *Recorder) open(seq uint64, start time.Duration) (segment.Output, error) {
	if seq != r.seq {
		return nil, fmt.Errorf("segment %d opened out of order (want %d)", seq, r.seq)
	}
	base := r.segmentName(seq)
	if r.cfg.BeforeSegment != nil {
		if err := r.cfg.BeforeSegment(base + PartialSuffix); err != nil {
			return nil, err // the segmenter says "open segment N"
		}
	}
	f, err := r.cfg.create(base + PartialSuffix)
	if err != nil {
		return nil, err // "open PATH: …", after the segmenter's "open segment N"
	}
	w, err := crypto.NewWriter(f, r.cfg.Recipients, r.cfg.Device, crypto.Params{
		RecordingID: r.recordingID,
		Sequence:    seq,
		Prev:        r.prev,
		Start:       r.wallStart.Add(start),
		Codec:       CodecFor(r.cfg.Anonymise),
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	o := &output{r: r, f: f, w: w, base: base, seq: seq, start: start, syncReq: make(chan struct{}, 1), syncDone: make(chan error, 1)}
	go o.syncer()
	r.cur = o
	return o, nil
}

// output is one segment being written. The segmenter runs on the
// recorder's goroutine; fsync runs on the output's own syncer goroutine so
// a slow card delays neither capture nor sealing.
type output struct {
	r        *Recorder
	f        file
	w        *crypto.Writer
	base     string
	seq      uint64
	start    time.Duration
	n        int64
	failed   bool // a write or flush failed: the segment cannot be sealed
	syncReq  chan struct{}
	syncDone chan error
	syncErr  atomic.Value // the first fsync error, for the next Flush
	closed   bool
	sealed   bool
}

func (o *output) syncer() {
	var err error
	for range o.syncReq {
		if err == nil {
			if serr := o.f.Sync(); serr != nil {
				err = fmt.Errorf("fsync: %w", serr)
				o.syncErr.Store(err)
			}
		}
	}
	o.syncDone <- err
}

func (o *output) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.n += int64(n)
	if err != nil {
		o.failed = true
	}
	return n, err // the segmenter's error names the segment
}

// Flush is called at every fragment boundary: every complete chunk goes to
// the file and an fsync is requested (coalesced if one is still running).
func (o *output) Flush() error {
	// A failed fsync stops the recording at the next fragment, not when
	// the segment closes.
	if err, _ := o.syncErr.Load().(error); err != nil {
		o.failed = true
		return err
	}
	if err := o.w.Flush(); err != nil {
		o.failed = true
		return err
	}
	select {
	case o.syncReq <- struct{}{}:
	default: // a sync is pending; it will cover these bytes too
	}
	return nil
}

// Close seals the segment, syncs it, renames it into place and fsyncs the
// directory; only then is the segment reported as sealed.
func (o *output) Close(last bool) error {
	if o.closed {
		return nil
	}
	o.closed = true
	end := crypto.EndUnknown
	if last {
		end = o.r.endReason()
	} else if !o.r.aborting && !o.failed {
		// A cut: the segmenter opens seq+1 next. Ask for its room now, so
		// that a refusal ends the recording with this segment as the last.
		if err := o.r.admitNext(o.seq + 1); err != nil {
			last, end = true, EndReasonOf(err)
			o.r.log.Warn("no room for the next segment: this one is the last", "sequence", o.seq, "err", err)
		}
	}
	if last {
		o.w.SetEnd(end)
	}
	werr := o.w.Close()
	close(o.syncReq)
	serr := <-o.syncDone
	if werr == nil && serr == nil {
		serr = o.f.Sync()
	}
	cerr := o.f.Close()
	// The segmenter's error names the segment ("close segment N").
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	final := o.base + SealedSuffix
	if err := os.Rename(o.base+PartialSuffix, final); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(o.r.cfg.Dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	size := o.n
	if st, err := os.Stat(final); err == nil {
		size = st.Size()
	}
	s := Sealed{Path: final, RecordingID: o.r.recordingID, Sequence: o.seq, Commitment: o.w.Commitment(), Last: last, End: end, Bytes: size, Start: o.start}
	o.sealed = true
	o.r.ended = last
	o.r.prev = s.Commitment
	o.r.seq++
	o.r.mu.Lock()
	o.r.sealed = append(o.r.sealed, s)
	o.r.mu.Unlock()
	if last {
		o.r.log.Info("segment sealed", "path", final, "sequence", o.seq, "last", true, "end", end.String())
	} else {
		o.r.log.Info("segment sealed", "path", final, "sequence", o.seq, "last", false)
	}
	if o.r.cfg.OnSealed != nil {
		o.r.cfg.OnSealed(s)
	}
	return nil
}

// abort ends the segment being written without the last flag. If its
// writer still works the segment is sealed as usual (a stop by ctx); after
// a write error it stays under its partial name, its flushed prefix
// readable as TRUNCATED, like after a power cut.
func (r *Recorder) abort() {
	r.aborting = true
	if r.cur != nil && !r.cur.closed {
		if err := r.cur.Close(false); err != nil {
			r.log.Warn("segment left partial", "sequence", r.cur.seq, "err", err)
		}
	}
}
