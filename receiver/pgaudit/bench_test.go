package pgaudit_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
)

// BenchmarkHandshakeAppend measures what every device TLS handshake adds
// to the receiver: one device.connect entry appended, durably, to the file
// chain (fsync per entry) and to the chain in PostgreSQL (a transaction
// locking the head row, fsync of the WAL at commit: the cluster runs with
// fsync on, on the same disk as the file). Both are measured in the same
// run, one append each alternately, and the ratio reported: serial (one
// writer, the latency a handshake waits) and with 8 writers at once (the
// appends serialise on the file's lock or the head row: the rate the
// receivers together can audit handshakes at).
func BenchmarkHandshakeAppend(b *testing.B) {
	url := pgtest.Start(b, "fsync=on", "full_page_writes=on", "synchronous_commit=on").NewDB(b)
	db, err := kv.OpenPostgres(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	pg := pgaudit.New(db.Pool(), "bench/1")
	file, err := audit.Open(filepath.Join(b.TempDir(), "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	e := audit.Entry{Event: "device.connect", Identity: "room-17", Source: "192.0.2.44", Outcome: "ok", Detail: "certificate serial 219382930129381029381"}
	for _, writers := range []int{1, 8} {
		b.Run(map[int]string{1: "serial", 8: "8-writers"}[writers], func(b *testing.B) {
			var tf, tp time.Duration
			n := 0
			for b.Loop() {
				for _, c := range []struct {
					c interface {
						Append(audit.Entry) (audit.Entry, error)
					}
					d *time.Duration
				}{{file, &tf}, {pg, &tp}} {
					start := time.Now()
					var wg sync.WaitGroup
					for range writers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if _, err := c.c.Append(e); err != nil {
								b.Error(err)
							}
						}()
					}
					wg.Wait()
					*c.d += time.Since(start)
				}
				n += writers
			}
			b.ReportMetric(float64(tf.Microseconds())/float64(n), "file-µs/append")
			b.ReportMetric(float64(tp.Microseconds())/float64(n), "pg-µs/append")
			b.ReportMetric(float64(tp)/float64(tf), "pg/file")
		})
	}
}
