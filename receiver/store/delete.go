package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Deleter is the optional capability of a Store to remove objects, which
// the receiver needs to purge deleted recordings. Delete of a missing key
// returns nil: a purge interrupted half-way is simply repeated.
type Deleter interface {
	Delete(ctx context.Context, key string) error
}

var (
	_ Deleter = (*FS)(nil)
	_ Deleter = (*S3)(nil)
)

// Delete implements Deleter: the file is removed and its directory
// fsynced; directories left empty are removed too (up to the store root).
func (s *FS) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.path(key)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	dir := filepath.Dir(p)
	if err := s.syncPath(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	// Empty directories go too (os.Remove refuses a non-empty one).
	for dir != s.dir && len(dir) > len(s.dir) {
		s.synced.Delete(dir) // made again, it is fsynced into its parent again
		if os.Remove(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// Delete implements Deleter with DeleteObject (which S3 answers the same
// whether or not the key exists).
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return s.mapErr("delete", key, err)
	}
	return nil
}
