package receiver

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/store"
)

// commitStreamed commits an upload from the hashes taken while its bytes
// arrived (internal/hashing), reading it once only, to copy it into the
// store. It only ever accepts: when the hashes are missing or incomplete,
// or anything would refuse the segment, done is false and the commit
// reads the upload whole, which decides. The store's Put checks the
// SHA-256 of what it copies, so bytes that are not those hashed are never
// stored under these digests.
func (s *Server) commitStreamed(ctx context.Context, d *devices.Device, req CommitRequest, up tusd.Upload, size int64) (resp *CommitResponse, done bool, err error) {
	sums, ok := s.hashing.Sums(ctx, req.UploadID)
	if !ok || sums.Length != size || sums.Verifier == nil || size != req.Size || hex.EncodeToString(sums.SHA256[:]) != req.SHA256 {
		return nil, false, nil
	}
	info, verr := sums.Verifier.Finish(nil)
	outcome := crypto.OutcomeOf(verr)
	if outcome == crypto.Corrupt || info == nil || info.Header == nil {
		return nil, false, nil
	}
	if d.CheckSigner(ed25519.PublicKey(info.Header.Device.Bytes()), time.Now()) != nil {
		return nil, false, nil
	}
	rec := newSegmentRecord(d, info, outcome, size, req.SHA256)
	if prev, err := s.lookup(rec.Key); err == nil {
		if prev.SHA256 != rec.SHA256 {
			return nil, false, nil
		}
		s.commitMetrics.streamed.Inc()
		resp, err := s.finishCommit(req.UploadID, prev, true)
		return resp, true, err
	}
	if s.checkChain(rec) != nil {
		return nil, false, nil
	}
	rc, err := up.GetReader(ctx)
	if err != nil {
		return nil, true, err
	}
	defer rc.Close()
	resp, err = s.storeSegment(ctx, d, req.UploadID, &rec, info.Header.RecordingID, rc, sums.SHA256)
	if errors.Is(err, store.ErrHashMismatch) {
		// The upload's bytes are not those hashed (a state that outlived
		// its bytes in a crash): nothing was stored; the whole read decides.
		return nil, false, nil
	}
	s.commitMetrics.streamed.Inc()
	return resp, true, err
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
			Help: "Commits decided by the hashes taken while the upload's bytes arrived (the upload read once, to store it).",
		}),
		reread: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uploadbox_receiver_commits_reread_total",
			Help: "Commits that read the whole upload to hash and verify it (no complete streamed hashes, or a refusal to confirm), then again to store it.",
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
