package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

// uploadServeOptions are serve's limits on devices' unfinished uploads.
type uploadServeOptions struct {
	quota        int64
	expiry       time.Duration
	patchTimeout time.Duration
	dir          string
}

func (o *uploadServeOptions) AddFlags(f *pflag.FlagSet) {
	f.Int64Var(&o.quota, "upload-quota", receiver.DefaultUploadQuota, "bytes one device may hold in unfinished uploads, counted by their Upload-Length (4294967296 = 4 GiB, 4× the largest segment the receiver accepts); at most 64 uploads per device are open at once")
	f.DurationVar(&o.expiry, "upload-expiry", receiver.DefaultUploadExpiry, "unfinished uploads older than this are removed")
	f.StringVar(&o.dir, "uploads-dir", "", "directory where unfinished uploads are staged (default: --data/uploads, or the S3 bucket with --s3-bucket); on storage all receivers share (NFS), any of them can continue an upload")
	f.DurationVar(&o.patchTimeout, "patch-timeout", receiver.DefaultPatchTimeout, "a PATCH that receives no byte for this long is cut (the bytes received stay; the upload resumes)")
}

func (o *uploadServeOptions) apply(cfg *receiver.ServerConfig) error {
	if o.quota <= 0 {
		return cli.Usagef("--upload-quota %d: give a positive number of bytes (default %d)", o.quota, int64(receiver.DefaultUploadQuota))
	}
	if o.expiry <= 0 {
		return cli.Usagef("--upload-expiry %s: give a positive duration such as 24h", o.expiry)
	}
	if o.patchTimeout <= 0 {
		return cli.Usagef("--patch-timeout %s: give a positive duration such as 30s", o.patchTimeout)
	}
	cfg.UploadQuota, cfg.UploadExpiry, cfg.PatchTimeout = o.quota, o.expiry, o.patchTimeout
	cfg.UploadsDir = o.dir
	return nil
}
