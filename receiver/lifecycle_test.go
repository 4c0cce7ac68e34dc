package receiver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/wire"
)

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// sealAt seals segment seq of recording rec with media starting at start
// and size bytes of media; it returns the segment and its commitment.
func (h *harness) sealAt(t *testing.T, rec [16]byte, seq uint64, prev [32]byte, start time.Time, size int, last bool) ([]byte, [32]byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := crypto.NewWriter(&buf, h.box.Recipients, h.box.Device, crypto.Params{RecordingID: rec, Sequence: seq, Prev: prev, Start: start, Codec: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte{7}, size))
	if last {
		w.SetEnd(crypto.EndStopped)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.Commitment()
}

// rawStore reaches a test's store around the Store code: the directory
// itself, or the bucket through the S3 client.
type rawStore struct {
	list   func() []string
	write  func(key string, data []byte)
	remove func(key string)
}

// backends are the stores the lifecycle tests run against: open returns
// the store for the server (nil: the data directory's) and its raw access.
var backends = []struct {
	name string
	open func(t *testing.T, data func() string) (store.Store, rawStore)
}{
	{"fs", func(t *testing.T, data func() string) (store.Store, rawStore) {
		path := func(key string) string { return filepath.Join(data(), receiver.StoreDir, filepath.FromSlash(key)) }
		return nil, rawStore{
			list: func() []string {
				var keys []string
				root := filepath.Join(data(), receiver.StoreDir)
				filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
					if err == nil && info.Mode().IsRegular() {
						rel, _ := filepath.Rel(root, p)
						keys = append(keys, filepath.ToSlash(rel))
					}
					return nil
				})
				slices.Sort(keys)
				return keys
			},
			write: func(key string, b []byte) {
				if err := os.WriteFile(path(key), b, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			remove: func(key string) {
				if err := os.Remove(path(key)); err != nil {
					t.Fatal(err)
				}
			},
		}
	}},
	{"versitygw", func(t *testing.T, _ func() string) (store.Store, rawStore) {
		if testing.Short() {
			t.Skip("starts versitygw; skipped under -short")
		}
		gw := s3test.Start(t, "lifecycle")
		st, err := store.NewS3(t.Context(), store.S3Options{Bucket: gw.Bucket, Endpoint: gw.Endpoint, Region: s3test.Region, PathStyle: true, AccessKey: gw.Access, SecretKey: gw.Secret})
		if err != nil {
			t.Fatal(err)
		}
		c, ctx := gw.Client(), context.Background()
		return st, rawStore{
			list: func() []string {
				out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
				if err != nil {
					t.Fatal(err)
				}
				var keys []string
				for _, o := range out.Contents {
					keys = append(keys, aws.ToString(o.Key))
				}
				slices.Sort(keys)
				return keys
			},
			write: func(key string, b []byte) {
				if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
					t.Fatal(err)
				}
			},
			remove: func(key string) {
				if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(key)}); err != nil {
					t.Fatal(err)
				}
			},
		}
	}},
}

// TestRecordingLifecycle runs delete → hidden → restored → deleted →
// purged after the grace period, and retention, on a real receiver with
// a clock the test controls, against the filesystem store and a real S3
// server (versitygw): the objects are gone from the store, as the store
// itself (the directory, the bucket's own listing) shows.
func TestRecordingLifecycle(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var h *harness
			st, raw := b.open(t, func() string { return h.data })
			stored := raw.list
			t0 := time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)
			clk := &clock{now: t0}
			const day = 24 * time.Hour
			grace, retention := 90*day, 30*day
			h = startWith(t, receiver.ServerConfig{Store: st, Now: clk.Now, DeleteGrace: grace, Retention: retention})
			recA, recB := [16]byte{0xaa, 1}, [16]byte{0xbb, 2}
			// Recording a: two segments of 10 s and 4 s; b: one, a day later.
			a0, c := h.sealAt(t, recA, 0, [32]byte{}, t0, 40_000, false)
			a1, _ := h.sealAt(t, recA, 1, c, t0.Add(10*time.Second), 16_000, true)
			b0, _ := h.sealAt(t, recB, 0, [32]byte{}, t0.Add(day), 20_000, true)
			for _, s := range [][]byte{a0, a1, b0} {
				h.send(t, s)
			}
			ida, idb := hex.EncodeToString(recA[:]), hex.EncodeToString(recB[:])
			all := stored()
			if len(all) != 3 {
				t.Fatalf("store holds %v, want 3 objects", all)
			}
			listed := func(deleted bool) map[string]receiver.Recording {
				t.Helper()
				list := h.admin.ListRecordings
				if deleted {
					list = h.admin.ListDeletedRecordings
				}
				rs, err := list()
				if err != nil {
					t.Fatal(err)
				}
				m := map[string]receiver.Recording{}
				for _, r := range rs {
					m[r.ID] = r
				}
				return m
			}
			ra := listed(false)[ida]
			if ra.Device != "room-9" || !ra.Start.Equal(t0) || !ra.End.Equal(t0.Add(14*time.Second)) || ra.DurationSeconds != 14 || ra.Segments != 2 || !ra.Complete {
				t.Fatalf("recording a listed as %+v, want room-9 from %s for 14 s, 2 segments, complete", ra, t0)
			}

			// Deleted: hidden at once, listed as deleted, objects kept.
			clk.set(t0.Add(time.Hour))
			r, err := h.admin.DeleteRecording(ida)
			if err != nil {
				t.Fatal(err)
			}
			if want := t0.Add(time.Hour + grace); !r.PurgeAfter.Equal(want) || r.DeletedBy != "admin" {
				t.Fatalf("delete: %+v, want purge after %s by admin", r.RecordingLife, want)
			}
			if _, ok := listed(false)[ida]; ok {
				t.Fatal("a deleted recording is still listed")
			}
			if _, ok := listed(true)[ida]; !ok {
				t.Fatal("a deleted recording is not in the deleted list")
			}
			if _, err := h.admin.DeleteRecording(ida); !errors.Is(err, receiver.ErrRecordingState) {
				t.Fatalf("second delete: %v, want ErrRecordingState", err)
			}
			if _, err := receiver.ExportStored(t.Context(), h.data, h.database, ida, filepath.Join(t.TempDir(), "a.mp4"), nil); err == nil || !strings.Contains(err.Error(), "restore it first") {
				t.Fatalf("export of a deleted recording: %v, want a refusal naming restore", err)
			}

			// Restored: listed again.
			if _, err := h.admin.RestoreRecording(ida); err != nil {
				t.Fatal(err)
			}
			if _, ok := listed(false)[ida]; !ok {
				t.Fatal("a restored recording is not listed")
			}
			if _, err := h.admin.RestoreRecording(ida); !errors.Is(err, receiver.ErrRecordingState) {
				t.Fatalf("restore of a listed recording: %v, want ErrRecordingState", err)
			}

			// Deleted again at t1; a pass one minute before the grace ends
			// purges nothing of it (retention deletes b, 30 days old).
			t1 := t0.Add(2 * time.Hour)
			clk.set(t1)
			if _, err := h.admin.DeleteRecording(ida); err != nil {
				t.Fatal(err)
			}
			clk.set(t1.Add(grace - time.Minute))
			rep, err := h.admin.PurgeRecordings()
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Purged) != 0 || !slices.Equal(rep.Expired, []string{idb}) {
				t.Fatalf("pass before the grace ends: %+v, want nothing purged and b deleted by retention", rep)
			}
			if got := stored(); !slices.Equal(got, all) {
				t.Fatalf("store holds %v before the grace ended, want %v", got, all)
			}
			if r := listed(true)[idb]; r.DeletedBy != "retention" {
				t.Fatalf("b after its retention: %+v, want deleted by retention", r.RecordingLife)
			}

			// The grace ends: a is purged, from the store too; b stays.
			clk.set(t1.Add(grace))
			if _, err := h.admin.RestoreRecording(ida); !errors.Is(err, receiver.ErrRecordingState) {
				t.Fatalf("restore after the grace: %v, want ErrRecordingState", err)
			}
			if rep, err = h.admin.PurgeRecordings(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rep.Purged, []string{ida}) || rep.Segments != 2 || rep.Bytes != int64(len(a0)+len(a1)) {
				t.Fatalf("pass after the grace: %+v, want a purged (2 segments, %d bytes)", rep, len(a0)+len(a1))
			}
			if got := stored(); len(got) != 1 || !strings.Contains(got[0], idb) {
				t.Fatalf("store holds %v after the purge, want only b's segment", got)
			}
			if _, ok := listed(true)[ida]; ok {
				t.Fatal("a purged recording is still listed as deleted")
			}
			if _, err := h.admin.RestoreRecording(ida); !errors.Is(err, receiver.ErrNoRecording) || !strings.Contains(err.Error(), "purged") {
				t.Fatalf("restore of a purged recording: %v, want ErrNoRecording saying purged", err)
			}
			audit := h.auditText(t)
			for _, ev := range []string{`"recording.delete"`, `"recording.restore"`, `"recording.purge"`} {
				if !strings.Contains(audit, ev) {
					t.Errorf("audit log has no %s entry", ev)
				}
			}

			// A segment of a purged recording committed late (a box offline
			// for months) is hidden and purged at the next pass.
			h.send(t, a1)
			if _, ok := listed(false)[ida]; ok {
				t.Fatal("a late segment of a purged recording is listed")
			}
			// b, deleted by retention, is restored: retention leaves it alone.
			if _, err := h.admin.RestoreRecording(idb); err != nil {
				t.Fatal(err)
			}
			if rep, err = h.admin.PurgeRecordings(); err != nil {
				t.Fatal(err)
			}
			if len(rep.Expired) != 0 || !slices.Equal(rep.Purged, []string{ida}) || rep.Segments != 1 {
				t.Fatalf("pass after the late segment and b's restore: %+v, want the late segment purged, b kept", rep)
			}
			if got := stored(); len(got) != 1 || !strings.Contains(got[0], idb) {
				t.Fatalf("store holds %v, want only b's segment", got)
			}
			if _, ok := listed(false)[idb]; !ok {
				t.Fatal("a restored recording past its retention is not listed")
			}

			// b, deleted by an admin, is purged after the grace period.
			t2 := t1.Add(grace + time.Hour)
			clk.set(t2)
			if _, err := h.admin.DeleteRecording(idb); err != nil {
				t.Fatal(err)
			}
			clk.set(t2.Add(grace))
			if rep, err = h.admin.PurgeRecordings(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rep.Purged, []string{idb}) {
				t.Fatalf("pass after b's grace: %+v, want b purged", rep)
			}
			if got := stored(); len(got) != 0 {
				t.Fatalf("store holds %v after every recording was purged", got)
			}
		})
	}
}

// TestScrub finds a changed byte and a missing object in each store,
// through the admin socket. Without the server, the data directory's store
// is scrubbed all the same, an S3 store is refused with what to do.
func TestScrub(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var h *harness
			st, raw := b.open(t, func() string { return h.data })
			h = startWith(t, receiver.ServerConfig{Store: st})
			rec := [16]byte{0xcc, 3}
			start := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
			s0, c := h.sealAt(t, rec, 0, [32]byte{}, start, 30_000, false)
			s1, c1 := h.sealAt(t, rec, 1, c, start.Add(10*time.Second), 30_000, false)
			s2, _ := h.sealAt(t, rec, 2, c1, start.Add(20*time.Second), 30_000, true)
			// s1 as from a box of an older release.
			h.send(t, s0)
			h.sendWith(t, s1, wire.HashSHA256)
			h.send(t, s2)
			id := hex.EncodeToString(rec[:])
			keys := raw.list()
			rep, err := h.admin.ScrubRecordings("")
			if err != nil || rep.Segments != 3 || len(rep.Damaged) != 0 || rep.Bytes != int64(len(s0)+len(s1)+len(s2)) {
				t.Fatalf("scrub of intact segments: %+v, %v", rep, err)
			}
			for i, seg := range [][]byte{s0, s1} {
				bad := bytes.Clone(seg)
				bad[len(bad)-100] ^= 0x80 // in the signature
				raw.write(keys[i], bad)
			}
			raw.remove(keys[2])
			rep, err = h.admin.ScrubRecordings(id)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Damaged) != 3 || rep.Damaged[0].Sequence != 0 || !strings.Contains(rep.Damaged[0].Problem, "BLAKE3") ||
				rep.Damaged[1].Sequence != 1 || !strings.Contains(rep.Damaged[1].Problem, "SHA-256") ||
				!strings.Contains(rep.Damaged[0].Problem, "CORRUPT") || !strings.Contains(rep.Damaged[1].Problem, "CORRUPT") ||
				rep.Damaged[2].Key != keys[2] || rep.Damaged[2].Problem != "missing from the store" {
				t.Fatalf("scrub after a flipped signature byte in two segments and a removed object: %+v", rep.Damaged)
			}
			if _, err := h.admin.ScrubRecordings("00"); !errors.Is(err, receiver.ErrNoRecording) {
				t.Fatalf("scrub of a bad id: %v, want ErrNoRecording", err)
			}

			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			local, err := receiver.OpenAdminDatabase(h.data, h.database)
			if err != nil {
				t.Fatal(err)
			}
			defer local.Close()
			rep, err = local.ScrubRecordings("")
			if b.name == "fs" {
				if err != nil || len(rep.Damaged) != 3 {
					t.Fatalf("scrub without the server: %+v, %v; want the 3 damaged segments", rep, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), "uploadbox-receiver serve") {
				t.Fatalf("scrub of an S3 store without the server: %v, want a refusal naming serve", err)
			}
		})
	}
}

// TestRetentionAtStart: serve applies retention when it starts (and
// hourly), with the policy it was started with.
func TestRetentionAtStart(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	h := startWith(t, receiver.ServerConfig{Now: func() time.Time { return t0 }})
	rec := [16]byte{0xdd, 4}
	seg, _ := h.sealAt(t, rec, 0, [32]byte{}, t0, 10_000, true)
	h.send(t, seg)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(31 * 24 * time.Hour)
	_, _, stop := serve(t, receiver.ServerConfig{Data: h.data, Database: h.database, Listen: "127.0.0.1:0", Retention: 30 * 24 * time.Hour, Now: func() time.Time { return later }})
	defer stop()
	a, err := receiver.OpenAdmin(h.data)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// The pass runs beside the listeners: wait for it (a minute is a
	// bound for a hung pass, not a timing requirement).
	giveUp := time.After(time.Minute)
	for {
		rs, err := a.ListDeletedRecordings()
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 1 {
			if rs[0].ID != hex.EncodeToString(rec[:]) || rs[0].DeletedBy != "retention" || !rs[0].Deleted.Equal(later) {
				t.Fatalf("deleted at start: %+v, want the recording, by retention, at %s", rs[0], later)
			}
			break
		}
		select {
		case <-giveUp:
			t.Fatal("retention was not applied at start")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestScrubFillsTimes: segments committed before the receiver kept their
// start get it from a scrub, and the recording is listed with its times.
func TestScrubFillsTimes(t *testing.T) {
	h := start(t)
	t0 := time.Date(2026, 2, 2, 10, 0, 0, 0, time.UTC)
	rec := [16]byte{0xee, 5}
	s0, c := h.sealAt(t, rec, 0, [32]byte{}, t0, 8000, false)
	s1, _ := h.sealAt(t, rec, 1, c, t0.Add(4*time.Second), 4000, true)
	h.send(t, s0)
	h.send(t, s1)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	// Make the records as an older receiver wrote them.
	db := h.state(t)
	err := db.Update(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("segments"))
		old := map[string][]byte{}
		if err := b.ForEach(func(k, v []byte) error {
			var m map[string]any
			json.Unmarshal(v, &m)
			delete(m, "start")
			delete(m, "media_bytes")
			old[string(k)], _ = json.Marshal(m)
			return nil
		}); err != nil {
			return err
		}
		for k, v := range old {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	a, err := receiver.OpenAdminDatabase(h.data, h.database)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rs, err := a.ListRecordings()
	if err != nil || len(rs) != 1 || !rs[0].Start.IsZero() {
		t.Fatalf("records without times: %+v, %v; want no start", rs, err)
	}
	rep, err := a.ScrubRecordings("")
	if err != nil || rep.TimesFilled != 2 || len(rep.Damaged) != 0 {
		t.Fatalf("scrub: %+v, %v; want 2 segments' times filled", rep, err)
	}
	rs, err = a.ListRecordings()
	if err != nil || !rs[0].Start.Equal(t0) || rs[0].DurationSeconds != 6 {
		t.Fatalf("after the scrub: %+v, %v; want start %s, 6 s", rs, err, t0)
	}
	if rep, _ := a.ScrubRecordings(""); rep.TimesFilled != 0 {
		t.Fatalf("second scrub filled %d segments' times again", rep.TimesFilled)
	}
}
