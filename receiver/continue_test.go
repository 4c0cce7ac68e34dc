package receiver_test

import (
	"bytes"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// TestUploadContinuedOnOtherReceiver: two receivers on one PostgreSQL
// database stage uploads in one versitygw bucket. The box sends the first
// part of a segment to A and the rest to B, whose HEAD reports the offset
// A reached; B commits it in one pass, from the SHA-256 state A saved in
// the database as the bytes arrived, and removes the staged upload. The
// recording lists the segment once. The same for an upload announced with
// the BLAKE3 segment hash: B, without A's BLAKE3 state, checks it while
// it copies the upload into the store.
func TestUploadContinuedOnOtherReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, versitygw and two receivers; skipped under -short")
	}
	forAlgs(t, testUploadContinuedOnOtherReceiver)
}

func testUploadContinuedOnOtherReceiver(t *testing.T, alg wire.HashAlg) {
	url := kvtest.URL(t)
	gw := s3test.Start(t, "recordings")
	bucket := func() (*store.S3, *receiver.S3Uploads) {
		st, err := store.NewS3(t.Context(), store.S3Options{Bucket: gw.Bucket, Endpoint: gw.Endpoint, Region: s3test.Region,
			PathStyle: true, AccessKey: gw.Access, SecretKey: gw.Secret})
		if err != nil {
			t.Fatal(err)
		}
		return st, &receiver.S3Uploads{Client: st.Client(), Bucket: gw.Bucket}
	}
	stA, upA := bucket()
	h := startWith(t, receiver.ServerConfig{Database: url, Store: stA, S3Uploads: upA})
	stB, upB := bucket()
	srvB, addrB, stopB := serve(t, receiver.ServerConfig{Data: replicaData(t, h), Listen: "127.0.0.1:0", Database: url,
		Store: stB, S3Uploads: upB, MetricsListen: "127.0.0.1:0"})
	defer stopB()

	seg, _ := h.sealAt(t, [16]byte{0xc0, 1}, 0, [32]byte{}, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), 7<<20, true)
	sum := hashOf(alg, seg)
	client := h.box.HTTPClient()
	endpoint := *h.box.Receiver
	endpoint.Host = h.addr
	meta := map[string]string{}
	if alg == wire.HashBLAKE3 {
		meta[wire.HashMetadata] = string(alg)
	}
	urlA, err := tus.NewClient(client, endpoint.JoinPath("/v1/uploads/"), tus.Options{}).Create(t.Context(), int64(len(seg)), meta)
	if err != nil {
		t.Fatal(err)
	}
	// A takes the first 6 MiB (one part) in one PATCH.
	const first = 6 << 20
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, urlA, bytes.NewReader(seg[:first]))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(first) {
		t.Fatalf("PATCH on A: %s, offset %q", resp.Status, resp.Header.Get("Upload-Offset"))
	}

	// The box moves to B: the same upload, under B's address.
	endpoint.Host = addrB
	urlB := endpoint.JoinPath("/v1/uploads/", path.Base(urlA)).String()
	var resumedAt int64 = -1
	err = tus.NewClient(client, endpoint.JoinPath("/v1/uploads/"), tus.Options{}).Upload(t.Context(), urlB, bytes.NewReader(seg), int64(len(seg)), func(off int64) {
		if resumedAt < 0 {
			resumedAt = off
		}
	})
	if err != nil {
		t.Fatalf("the rest on B: %v", err)
	}
	if resumedAt != first {
		t.Fatalf("B's first offset %d, want %d (what A received)", resumedAt, first)
	}
	cr, err := commitAt(client, addrB, wire.NewCommitRequest(path.Base(urlA), int64(len(seg)), alg, sum))
	if err != nil || cr.Repeated {
		t.Fatalf("commit on B: %+v, %v", cr, err)
	}
	m, err := http.Get("http://" + srvB.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(m.Body)
	m.Body.Close()
	if !strings.Contains(string(metrics), "uploadbox_receiver_commits_streamed_total 1\n") {
		t.Fatalf("B did not commit from the hashes A saved:\n%s", metrics)
	}
	rs, err := h.admin.ListRecordings()
	if err != nil || len(rs) != 1 || rs[0].Segments != 1 {
		t.Fatalf("recordings: %+v %v; want one recording of one segment", rs, err)
	}
	list, err := gw.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket), Prefix: aws.String(receiver.DefaultS3UploadsPrefix)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Contents {
		t.Errorf("left staged after the commit: %s", aws.ToString(o.Key))
	}
}
