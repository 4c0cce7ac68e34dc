package receiver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	expslog "golang.org/x/exp/slog"

	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/internal/subtest"
)

// replicaEnv makes the test binary a tus "replica" (TestStagingReplica):
// a tusd handler on S3 staging, serving until it is killed.
const replicaEnv = "UPLOADBOX_TEST_S3_REPLICA"

type replicaConfig struct {
	Endpoint, Access, Secret, Bucket, Tmp string
}

func (c replicaConfig) client(t testing.TB) *s3.Client {
	tr := &http.Transport{}
	if t != nil {
		t.Cleanup(tr.CloseIdleConnections)
	}
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(c.Endpoint), Region: s3test.Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(c.Access, c.Secret, ""),
		HTTPClient:  &http.Client{Transport: tr},
	})
}

// replicaHandler is what the receiver builds around its staging, less the
// device checks: ids chosen at creation like preCreate's.
func replicaHandler(t testing.TB, st *s3Staging) http.Handler {
	composer := tusd.NewStoreComposer()
	st.UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := tusd.NewHandler(tusd.Config{
		StoreComposer: composer, BasePath: "/files/", DisableDownload: true, DisableConcatenation: true,
		Logger: expslog.New(expslog.NewTextHandler(io.Discard, nil)),
		PreUploadCreateCallback: func(tusd.HookEvent) (tusd.HTTPResponse, tusd.FileInfoChanges, error) {
			var b [16]byte
			rand.Read(b[:])
			return tusd.HTTPResponse{}, tusd.FileInfoChanges{ID: hex.EncodeToString(b[:])}, nil
		},
	})
	if err != nil {
		if t != nil {
			t.Fatal(err)
		}
		panic(err)
	}
	return http.StripPrefix("/files/", h)
}

// TestStagingReplica is the body of a replica process; run directly it
// does nothing.
func TestStagingReplica(t *testing.T) {
	raw := os.Getenv(replicaEnv)
	if raw == "" {
		return
	}
	var c replicaConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	st, err := newS3Staging(S3Uploads{Client: c.client(nil), Bucket: c.Bucket}, c.Tmp)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	http.Serve(ln, replicaHandler(nil, st)) // until killed
}

// startReplica starts a replica process and returns its base URL.
func startReplica(t *testing.T, c replicaConfig) (string, *exec.Cmd) {
	t.Helper()
	raw, _ := json.Marshal(c)
	cmd, sc := subtest.Start(t, "TestStagingReplica", replicaEnv+"="+string(raw))
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			go func() {
				for sc.Scan() {
				}
			}()
			return "http://" + addr + "/files/", cmd
		}
	}
	t.Fatal("replica process did not start")
	return "", nil
}

func tusRequest(t *testing.T, method, url string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func patch(t *testing.T, url string, off int64, data []byte) int64 {
	t.Helper()
	resp := tusRequest(t, http.MethodPatch, url, bytes.NewReader(data),
		"Upload-Offset", strconv.FormatInt(off, 10), "Content-Type", "application/offset+octet-stream")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH at %d: %s", off, resp.Status)
	}
	n, _ := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	return n
}

// finishOn sends data from off to the upload at url, which st stages,
// and checks that the staged upload holds exactly data.
func finishOn(t *testing.T, url string, st staging, off int64, data []byte) {
	t.Helper()
	if end := patch(t, url, off, data[off:]); end != int64(len(data)) {
		t.Fatalf("confirmed %d bytes, want %d", end, len(data))
	}
	if staged := readStaged(t, st, url[strings.LastIndex(url, "/")+1:]); !bytes.Equal(staged, data) {
		t.Fatalf("the staged upload differs from the bytes sent (%d bytes staged, %d sent)", len(staged), len(data))
	}
}

// readStaged reads upload id, which has all its bytes, as commit does.
func readStaged(t *testing.T, st staging, id string) []byte {
	t.Helper()
	up, err := st.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := up.GetReader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func head(t *testing.T, url string) int64 {
	t.Helper()
	resp := tusRequest(t, http.MethodHead, url, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s: %s", url, resp.Status)
	}
	n, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestS3StagingReplicaKilledMidPatch: two replicas stage uploads in one
// versitygw bucket. An upload begun on replica A (a separate process: one
// whole part, then a remainder kept as a ".part" object) is SIGKILLed in
// the middle of its third PATCH; replica B finds it under the same id,
// answers HEAD with what reached the bucket, takes the rest from that
// offset and completes it, and the staged object holds exactly the bytes
// sent, as commit reads it. Nothing of it stays on B's disk.
func TestS3StagingReplicaKilledMidPatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw and a replica process; skipped under -short")
	}
	gw := s3test.Start(t, "staging")
	c := replicaConfig{Endpoint: gw.Endpoint, Access: gw.Access, Secret: gw.Secret, Bucket: gw.Bucket, Tmp: t.TempDir()}
	urlA, procA := startReplica(t, c)
	tmpB := t.TempDir()
	stB, err := newS3Staging(S3Uploads{Client: c.client(t), Bucket: gw.Bucket}, tmpB)
	if err != nil {
		t.Fatal(err)
	}
	srvB := httptest.NewServer(replicaHandler(t, stB))
	defer srvB.Close()
	defer srvB.CloseClientConnections()

	data := make([]byte, 13<<20+12345)
	rand.Read(data)
	resp := tusRequest(t, http.MethodPost, urlA, nil, "Upload-Length", strconv.Itoa(len(data)))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create on A: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	if !uploadID.MatchString(id) {
		t.Fatalf("Location %q: the id is not the receiver's (s3store's multipart id leaked)", loc)
	}
	const whole, rest = 7 << 20, 3 << 20 // a part, then a remainder under 5 MiB
	off := patch(t, urlA+id, 0, data[:whole])
	off = patch(t, urlA+id, off, data[whole:whole+rest])
	if off != whole+rest {
		t.Fatalf("A confirmed %d bytes, want %d", off, whole+rest)
	}

	// The third PATCH streams; A dies once 2 MiB have left the client.
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, urlA+id, pr)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.ContentLength = int64(len(data)) - off
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("PATCH on the killed replica answered %s", resp.Status)
		}
		done <- err
	}()
	if _, err := pw.Write(data[off : off+2<<20]); err != nil {
		t.Fatal(err)
	}
	procA.Process.Kill()
	procA.Wait()
	pw.CloseWithError(errors.New("replica killed"))
	if err := <-done; err == nil {
		t.Fatal("the PATCH to the killed replica succeeded")
	}

	// B: the offset is what reached the bucket. The remainder was in the
	// bucket as ".part"; s3store deletes it before re-sending it with the
	// next bytes, so a kill in between loses those bytes (the box still
	// has them and sends them again).
	urlB := srvB.URL + "/files/"
	got := head(t, urlB+id)
	if got != whole+rest && got != whole {
		t.Fatalf("B's offset %d, want %d (or %d if A died while re-sending its remainder)", got, whole+rest, whole)
	}
	t.Logf("B resumes at offset %d", got)
	finishOn(t, urlB+id, stB, got, data)
	if left, _ := os.ReadDir(tmpB); len(left) != 0 {
		t.Errorf("B left temporary files: %v", left)
	}
	if err := stB.remove(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	list, err := c.client(t).ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Contents {
		t.Errorf("left in the bucket after remove: %s", aws.ToString(o.Key))
	}
}

// TestS3StagingOpenCompletes: an upload with all its bytes in parts but
// never completed (its replica stopped in between) is completed when it is
// read, on any replica; ids the receiver did not make are not found.
func TestS3StagingOpenCompletes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw; skipped under -short")
	}
	gw := s3test.Start(t, "staging")
	c := replicaConfig{Endpoint: gw.Endpoint, Access: gw.Access, Secret: gw.Secret, Bucket: gw.Bucket}
	ctx := t.Context()
	stA, err := newS3Staging(S3Uploads{Client: c.client(t), Bucket: gw.Bucket, Prefix: "staged"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 6<<20+7)
	rand.Read(data)
	id := strings.Repeat("ab", 16)
	up, err := stA.NewUpload(ctx, tusd.FileInfo{ID: id, Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("WriteChunk: %d, %v", n, err)
	}
	// No FinishUpload: the multipart upload is left open.
	stB, err := newS3Staging(S3Uploads{Client: c.client(t), Bucket: gw.Bucket, Prefix: "staged/"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := readStaged(t, stB, id); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
	}
	for _, bad := range []string{"missing-" + id, strings.Repeat("cd", 16), "../" + id} {
		if _, err := stB.GetUpload(ctx, bad); !errors.Is(err, tusd.ErrNotFound) {
			t.Errorf("GetUpload(%q) = %v, want ErrNotFound", bad, err)
		}
	}
	// stale lists it once it is older than the cutoff.
	if ids, err := stB.stale(ctx, time.Now().Add(time.Hour)); err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("stale = %v, %v; want [%s]", ids, err, id)
	}
	if ids, _ := stB.stale(ctx, time.Now().Add(-time.Hour)); len(ids) != 0 {
		t.Fatalf("stale before creation = %v", ids)
	}
	if _, err := newS3Staging(S3Uploads{Client: c.client(t), Bucket: gw.Bucket, Prefix: "/abs"}, ""); err == nil {
		t.Fatal("a prefix with a leading slash was accepted")
	}
}
