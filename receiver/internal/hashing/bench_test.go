package hashing

import (
	"io"
	"testing"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
)

// recordReader returns at most 16 KiB per Read, as a TLS connection does.
type recordReader struct {
	data []byte
	off  int
}

func (r *recordReader) Read(p []byte) (int, error) {
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 16<<10)], r.data[r.off:])
	r.off += n
	return n, nil
}

// BenchmarkWriteChunk writes a 3 MiB segment in one chunk, arriving 16 KiB
// at a time as from TLS, through tusd's filestore alone (the baseline) and
// through the hashing Store in front of it: an upload of an older box
// (SHA-256 and BLAKE3), and one that announced the BLAKE3 segment hash
// where commits adopt (BLAKE3 only).
func BenchmarkWriteChunk(b *testing.B) {
	seg, _ := segment(&testing.T{}, 3<<20)
	hashing := func(dir string) tusd.DataStore { s, _ := open(dir); return s }
	stores := map[string]func(dir string) tusd.DataStore{
		"filestore": func(dir string) tusd.DataStore { return filestore.New(dir) },
		"hashing":   hashing,
		"announced": hashing,
	}
	for _, name := range []string{"filestore", "hashing", "announced"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(seg)))
			var meta tusd.MetaData
			if name == "announced" {
				meta = tusd.MetaData{"hash": "blake3"}
			}
			for b.Loop() {
				s := stores[name](b.TempDir())
				up, err := s.NewUpload(b.Context(), tusd.FileInfo{ID: "0123456789abcdef0123456789abcdef", Size: int64(len(seg)), MetaData: meta})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := up.WriteChunk(b.Context(), 0, &recordReader{data: seg}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
