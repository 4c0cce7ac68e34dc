package hashing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto"
)

// segment seals size bytes of media into a real segment.
func segment(t *testing.T, size int) ([]byte, *crypto.DeviceKey) {
	t.Helper()
	org, err := crypto.GenerateIdentity(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, err := crypto.NewWriter(&b, []*crypto.Recipient{org.Recipient()}, dev, crypto.Params{Codec: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("media "), size/6))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), dev
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// open wraps a filestore in dir, as the receiver does; a second call on
// the same dir is the receiver after a restart.
func open(dir string) (*Store, *tusd.StoreComposer) {
	c := tusd.NewStoreComposer()
	filestore.New(dir).UseIn(c)
	return Wrap(c, NewDir(dir)), c
}

func create(t *testing.T, s *Store, size int) string {
	t.Helper()
	up, err := s.NewUpload(t.Context(), tusd.FileInfo{ID: "0123456789abcdef0123456789abcdef", Size: int64(size)})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := up.GetInfo(t.Context())
	return info.ID
}

// write PATCHes data at offset as tusd does: the upload afresh, then
// WriteChunk.
func write(t *testing.T, s *Store, id string, offset int64, data []byte) {
	t.Helper()
	up, err := s.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := up.WriteChunk(t.Context(), offset, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("WriteChunk at %d: %d, %v", offset, n, err)
	}
}

func TestHashesWhileWriting(t *testing.T) {
	seg, dev := segment(t, 100_000)
	cuts := []int{0, 1, 100, 5000, 70_000, len(seg) - 40, len(seg)}
	tests := []struct {
		name string
		// restartAt: a new Store on the same directory before that cut's chunk.
		restartAt    int
		wantVerifier bool
	}{
		{name: "one process", restartAt: -1, wantVerifier: true},
		{name: "restart mid-upload", restartAt: 3},
		{name: "restart in the trailer", restartAt: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := open(dir)
			id := create(t, s, len(seg))
			for i := 1; i < len(cuts); i++ {
				if i == tt.restartAt {
					s, _ = open(dir)
				}
				write(t, s, id, int64(cuts[i-1]), seg[cuts[i-1]:cuts[i]])
			}
			sums, ok := s.Sums(t.Context(), id)
			if !ok || sums.Length != int64(len(seg)) || sums.SHA256 != sha256.Sum256(seg) {
				t.Fatalf("Sums = %+v, %v; want %d bytes with SHA-256 %x", sums, ok, len(seg), sha256.Sum256(seg))
			}
			if (sums.Verifier != nil) != tt.wantVerifier {
				t.Fatalf("Verifier = %v, want one: %v", sums.Verifier, tt.wantVerifier)
			}
			if sums.Verifier != nil {
				if _, err := sums.Verifier.Finish(dev.Public()); err != nil {
					t.Fatalf("streamed verification: %v", err)
				}
			}
			// Sums after a restart keeps the SHA-256.
			s2, _ := open(dir)
			if sums, ok := s2.Sums(t.Context(), id); !ok || sums.SHA256 != sha256.Sum256(seg) || sums.Verifier != nil {
				t.Fatalf("after a restart: Sums = %+v, %v", sums, ok)
			}
		})
	}
}

// TestStateLost: a chunk that does not start where the hashed bytes end
// drops the upload's state, so the commit reads the upload instead of
// trusting hashes of other bytes.
func TestStateLost(t *testing.T) {
	seg, _ := segment(t, 50_000)
	half := int64(len(seg) / 2)
	tests := []struct {
		name   string
		break_ func(t *testing.T, dir, id string)
	}{
		{name: "state file removed", break_: func(t *testing.T, dir, id string) {
			os.Remove(filepath.Join(dir, id+".hash"))
		}},
		{name: "state file damaged", break_: func(t *testing.T, dir, id string) {
			os.WriteFile(filepath.Join(dir, id+".hash"), []byte("uploadbox.hash.v1\nxx"), 0o600)
		}},
		{name: "state behind the upload", break_: func(t *testing.T, dir, id string) {
			// The bytes were written but their state not saved (a crash
			// between the two): append them behind the state's back.
			f, err := os.OpenFile(filepath.Join(dir, id), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(seg[half : half+10])
			f.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := open(dir)
			id := create(t, s, len(seg))
			write(t, s, id, 0, seg[:half])
			tt.break_(t, dir, id)
			s, _ = open(dir) // restart: only the saved state is left
			up, _ := s.GetUpload(t.Context(), id)
			info, _ := up.GetInfo(t.Context())
			write(t, s, id, info.Offset, seg[info.Offset:])
			if sums, ok := s.Sums(t.Context(), id); ok {
				t.Fatalf("Sums = %+v after the state was lost: want none", sums)
			}
			if _, err := os.Stat(filepath.Join(dir, id+".hash")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state file left: %v", err)
			}
		})
	}
}

// shortWriter is a store upload that reads more than it writes, as a
// store whose disk filled up mid-chunk.
type shortWriter struct{ tusd.Upload }

func (w shortWriter) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	b, _ := io.ReadAll(src)
	n, err := w.Upload.WriteChunk(ctx, offset, bytes.NewReader(b[:len(b)/2]))
	if err != nil {
		return n, err
	}
	return n, errors.New("disk full")
}

type shortStore struct{ tusd.DataStore }

func (s shortStore) GetUpload(ctx context.Context, id string) (tusd.Upload, error) {
	up, err := s.DataStore.GetUpload(ctx, id)
	return shortWriter{up}, err
}

func TestChunkWrittenInPart(t *testing.T) {
	seg, _ := segment(t, 50_000)
	dir := t.TempDir()
	c := tusd.NewStoreComposer()
	fs := filestore.New(dir)
	fs.UseIn(c)
	c.UseCore(shortStore{fs})
	s := Wrap(c, NewDir(dir))
	id := create(t, s, len(seg))
	up, _ := s.GetUpload(t.Context(), id)
	n, err := up.WriteChunk(t.Context(), 0, bytes.NewReader(seg))
	if err == nil || n != int64(len(seg)/2) {
		t.Fatalf("WriteChunk = %d, %v", n, err)
	}
	if sums, ok := s.Sums(t.Context(), id); ok {
		t.Fatalf("Sums = %+v of bytes the store did not keep: want none", sums)
	}
}

func TestTerminateAndRead(t *testing.T) {
	seg, _ := segment(t, 20_000)
	dir := t.TempDir()
	s, c := open(dir)
	id := create(t, s, len(seg))
	write(t, s, id, 0, seg)
	up, _ := s.GetUpload(t.Context(), id)
	rc, err := up.GetReader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, seg) || s.ReadBytes() != int64(len(seg)) {
		t.Fatalf("read %d bytes back, counted %d; want %d", len(got), s.ReadBytes(), len(seg))
	}
	if err := c.Terminater.AsTerminatableUpload(up).Terminate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Sums(t.Context(), id); ok {
		t.Fatal("hash state kept after the upload was terminated")
	}
	if _, err := s.GetUpload(t.Context(), id); !errors.Is(err, tusd.ErrNotFound) {
		t.Fatalf("GetUpload after Terminate: %v", err)
	}
}

// TestFileChangedBehindHashes: an upload's file changed by anyone but the
// store's own writes (same size, one byte) loses this process's Verifier,
// at the commit (Sums) and when the next chunk resumes: the commit must
// read the file, and the saved SHA-256 state then disagrees with it.
func TestFileChangedBehindHashes(t *testing.T) {
	seg, _ := segment(t, 60_000)
	tamper := func(t *testing.T, dir, id string) {
		f, err := os.OpenFile(filepath.Join(dir, id), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		f.ReadAt(b, 100)
		b[0] ^= 1
		f.WriteAt(b, 100)
		f.Close()
	}
	t.Run("before the commit", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(dir)
		id := create(t, s, len(seg))
		write(t, s, id, 0, seg)
		if sums, ok := s.Sums(t.Context(), id); !ok || sums.Verifier == nil {
			t.Fatalf("untouched: Sums = %+v, %v; want this process's Verifier", sums, ok)
		}
		tamper(t, dir, id)
		if sums, ok := s.Sums(t.Context(), id); !ok || sums.Verifier != nil || sums.SHA256 != sha256Of(seg) {
			t.Fatalf("changed on disk: Sums = %+v, %v; want the saved SHA-256 state only", sums, ok)
		}
	})
	t.Run("between chunks", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(dir)
		id := create(t, s, len(seg))
		write(t, s, id, 0, seg[:20_000])
		tamper(t, dir, id)
		write(t, s, id, 20_000, seg[20_000:])
		if sums, ok := s.Sums(t.Context(), id); !ok || sums.Verifier != nil {
			t.Fatalf("changed between chunks: Sums = %+v, %v; want no Verifier", sums, ok)
		}
	})
}

// TestNoStates: with nothing saved, an upload's hashes live in the process
// that wrote it: another (a restart) has none, and does not hash the rest.
func TestNoStates(t *testing.T) {
	seg, _ := segment(t, 60_000)
	dir := t.TempDir()
	wrap := func() *Store {
		c := tusd.NewStoreComposer()
		filestore.New(dir).UseIn(c)
		return Wrap(c, NoStates{})
	}
	s := wrap()
	id := create(t, s, len(seg))
	write(t, s, id, 0, seg[:20_000])
	if sums, ok := s.Sums(t.Context(), id); !ok || sums.Verifier == nil || sums.Length != 20_000 {
		t.Fatalf("the writing process: Sums = %+v, %v", sums, ok)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*.hash*")); len(matches) != 0 {
		t.Fatalf("states saved: %v", matches)
	}
	restarted := wrap()
	write(t, restarted, id, 20_000, seg[20_000:])
	if sums, ok := restarted.Sums(t.Context(), id); ok {
		t.Fatalf("after a restart: Sums = %+v; want none", sums)
	}
}

// cutReader yields data 16 KiB at a time, then fails: a request cut short.
type cutReader struct {
	recordReader
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	n, err := c.recordReader.Read(p)
	if err == io.EOF {
		err = c.err
	}
	return n, err
}

// TestCutChunkKeepsItsBytes: a chunk whose request is cut short writes, and
// hashes, every byte it read before the error (the store writes in large
// pieces, tee.WriteTo), so the box resumes from there.
func TestCutChunkKeepsItsBytes(t *testing.T) {
	seg, _ := segment(t, 60_000)
	dir := t.TempDir()
	s, _ := open(dir)
	id := create(t, s, len(seg))
	up, err := s.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	cut := errors.New("connection reset")
	const sent = 40_000
	n, err := up.WriteChunk(t.Context(), 0, &cutReader{recordReader{data: seg[:sent]}, cut})
	if n != sent || !errors.Is(err, cut) {
		t.Fatalf("WriteChunk = %d, %v; want %d and the read error", n, err, sent)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, id)); !bytes.Equal(got, seg[:sent]) {
		t.Fatalf("the file holds %d bytes, want the %d read", len(got), sent)
	}
	write(t, s, id, sent, seg[sent:])
	if sums, ok := s.Sums(t.Context(), id); !ok || sums.SHA256 != sha256Of(seg) || sums.Verifier == nil {
		t.Fatalf("after resuming: Sums = %+v, %v", sums, ok)
	}
}

// countingStates is a Dir that counts the states saved.
type countingStates struct {
	Dir
	saved int
}

func (c *countingStates) Save(ctx context.Context, id string, state []byte) error {
	c.saved++
	return c.Dir.Save(ctx, id, state)
}

// TestAnnouncedSkipsSHA256: an upload that announced the BLAKE3 segment
// hash goes through the Verifier only, which gives that hash, and has no
// SHA-256 computed or saved, unless commits copy (SetCopying) or the
// upload did not announce it (an older box).
func TestAnnouncedSkipsSHA256(t *testing.T) {
	seg, _ := segment(t, 100_000)
	tests := []struct {
		name      string
		meta      tusd.MetaData
		copying   bool
		wantSHA   bool
		wantSaved bool
	}{
		{name: "announced", meta: tusd.MetaData{"hash": "blake3", "name": "x"}},
		{name: "announced, commits copy", meta: tusd.MetaData{"hash": "blake3"}, copying: true, wantSHA: true, wantSaved: true},
		{name: "older box", meta: tusd.MetaData{"name": "x"}, wantSHA: true, wantSaved: true},
		{name: "other hash named", meta: tusd.MetaData{"hash": "sha256"}, wantSHA: true, wantSaved: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := tusd.NewStoreComposer()
			filestore.New(dir).UseIn(c)
			states := &countingStates{Dir: NewDir(dir)}
			s := Wrap(c, states)
			s.SetCopying(tt.copying)
			up, err := s.NewUpload(t.Context(), tusd.FileInfo{ID: "0123456789abcdef0123456789abcdef", Size: int64(len(seg)), MetaData: tt.meta})
			if err != nil {
				t.Fatal(err)
			}
			info, _ := up.GetInfo(t.Context())
			for _, cut := range [][2]int{{0, 30_000}, {30_000, len(seg)}} {
				write(t, s, info.ID, int64(cut[0]), seg[cut[0]:cut[1]])
			}
			sums, ok := s.Sums(t.Context(), info.ID)
			if !ok || sums.Length != int64(len(seg)) || sums.Verifier == nil {
				t.Fatalf("Sums = %+v, %v", sums, ok)
			}
			if got := sums.Verifier.FileHash(); got != blake3.Sum256(seg) {
				t.Fatalf("segment hash %x, want BLAKE3-256 of the file %x", got, blake3.Sum256(seg))
			}
			if sums.HasSHA256 != tt.wantSHA || (tt.wantSHA && sums.SHA256 != sha256.Sum256(seg)) || (!tt.wantSHA && sums.SHA256 != [32]byte{}) {
				t.Fatalf("SHA-256 computed: %v (%x), want %v", sums.HasSHA256, sums.SHA256, tt.wantSHA)
			}
			if saved := states.saved > 0; saved != tt.wantSaved {
				t.Fatalf("%d states saved, want some: %v", states.saved, tt.wantSaved)
			}
		})
	}
}
