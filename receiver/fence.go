package receiver

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/tus/tusd/v2/pkg/s3store"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/pglock"
)

// Fencing: a receiver that froze (SIGSTOP, a paused VM) while it held an
// upload's tus lock loses it to a receiver that waited beyond the lease
// (pglock). When it resumes, the PATCH it was running goes on where it
// stopped; every write it would make to the staged upload (a part, the
// ".part" remainder, the hash state) first checks that this process still
// holds the upload's lock, and is refused if not, so nothing of it reaches
// the upload another receiver continued.

// checkLock is nil when this process may write upload id: it holds its
// lock (or holds nothing for it, as when creating it), or the locker is
// not PostgreSQL's (lock files exclude one process's requests only).
func (s *Server) checkLock(ctx context.Context, id string) error {
	if l, ok := s.locker.(*pglock.Locker); ok {
		return l.Check(ctx, id)
	}
	return nil
}

// lockEnded audits that this receiver ended a frozen receiver's lock
// session to continue upload id.
func (s *Server) lockEnded(pid int32, id string) {
	device := ""
	if o, ok := s.owner(id); ok {
		device = o.Device
	}
	detail := fmt.Sprintf("ended the tus lock session (database backend %d) of a receiver silent beyond the lease (%s): its uploads continue elsewhere", pid, s.lockLease())
	if _, err := s.audit.Append(audit.Entry{Event: "upload.lock", Identity: device, Source: "local", Outcome: "ended", Detail: detail}); err != nil {
		s.log.Warn("audit upload.lock", "err", err)
	}
}

func (s *Server) lockLease() string {
	if l, ok := s.locker.(*pglock.Locker); ok && l.Lease > 0 {
		return l.Lease.String()
	}
	return pglock.DefaultLease.String()
}

// fencedS3 is the S3 client s3store stages uploads with: each write to an
// upload's objects checks first (check, when set) that this process may
// still write that upload.
type fencedS3 struct {
	s3store.S3API
	prefix string
	check  func(ctx context.Context, id string) error
}

// fence checks the upload whose object key is key.
func (f *fencedS3) fence(ctx context.Context, key *string) error {
	if f.check == nil {
		return nil
	}
	id := strings.TrimPrefix(aws.ToString(key), f.prefix)
	id = strings.TrimSuffix(strings.TrimSuffix(id, ".part"), ".info")
	if !uploadID.MatchString(id) {
		return nil
	}
	return f.check(ctx, id)
}

func (f *fencedS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := f.fence(ctx, in.Key); err != nil {
		return nil, err
	}
	return f.S3API.PutObject(ctx, in, opt...)
}

func (f *fencedS3) UploadPart(ctx context.Context, in *s3.UploadPartInput, opt ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if err := f.fence(ctx, in.Key); err != nil {
		return nil, err
	}
	return f.S3API.UploadPart(ctx, in, opt...)
}

func (f *fencedS3) UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput, opt ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error) {
	if err := f.fence(ctx, in.Key); err != nil {
		return nil, err
	}
	return f.S3API.UploadPartCopy(ctx, in, opt...)
}

func (f *fencedS3) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if err := f.fence(ctx, in.Key); err != nil {
		return nil, err
	}
	return f.S3API.CompleteMultipartUpload(ctx, in, opt...)
}

func (f *fencedS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opt ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	if err := f.fence(ctx, in.Key); err != nil {
		return nil, err
	}
	return f.S3API.DeleteObject(ctx, in, opt...)
}

// fencedStates saves an upload's hash state only while this process may
// write the upload.
type fencedStates struct {
	hashing.States
	check func(ctx context.Context, id string) error
}

func (f fencedStates) Save(ctx context.Context, id string, state []byte) error {
	if err := f.check(ctx, id); err != nil {
		return err
	}
	return f.States.Save(ctx, id, state)
}
