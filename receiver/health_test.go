package receiver_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/uploader/tus"
)

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %q", url, err, body)
		}
	}
	return resp.StatusCode
}

// TestHealthAndReadiness: /healthz answers while the process serves;
// /readyz answers 200 while the database and the S3 bucket answer, and 503
// naming the store once the bucket is gone; both on the main listener and
// on the plain-HTTP metrics listener.
func TestHealthAndReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw; skipped under -short")
	}
	gw := s3test.Start(t, "ready")
	st, err := store.NewS3(t.Context(), store.S3Options{Bucket: gw.Bucket, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true, AccessKey: gw.Access, SecretKey: gw.Secret})
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, receiver.ServerConfig{Store: st, MetricsListen: "127.0.0.1:0"})
	c := h.box.HTTPClient()
	plain := &http.Client{Timeout: 20 * time.Second}
	bases := map[string]*http.Client{"https://" + h.addr: c, "http://" + h.srv.MetricsAddr(): plain}
	for base, client := range bases {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s/healthz: %d", base, resp.StatusCode)
		}
		var rd receiver.Readiness
		if code := getJSON(t, client, base+"/readyz", &rd); code != http.StatusOK || !rd.Ready || rd.Database != "ok" || rd.Store != "ok" {
			t.Fatalf("%s/readyz with everything up: %d %+v", base, code, rd)
		}
	}
	// The bucket goes away: not ready, and the answer says it is the store.
	if _, err := gw.Client().DeleteBucket(t.Context(), &s3.DeleteBucketInput{Bucket: aws.String(gw.Bucket)}); err != nil {
		t.Fatal(err)
	}
	for base, client := range bases {
		var rd receiver.Readiness
		if code := getJSON(t, client, base+"/readyz", &rd); code != http.StatusServiceUnavailable || rd.Ready || rd.Store == "ok" || rd.Database != "ok" {
			t.Fatalf("%s/readyz without the bucket: %d %+v, want 503 naming the store", base, code, rd)
		}
	}
}

// TestDrainFinishesRunningUpload: a PATCH running when the server is told
// to stop is let finish (the listener closes at once: no new connection is
// accepted), and the server then returns; with a short grace, an upload
// that does not finish is cut and the server returns anyway.
func TestDrainFinishesRunningUpload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		finish bool // the client sends the rest of the body during the drain
	}{
		{"finishes within the grace", 30 * time.Second, true},
		{"cut after the grace", time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startWith(t, receiver.ServerConfig{DrainGrace: tc.grace, MetricsListen: "127.0.0.1:0"})
			ready := "http://" + h.srv.MetricsAddr() + "/readyz"
			plain := &http.Client{Timeout: 10 * time.Second}
			waitReady := func(what string, ok func(receiver.Readiness) bool) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for {
					var rd receiver.Readiness
					getJSON(t, plain, ready, &rd)
					if ok(rd) {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: /readyz still says %+v after 20 s", what, rd)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			data := make([]byte, 256<<10)
			rand.Read(data)
			client := h.box.HTTPClient()
			tc2 := tus.NewClient(client, h.box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
			u, err := tc2.Create(t.Context(), int64(len(data)), nil)
			if err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(http.MethodPatch, u, pr)
			req.Header.Set("Tus-Resumable", "1.0.0")
			req.Header.Set("Upload-Offset", "0")
			req.Header.Set("Content-Type", "application/offset+octet-stream")
			req.ContentLength = int64(len(data))
			type answer struct {
				code   int
				offset string
				err    error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := client.Do(req)
				if err != nil {
					got <- answer{err: err}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got <- answer{code: resp.StatusCode, offset: resp.Header.Get("Upload-Offset")}
			}()
			half := len(data) / 2
			if _, err := pw.Write(data[:half]); err != nil {
				t.Fatal(err)
			}
			waitReady("the PATCH is running", func(rd receiver.Readiness) bool { return rd.InFlight == 1 })
			stopped := make(chan error, 1)
			go func() { stopped <- h.stop() }()
			// The listener closes at once: wait until it refuses.
			deadline := time.Now().Add(20 * time.Second)
			for {
				c, err := net.DialTimeout("tcp", h.addr, time.Second)
				if err != nil {
					break
				}
				c.Close()
				if time.Now().After(deadline) {
					t.Fatal("the listener still accepts 20 s after the stop began")
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Draining: not ready, the upload still counted.
			waitReady("draining", func(rd receiver.Readiness) bool { return rd.Draining && !rd.Ready && rd.InFlight == 1 })
			select {
			case err := <-stopped:
				t.Fatalf("the server returned (%v) while an upload was still running", err)
			default:
			}
			if tc.finish {
				// A slow box: the rest comes after tusd's own 2 s grace for a
				// request whose context ends, so only the drain keeps it.
				time.Sleep(3 * time.Second)
				if _, err := io.Copy(pw, bytes.NewReader(data[half:])); err != nil {
					a := <-got
					t.Fatalf("sending the rest of the body during the drain: %v; the PATCH was answered %+v (%v)", err, a, a.err)
				}
				pw.Close()
				a := <-got
				if a.err != nil || a.code != http.StatusNoContent || a.offset != strconv.Itoa(len(data)) {
					t.Fatalf("the PATCH running at the stop: %+v (%v), want 204 at offset %d", a, a.err, len(data))
				}
			}
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatalf("stop: %v", err)
				}
			case <-time.After(tc.grace + 30*time.Second):
				t.Fatal("the server did not return after its drain")
			}
			if !tc.finish {
				pw.CloseWithError(io.ErrClosedPipe)
				if a := <-got; a.err == nil && a.code == http.StatusNoContent && a.offset == strconv.Itoa(len(data)) {
					t.Fatalf("an upload never finished was answered as complete: %+v", a)
				}
			}
		})
	}
}

// TestReadinessWithoutTheDatabase: on PostgreSQL, /readyz answers 503
// naming the database once it refuses the receiver's connections, and 200
// again when it takes them.
func TestReadinessWithoutTheDatabase(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDB(t)
	h := startWith(t, receiver.ServerConfig{Database: url})
	name := strings.TrimPrefix(strings.SplitN(url, "?", 2)[0], "postgres:///")
	admin, err := pgx.Connect(t.Context(), pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(t.Context())
	c := h.box.HTTPClient()
	var rd receiver.Readiness
	if code := getJSON(t, c, "https://"+h.addr+"/readyz", &rd); code != http.StatusOK || !rd.Ready {
		t.Fatalf("/readyz with the database up: %d %+v", code, rd)
	}
	for _, q := range []string{"ALTER DATABASE " + name + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "'"} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	if code := getJSON(t, c, "https://"+h.addr+"/readyz", &rd); code != http.StatusServiceUnavailable || rd.Ready || rd.Database == "ok" || rd.Store != "ok" {
		t.Fatalf("/readyz with the database refusing: %d %+v, want 503 naming the database", code, rd)
	}
	if _, err := admin.Exec(t.Context(), "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	if code := getJSON(t, c, "https://"+h.addr+"/readyz", &rd); code != http.StatusOK || !rd.Ready {
		t.Fatalf("/readyz with the database back: %d %+v", code, rd)
	}
	// A change goes through at once too: the dead pooled connections are
	// passed over, not each failing one request.
	if _, err := h.admin.AddDevice("room-10"); err != nil {
		t.Fatalf("a change after the database came back: %v", err)
	}
}
