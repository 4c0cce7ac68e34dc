package receiver

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pki"
)

// A backup is a gzip-compressed tar of the data directory's state: a
// consistent copy of the database (taken inside one read transaction of
// the running server, or of the file when no server runs), the audit log
// and its checkpoints (read together under the log's lock), the CA, the
// server certificate, the receipt and token keys and every other file of
// the data directory, and last a manifest with each file's size and
// SHA-256. Uploaded segments are not in it: they live in the store.
const (
	backupFormat     = "uploadbox-receiver backup 1"
	backupManifest   = "MANIFEST.json"
	maxManifestBytes = 4 << 20
	// dbSnapshotPath is the admin socket's route for the database copy.
	dbSnapshotPath = "/backup/database"
)

// BackupFile is one file of a backup, as its manifest lists it.
type BackupFile struct {
	Name   string      `json:"name"` // slash-separated, relative to the data directory
	Size   int64       `json:"size"`
	Mode   fs.FileMode `json:"mode"` // permission bits
	SHA256 string      `json:"sha256"`
}

// BackupManifest is the last entry of a backup.
type BackupManifest struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	Source  string    `json:"source"` // the data directory backed up
	// State is "postgres" when the state is in PostgreSQL and so not in
	// the backup (DatabaseFile names the database); empty: the bbolt
	// file DBFile is in it.
	State string       `json:"state,omitempty"`
	Files []BackupFile `json:"files"`
}

// BackupReport says what Backup wrote.
type BackupReport struct {
	Out   string `json:"out"`
	Bytes int64  `json:"bytes"` // of the backup file
	BackupManifest
	// Live: the database was copied from a running server.
	Live bool `json:"live"`
	// OrgKeys names organisation private keys found in the data
	// directory and included: whoever holds the backup can decrypt
	// every recording.
	OrgKeys []string `json:"org_keys,omitempty"`
}

// Backup writes a backup of the receiver data directory data to out
// (0600, atomically: a failed backup leaves no file, or the old one, at
// out). It works while serve runs (the database is copied through the
// admin socket) and without it.
func Backup(ctx context.Context, data, out string) (*BackupReport, error) {
	if _, err := os.Stat(filepath.Join(data, pki.CACertFile)); err != nil {
		return nil, fmt.Errorf("backup: %s is not a receiver data directory: %w", data, err)
	}
	if inside(data, out) {
		return nil, fmt.Errorf("backup: --out %s is inside the data directory %s: write the backup elsewhere (it must not back itself up)", out, data)
	}
	rep := &BackupReport{Out: out, BackupManifest: BackupManifest{Format: backupFormat, Created: time.Now().UTC(), Source: data}}
	err := writeNew(out, func(w io.Writer) error {
		counted := &countWriter{w: w}
		gz := gzip.NewWriter(counted)
		tw := &backupWriter{tw: tar.NewWriter(gz), created: rep.Created}
		if err := rep.write(ctx, tw, data); err != nil {
			return err
		}
		m, err := json.MarshalIndent(rep.BackupManifest, "", "  ")
		if err != nil {
			return err
		}
		if err := tw.add(backupManifest, 0o600, int64(len(m)), strings.NewReader(string(m))); err != nil {
			return err
		}
		if err := tw.tw.Close(); err != nil {
			return err
		}
		if err := gz.Close(); err != nil {
			return err
		}
		rep.Bytes = counted.n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup to %s: %w", out, err)
	}
	return rep, nil
}

// writeNew writes out with what write writes: to a temporary file beside
// it (0600 from its creation), fsynced and renamed over out, the directory
// fsynced; if write fails, out is left as it was.
func writeNew(out string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is there
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(out))
}

// inside reports whether path is in dir or below it.
func inside(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && filepath.IsLocal(rel)
}

// write adds the database, the audit log and the other files of data.
func (rep *BackupReport) write(ctx context.Context, tw *backupWriter, data string) error {
	var err error
	pg := statePostgres(data)
	if pg {
		// The state and the audit chain are in the database (pg_dump);
		// an audit file left from before is copied as any other file.
		rep.State = StatePostgres
	} else if rep.Live, err = snapshotDB(ctx, data, func(size int64, r io.Reader) error {
		return tw.add(DBFile, 0o600, size, r)
	}); err != nil {
		return err
	} else if err := addAuditFile(tw, data); err != nil {
		return err
	}
	err = filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(data, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch {
		case name == ".":
			return nil
		case d.IsDir() && (name == StoreDir || name == UploadsDir):
			// Segments live in the store; unfinished uploads resume.
			return filepath.SkipDir
		case d.IsDir(), !d.Type().IsRegular():
			return nil
		case name == DBFile, !pg && (name == AuditFile || name == AuditFile+audit.CheckpointSuffix):
			return nil // copied above
		case strings.HasPrefix(d.Name(), ".") && strings.Contains(d.Name(), ".tmp-"):
			return nil // an atomic write in progress
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.add(name, st.Mode().Perm(), st.Size(), f); err != nil {
			return err
		}
		if _, err := crypto.ReadIdentityFile(path); err == nil {
			rep.OrgKeys = append(rep.OrgKeys, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	rep.Files = tw.files
	return nil
}

// ErrStatePostgres: a backup cannot copy a state kept in PostgreSQL.
var ErrStatePostgres = errors.New("the state is in PostgreSQL: back it up with pg_dump (it holds the audit chain too); this backup holds the keys and files only")

// StatePostgres is BackupManifest.State for a state in PostgreSQL.
const StatePostgres = "postgres"

// snapshotDB calls f with a consistent copy of the database of data:
// from the running server through the admin socket (live true), or from
// the file when no server runs.
func snapshotDB(ctx context.Context, data string, f func(size int64, r io.Reader) error) (live bool, err error) {
	a, err := OpenAdmin(data)
	if err != nil {
		return false, err
	}
	defer a.Close()
	switch a := a.(type) {
	case *socketAdmin:
		client := *a.client
		client.Timeout = 0 // a large database takes its time; ctx bounds it
		req, err := http.NewRequestWithContext(ctx, "GET", "http://receiver"+dbSnapshotPath, nil)
		if err != nil {
			return true, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return true, fmt.Errorf("admin socket: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			return true, fmt.Errorf("the running server did not copy its database (%s): %s (is it an older receiver? stop it and back up again)", resp.Status, strings.TrimSpace(string(msg)))
		}
		return true, f(resp.ContentLength, resp.Body)
	case *localAdmin:
		b, ok := a.db.(*kv.Bolt)
		if !ok {
			return false, ErrStatePostgres
		}
		return false, b.Snapshot(func(size int64, writeTo func(io.Writer) (int64, error)) error {
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				_, err := writeTo(pw)
				pw.CloseWithError(err)
				done <- err
			}()
			err := f(size, pr)
			// Unblocks the copy if f stopped early; the transaction ends
			// only after the copy did.
			pr.CloseWithError(errors.New("backup stopped"))
			if werr := <-done; err == nil {
				err = werr
			}
			return err
		})
	}
	return false, fmt.Errorf("backup: unexpected admin %T", a)
}

// handleDatabaseSnapshot answers the admin socket's GET /backup/database
// with a consistent copy of the database, taken inside one read
// transaction (writers go on meanwhile; a writer that must grow the file
// waits for the copy to finish).
func (s *Server) handleDatabaseSnapshot(w http.ResponseWriter, _ *http.Request) {
	b, ok := s.db.(*kv.Bolt)
	if !ok {
		httpError(w, http.StatusConflict, ErrStatePostgres.Error())
		return
	}
	err := b.Snapshot(func(size int64, writeTo func(io.Writer) (int64, error)) error {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, err := writeTo(w)
		return err
	})
	if err != nil {
		// The client sees a short body and fails.
		s.log.Error("database copy for a backup", "err", err)
	}
}

// backupWriter adds files to the tar and lists them for the manifest.
type backupWriter struct {
	tw      *tar.Writer
	created time.Time
	files   []BackupFile
}

func (b *backupWriter) add(name string, mode fs.FileMode, size int64, r io.Reader) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: int64(mode.Perm()), ModTime: b.created, Format: tar.FormatPAX}
	if err := b.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	h := sha256.New()
	n, err := io.Copy(b.tw, io.TeeReader(io.LimitReader(r, size), h))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s: read %d bytes of %d (it changed or was cut short while being copied)", name, n, size)
	}
	if name != backupManifest {
		b.files = append(b.files, BackupFile{Name: name, Size: size, Mode: mode.Perm(), SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreReport says what Restore wrote.
type RestoreReport struct {
	Data string `json:"data"`
	BackupManifest
	// Warnings: what the admin should know (an audit log that does not
	// verify); the restore itself succeeded.
	Warnings []string `json:"warnings,omitempty"`
}

// errDamaged marks an error reading the backup file itself.
var errDamaged = errors.New("the backup is damaged or cut short")

// damagedReader tags the errors of reading the backup (not of writing
// the files) with errDamaged.
type damagedReader struct{ r io.Reader }

func (d damagedReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errDamaged, err)
	}
	return n, err
}

// ErrNotEmpty: restore only writes into a new or empty directory.
var ErrNotEmpty = errors.New("is not empty: restore into a new or empty directory (nothing in it was changed)")

// Restore unpacks the backup from into the data directory data, which
// must not exist or be empty. Every file is checked against the
// manifest's size and SHA-256 and the database is checked before Restore
// succeeds; on any failure the files it wrote are removed again (nothing
// else in data is touched).
func Restore(from, data string) (rep *RestoreReport, err error) {
	created, err := emptyDir(data)
	if err != nil {
		return nil, err
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		for i := len(written) - 1; i >= 0; i-- {
			os.Remove(written[i])
		}
		if created {
			os.Remove(data)
		}
	}()
	f, err := os.Open(from)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("restore: %s is not a receiver backup: %w", from, err)
	}
	got := map[string]BackupFile{}
	var manifest *BackupManifest
	tr := tar.NewReader(damagedReader{gz})
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("restore: %s is damaged or cut short: %w", from, err)
		}
		if manifest != nil {
			return nil, fmt.Errorf("restore: %s: %s after the manifest (not a backup this receiver wrote)", from, hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg || !filepath.IsLocal(hdr.Name) || filepath.Clean(hdr.Name) != hdr.Name || hdr.Size < 0 {
			return nil, fmt.Errorf("restore: %s: refusing entry %q (not a plain file inside the data directory)", from, hdr.Name)
		}
		if hdr.Name == backupManifest {
			var m BackupManifest
			if err := json.NewDecoder(io.LimitReader(tr, maxManifestBytes)).Decode(&m); err != nil {
				return nil, fmt.Errorf("restore: %s: bad manifest: %w", from, err)
			}
			manifest = &m
			continue
		}
		if _, dup := got[hdr.Name]; dup {
			return nil, fmt.Errorf("restore: %s: %s appears twice", from, hdr.Name)
		}
		paths, bf, err := restoreFile(data, hdr, tr)
		written = append(written, paths...)
		if err != nil {
			return nil, fmt.Errorf("restore: %s: %w", from, err)
		}
		got[hdr.Name] = bf
	}
	if manifest == nil || manifest.Format != backupFormat {
		return nil, fmt.Errorf("restore: %s has no manifest of format %q: not a complete receiver backup", from, backupFormat)
	}
	if err := checkManifest(manifest, got); err != nil {
		return nil, fmt.Errorf("restore: %s: %w", from, err)
	}
	rep = &RestoreReport{Data: data, BackupManifest: *manifest}
	if manifest.State == StatePostgres {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%v: restore the database from its pg_dump (pg_restore) and start serve with --database", ErrStatePostgres))
	} else if err := kv.CheckBolt(filepath.Join(data, DBFile)); err != nil {
		return nil, fmt.Errorf("restore: %s: the restored database: %w", from, err)
	}
	if err := atomicfile.SyncDir(data); err != nil {
		return nil, err
	}
	// With the state in PostgreSQL, the audit chain is in the database too.
	if manifest.State != StatePostgres {
		if _, err := VerifyAudit(data, ""); err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the restored audit log does not verify (it did not when it was backed up either: the backup's checksums match): %v", err))
		}
	}
	return rep, nil
}

// emptyDir makes sure data is an empty directory, creating it (0700) if
// it does not exist (created true).
func emptyDir(data string) (created bool, err error) {
	names, err := os.ReadDir(data)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(data, 0o700); err != nil {
			return false, fmt.Errorf("restore: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("restore: %s: %w", data, err)
	case len(names) > 0:
		shown := []string{}
		for _, n := range names[:min(len(names), 3)] {
			shown = append(shown, n.Name())
		}
		return false, fmt.Errorf("restore: %s %w (it holds %s)", data, ErrNotEmpty, strings.Join(shown, ", "))
	}
	return false, os.Chmod(data, 0o700)
}

// restoreFile writes one entry below data, creating its directories; it
// returns the paths it created (to remove on failure).
func restoreFile(data string, hdr *tar.Header, r io.Reader) ([]string, BackupFile, error) {
	var made []string
	path := filepath.Join(data, filepath.FromSlash(hdr.Name))
	for dir := filepath.Dir(path); dir != filepath.Clean(data); dir = filepath.Dir(dir) {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			made = append([]string{dir}, made...)
		}
	}
	for _, d := range made {
		if err := os.Mkdir(d, 0o700); err != nil {
			return made, BackupFile{}, err
		}
	}
	mode := fs.FileMode(hdr.Mode).Perm() &^ 0o022
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return made, BackupFile{}, err
	}
	made = append(made, path)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return made, BackupFile{}, fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return made, BackupFile{Name: hdr.Name, Size: n, Mode: mode, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// addAuditFile copies the audit log and its checkpoints, read together
// under the log's lock.
func addAuditFile(tw *backupWriter, data string) error {
	log, cps, err := audit.Snapshot(filepath.Join(data, AuditFile))
	if err != nil {
		return err
	}
	if err := tw.add(AuditFile, 0o600, int64(len(log)), strings.NewReader(string(log))); err != nil {
		return err
	}
	if cps != nil {
		return tw.add(AuditFile+audit.CheckpointSuffix, 0o600, int64(len(cps)), strings.NewReader(string(cps)))
	}
	return nil
}

// checkManifest compares the files restored with the manifest's list.
func checkManifest(m *BackupManifest, got map[string]BackupFile) error {
	if len(m.Files) != len(got) {
		return fmt.Errorf("the manifest lists %d files, the backup holds %d", len(m.Files), len(got))
	}
	for _, want := range m.Files {
		g, ok := got[want.Name]
		if !ok {
			return fmt.Errorf("%s is in the manifest but not in the backup", want.Name)
		}
		if g.Size != want.Size || g.SHA256 != want.SHA256 {
			return fmt.Errorf("%s does not match the manifest (%d bytes, SHA-256 %s; the manifest says %d, %s): the backup is damaged", want.Name, g.Size, g.SHA256, want.Size, want.SHA256)
		}
	}
	need := []string{pki.CACertFile, pki.CAKeyFile, ReceiptKeyFile, TokenKeyFile}
	if m.State == StatePostgres {
		need = append(need, DatabaseFile)
	} else {
		need = append(need, DBFile, AuditFile)
	}
	for _, need := range need {
		if _, ok := got[need]; !ok {
			return fmt.Errorf("the backup has no %s: not a complete receiver backup", need)
		}
	}
	return nil
}
