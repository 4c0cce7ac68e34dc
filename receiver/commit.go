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
	"path/filepath"
	"regexp"
	"strings"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"
	bolt "go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/receipt"
)

var segmentsBucket = []byte("segments")

func initSegments(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(segmentsBucket)
		return err
	})
}

// SegmentRecord is what the receiver keeps about a committed segment.
type SegmentRecord struct {
	Device     string    `json:"device"` // registry name
	DeviceKey  []byte    `json:"device_key"`
	Recording  string    `json:"recording"` // hex
	Sequence   uint64    `json:"sequence"`
	Size       int64     `json:"size"`
	SHA256     string    `json:"sha256"`
	Commitment string    `json:"commitment"`
	Prev       string    `json:"prev"`
	Last       bool      `json:"last"`
	Outcome    string    `json:"outcome"` // OK or TRUNCATED
	Key        string    `json:"key"`     // in the store
	Receipt    []byte    `json:"receipt"`
	Committed  time.Time `json:"committed"`
}

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
			httpError(w, http.StatusUnauthorized, "a device certificate is required (enroll the box first)")
			return
		}
		d, ok := s.devices.Authorized(r.TLS.PeerCertificates[0].SerialNumber.String())
		if !ok {
			httpError(w, http.StatusForbidden, "device is not active")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), deviceKey, d)))
	})
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
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusd.NewError("ERR_SIZE", "Upload-Length is required and must be positive", http.StatusBadRequest)
	}
	if err := checkMetadata(hook.HTTPRequest.Header.Get("Upload-Metadata")); err != nil {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusd.NewError("ERR_METADATA", err.Error(), http.StatusBadRequest)
	}
	return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, nil
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

// CommitRequest asks the receiver to take a finished upload.
type CommitRequest struct {
	UploadID string `json:"upload_id"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"` // hex
}

// CommitResponse carries the signed receipt.
type CommitResponse struct {
	Receipt  string `json:"receipt"` // base64 of receipt.Size bytes
	Key      string `json:"key"`
	Outcome  string `json:"outcome"`
	Repeated bool   `json:"repeated"`
}

var uploadID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// commitError carries the HTTP status of a refused commit.
type commitError struct {
	code int
	msg  string
}

func (e *commitError) Error() string { return e.msg }

func refuse(code int, format string, args ...any) error {
	return &commitError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request) {
	d := r.Context().Value(deviceKey).(*devices.Device)
	req, err := parseCommitRequest(r.Body)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := s.commit(r.Context(), d, req)
	if err != nil {
		var ce *commitError
		code := http.StatusInternalServerError
		if errors.As(err, &ce) {
			code = ce.code
		}
		s.log.Warn("commit refused", "device", d.Name, "upload", req.UploadID, "err", err)
		httpError(w, code, err.Error())
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
	if b, err := hex.DecodeString(req.SHA256); err != nil || len(b) != sha256.Size {
		return req, errors.New("commit: sha256 must be 64 hex digits")
	}
	if req.Size <= 0 || req.Size > MaxSegmentSize {
		return req, fmt.Errorf("commit: size %d out of range", req.Size)
	}
	return req, nil
}

// commit verifies an upload keylessly, stores it exactly once and signs a
// receipt. A repeated commit of the same bytes returns the same receipt.
func (s *Server) commit(ctx context.Context, d *devices.Device, req CommitRequest) (*CommitResponse, error) {
	// req passed parseCommitRequest: the id is 32 hex digits, never a path.
	path := filepath.Join(s.uploads, req.UploadID)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return s.repeatedCommit(d, req)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// tusd never fsyncs: make the bytes durable before anything is promised.
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("commit: fsync upload: %w", err)
	}
	// One read: the SHA-256 for the receipt and the keyless verification.
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(f, h)}
	info, verr := crypto.Verify(cr, nil)
	if _, err := io.Copy(io.Discard, cr); err != nil { // whatever Verify left unread
		return nil, err
	}
	size := cr.n
	var sum [32]byte
	h.Sum(sum[:0])
	if size != req.Size || hex.EncodeToString(sum[:]) != req.SHA256 {
		return nil, refuse(http.StatusConflict, "commit: upload %s has %d bytes with SHA-256 %x; the box announced %d bytes with %s: resume the upload", req.UploadID, size, sum[:8], req.Size, req.SHA256)
	}
	outcome := crypto.OutcomeOf(verr)
	if outcome == crypto.Corrupt || info == nil || info.Header == nil {
		return nil, refuse(http.StatusUnprocessableEntity, "commit: segment does not verify: %v", verr)
	}
	hdr := info.Header
	if !ed25519.PublicKey(hdr.Device.Bytes()).Equal(ed25519.PublicKey(d.PublicKey)) {
		return nil, refuse(http.StatusForbidden, "commit: the segment was signed by another device than %s", d.Name)
	}
	rec := SegmentRecord{
		Device: d.Name, DeviceKey: d.PublicKey, Recording: hex.EncodeToString(hdr.RecordingID[:]), Sequence: hdr.Sequence,
		Size: size, SHA256: req.SHA256, Commitment: hex.EncodeToString(info.Commitment[:]), Prev: hex.EncodeToString(hdr.Prev[:]),
		Last: info.Trailer != nil && info.Trailer.Last(), Outcome: outcome.String(),
		Key: segmentKey(d.PublicKey, hdr.RecordingID, hdr.Sequence),
	}
	// Exactly once: an earlier record of this (device, recording, sequence)
	// decides before anything is stored.
	if prev, err := s.lookup(rec.Key); err == nil {
		if prev.SHA256 != rec.SHA256 {
			return nil, refuse(http.StatusConflict, "commit: segment %d of recording %s was already stored with other bytes", rec.Sequence, rec.Recording)
		}
		os.Remove(path)
		os.Remove(path + ".info")
		return &CommitResponse{Receipt: base64.StdEncoding.EncodeToString(prev.Receipt), Key: prev.Key, Outcome: prev.Outcome, Repeated: true}, nil
	}
	if err := s.checkChain(rec); err != nil {
		return nil, err
	}
	if err := s.put(ctx, rec.Key, f, path, size, sum); err != nil {
		return nil, fmt.Errorf("commit: store %s: %w", rec.Key, err)
	}
	rec.Committed = time.Now().UTC()
	rb, err := receipt.Sign(s.receiptKey, receipt.Receipt{Device: d.PublicKey, RecordingID: hdr.RecordingID, Sequence: hdr.Sequence, SHA256: sum, Size: size, Committed: rec.Committed})
	if err != nil {
		return nil, err
	}
	rec.Receipt = rb
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(segmentsBucket)
		if b.Get([]byte(rec.Key)) != nil {
			return refuse(http.StatusConflict, "commit: segment %s committed concurrently", rec.Key)
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(rec.Key), v)
	}); err != nil {
		return nil, err
	}
	// The upload is no longer needed; a repeated commit finds the record.
	s.rememberUpload(req.UploadID, rec.Key)
	os.Remove(path)
	os.Remove(path + ".info")
	s.log.Info("segment committed", "device", d.Name, "key", rec.Key, "outcome", rec.Outcome, "size", size)
	return &CommitResponse{Receipt: base64.StdEncoding.EncodeToString(rb), Key: rec.Key, Outcome: rec.Outcome}, nil
}

// fileStore is the optional capability of a store that can take a finished,
// fsynced upload file as it is (the local filesystem links it).
type fileStore interface {
	PutFile(ctx context.Context, key, src string, size int64, sum [32]byte) error
}

func (s *Server) put(ctx context.Context, key string, f *os.File, path string, size int64, sum [32]byte) error {
	if fs, ok := s.store.(fileStore); ok {
		return fs.PutFile(ctx, key, path, size, sum)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return s.store.Put(ctx, key, f, size, sum)
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
			return refuse(http.StatusConflict, "commit: segment %d does not link to the stored segment %d of recording %s (chain broken)", rec.Sequence, rec.Sequence-1, rec.Recording)
		}
	}
	if next, err := s.lookup(fmt.Sprintf("%s%06d.ubx", prefix, rec.Sequence+1)); err == nil && next.Prev != rec.Commitment {
		return refuse(http.StatusConflict, "commit: the stored segment %d does not link to segment %d of recording %s (chain broken)", rec.Sequence+1, rec.Sequence, rec.Recording)
	}
	return nil
}

var uploadsBucket = []byte("uploads")

// rememberUpload maps a finished upload id to its segment so that a commit
// repeated after the upload files were removed gets the same receipt.
func (s *Server) rememberUpload(id, key string) {
	s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(uploadsBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), []byte(key))
	})
}

func (s *Server) repeatedCommit(d *devices.Device, req CommitRequest) (*CommitResponse, error) {
	var key string
	s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(uploadsBucket); b != nil {
			key = string(b.Get([]byte(req.UploadID)))
		}
		return nil
	})
	if key == "" {
		return nil, refuse(http.StatusNotFound, "commit: no upload %s", req.UploadID)
	}
	rec, err := s.lookup(key)
	if err != nil {
		return nil, err
	}
	if rec.Device != d.Name || rec.SHA256 != req.SHA256 || rec.Size != req.Size {
		return nil, refuse(http.StatusConflict, "commit: upload %s was committed with other bytes", req.UploadID)
	}
	return &CommitResponse{Receipt: base64.StdEncoding.EncodeToString(rec.Receipt), Key: rec.Key, Outcome: rec.Outcome, Repeated: true}, nil
}

func (s *Server) lookup(key string) (*SegmentRecord, error) {
	var rec *SegmentRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(segmentsBucket).Get([]byte(key))
		if v == nil {
			return os.ErrNotExist
		}
		rec = &SegmentRecord{}
		return json.Unmarshal(v, rec)
	})
	return rec, err
}
