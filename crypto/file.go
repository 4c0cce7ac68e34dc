package crypto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

const fileBuffer = 1 << 20

// atomicFile is an output written under a temporary name in the target
// directory and renamed into place only when it is whole.
type atomicFile struct {
	f    *os.File
	path string
}

func createAtomic(path string, perm os.FileMode) (*atomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &atomicFile{f: f, path: path}, nil
}

// commit fsyncs the file, renames it into place and fsyncs the directory.
func (a *atomicFile) commit() error {
	if err := a.f.Sync(); err != nil {
		a.abort()
		return fmt.Errorf("sync %s: %w", a.path, err)
	}
	if err := a.f.Close(); err != nil {
		os.Remove(a.f.Name())
		return fmt.Errorf("close %s: %w", a.path, err)
	}
	if err := os.Rename(a.f.Name(), a.path); err != nil {
		os.Remove(a.f.Name())
		return fmt.Errorf("rename into %s: %w", a.path, err)
	}
	return atomicfile.SyncDir(filepath.Dir(a.path))
}

func (a *atomicFile) abort() {
	a.f.Close()
	os.Remove(a.f.Name())
}

// SealFile seals the file in to out. out appears only once it is complete.
func SealFile(in, out string, recipients []*Recipient, device *DeviceKey, p Params) (*Header, [CommitmentSize]byte, error) {
	var commitment [CommitmentSize]byte
	src, err := os.Open(in)
	if err != nil {
		return nil, commitment, fmt.Errorf("seal: %w", err)
	}
	defer src.Close()
	dst, err := createAtomic(out, 0o644)
	if err != nil {
		return nil, commitment, fmt.Errorf("seal: %w", err)
	}
	// No bufio: the payload arrives in 128 KiB batches already.
	w, err := NewWriter(dst.f, recipients, device, p)
	if err != nil {
		dst.abort()
		return nil, commitment, err
	}
	if _, err := copyPlain(w, src); err != nil {
		w.Close()
		dst.abort()
		return nil, commitment, fmt.Errorf("seal %s: %w", in, err)
	}
	if err := w.Close(); err != nil {
		dst.abort()
		return nil, commitment, fmt.Errorf("seal %s: %w", in, err)
	}
	if err := dst.commit(); err != nil {
		return nil, commitment, fmt.Errorf("seal: %w", err)
	}
	return w.Header(), w.Commitment(), nil
}

// OpenResult describes what OpenFile produced.
type OpenResult struct {
	Header     *Header
	Commitment [CommitmentSize]byte
	Trailer    *Trailer // nil unless the segment was complete
	Written    int64    // plaintext bytes in the output
}

// OpenFile decrypts the segment at seg into out. On OK the whole plaintext
// is written; on ErrTruncated the authentic prefix is written and the error
// returned; on any other error out is not created at all.
func OpenFile(seg, out string, identities ...*Identity) (*OpenResult, error) {
	return OpenFileFrom(seg, out, nil, identities...)
}

// OpenFileFrom is OpenFile for a segment that must come from device: one
// whose header names another device fails with ErrWrongDevice before
// anything is decrypted or written. A nil device accepts any.
func OpenFileFrom(seg, out string, device *DevicePublicKey, identities ...*Identity) (*OpenResult, error) {
	src, err := os.Open(seg)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer src.Close()
	r, err := newReader(bufio.NewReaderSize(src, fileBuffer), device, identities)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", seg, err)
	}
	defer r.Close()
	res := &OpenResult{Header: r.Header(), Commitment: r.Commitment()}
	dst, err := createAtomic(out, 0o600)
	if err != nil {
		return res, fmt.Errorf("open: %w", err)
	}
	bw := bufio.NewWriterSize(dst.f, fileBuffer)
	n, rerr := copyPlain(bw, r)
	res.Written = n
	if rerr != nil && !errors.Is(rerr, ErrTruncated) {
		dst.abort()
		res.Written = 0
		return res, fmt.Errorf("open %s: %w", seg, rerr)
	}
	if err := bw.Flush(); err != nil {
		dst.abort()
		return res, fmt.Errorf("open: write %s: %w", out, err)
	}
	if err := dst.commit(); err != nil {
		return res, fmt.Errorf("open: %w", err)
	}
	res.Trailer = r.Trailer()
	if rerr != nil {
		return res, fmt.Errorf("open %s: %w", seg, rerr)
	}
	return res, nil
}

// VerifyFile runs Verify on the file at path.
func VerifyFile(path string, device *DevicePublicKey) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	info, err := Verify(f, device)
	if err != nil {
		return info, fmt.Errorf("verify %s: %w", path, err)
	}
	return info, nil
}

// copyPlain copies with one buffer and no ReaderFrom/WriterTo shortcuts,
// which would bury a read error inside a bufio.Writer.
func copyPlain(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, fileBuffer)
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
