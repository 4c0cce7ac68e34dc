package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// commitBench measures the latency of POST /v1/commit for 1 MiB and
// 64 MiB segments: with the hashes taken while the bytes arrived
// (streamed: the upload renamed into the fs store unread), and after a
// restart, which lost them (one read, then renamed). The baseline, measured in the same run, is one fsync of as many
// freshly written bytes (what making the upload durable cannot avoid); a
// second one writes and fsyncs a new file of that size (what a copying
// store cannot avoid). Runs are interleaved; median and range are printed.
func commitBench(rounds int) error {
	dir, err := os.MkdirTemp("", "uploadbox-bench-commit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "receiver")
	rcv, err := startBenchReceiver(data, "127.0.0.1:0")
	if err != nil {
		return err
	}
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		rcv.stop()
		return err
	}
	nd, err := admin.AddDevice("bench-commit")
	admin.Close()
	if err != nil {
		rcv.stop()
		return err
	}
	box, err := uploader.Enroll(context.Background(), "https://"+rcv.addr, nd.Token, nd.CAFingerprint, filepath.Join(dir, "box"))
	if err != nil {
		rcv.stop()
		return err
	}
	b := &commitBox{st: box, client: box.HTTPClient()}
	b.tus = tus.NewClient(b.client, box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})

	sizes := []int{1 << 20, 64 << 20}
	// Uploaded before the restart, which loses their hashes.
	restarted := map[int][]pending{}
	for _, size := range sizes {
		for range rounds {
			p, err := b.upload(size)
			if err != nil {
				rcv.stop()
				return err
			}
			restarted[size] = append(restarted[size], p)
		}
	}
	addr := rcv.addr
	if err := rcv.stop(); err != nil {
		return err
	}
	if rcv, err = startBenchReceiver(data, addr); err != nil {
		return err
	}
	defer rcv.stop()

	type key struct {
		size int
		way  string
	}
	took := map[key][]time.Duration{}
	ways := []string{"streamed", "restarted", "fsync", "write+fsync"}
	// The baselines write into the receiver's data directory: the same
	// filesystem as the uploads.
	scratch := filepath.Join(data, "bench-scratch")
	for r := range rounds {
		for _, size := range sizes {
			fresh, err := b.upload(size)
			if err != nil {
				return err
			}
			runs := map[string]func() (time.Duration, error){
				"streamed":    func() (time.Duration, error) { return b.commit(fresh) },
				"restarted":   func() (time.Duration, error) { return b.commit(restarted[size][r]) },
				"fsync":       func() (time.Duration, error) { return writeSync(scratch, fresh.size, false) },
				"write+fsync": func() (time.Duration, error) { return writeSync(scratch, fresh.size, true) },
			}
			for _, w := range rotate(ways, r) {
				d, err := runs[w]()
				if err != nil {
					return fmt.Errorf("commit bench, %s, %d MiB: %w", w, size>>20, err)
				}
				took[key{size, w}] = append(took[key{size, w}], d)
			}
		}
	}
	fmt.Printf("commit latency, POST /v1/commit to the receipt, fs store, uploads adopted (median [min-max] of %d interleaved runs):\n", rounds)
	fmt.Printf("  %-12s %28s %28s %8s\n", "", "1 MiB", "64 MiB", "64/1")
	for _, w := range ways {
		var cells []string
		for _, size := range sizes {
			ds := took[key{size, w}]
			cells = append(cells, fmt.Sprintf("%8.1f ms [%6.1f-%6.1f]", ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds))))
		}
		fmt.Printf("  %-12s %28s %28s %8.1f\n", w, cells[0], cells[1], ms(median(took[key{64 << 20, w}]))/ms(median(took[key{1 << 20, w}])))
	}
	for _, size := range sizes {
		base := ms(median(took[key{size, "fsync"}]))
		fmt.Printf("  %3d MiB vs one fsync: streamed %.2f, restarted %.2f, write+fsync %.2f (goal: streamed close to 1)\n", size>>20,
			ms(median(took[key{size, "streamed"}]))/base, ms(median(took[key{size, "restarted"}]))/base,
			ms(median(took[key{size, "write+fsync"}]))/base)
	}
	stream := func(size int) float64 {
		return ms(median(took[key{size, "streamed"}])) - ms(median(took[key{size, "fsync"}]))
	}
	fmt.Printf("  streamed commit beyond its fsync: 1 MiB %.1f ms, 64 MiB %.1f ms\n", stream(1<<20), stream(64<<20))
	return nil
}

func rotate(s []string, n int) []string {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// writeSync writes size random bytes to a new file at path and fsyncs it,
// then removes it. It times the fsync alone, or, with all, the write too.
func writeSync(path string, size int64, all bool) (time.Duration, error) {
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	start := time.Now()
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			return 0, err
		}
	}
	if !all {
		start = time.Now()
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

type benchReceiver struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	srv    *receiver.Server
}

func startBenchReceiver(data, listen string) (*benchReceiver, error) {
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: listen})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &benchReceiver{cancel: cancel, done: make(chan error, 1), srv: srv}
	ready := make(chan string, 1)
	go func() { r.done <- srv.Run(ctx, func(a string) { ready <- a }) }()
	select {
	case r.addr = <-ready:
		return r, nil
	case err := <-r.done:
		cancel()
		srv.Close()
		return nil, err
	}
}

func (r *benchReceiver) stop() error {
	r.cancel()
	err := <-r.done
	r.srv.Close()
	return err
}

type commitBox struct {
	st     *uploader.State
	client *http.Client
	tus    *tus.Client
}

// pending is an upload waiting for its commit.
type pending struct {
	id   string
	size int64
	req  receiver.CommitRequest
}

// upload seals a segment of about size bytes and uploads it in one PATCH.
func (b *commitBox) upload(size int) (pending, error) {
	var buf bytes.Buffer
	rec, _ := crypto.NewRecordingID()
	w, err := crypto.NewWriter(&buf, b.st.Recipients, b.st.Device, crypto.Params{RecordingID: rec, Codec: "video/mp4"})
	if err != nil {
		return pending{}, err
	}
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	for range size / len(chunk) {
		w.Write(chunk)
	}
	if err := w.Close(); err != nil {
		return pending{}, err
	}
	seg := buf.Bytes()
	ctx := context.Background()
	// As the box does: announced, then committed with the segment hash.
	u, err := b.tus.Create(ctx, int64(len(seg)), map[string]string{wire.HashMetadata: string(wire.HashBLAKE3)})
	if err != nil {
		return pending{}, err
	}
	if err := b.tus.Upload(ctx, u, bytes.NewReader(seg), int64(len(seg)), nil); err != nil {
		return pending{}, err
	}
	id := path.Base(u)
	return pending{id: id, size: int64(len(seg)), req: wire.NewCommitRequest(id, int64(len(seg)), wire.HashBLAKE3, blake3.Sum256(seg))}, nil
}

// commit asks for the receipt of p and times the request.
func (b *commitBox) commit(p pending) (time.Duration, error) {
	body, _ := json.Marshal(p.req)
	start := time.Now()
	resp, err := b.client.Post(b.st.Receiver.JoinPath("/v1/commit").String(), "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("commit: HTTP %d %s", resp.StatusCode, out)
	}
	return d, nil
}
