package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/uploadbox/uploadbox/internal/s3test"
)

// TestServeWithS3Store: `serve --s3-*` against a real S3 server (versitygw):
// the box uploads, every segment lands in the bucket once with the SHA-256
// checksum the receiver checked, nothing is left in the receiver's local
// store or on the box, and the segments fetched from the bucket export to a
// recording that ffprobe reads.
func TestServeWithS3Store(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw and the receiver; skipped under -short")
	}
	gw := s3test.Start(t, "recordings")
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "serve", "--data", data, "--listen", "127.0.0.1:0",
		"--s3-bucket", gw.Bucket, "--s3-endpoint", gw.Endpoint, "--s3-region", s3test.Region, "--s3-path-style")
	cmd.Env = append(os.Environ(), gw.Env()...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
	rcv := &receiverProc{cmd: cmd, data: data}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			rcv.addr = addr
			break
		}
	}
	if rcv.addr == "" {
		t.Fatal("the receiver with an S3 store did not start")
	}
	go io.Copy(io.Discard, stdout)

	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "add", "room-s3", "--data", data, "--json")), &add)
	state := filepath.Join(dir, "state")
	run(t, "uploadbox", "enroll", "--receiver", "https://"+rcv.addr, "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", state)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, enrolled{state: state, rcv: rcv}, spool, "5s")
	run(t, "uploadbox", "upload", "--state", state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}
	rs := recordings(t, data)
	if len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want one complete recording of %d segments", rs, sealed)
	}
	if local, _ := filepath.Glob(filepath.Join(data, "store", "*", "*", "*.ubx")); len(local) != 0 {
		t.Fatalf("segments went to the local store instead of S3: %v", local)
	}

	client := gw.Client()
	list, err := client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Contents) != sealed {
		t.Fatalf("bucket holds %d objects, want %d", len(list.Contents), sealed)
	}
	files := fetchSegments(t, gw, rs[0].Keys, filepath.Join(dir, "fetched"))
	mp4 := filepath.Join(dir, "s3.mp4")
	run(t, "uploadbox-receiver", append([]string{"export", "-o", mp4, "--identity", filepath.Join(data, "org.key")}, files...)...)
	if d := checkRecording(t, mp4, true); d < 4.5 {
		t.Fatalf("exported %.2fs of a 5 s recording", d)
	}
}

// fetchSegments downloads the objects keys from gw's bucket into dir,
// checking each against the SHA-256 checksum S3 stored with it, and returns
// the files in the order of keys (for `uploadbox-receiver export`).
func fetchSegments(t *testing.T, gw *s3test.Server, keys []string, dir string) []string {
	t.Helper()
	var files []string
	for _, key := range keys {
		obj, err := gw.Client().GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
		if err != nil {
			t.Fatalf("object %s: %v", key, err)
		}
		body, err := io.ReadAll(obj.Body)
		obj.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		if got := aws.ToString(obj.ChecksumSHA256); got != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Errorf("object %s: stored checksum %q does not match its bytes", key, got)
		}
		p := filepath.Join(dir, filepath.FromSlash(key))
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return files
}
