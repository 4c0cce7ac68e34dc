package receiver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/wire"
)

var segmentsBucket = []byte("segments")

func initSegments(db kv.DB) error {
	return db.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(segmentsBucket)
		return err
	})
}

// SegmentRecord is what the receiver keeps about a committed segment.
type SegmentRecord struct {
	Device    string `json:"device"` // registry name
	DeviceKey []byte `json:"device_key"`
	Recording string `json:"recording"` // hex
	Sequence  uint64 `json:"sequence"`
	Size      int64  `json:"size"`
	// BLAKE3 is the segment hash (hex) of a segment committed with it;
	// SHA256 that of one committed by a box that did not announce it
	// (and of every record stored before). Exactly one is set.
	BLAKE3     string `json:"blake3,omitempty"`
	SHA256     string `json:"sha256,omitempty"`
	Commitment string `json:"commitment"`
	Prev       string `json:"prev"`
	Last       bool   `json:"last"`
	// End is why the recording ended, from the last segment's signed
	// trailer ("stopped", "session time up", …; "unknown" when the box did
	// not say). Empty on other segments and on records stored before.
	End       string    `json:"end,omitempty"`
	Outcome   string    `json:"outcome"` // OK or TRUNCATED
	Key       string    `json:"key"`     // in the store
	Receipt   []byte    `json:"receipt"`
	Committed time.Time `json:"committed"`
	// Start is the wall-clock start of the segment's media (the header's
	// start_ns) and Media its plaintext bytes (crypto.Info.MediaBytes);
	// both zero on records stored before they were kept.
	Start time.Time `json:"start,omitzero"`
	Media int64     `json:"media_bytes,omitempty"`
	// Codec is the header's codec field ("video/mp4", or e.g. "video/mp4;
	// anonymise=whole" for a recording the box anonymised); empty on
	// records stored before it was kept.
	Codec string `json:"codec,omitempty"`
}

// hash returns the hash the segment was committed with (hex).
func (r *SegmentRecord) hash() (wire.HashAlg, string) {
	if r.BLAKE3 != "" {
		return wire.HashBLAKE3, r.BLAKE3
	}
	return wire.HashSHA256, r.SHA256
}

// sum returns the hash the segment was committed with, decoded.
func (r *SegmentRecord) sum() store.Sum {
	alg, h := r.hash()
	sum := store.Sum{Alg: alg}
	hex.Decode(sum.Hash[:], []byte(h))
	return sum
}

// sameBytes reports whether two records of one segment name the same
// bytes: the same hash. A segment committed with BLAKE3 and one with
// SHA-256 do not compare; the commit refuses the second as other bytes.
func sameBytes(a, b *SegmentRecord) bool { return a.BLAKE3 == b.BLAKE3 && a.SHA256 == b.SHA256 }

func segmentKey(devKey []byte, rec [16]byte, seq uint64) string {
	return fmt.Sprintf("%x/%x/%06d.ubx", devKey[:8], rec, seq)
}

type ctxKey int

const deviceKey ctxKey = 0

// deviceOnly admits requests on a connection with an active device's
// certificate (the TLS layer already refused revoked and foreign ones).
func (s *Server) deviceOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeRefusal(w, http.StatusUnauthorized, Refusal{Error: "a device certificate is required (enroll the box first)", Reason: ReasonNoCertificate})
			return
		}
		d, ok := s.devices.Authorized(r.TLS.PeerCertificates[0].SerialNumber.String())
		if !ok {
			writeRefusal(w, http.StatusForbidden, Refusal{Error: "device is not active", Reason: ReasonDeviceInactive})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), deviceKey, d)))
	})
}

// writeRefusal answers a refused device request with its JSON Refusal.
func writeRefusal(w http.ResponseWriter, code int, r Refusal) {
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(r)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// preCreate bounds what a device may create: a segment-sized upload with
// well-formed metadata (tusd itself skips pairs it cannot decode).
func (s *Server) preCreate(hook tusd.HookEvent) (tusd.HTTPResponse, tusd.FileInfoChanges, error) {
	if hook.Upload.SizeIsDeferred || hook.Upload.Size <= 0 {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusRefusal(http.StatusBadRequest, ReasonBadRequest, "Upload-Length is required and must be positive")
	}
	if err := checkMetadata(hook.HTTPRequest.Header.Get("Upload-Metadata")); err != nil {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusRefusal(http.StatusBadRequest, ReasonBadRequest, err.Error())
	}
	d, ok := hook.Context.Value(deviceKey).(*devices.Device)
	if !ok {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, errors.New("upload created without a device")
	}
	id, refused, err := s.claimUpload(d, hook.Upload.Size)
	if err != nil {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, err
	}
	if refused != "" {
		if _, aerr := s.fails.Record(audit.Entry{Event: "upload.quota", Identity: d.Name, Source: hook.HTTPRequest.RemoteAddr, Outcome: "denied", Detail: refused}); aerr != nil {
			s.log.Warn("audit upload.quota", "err", aerr)
		}
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusRefusal(http.StatusRequestEntityTooLarge, ReasonQuota, refused)
	}
	// The receiver chooses the id, so that its owner is recorded before the
	// upload exists.
	return tusd.HTTPResponse{}, tusd.FileInfoChanges{ID: id}, nil
}

// preTerminate forgets the owner of an upload its device deletes (tusd
// holds the upload's lock).
func (s *Server) preTerminate(hook tusd.HookEvent) (tusd.HTTPResponse, error) {
	return tusd.HTTPResponse{}, s.db.Update(func(tx kv.Tx) error { return forgetUpload(tx, hook.Upload.ID) })
}

var metadataKey = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// checkMetadata accepts "key base64, key base64, key" with plain keys,
// standard base64 values, at most 16 pairs and 4 KiB in all.
func checkMetadata(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 4096 {
		return errors.New("Upload-Metadata is longer than 4 KiB")
	}
	pairs := strings.Split(h, ",")
	if len(pairs) > 16 {
		return errors.New("Upload-Metadata has more than 16 pairs")
	}
	for _, p := range pairs {
		parts := strings.Fields(p)
		if len(parts) < 1 || len(parts) > 2 || !metadataKey.MatchString(parts[0]) {
			return fmt.Errorf("Upload-Metadata pair %q is not \"key base64\"", p)
		}
		if len(parts) == 2 {
			if _, err := base64.StdEncoding.Strict().DecodeString(parts[1]); err != nil {
				return fmt.Errorf("Upload-Metadata value of %q is not base64", parts[0])
			}
		}
	}
	return nil
}

var uploadID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// commitError is a refused commit: its status and the Refusal sent.
type commitError struct {
	code   int
	reason string
	msg    string
	offset *int64
	// remove: the upload can never be committed as it is, so it is deleted
	// at once (the box starts a fresh one or gives up on the segment).
	remove bool
}

func (e *commitError) Error() string { return e.msg }

func refuse(code int, reason, format string, args ...any) *commitError {
	return &commitError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// refuseForGood is a refusal after which the upload is removed.
func refuseForGood(code int, reason, format string, args ...any) *commitError {
	e := refuse(code, reason, format, args...)
	e.remove = true
	return e
}

// notFound is the answer for an upload that is not the device's, whether
// it is missing or another device's: the two cannot be told apart.
func notFound(id string) *commitError {
	return refuse(http.StatusNotFound, ReasonNotFound, "commit: no upload %s", id)
}

// commitLockTimeout bounds the wait for an upload's tus lock; a PATCH that
// holds it is asked to stop within the locker's poll interval (filelocker
// 5 s, pglock 100 ms).
const commitLockTimeout = 20 * time.Second

func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request) {
	d := r.Context().Value(deviceKey).(*devices.Device)
	req, err := parseCommitRequest(r.Body)
	if err != nil {
		s.log.Warn("commit refused", "device", d.Name, "reason", ReasonBadRequest)
		writeRefusal(w, http.StatusBadRequest, Refusal{Error: err.Error(), Reason: ReasonBadRequest})
		return
	}
	resp, err := s.commit(r.Context(), d, r.RemoteAddr, req)
	if err != nil {
		ce := &commitError{code: http.StatusInternalServerError, reason: ReasonInternal, msg: err.Error()}
		errors.As(err, &ce)
		// Upload ids stay out of the log: they are the device's handles.
		attrs := []any{"device", d.Name, "reason", ce.reason, "status", ce.code}
		if ce.code == http.StatusInternalServerError {
			attrs = append(attrs, "err", strings.ReplaceAll(err.Error(), req.UploadID, "UPLOAD"))
		}
		s.log.Warn("commit refused", attrs...)
		writeRefusal(w, ce.code, Refusal{Error: ce.msg, Reason: ce.reason, Offset: ce.offset})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// parseCommitRequest decodes and checks a commit request body strictly.
func parseCommitRequest(body io.Reader) (CommitRequest, error) {
	var req CommitRequest
	dec := json.NewDecoder(io.LimitReader(body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("commit: bad request body: %w", err)
	}
	if dec.More() {
		return req, errors.New("commit: bad request body: more than one JSON value")
	}
	if !uploadID.MatchString(req.UploadID) {
		return req, fmt.Errorf("commit: upload id %q is not a tus upload id", req.UploadID)
	}
	switch {
	case req.BLAKE3 != "" && req.SHA256 != "":
		return req, errors.New("commit: the request carries both blake3 and sha256: send the one hash its upload announced (blake3 after Upload-Metadata hash blake3, else sha256)")
	case req.BLAKE3 != "":
		if b, err := hex.DecodeString(req.BLAKE3); err != nil || len(b) != 32 {
			return req, errors.New("commit: blake3 must be 64 hex digits")
		}
	default:
		if b, err := hex.DecodeString(req.SHA256); err != nil || len(b) != sha256.Size {
			return req, errors.New("commit: sha256 must be 64 hex digits (or send blake3, for an upload that announced it)")
		}
	}
	if req.Size <= 0 || req.Size > MaxSegmentSize {
		return req, fmt.Errorf("commit: size %d out of range", req.Size)
	}
	return req, nil
}

// commit takes a finished upload of device d under its tus lock, verifies
// it keylessly, stores a copy exactly once and signs a receipt. A repeated
// commit of the same bytes returns the same receipt.
func (s *Server) commit(ctx context.Context, d *devices.Device, source string, req CommitRequest) (*CommitResponse, error) {
	o, open := s.owner(req.UploadID)
	if !open {
		return s.repeatedCommit(d, source, req)
	}
	if !d.HasSerial(o.Serial) {
		s.denyUpload(d, source, "commit", o)
		return nil, notFound(req.UploadID)
	}
	lctx, cancel := context.WithTimeout(ctx, commitLockTimeout)
	lock, err := s.lockUpload(lctx, req.UploadID)
	cancel()
	if errors.Is(err, tusd.ErrLockTimeout) {
		return nil, refuse(http.StatusServiceUnavailable, ReasonBusy, "commit: the upload is busy (a PATCH did not stop): try again")
	}
	if err != nil {
		return nil, fmt.Errorf("commit: lock upload: %w", err)
	}
	defer lock.Unlock()
	resp, err := s.commitLocked(ctx, d, source, req)
	if ce := (*commitError)(nil); errors.As(err, &ce) && ce.remove {
		if rerr := s.removeUpload(ctx, req.UploadID); rerr != nil {
			s.log.Warn("refused upload not removed", "device", d.Name, "err", strings.ReplaceAll(rerr.Error(), req.UploadID, "UPLOAD"))
		}
	}
	return resp, err
}

func (s *Server) commitLocked(ctx context.Context, d *devices.Device, source string, req CommitRequest) (*CommitResponse, error) {
	up, err := s.hashing.GetUpload(ctx, req.UploadID)
	if errors.Is(err, tusd.ErrNotFound) {
		// Adopted into the store by a commit a crash cut short, or
		// committed or deleted while this commit waited for the lock.
		if resp, ok, err := s.recoverAdopted(ctx, d, req); ok {
			return resp, err
		}
		return s.repeatedCommit(d, source, req)
	}
	if err != nil {
		return nil, err
	}
	tinfo, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkAnnounced(tinfo.MetaData, req); err != nil {
		return nil, err
	}
	if tinfo.Offset < tinfo.Size {
		e := refuse(http.StatusConflict, ReasonIncomplete, "commit: the upload has %d of its %d bytes: finish it (PATCH from offset %d), then commit", tinfo.Offset, tinfo.Size, tinfo.Offset)
		e.offset = &tinfo.Offset
		return nil, e
	}
	if resp, done, err := s.commitStreamed(ctx, d, req, up, tinfo.Size); done {
		return resp, err
	}
	// The hashes of the upload's bytes as they arrived are missing or
	// refuse it: read it whole, which decides.
	s.commitMetrics.reread.Inc()
	f, err := up.GetReader(ctx)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One read: the keyless verification, which gives the segment hash,
	// and the SHA-256 where the commit carries it or the store copies.
	alg, _ := req.Hash()
	w, err := readWhole(f, alg == wire.HashSHA256 || !s.canAdopt())
	if err != nil {
		return nil, err
	}
	size, info, verr, outcome := w.size, w.info, w.verr, w.outcome
	if err := w.matches(req); err != nil {
		return nil, err
	}
	if outcome == crypto.Corrupt || info == nil || info.Header == nil {
		return nil, refuseForGood(http.StatusUnprocessableEntity, ReasonCorrupt, "commit: segment does not verify: %v", verr)
	}
	hdr := info.Header
	// The segment's own key decides, not the certificate's: a re-keyed
	// device's earlier segments are signed by an earlier key (keys.go).
	signer := ed25519.PublicKey(hdr.Device.Bytes())
	if err := d.CheckSigner(signer, time.Now()); err != nil {
		if errors.Is(err, devices.ErrKeyCompromised) {
			return nil, refuseForGood(http.StatusForbidden, ReasonKeyCompromised, "commit: segment %d of recording %x was signed by key %s of %s: %v; it is refused for good", hdr.Sequence, hdr.RecordingID, devices.KeyID(signer), d.Name, err)
		}
		return nil, refuseForGood(http.StatusForbidden, ReasonForeignKey, "commit: the segment was signed by another device than %s", d.Name)
	}
	rec := newSegmentRecord(d, info, outcome, size, req)
	// Exactly once: an earlier record of this (device, recording, sequence)
	// decides before anything is stored.
	if prev, err := s.lookup(rec.Key); err == nil {
		if !sameBytes(prev, &rec) {
			return nil, refuseForGood(http.StatusConflict, ReasonExists, "commit: segment %d of recording %s was already stored with other bytes", rec.Sequence, rec.Recording)
		}
		return s.finishCommit(req.UploadID, prev, true)
	}
	if err := s.checkChain(rec); err != nil {
		return nil, err
	}
	f.Close()
	// The bytes just read are those stored: the file itself, renamed into
	// the store (no upload names it any more), or else a copy, whose
	// SHA-256 Put checks once more.
	if s.canAdopt() {
		adopted, err := s.adoptSegment(ctx, req.UploadID, &rec)
		if err != nil {
			return nil, err
		}
		if adopted {
			return s.recordSegment(d, req.UploadID, &rec, hdr.RecordingID)
		}
	}
	if !w.hasSHA {
		// Read for an adoption that found another filesystem: the copy
		// needs the SHA-256 its Put checks.
		if f, err = up.GetReader(ctx); err != nil {
			return nil, err
		}
		w, err = readWhole(f, true)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if f, err = up.GetReader(ctx); err != nil {
		return nil, err
	}
	defer f.Close()
	return s.storeSegment(ctx, d, req.UploadID, &rec, hdr.RecordingID, f, w.sha)
}

// checkAnnounced refuses a commit whose hash is not the kind its upload
// announced at creation (tus metadata hash=blake3, or none: SHA-256).
func checkAnnounced(meta tusd.MetaData, req CommitRequest) error {
	alg, _ := req.Hash()
	switch announced := hashing.Announced(meta); {
	case announced && alg != wire.HashBLAKE3:
		return refuse(http.StatusBadRequest, ReasonBadRequest, "commit: the upload announced hash blake3 at creation: send blake3, not sha256")
	case !announced && alg == wire.HashBLAKE3:
		return refuse(http.StatusBadRequest, ReasonBadRequest, "commit: the upload did not announce hash blake3 at creation (Upload-Metadata): send sha256, not blake3")
	}
	return nil
}

// newSegmentRecord is what the receiver keeps of a segment that verified
// (OK or TRUNCATED) as info says.
func newSegmentRecord(d *devices.Device, info *crypto.Info, outcome crypto.Outcome, size int64, req CommitRequest) SegmentRecord {
	hdr := info.Header
	signer := ed25519.PublicKey(hdr.Device.Bytes())
	rec := SegmentRecord{
		Device: d.Name, DeviceKey: signer, Recording: hex.EncodeToString(hdr.RecordingID[:]), Sequence: hdr.Sequence,
		Size: size, BLAKE3: req.BLAKE3, SHA256: req.SHA256, Commitment: hex.EncodeToString(info.Commitment[:]), Prev: hex.EncodeToString(hdr.Prev[:]),
		Last: info.Trailer != nil && info.Trailer.Last(), Outcome: outcome.String(),
		Key: segmentKey(signer, hdr.RecordingID, hdr.Sequence), Codec: hdr.Codec,
	}
	if rec.Last {
		rec.End = info.Trailer.End().String()
	}
	if hdr.StartUnixNs != 0 {
		rec.Start, rec.Media = time.Unix(0, hdr.StartUnixNs).UTC(), info.MediaBytes()
	}
	return rec
}

// storeSegment copies the upload's bytes from r into the store under
// rec.Key, signs the receipt and records the segment.
func (s *Server) storeSegment(ctx context.Context, d *devices.Device, id string, rec *SegmentRecord, recID [16]byte, r io.Reader, sha [32]byte) (*CommitResponse, error) {
	if err := s.putSegment(ctx, rec, r, sha); err != nil {
		return nil, err
	}
	return s.recordSegment(d, id, rec, recID)
}

// putSegment copies the segment's bytes from r into the store, which
// checks that they hash to the SHA-256 sha.
func (s *Server) putSegment(ctx context.Context, rec *SegmentRecord, r io.Reader, sha [32]byte) error {
	if err := s.store.Put(ctx, rec.Key, r, rec.Size, sha); err != nil {
		return fmt.Errorf("commit: store %s: %w", rec.Key, err)
	}
	return nil
}

// recordSegment signs the receipt of a stored segment and records it: v2
// for a segment committed with its BLAKE3 segment hash, v1 for SHA-256.
func (s *Server) recordSegment(d *devices.Device, id string, rec *SegmentRecord, recID [16]byte) (*CommitResponse, error) {
	rec.Committed = time.Now().UTC()
	sum := rec.sum()
	rb, err := receipt.Sign(s.receiptKey, receipt.Receipt{Device: rec.DeviceKey, RecordingID: recID, Sequence: rec.Sequence, Alg: sum.Alg, Hash: sum.Hash, Size: rec.Size, Committed: rec.Committed})
	if err != nil {
		return nil, err
	}
	rec.Receipt = rb
	resp, err := s.finishCommit(id, rec, false)
	if err == nil {
		s.log.Info("segment committed", "device", d.Name, "key", rec.Key, "outcome", rec.Outcome, "size", rec.Size)
	}
	return resp, err
}

// finishCommit records the segment (unless repeated), maps the upload id
// to it so that a commit repeated after the upload files were removed gets
// the same receipt, ends the upload's ownership and removes its files.
func (s *Server) finishCommit(id string, rec *SegmentRecord, repeated bool) (*CommitResponse, error) {
	given, givenRepeated := *rec, repeated
	err := s.db.Update(func(tx kv.Tx) error {
		// Each run starts from what was given: a run PostgreSQL retried
		// may have taken another upload's record.
		*rec, repeated = given, givenRepeated
		if !repeated {
			b := tx.Bucket(segmentsBucket)
			if v := b.Get([]byte(rec.Key)); v != nil {
				// Another upload of this segment was committed meanwhile.
				var other SegmentRecord
				if err := json.Unmarshal(v, &other); err != nil {
					return err
				}
				if !sameBytes(&other, rec) {
					return refuseForGood(http.StatusConflict, ReasonExists, "commit: segment %d of recording %s was already stored with other bytes", rec.Sequence, rec.Recording)
				}
				*rec, repeated = other, true
			} else {
				v, err := json.Marshal(rec)
				if err != nil {
					return err
				}
				if err := b.Put([]byte(rec.Key), v); err != nil {
					return err
				}
			}
		}
		ub, err := tx.CreateBucketIfNotExists(uploadsBucket)
		if err != nil {
			return err
		}
		if err := ub.Put([]byte(id), []byte(rec.Key)); err != nil {
			return err
		}
		return forgetUpload(tx, id)
	})
	if err != nil {
		return nil, err
	}
	if err := s.crashPoint(crashRecorded); err != nil {
		return nil, err
	}
	// Even if the box hung up: the commit is done, its upload must go (its
	// ownership went with the transaction above).
	if err := s.removeStaged(context.Background(), id); err != nil {
		s.log.Warn("committed upload not removed (the janitor will)", "err", strings.ReplaceAll(err.Error(), id, "UPLOAD"))
	}
	return &CommitResponse{Receipt: base64.StdEncoding.EncodeToString(rec.Receipt), Key: rec.Key, Outcome: rec.Outcome, Repeated: repeated}, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// checkChain refuses a segment whose link contradicts a stored neighbour.
func (s *Server) checkChain(rec SegmentRecord) error {
	prefix := rec.Key[:len(rec.Key)-len("000000.ubx")]
	if rec.Sequence > 0 {
		if prev, err := s.lookup(fmt.Sprintf("%s%06d.ubx", prefix, rec.Sequence-1)); err == nil && prev.Commitment != rec.Prev {
			return refuseForGood(http.StatusConflict, ReasonChain, "commit: segment %d does not link to the stored segment %d of recording %s (chain broken)", rec.Sequence, rec.Sequence-1, rec.Recording)
		}
	}
	if next, err := s.lookup(fmt.Sprintf("%s%06d.ubx", prefix, rec.Sequence+1)); err == nil && next.Prev != rec.Commitment {
		return refuseForGood(http.StatusConflict, ReasonChain, "commit: the stored segment %d does not link to segment %d of recording %s (chain broken)", rec.Sequence+1, rec.Sequence, rec.Recording)
	}
	return nil
}

var uploadsBucket = []byte("uploads")

// repeatedCommit answers a commit of an upload that is no longer open:
// the receipt again if this device committed it with these bytes.
func (s *Server) repeatedCommit(d *devices.Device, source string, req CommitRequest) (*CommitResponse, error) {
	var key string
	s.db.View(func(tx kv.Tx) error {
		if b := tx.Bucket(uploadsBucket); b != nil {
			key = string(b.Get([]byte(req.UploadID)))
		}
		return nil
	})
	if key == "" {
		return nil, notFound(req.UploadID)
	}
	rec, err := s.lookup(key)
	if err != nil {
		return nil, err
	}
	if !d.HoldsKey(rec.DeviceKey) {
		s.denyUpload(d, source, "commit", &uploadOwner{Device: rec.Device})
		return nil, notFound(req.UploadID)
	}
	alg, _ := req.Hash()
	if recAlg, _ := rec.hash(); alg != recAlg {
		return nil, refuse(http.StatusBadRequest, ReasonBadRequest, "commit: the upload was committed with %s: send %s, not %s", recAlg, recAlg, alg)
	}
	if rec.SHA256 != req.SHA256 || rec.BLAKE3 != req.BLAKE3 || rec.Size != req.Size {
		return nil, refuse(http.StatusConflict, ReasonMismatch, "commit: upload %s was committed with other bytes: upload the segment again", req.UploadID)
	}
	return &CommitResponse{Receipt: base64.StdEncoding.EncodeToString(rec.Receipt), Key: rec.Key, Outcome: rec.Outcome, Repeated: true}, nil
}

func (s *Server) lookup(key string) (*SegmentRecord, error) {
	var rec *SegmentRecord
	err := s.db.View(func(tx kv.Tx) error {
		v := tx.Bucket(segmentsBucket).Get([]byte(key))
		if v == nil {
			return os.ErrNotExist
		}
		rec = &SegmentRecord{}
		return json.Unmarshal(v, rec)
	})
	return rec, err
}
