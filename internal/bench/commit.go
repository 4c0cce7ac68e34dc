package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/tus"
)

// commitBench measures the latency of POST /v1/commit for 1 MiB and
// 64 MiB segments in the receiver's three ways of finding the digests:
// hashed while the bytes arrived (streamed), resumed from the saved SHA-256
// state after a restart (verified while copied into the store), and the
// whole read of before (no hash state). The baseline, measured in the same
// run, is what a copying store cannot avoid: copy the upload into a new
// file and fsync it. Runs are interleaved; median and range are printed.
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
	// Uploaded before the restart: "saved" keeps its state file, "whole"
	// loses it, so only the whole read is left to its commit.
	saved := map[int][]pending{}
	whole := map[int][]pending{}
	for _, size := range sizes {
		for range rounds {
			for _, m := range []map[int][]pending{saved, whole} {
				p, err := b.upload(size)
				if err != nil {
					rcv.stop()
					return err
				}
				m[size] = append(m[size], p)
			}
		}
	}
	addr := rcv.addr
	if err := rcv.stop(); err != nil {
		return err
	}
	for _, ps := range whole {
		for _, p := range ps {
			if err := os.Remove(filepath.Join(data, receiver.UploadsDir, p.id+".hash")); err != nil {
				return err
			}
		}
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
	ways := []string{"streamed", "saved state", "whole read", "copy+fsync"}
	for r := range rounds {
		for _, size := range sizes {
			fresh, err := b.upload(size)
			if err != nil {
				return err
			}
			runs := map[string]func() (time.Duration, error){
				"streamed":    func() (time.Duration, error) { return b.commit(fresh) },
				"saved state": func() (time.Duration, error) { return b.commit(saved[size][r]) },
				"whole read":  func() (time.Duration, error) { return b.commit(whole[size][r]) },
				"copy+fsync": func() (time.Duration, error) {
					return copySync(filepath.Join(data, receiver.UploadsDir, fresh.id), filepath.Join(dir, "copy"))
				},
			}
			// The baseline copies the fresh upload before it is committed.
			order := append([]string{"copy+fsync"}, rotate(ways[:3], r)...)
			for _, w := range order {
				d, err := runs[w]()
				if err != nil {
					return fmt.Errorf("commit bench, %s, %d MiB: %w", w, size>>20, err)
				}
				took[key{size, w}] = append(took[key{size, w}], d)
			}
		}
	}
	fmt.Printf("commit latency, POST /v1/commit to the receipt, fs store (median [min-max] of %d interleaved runs):\n", rounds)
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
		base := median(took[key{size, "copy+fsync"}])
		fmt.Printf("  %3d MiB vs copy+fsync: streamed %.2f, saved state %.2f, whole read %.2f (goal: streamed close to 1)\n", size>>20,
			ms(median(took[key{size, "streamed"}]))/ms(base), ms(median(took[key{size, "saved state"}]))/ms(base), ms(median(took[key{size, "whole read"}]))/ms(base))
	}
	return nil
}

func rotate(s []string, n int) []string {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// copySync copies src to a new file dst and fsyncs it, as the fs store's
// Put does, then removes it.
func copySync(src, dst string) (time.Duration, error) {
	start := time.Now()
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer os.Remove(dst)
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return 0, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return 0, err
	}
	return time.Since(start), out.Close()
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
	id  string
	req receiver.CommitRequest
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
	u, err := b.tus.Create(ctx, int64(len(seg)), nil)
	if err != nil {
		return pending{}, err
	}
	if err := b.tus.Upload(ctx, u, bytes.NewReader(seg), int64(len(seg)), nil); err != nil {
		return pending{}, err
	}
	sum := sha256.Sum256(seg)
	id := path.Base(u)
	return pending{id: id, req: receiver.CommitRequest{UploadID: id, Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])}}, nil
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
