package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/uploadbox/uploadbox/internal/faultproxy"
	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// TestServeWithS3Store: `serve --s3-*` against a real S3 server (versitygw):
// unfinished uploads are staged in the bucket under uploads/, not on the
// receiver's disk; the box uploads, every segment lands in the bucket once with the SHA-256
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
	client := gw.Client()
	stagedInBucket(t, client, gw.Bucket, data, rcv.addr, state)

	sealed := recordAndUpload(t, enrolled{state: state, rcv: rcv}, filepath.Join(dir, "spool"), "5s")
	rs := recordings(t, data)
	if len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want one complete recording of %d segments", rs, sealed)
	}
	if local, _ := filepath.Glob(filepath.Join(data, "store", "*", "*", "*.ubx")); len(local) != 0 {
		t.Fatalf("segments went to the local store instead of S3: %v", local)
	}

	if left, _ := os.ReadDir(filepath.Join(data, "uploads")); len(left) != 0 {
		t.Errorf("the receiver's uploads directory holds %d files", len(left))
	}
	// The bucket holds the segments only: every staged upload is gone.
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

// boxTus sends a tus request (creation: of a 1000-byte upload) as the box
// enrolled in state.
func boxTus(t *testing.T, state, method, url string) *http.Response {
	t.Helper()
	st, err := uploader.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, url, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "1000")
	resp, err := st.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// boxCreates creates an upload as the box; it returns its URL and id.
func boxCreates(t *testing.T, state, addr string) (string, string) {
	t.Helper()
	resp := boxTus(t, state, http.MethodPost, "https://"+addr+"/v1/uploads/")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create an upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	return loc, loc[strings.LastIndex(loc, "/")+1:]
}

// stagedInBucket creates an upload as the enrolled box, finds it staged in
// the bucket under uploads/ and not in the data directory, and deletes it.
func stagedInBucket(t *testing.T, client *s3.Client, bucket, data, addr, state string) {
	t.Helper()
	loc, id := boxCreates(t, state, addr)
	info := "uploads/" + id + ".info"
	if _, err := client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(info)}); err != nil {
		t.Fatalf("the new upload is not staged in the bucket as %s: %v", info, err)
	}
	if local, _ := filepath.Glob(filepath.Join(data, "uploads", "*.info")); len(local) != 0 {
		t.Fatalf("the upload is staged on the receiver's disk: %v", local)
	}
	if resp := boxTus(t, state, http.MethodDelete, loc); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete the upload: %s", resp.Status)
	}
	if _, err := client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(info)}); err == nil {
		t.Fatalf("%s is still in the bucket after DELETE", info)
	}
}

// TestServeUploadsDir: `serve --uploads-dir DIR` stages unfinished uploads
// in DIR (not in --data/uploads), commits read them from there, and
// committed uploads leave DIR empty.
func TestServeUploadsDir(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared-uploads")
	b := setupBoxWith(t, dir, []string{"--uploads-dir", shared}, nil)
	_, id := boxCreates(t, b.state, b.rcv.addr)
	if _, err := os.Stat(filepath.Join(shared, id+".info")); err != nil {
		t.Fatalf("the new upload is not staged in --uploads-dir: %v", err)
	}
	if local, _ := filepath.Glob(filepath.Join(b.rcv.data, "uploads", "*")); len(local) != 0 {
		t.Fatalf("the upload is staged in the data directory: %v", local)
	}
	if st, err := os.Stat(shared); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("--uploads-dir: %v (mode %v), want a directory of mode 0700", err, st.Mode().Perm())
	}
	if resp := boxTus(t, b.state, http.MethodDelete, "https://"+b.rcv.addr+"/v1/uploads/"+id); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete the upload: %s", resp.Status)
	}
	sealed := recordAndUpload(t, b, filepath.Join(dir, "spool"), "3s")
	if rs := recordings(t, b.rcv.data); len(rs) != 1 || rs[0].Segments != sealed {
		t.Fatalf("receiver has %+v, want one recording of %d segments", rs, sealed)
	}
	if left, _ := os.ReadDir(shared); len(left) != 0 {
		t.Fatalf("--uploads-dir holds %d files after every segment was committed", len(left))
	}
}

// recordAndUpload records for d into a new spool, uploads it all and
// checks that the box wiped every local copy; it returns the number of
// segments sealed.
func recordAndUpload(t *testing.T, b enrolled, spool, d string) int {
	t.Helper()
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, d)
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}
	return sealed
}

// TestS3StagedUploadSurvivesReceiverKill: with S3 staging, the receiver
// is SIGKILLed while a box's upload is staged in the bucket (the box sends
// through a slow link, so a PATCH is running) and started again; the new
// process, which has never seen the upload, finds it in the bucket by its
// id, the box resumes from the offset it reports, and every segment is
// stored once, each local copy wiped, no staged upload left behind.
func TestS3StagedUploadSurvivesReceiverKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw and the receiver twice; skipped under -short")
	}
	gw := s3test.Start(t, "recordings")
	s3flags := s3Serve(t, gw)
	dir := t.TempDir()
	b := setupBoxWith(t, dir, s3flags, slowLink(t, 256<<10))
	spool := filepath.Join(dir, "spool")
	client := gw.Client()
	sealed, up := uploadUntilStaged(t, b, spool, client, gw.Bucket)
	b.rcv.kill()
	b.rcv = startReceiver(t, b.rcv.data, b.rcv.addr, s3flags...)
	up.Process.Kill()
	up.Wait()
	uploadRest(t, b, spool, sealed)
	if left := stagedData(t, client, gw.Bucket, spool); len(left) != 0 {
		t.Fatalf("staged objects left in the bucket: %v", left)
	}
}

// staged lists the bucket's objects under uploads/.
// stagedData is what staged lists but the .info of an upload a killed
// receiver created and never answered (the box, sending the next segment
// while one commits, may be creating it at the kill, and creates it again
// on the receiver it reaches next): such an orphan holds no bytes, and the
// janitor removes it at its expiry. It checks that each such .info is not
// one of the uploads the box used for a segment it committed (the spool in
// spoolDir keeps each wiped segment's upload URL): a commit leaves nothing
// staged.
func stagedData(t *testing.T, client *s3.Client, bucket, spoolDir string) []string {
	t.Helper()
	used := committedUploads(t, spoolDir)
	var left []string
	for _, k := range staged(t, client, bucket) {
		object, isInfo := strings.CutSuffix(strings.TrimPrefix(k, "uploads/"), ".info")
		if isInfo && !used[object] {
			t.Logf("an upload created but never answered is left for the janitor: %s (the box committed its segments with %d others)", k, len(used))
			continue
		}
		left = append(left, k)
	}
	return left
}

// committedUploads is the set of staged object names (a tus upload id's part
// before "+") of the uploads the box committed, from its spool's records.
func committedUploads(t *testing.T, spoolDir string) map[string]bool {
	t.Helper()
	sp, err := spool.Open(spoolDir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	recs, err := sp.All()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, r := range recs {
		if r.State != spool.Wiped {
			continue
		}
		if r.UploadURL == "" {
			t.Fatalf("segment %s was wiped without the upload URL it was committed with", r.Name)
		}
		id, err := url.PathUnescape(path.Base(r.UploadURL))
		if err != nil {
			t.Fatal(err)
		}
		object, _, _ := strings.Cut(id, "+")
		used[object] = true
	}
	if len(used) == 0 {
		t.Fatal("the spool holds no wiped segment")
	}
	return used
}

func staged(t *testing.T, client *s3.Client, bucket string) []string {
	t.Helper()
	list, err := client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("uploads/")})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range list.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// s3Serve gives this test's processes gw's credentials and returns the
// serve flags of a store in its bucket.
func s3Serve(t *testing.T, gw *s3test.Server) []string {
	t.Helper()
	for _, kv := range gw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return []string{"--s3-bucket", gw.Bucket, "--s3-endpoint", gw.Endpoint, "--s3-region", s3test.Region, "--s3-path-style"}
}

// slowLink is a setupBox via: the box reaches the receiver through a proxy
// passing rate bytes per second, so that PATCHes last.
func slowLink(t *testing.T, rate int) func(addr string) string {
	return func(addr string) string {
		p, err := faultproxy.Start(addr, faultproxy.Options{Rate: rate})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p.Addr()
	}
}

// uploadRest runs the box's upload to its end; then the box holds no local
// copy and the receiver one complete recording of sealed segments, each
// stored once.
func uploadRest(t *testing.T, b enrolled, spool string, sealed int) {
	t.Helper()
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}
	rs := recordings(t, b.rcv.data)
	if len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Fatalf("receiver has %+v, want one complete recording of %d segments, each once", rs, sealed)
	}
}

// uploadUntilStaged records 6 s into spool and starts the box's upload in
// the background; it returns once an upload is staged in the bucket, with
// the number of segments sealed and the running upload.
func uploadUntilStaged(t *testing.T, b enrolled, spool string, client *s3.Client, bucket string) (int, *exec.Cmd) {
	t.Helper()
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, "6s")
	up := exec.Command(filepath.Join(binDir, "uploadbox"), "upload", "--state", b.state, "--spool", spool)
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Process.Kill(); up.Wait() })
	for deadline := time.Now().Add(time.Minute); len(staged(t, client, bucket)) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no upload was ever staged in the bucket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sealed, up
}
