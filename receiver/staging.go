package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"

	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pglock"
)

// staging is where tus uploads wait for their commit: tusd's filestore in
// a directory (DATA/uploads, or --uploads-dir on storage all replicas
// share) or its s3store under a prefix of a bucket.
type staging interface {
	UseIn(*tusd.StoreComposer)
	GetUpload(ctx context.Context, id string) (tusd.Upload, error)
	// remove deletes upload id (nothing left is not an error); the caller
	// holds its lock.
	remove(ctx context.Context, id string) error
	// stale lists the uploads last written before cutoff.
	stale(ctx context.Context, cutoff time.Time) ([]string, error)
}

// fileStaging stages uploads in a directory with tusd's filestore.
type fileStaging struct {
	filestore.FileStore
	dir string
}

// The files are named by the id alone (the receiver never sets another
// path), not by what an .info file says: the data, the note of an adopting
// commit, a hash state a receiver that saved them left (hashing.Dir), and
// last the .info file, by which the janitor finds leftovers.
func (f fileStaging) remove(_ context.Context, id string) error {
	for _, suffix := range []string{"", adoptSuffix, ".hash", ".hash.tmp", ".info"} {
		p := filepath.Join(f.dir, id+suffix)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (f fileStaging) stale(_ context.Context, cutoff time.Time) ([]string, error) {
	infos, err := filepath.Glob(filepath.Join(f.dir, "*.info"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range infos {
		if st, err := os.Stat(p); err == nil && st.ModTime().Before(cutoff) {
			ids = append(ids, strings.TrimSuffix(filepath.Base(p), ".info"))
		}
	}
	return ids, nil
}

// S3 staging: the limits of tusd's s3store the receiver sets. S3 refuses
// a multipart part under 5 MiB unless it is the last, so s3store keeps a
// PATCH's remainder under that size as a separate ".part" object, which the
// next PATCH downloads, prepends and replaces: every byte a PATCH hands to
// the store is in the bucket when the PATCH ends.
const (
	s3MinPartSize = 5 << 20
	// s3BufferedParts bounds the parts one PATCH buffers in temporary
	// files while earlier ones are sent.
	s3BufferedParts = 2
	// s3PartUploads bounds the parts sent to S3 at once by the receiver.
	s3PartUploads = 32
)

// DefaultS3UploadsPrefix is the default of ServerConfig.S3Uploads.Prefix.
const DefaultS3UploadsPrefix = "uploads/"

// S3Uploads configures staging unfinished uploads in an S3 bucket.
type S3Uploads struct {
	Client *s3.Client
	Bucket string
	// Prefix is prepended to the staged objects' keys (default
	// DefaultS3UploadsPrefix).
	Prefix string
}

// s3Staging stages uploads with tusd's s3store (one multipart upload each,
// plus an ".info" object and at times a ".part" object). s3store names an
// upload "OBJECT+MULTIPART-ID"; the receiver's ids are the OBJECT part
// alone (what boxes and the database know), and s3Staging translates: the
// multipart id is read once from the ".info" object and remembered (it
// never changes for an id).
type s3Staging struct {
	inner  s3store.S3Store
	fenced *fencedS3 // the client inner writes with
	client *s3.Client
	bucket string
	prefix string
	mu     sync.Mutex
	ids    map[string]string // receiver id → s3store id
}

// maxRemembered bounds s3Staging.ids; past it the map starts afresh (ids
// are read again from their ".info" objects).
const maxRemembered = 100000

func newS3Staging(cfg S3Uploads, tmp string) (*s3Staging, error) {
	if cfg.Client == nil || cfg.Bucket == "" {
		return nil, errors.New("serve: S3 upload staging needs a client and a bucket")
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultS3UploadsPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//") {
		return nil, fmt.Errorf("serve: --s3-uploads-prefix %q: give a key prefix such as %q (no leading slash, no empty segment)", cfg.Prefix, DefaultS3UploadsPrefix)
	}
	fenced := &fencedS3{S3API: cfg.Client, prefix: prefix}
	inner := s3store.New(cfg.Bucket, fenced)
	inner.ObjectPrefix = prefix
	inner.MinPartSize = s3MinPartSize
	inner.MaxBufferedParts = s3BufferedParts
	inner.TemporaryDirectory = tmp
	inner.SetConcurrentPartUploads(s3PartUploads)
	return &s3Staging{inner: inner, fenced: fenced, client: cfg.Client, bucket: cfg.Bucket, prefix: prefix, ids: map[string]string{}}, nil
}

func (s *s3Staging) UseIn(c *tusd.StoreComposer) {
	c.UseCore(s)
	c.UseTerminater(s)
	c.UseLengthDeferrer(s)
}

func (s *s3Staging) remember(id, full string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) >= maxRemembered {
		clear(s.ids)
	}
	s.ids[id] = full
}

func (s *s3Staging) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

// NewUpload creates the multipart upload under the id preCreate chose.
func (s *s3Staging) NewUpload(ctx context.Context, info tusd.FileInfo) (tusd.Upload, error) {
	id := info.ID
	if !uploadID.MatchString(id) {
		return nil, fmt.Errorf("s3 staging: upload id %q was not chosen by the receiver", id)
	}
	up, err := s.inner.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	full, err := up.GetInfo(ctx) // s3store keeps it: no request
	if err != nil {
		return nil, err
	}
	s.remember(id, full.ID)
	return &s3Upload{Upload: up, id: id}, nil
}

// GetUpload finds upload id. An id the receiver did not make is not found.
func (s *s3Staging) GetUpload(ctx context.Context, id string) (tusd.Upload, error) {
	if !uploadID.MatchString(id) {
		return nil, tusd.ErrNotFound
	}
	s.mu.Lock()
	full, ok := s.ids[id]
	s.mu.Unlock()
	if !ok {
		res, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + id + ".info")})
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) {
			return nil, tusd.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("s3 staging: read %s%s.info: %w", s.prefix, id, err)
		}
		var info tusd.FileInfo
		err = json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&info)
		res.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("s3 staging: %s%s.info: %w", s.prefix, id, err)
		}
		obj, _, _ := strings.Cut(info.ID, "+")
		if obj != id {
			return nil, fmt.Errorf("s3 staging: %s%s.info names upload %q", s.prefix, id, info.ID)
		}
		full = info.ID
		s.remember(id, full)
	}
	up, err := s.inner.GetUpload(ctx, full)
	if err != nil {
		return nil, err
	}
	return &s3Upload{Upload: up, id: id}, nil
}

func (s *s3Staging) AsTerminatableUpload(up tusd.Upload) tusd.TerminatableUpload {
	u := up.(*s3Upload)
	return terminate(func(ctx context.Context) error {
		err := s.inner.AsTerminatableUpload(u.Upload).Terminate(ctx)
		if err == nil {
			s.forget(u.id)
		}
		return err
	})
}

func (s *s3Staging) AsLengthDeclarableUpload(up tusd.Upload) tusd.LengthDeclarableUpload {
	return s.inner.AsLengthDeclarableUpload(up.(*s3Upload).Upload)
}

type terminate func(ctx context.Context) error

func (t terminate) Terminate(ctx context.Context) error { return t(ctx) }

func (s *s3Staging) remove(ctx context.Context, id string) error {
	up, err := s.GetUpload(ctx, id)
	if errors.Is(err, tusd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.AsTerminatableUpload(up).Terminate(ctx)
}

// stale lists the ".info" objects under the prefix last written before
// cutoff.
func (s *s3Staging) stale(ctx context.Context, cutoff time.Time) ([]string, error) {
	var ids []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3 staging: list %s in bucket %s: %w", s.prefix, s.bucket, err)
		}
		for _, o := range page.Contents {
			id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), s.prefix), ".info")
			if ok && uploadID.MatchString(id) && o.LastModified != nil && o.LastModified.Before(cutoff) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// s3Upload is an s3store upload under the receiver's id.
type s3Upload struct {
	tusd.Upload
	id string
}

// GetReader reads the finished object. A replica that stopped between the
// last part and completing the multipart upload left it incomplete with
// all its bytes: GetReader completes it.
func (u *s3Upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	r, err := u.Upload.GetReader(ctx)
	var te tusd.Error
	if errors.As(err, &te) && te.ErrorCode == "ERR_INCOMPLETE_UPLOAD" {
		info, ierr := u.Upload.GetInfo(ctx)
		if ierr != nil {
			return nil, ierr
		}
		if info.Offset != info.Size {
			return nil, err
		}
		if err := u.Upload.FinishUpload(ctx); err != nil {
			return nil, fmt.Errorf("s3 staging: complete upload: %w", err)
		}
		r, err = u.Upload.GetReader(ctx)
	}
	return r, err
}

func (u *s3Upload) GetInfo(ctx context.Context) (tusd.FileInfo, error) {
	info, err := u.Upload.GetInfo(ctx)
	info.ID = u.id
	return info, err
}

var (
	_ staging = fileStaging{}
	_ staging = (*s3Staging)(nil)
)

// openStaging prepares where unfinished uploads are staged. s.uploads is a
// local or shared directory either way: the staging itself, or, for S3,
// the directory of s3store's temporary files (the parts of running
// PATCHes on their way to the bucket; those a stopped receiver left are
// removed here, as no other process uses this data directory).
func (s *Server) openStaging() error {
	s.uploads = s.cfg.UploadsDir
	if s.uploads == "" {
		s.uploads = filepath.Join(s.cfg.Data, UploadsDir)
	}
	if err := os.MkdirAll(s.uploads, 0o700); err != nil {
		return fmt.Errorf("serve: uploads directory: %w", err)
	}
	if s.cfg.UploadsDir != "" || s.cfg.S3Uploads == nil {
		s.tusStore = fileStaging{FileStore: filestore.New(s.uploads), dir: s.uploads}
		s.openAdoption()
		return nil
	}
	left, _ := filepath.Glob(filepath.Join(s.uploads, "tusd-s3-*"))
	for _, p := range left {
		os.Remove(p)
	}
	st, err := newS3Staging(*s.cfg.S3Uploads, s.uploads)
	if err != nil {
		return err
	}
	st.fenced.check = s.checkLock
	s.tusStore = st
	return nil
}

// poolHolder is a state database on PostgreSQL (kv.Postgres), which lends
// its connection pool.
type poolHolder interface{ Pool() *pgxpool.Pool }

// newLocker is the tus locker for the state database db. On PostgreSQL the
// locks are advisory locks there (pglock), so that receivers sharing the
// database never write one upload at once; otherwise lock files in the
// uploads directory, which exclude the requests of one receiver process.
func (s *Server) newLocker(db any) tusd.Locker {
	if p, ok := db.(poolHolder); ok {
		l := pglock.New(p.Pool(), s.log)
		l.Lease, l.Ended = s.cfg.PeerLease, s.lockEnded
		return l
	}
	return filelocker.New(s.uploads)
}

// hashStates is where the uploads' hash states are saved: nowhere when
// commits adopt uploads (one without this process's hashes reads the
// upload once to check what is on disk, saved state or not, so saving one
// after every PATCH would buy nothing); with the state in PostgreSQL, there
// (every receiver continuing an upload finds its state), else beside the
// uploads.
func (s *Server) hashStates(db kv.DB) hashing.States {
	if s.adoption.fs.Load() != nil {
		return hashing.NoStates{}
	}
	if _, ok := db.(poolHolder); ok {
		return fencedStates{States: hashing.NewKV(db), check: s.checkLock}
	}
	return hashing.NewDir(s.uploads)
}

// runLocker runs the tus locker's background work, if it has any (pglock
// listens for other receivers' release requests), until ctx is done.
func (s *Server) runLocker(ctx context.Context) {
	if r, ok := s.locker.(interface{ Run(context.Context) error }); ok {
		if err := r.Run(ctx); err != nil {
			s.log.Warn("tus locks", "err", err)
		}
	}
}
