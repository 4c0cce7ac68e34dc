package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/trace"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/faultproxy"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// uploadBench measures the uploader's goodput over loopback TLS against
// curl sending the same files to a plain TLS sink in the same run, the
// CPU time each side spends per GB, and the bytes re-sent when the
// connection is cut 10 times. With profiles set, the box's drain writes
// a CPU profile and an execution trace there (upload.cpu.pprof,
// upload.trace: go tool trace shows what the goroutines wait on).
func uploadBench(total int64, profiles string) error {
	const segSize = 64 << 20
	dir, err := os.MkdirTemp("", "uploadbox-bench-upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	srv, err := receiver.Open(receiver.ServerConfig{Data: filepath.Join(dir, "receiver"), Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer srv.Close()
	ready := make(chan string, 1)
	go srv.Run(ctx, func(a string) { ready <- a })
	addr := <-ready
	admin, err := receiver.OpenAdmin(filepath.Join(dir, "receiver"))
	if err != nil {
		return err
	}
	defer admin.Close()

	// A proxy in front of the receiver that can cut every connection.
	proxy, err := faultproxy.Start(addr, faultproxy.Options{CutEvery: total / 11, Cuts: 10})
	if err != nil {
		return err
	}
	defer proxy.Close()
	enroll := func(name, via string) (*uploader.State, error) {
		nd, err := admin.AddDevice(name)
		if err != nil {
			return nil, err
		}
		return uploader.Enroll(ctx, "https://"+via, nd.Token, nd.CAFingerprint, filepath.Join(dir, name))
	}
	box, err := enroll("bench-1", addr)
	if err != nil {
		return err
	}
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		return err
	}
	n := int(total / segSize)
	rec, _ := crypto.NewRecordingID()
	var prev [crypto.CommitmentSize]byte
	var files []string
	chunk := make([]byte, 1<<20)
	for i := range n {
		name := filepath.Join(spoolDir, fmt.Sprintf("%x-%06d.ubx", rec, i))
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		w, err := crypto.NewWriter(f, box.Recipients, box.Device, crypto.Params{RecordingID: rec, Sequence: uint64(i), Prev: prev, Codec: "video/mp4"})
		if err != nil {
			return err
		}
		for range segSize / len(chunk) {
			rand.Read(chunk[:4096])
			w.Write(chunk)
		}
		if err := w.Close(); err != nil {
			return err
		}
		f.Close()
		prev = w.Commitment()
		files = append(files, name)
	}
	var sealedBytes int64
	for _, f := range files {
		st, _ := os.Stat(f)
		sealedBytes += st.Size()
	}

	// Baseline: curl sends the same files to a TLS sink on loopback.
	sink, caPEM, err := tlsSink(ctx)
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "sink-ca.pem")
	os.WriteFile(caFile, caPEM, 0o600)
	// curl runs before and after the box, on files of the same sizes, and
	// the box is compared with the mean: other load on the machine moves
	// both.
	// curlCPU is curl's CPU time (its rusage), sinkCPU this process's
	// while curl runs: the sink's.
	var curlCPU, sinkCPU time.Duration
	curl := func(files []string) (time.Duration, error) {
		start, cpu0 := time.Now(), selfCPU()
		for _, f := range files {
			cmd := exec.Command("curl", "-sS", "--fail", "--cacert", caFile, "-T", f, "https://"+sink+"/sink")
			if out, err := cmd.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("curl: %v: %s", err, out)
			}
			curlCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		sinkCPU += selfCPU() - cpu0
		return time.Since(start), nil
	}
	curlBefore, err := curl(files)
	if err != nil {
		return err
	}

	// Copies of the files for the second (cut) run.
	cutDir := filepath.Join(dir, "spool-cut")
	os.Mkdir(cutDir, 0o700)
	box2, err := enroll("bench-2", proxy.Addr())
	if err != nil {
		return err
	}
	rec2, _ := crypto.NewRecordingID()
	prev = [crypto.CommitmentSize]byte{}
	var cutFiles []string
	for i := range n {
		cutFiles = append(cutFiles, filepath.Join(cutDir, fmt.Sprintf("%x-%06d.ubx", rec2, i)))
		f, _ := os.Create(cutFiles[i])
		w, _ := crypto.NewWriter(f, box2.Recipients, box2.Device, crypto.Params{RecordingID: rec2, Sequence: uint64(i), Prev: prev, Codec: "video/mp4"})
		for range segSize / len(chunk) {
			w.Write(chunk)
		}
		w.Close()
		f.Close()
		prev = w.Commitment()
	}

	sp, err := spool.Open(spoolDir, spool.Options{Device: box.Device.Public()})
	if err != nil {
		return err
	}
	var commits time.Duration
	stopProfiles, err := startUploadProfiles(profiles)
	if err != nil {
		return err
	}
	start, cpu0 := time.Now(), selfCPU()
	sum, err := uploader.New(box, sp, nil, uploader.WithCommitObserver(func(d time.Duration) { commits += d })).Drain(ctx, nil, nil)
	upTime, upCPU := time.Since(start), selfCPU()-cpu0
	sp.Close()
	if err := errors.Join(err, stopProfiles()); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	// The box wiped its files: curl sends the cut run's, as large, written
	// as recently.
	curlAfter, err := curl(cutFiles)
	if err != nil {
		return err
	}
	curlTime := (curlBefore + curlAfter) / 2

	sp2, err := spool.Open(cutDir, spool.Options{Device: box2.Device.Public()})
	if err != nil {
		return err
	}
	// The proxy cuts every connection 10 times, spread over the bytes.
	sum2, err := uploader.New(box2, sp2, nil).Drain(ctx, nil, nil)
	sp2.Close()
	if err != nil {
		return fmt.Errorf("upload with cuts: %w", err)
	}
	mbps := func(b int64, d time.Duration) float64 { return float64(b) / d.Seconds() / 1e6 }
	fmt.Printf("upload goodput vs curl to a TLS sink (%d segments, %d MiB, loopback; the receiver runs in this process on the same %d cores, curl's sink discards):\n", n, sealedBytes>>20, runtime.NumCPU())
	fmt.Printf("  curl -T            %7.0f MB/s  (before the box %.0f, after %.0f)\n", mbps(sealedBytes, curlTime), mbps(sealedBytes, curlBefore), mbps(sealedBytes, curlAfter))
	fmt.Printf("  uploadbox upload   %7.0f MB/s  (tus, commit, receipt, wipe; commits took %.0f ms each, %.1f s of the %.1f s, the next segment sent meanwhile)\n",
		mbps(sum.Bytes, upTime), commits.Seconds()*1000/float64(max(sum.Segments, 1)), commits.Seconds(), upTime.Seconds())
	fmt.Printf("  ratio              %7.2f   (goal >= 0.8)\n", curlTime.Seconds()/upTime.Seconds())
	// Both curl runs sent sealedBytes each; the box once.
	perGB := func(cpu time.Duration, b int64) float64 { return cpu.Seconds() / (float64(b) / 1e9) }
	curlGB, sinkGB, boxGB := perGB(curlCPU/2, sealedBytes), perGB(sinkCPU/2, sealedBytes), perGB(upCPU, sum.Bytes)
	fmt.Printf("  CPU s per GB       curl %.2f + its sink %.2f = %.2f; box and receiver %.2f (%.2fx), %.2f of %d cores busy while the box sent\n",
		curlGB, sinkGB, curlGB+sinkGB, boxGB, boxGB/(curlGB+sinkGB), upCPU.Seconds()/upTime.Seconds(), runtime.NumCPU())
	resent := sum2.BytesSent - sum2.Bytes
	fmt.Printf("re-sent after %d forced disconnects: %d of %d bytes = %.2f%% (goal <= 1%%; %d upload retries)\n",
		proxy.Cuts(), resent, sum2.Bytes, 100*float64(resent)/float64(sum2.Bytes), sum2.Retries)
	return nil
}

// tlsSink is a TLS server that reads and discards request bodies.
func tlsSink(ctx context.Context) (string, []byte, error) {
	ca, err := pki.NewCA("bench sink", time.Now())
	if err != nil {
		return "", nil, err
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		return "", nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	})}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return ln.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), nil
}

// selfCPU is the CPU time this process has used (0 if /proc says nothing).
func selfCPU() time.Duration {
	d, _ := processCPU(os.Getpid())
	return d
}

// startUploadProfiles starts a CPU profile and an execution trace in dir,
// if set; stop ends both.
func startUploadProfiles(dir string) (stop func() error, err error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	stopCPU, err := cli.StartProfiles(filepath.Join(dir, "upload.cpu.pprof"), "")
	if err != nil {
		return nil, err
	}
	tf, err := os.OpenFile(filepath.Join(dir, "upload.trace"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("upload trace: %w", err), stopCPU())
	}
	if err := trace.Start(tf); err != nil {
		return nil, errors.Join(fmt.Errorf("upload trace %s: %w", tf.Name(), err), tf.Close(), stopCPU())
	}
	return func() error {
		trace.Stop()
		return errors.Join(tf.Close(), stopCPU())
	}, nil
}
