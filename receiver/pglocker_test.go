package receiver

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/tus/tusd/v2/pkg/filelocker"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pglock"
)

// TestLockerFollowsTheDatabase: with the state in PostgreSQL (kv.Postgres)
// the server's tus locks are advisory locks there, held and released
// through lockUpload; with bbolt they are lock files.
func TestLockerFollowsTheDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	pg := pgtest.Start(t)
	db, err := kv.OpenPostgres(t.Context(), pg.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &Server{log: slog.New(slog.DiscardHandler), uploads: t.TempDir()}
	if _, ok := s.newLocker(kv.WrapBolt(nil)).(filelocker.FileLocker); !ok {
		t.Fatal("with bbolt the locker is not filelocker")
	}
	s.locker = s.newLocker(db)
	if _, ok := s.locker.(*pglock.Locker); !ok {
		t.Fatalf("with PostgreSQL the locker is %T, want *pglock.Locker", s.locker)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.runLocker(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	const id = "0123456789abcdef0123456789abcdef"
	lock, err := s.lockUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool().QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("advisory locks held: %d (%v), want 1", n, err)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// pgReplica is one receiver's tus handler: S3 staging, locks in
// PostgreSQL on its own pool.
func pgReplica(t *testing.T, c replicaConfig, dsn string) (*httptest.Server, *s3Staging) {
	t.Helper()
	st, err := newS3Staging(S3Uploads{Client: c.client(t), Bucket: c.Bucket}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	lk := pglock.New(pool, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lk.Run(ctx); close(done) }()
	composer := tusd.NewStoreComposer()
	st.UseIn(composer)
	lk.UseIn(composer)
	h, err := tusd.NewHandler(tusd.Config{
		StoreComposer: composer, BasePath: "/files/", DisableDownload: true, DisableConcatenation: true,
		Logger:                           expslog.New(expslog.NewTextHandler(io.Discard, nil)),
		GracefulRequestCompletionTimeout: time.Second,
		PreUploadCreateCallback: func(tusd.HookEvent) (tusd.HTTPResponse, tusd.FileInfoChanges, error) {
			return tusd.HTTPResponse{}, tusd.FileInfoChanges{ID: strings.Repeat("5a", 16)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/files/", h))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
		pool.Close()
	})
	return srv, st
}

// TestPostgresLocksStopOtherReplicasPatch: two replicas share one bucket
// and one database. While a box's PATCH still runs on A (A is slow or cut
// off from the box, which has moved on), the box's HEAD on B asks A,
// through PostgreSQL, to release the upload: A's PATCH stops and keeps
// its bytes, B answers with the offset A reached, and the upload finishes
// on B with the bytes intact. With per-process locks B would answer at
// once while A still wrote.
func TestPostgresLocksStopOtherReplicasPatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and versitygw; skipped under -short")
	}
	gw := s3test.Start(t, "staging")
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	c := replicaConfig{Endpoint: gw.Endpoint, Access: gw.Access, Secret: gw.Secret, Bucket: gw.Bucket}
	a, _ := pgReplica(t, c, dsn)
	b, stB := pgReplica(t, c, dsn)
	watch, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	data := make([]byte, 9<<20+321)
	rand.Read(data)
	resp := tusRequest(t, http.MethodPost, a.URL+"/files/", nil, "Upload-Length", strconv.Itoa(len(data)))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create on A: %s", resp.Status)
	}
	id := strings.Repeat("5a", 16)

	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, a.URL+"/files/"+id, pr)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.ContentLength = int64(len(data))
	patchA := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			patchA <- 0
			return
		}
		resp.Body.Close()
		patchA <- resp.StatusCode
	}()
	if _, err := pw.Write(data[:2<<20]); err != nil {
		t.Fatal(err)
	}
	// A's PATCH holds the upload's advisory lock.
	for deadline := time.Now().Add(patience); ; {
		if time.Now().After(deadline) {
			t.Fatal("A's PATCH never took the upload's lock in PostgreSQL")
		}
		var n int
		if err := watch.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	off := head(t, b.URL+"/files/"+id)
	// A's PATCH ended without the test closing its body: it was told to.
	select {
	case code := <-patchA:
		if code == http.StatusNoContent {
			t.Fatalf("A's PATCH succeeded with %d of %d bytes", off, len(data))
		}
	case <-time.After(patience):
		t.Fatal("A's PATCH still runs after B answered HEAD: two replicas held the upload")
	}
	if off > 2<<20 {
		t.Fatalf("B's offset %d: more than was sent", off)
	}
	t.Logf("A stopped at offset %d", off)
	finishOn(t, b.URL+"/files/"+id, stB, off, data)
}

// patience bounds a wait that only a broken test exceeds.
const patience = time.Minute
