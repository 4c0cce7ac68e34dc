package receiver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/wire"
)

// commitStreamed commits an upload from the hashes taken while its bytes
// arrived (internal/hashing). It only ever accepts: when the hashes are
// missing or incomplete, or anything would refuse the segment, done is
// false and the commit reads the upload whole, which decides.
//
// Where the upload can be adopted into the fs store (adopt.go), a commit
// with this process's hashes of every byte reads nothing: the file is
// fsynced and renamed into the store. One whose BLAKE3 side was lost (a
// restart, another replica) reads the upload once, checking its SHA-256
// against the saved state and verifying the signature, then renames it.
// Otherwise the upload is read once, to copy it into the store, whose Put
// checks the SHA-256 of what it copies, so bytes that are not those hashed
// are never stored under these digests.
//
// A commit with the BLAKE3 segment hash compares it with the one the
// Verifier gives (Info.FileHash): over every byte when this process hashed
// them all, else at the end of the copy (verifyingTee). An announced
// upload that is adopted has no SHA-256 and no saved state: without this
// process's Verifier its commit reads it whole.
func (s *Server) commitStreamed(ctx context.Context, d *devices.Device, req CommitRequest, up tusd.Upload, size int64) (resp *CommitResponse, done bool, err error) {
	sums, ok := s.hashing.Sums(ctx, req.UploadID)
	if !ok || sums.Length != size || size != req.Size {
		return nil, false, nil
	}
	alg, want := req.Hash()
	if alg == wire.HashSHA256 && (!sums.HasSHA256 || hex.EncodeToString(sums.SHA256[:]) != want) {
		return nil, false, nil
	}
	adopt := s.canAdopt()
	var (
		body io.Reader // what the store copies, when it copies
		info *crypto.Info
		verr error
		seen int64 // bytes the verdict in info and verr covers
	)
	switch v := sums.Verifier; {
	case v != nil:
		info, verr = v.Finish(nil)
		seen = v.Size()
	case !sums.HasSHA256:
		return nil, false, nil // nothing to check a read against: the whole read decides
	case adopt:
		rc, err := up.GetReader(ctx)
		if err != nil {
			return nil, true, err
		}
		w, err := readWhole(rc, true)
		rc.Close()
		if err != nil {
			return nil, true, err
		}
		if w.size != size || w.sha != sums.SHA256 {
			// Bytes that are not those hashed: the whole read decides.
			return nil, false, nil
		}
		info, verr, seen = w.info, w.verr, w.size
	default:
		// Hashed by another process (before a restart, or another
		// replica): the BLAKE3 side is computed while the upload is copied
		// into the store, and the header is taken from its first bytes.
		rc, err := up.GetReader(ctx)
		if err != nil {
			return nil, true, err
		}
		defer rc.Close()
		v = crypto.NewVerifier()
		head := make([]byte, min(size, headBytes))
		if _, err := io.ReadFull(rc, head); err != nil {
			return nil, false, nil
		}
		v.Write(head)
		body = &verifyingTee{r: io.MultiReader(bytes.NewReader(head), rc), v: v, left: size, skip: len(head), want: req}
		// The final verdict when v has every byte; else the header and
		// the commitment, which the checks before storing need.
		info, verr = v.Finish(nil)
		seen = v.Size()
	}
	outcome := crypto.OutcomeOf(verr)
	if info == nil || info.Header == nil || (outcome == crypto.Corrupt && seen == size) ||
		(seen < size && info.Commitment == [crypto.CommitmentSize]byte{}) {
		return nil, false, nil
	}
	if d.CheckSigner(ed25519.PublicKey(info.Header.Device.Bytes()), time.Now()) != nil {
		return nil, false, nil
	}
	if alg == wire.HashBLAKE3 && seen == size && hex.EncodeToString(info.FileHash[:]) != want {
		return nil, false, nil
	}
	rec := newSegmentRecord(d, info, outcome, size, req)
	if prev, err := s.lookup(rec.Key); err == nil {
		if !sameBytes(prev, &rec) {
			return nil, false, nil
		}
		// The same bytes as a segment verified when it was stored.
		s.commitMetrics.streamed.Inc()
		resp, err := s.finishCommit(req.UploadID, prev, true)
		return resp, true, err
	}
	if s.checkChain(rec) != nil {
		return nil, false, nil
	}
	if adopt && seen == size {
		adopted, err := s.adoptSegment(ctx, req.UploadID, &rec)
		if err != nil {
			return nil, true, err
		}
		if adopted {
			s.commitMetrics.streamed.Inc()
			resp, err = s.recordSegment(d, req.UploadID, &rec, info.Header.RecordingID)
			return resp, true, err
		}
	}
	if !sums.HasSHA256 {
		// Adoption found another filesystem: the copy's Put needs the
		// SHA-256, which the whole read computes.
		return nil, false, nil
	}
	if body == nil {
		rc, err := up.GetReader(ctx)
		if err != nil {
			return nil, true, err
		}
		defer rc.Close()
		body = rc
	}
	err = s.putSegment(ctx, &rec, body, sums.SHA256)
	if errors.Is(err, store.ErrHashMismatch) || errors.Is(err, errRefusedUnstored) {
		// Bytes that are not those hashed (a state that outlived its bytes
		// in a crash), or a segment that does not verify: nothing was
		// stored; the whole read decides.
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if tee, ok := body.(*verifyingTee); ok {
		if tee.info == nil { // a store that reported success before the end: not ours to receipt
			return nil, true, fmt.Errorf("commit: store %s: Put returned before the last byte was read", rec.Key)
		}
		rec = newSegmentRecord(d, tee.info, tee.outcome, size, req)
	}
	s.commitMetrics.streamed.Inc()
	resp, err = s.recordSegment(d, req.UploadID, &rec, info.Header.RecordingID)
	return resp, true, err
}

// headBytes holds any header (at most crypto.MaxHeaderSize) and the salt
// and commitment after it.
const headBytes = 16 << 10

var errRefusedUnstored = errors.New("commit: the segment does not verify")

// verifyingTee passes the upload's bytes to the store while the Verifier
// sees them, and holds back the last byte until the Verifier has them all:
// a segment that does not verify, or whose segment hash is not the one a
// BLAKE3 commit carries, never reaches the store complete, so the store
// keeps nothing of it.
type verifyingTee struct {
	r       io.Reader
	v       *crypto.Verifier
	want    CommitRequest // the hash a BLAKE3 commit carries
	left    int64         // bytes not yet passed on
	skip    int           // bytes at the start the Verifier already has
	info    *crypto.Info
	outcome crypto.Outcome
}

func (t *verifyingTee) Read(p []byte) (int, error) {
	if t.left == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	last := t.left == 1
	if !last {
		p = p[:min(int64(len(p)), t.left-1)]
	} else {
		p = p[:1]
	}
	n, err := t.r.Read(p)
	if n == 0 {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // shorter than hashed: the store refuses it
		}
		return 0, err
	}
	fresh := p[min(n, t.skip):n]
	t.skip -= n - len(fresh)
	t.v.Write(fresh)
	t.left -= int64(n)
	if last {
		var verr error
		t.info, verr = t.v.Finish(nil)
		if t.outcome = crypto.OutcomeOf(verr); t.outcome == crypto.Corrupt || t.info == nil || t.info.Header == nil {
			return 0, fmt.Errorf("%w: %v", errRefusedUnstored, verr)
		}
		if t.want.BLAKE3 != "" && hex.EncodeToString(t.info.FileHash[:]) != t.want.BLAKE3 {
			return 0, fmt.Errorf("%w: not the announced segment hash", errRefusedUnstored)
		}
	}
	return n, nil
}

// commitMetrics count how commits found their digests.
type commitMetrics struct {
	streamed, reread prometheus.Counter
	readBytes        prometheus.CounterFunc
}

func newCommitMetrics(h *hashing.Store) commitMetrics {
	return commitMetrics{
		streamed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uploadbox_receiver_commits_streamed_total",
			Help: "Commits decided by the hashes taken while the upload's bytes arrived (the upload renamed into the fs store unread, or read once: to verify it, or to copy it into the store).",
		}),
		reread: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uploadbox_receiver_commits_reread_total",
			Help: "Commits that read the whole upload to hash and verify it (no complete streamed hashes, or a refusal to confirm), then renamed it into the fs store or read it again to copy it.",
		}),
		readBytes: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "uploadbox_receiver_upload_read_bytes_total",
			Help: "Bytes commits read back from staged uploads.",
		}, func() float64 { return float64(h.ReadBytes()) }),
	}
}

func (m commitMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.streamed, m.reread, m.readBytes}
}
