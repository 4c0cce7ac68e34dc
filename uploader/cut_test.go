package uploader_test

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/faultproxy"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// TestCutCost: a connection cut in the middle of a PATCH costs about the
// bytes the box's kernel held for it, which SendBuffer caps: about
// 0.4 MB here; uncapped, Linux grew the buffer to megabytes on loopback
// and each cut cost 2 to 3.4 MB.
func TestCutCost(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 64 MiB through a cutting proxy; skipped under -short")
	}
	const size, cuts = 64 << 20, 4
	r := newRig(t)
	dir := t.TempDir()
	id, _ := crypto.NewRecordingID()
	name := fmt.Sprintf("%x-%06d.ubx", id, 0)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	w, err := crypto.NewWriter(f, r.st.Recipients, r.st.Device, crypto.Params{RecordingID: id, Codec: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for range size / len(buf) {
		w.Write(buf)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sp, err := spool.Open(dir, spool.Options{Device: r.st.Device.Public()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	p, err := faultproxy.Start(r.st.Receiver.Host, faultproxy.Options{CutEvery: size / (cuts + 1), Cuts: cuts})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r.st.Receiver = &url.URL{Scheme: "https", Host: p.Addr()}
	up := uploader.New(r.st, sp, nil)
	sum, err := up.Drain(t.Context(), nil, nil)
	if err != nil || sum.Segments != 1 {
		t.Fatalf("Drain: %+v, %v", sum, err)
	}
	if p.Cuts() != cuts {
		t.Fatalf("the proxy cut %d times, want %d", p.Cuts(), cuts)
	}
	per := (sum.BytesSent - sum.Bytes) / cuts
	t.Logf("%d cuts re-sent %d bytes, %d per cut", cuts, sum.BytesSent-sum.Bytes, per)
	if per > 1<<20 {
		t.Errorf("each cut re-sent %d bytes on average, want at most 1 MiB (SendBuffer %d)", per, uploader.SendBuffer)
	}
}
