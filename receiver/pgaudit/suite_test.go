package pgaudit_test

import (
	"bytes"
	"context"
	stdcrypto "crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(kvtest.Wrap(m)) }

// chain is what the receiver asks of its audit chain (receiver.auditChain).
type chain interface {
	Append(audit.Entry) (audit.Entry, error)
	Entries(audit.Filter) ([]audit.Entry, error)
	Size() (int64, error)
	Prune(time.Duration) (int, error)
	Checkpoint(stdcrypto.Signer) (audit.Checkpoint, bool, error)
	VerifyAnchored(ed25519.PublicKey) (audit.Report, error)
}

var (
	_ chain = (*audit.Log)(nil)
	_ chain = (*pgaudit.Chain)(nil)
)

// backend is one implementation under test, with the ways of damaging it
// an attacker with write access to its store has.
type backend struct {
	// open returns a handle on the backend's one chain (several handles
	// are several writers: processes on one file, receivers on one
	// database).
	open func(t *testing.T) chain
	// edit sets entry seq's detail without fixing its hash.
	edit func(t *testing.T, seq uint64, detail string)
	// cut removes the last n entries, leaving a chain that verifies on
	// its own.
	cut func(t *testing.T, n int)
}

func fileBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	lines := func() [][]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	}
	write := func(ls [][]byte) {
		if err := os.WriteFile(path, append(bytes.Join(ls, []byte("\n")), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return backend{
		open: func(t *testing.T) chain {
			l, err := audit.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		edit: func(t *testing.T, seq uint64, detail string) {
			ls := lines()
			for i, l := range ls {
				var e audit.Entry
				if err := json.Unmarshal(l, &e); err != nil {
					t.Fatal(err)
				}
				if e.Seq == seq {
					e.Detail = detail
					ls[i], _ = json.Marshal(e)
				}
			}
			write(ls)
		},
		cut: func(t *testing.T, n int) {
			ls := lines()
			write(ls[:len(ls)-n])
		},
	}
}

func pgBackend(t *testing.T) backend {
	url := kvtest.URL(t)
	var admin *kv.Postgres
	open := func(t *testing.T) *kv.Postgres {
		db, err := kv.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	admin = open(t)
	exec := func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := admin.Pool().Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	return backend{
		open: func(t *testing.T) chain {
			n++
			return pgaudit.New(open(t).Pool(), fmt.Sprintf("test/%d", n))
		},
		edit: func(t *testing.T, seq uint64, detail string) {
			exec(t, `UPDATE audit_entries SET detail = $1 WHERE seq = $2`, detail, seq)
		},
		cut: func(t *testing.T, n int) {
			exec(t, `DELETE FROM audit_entries WHERE seq > (SELECT seq FROM audit_head) - $1`, n)
			exec(t, `UPDATE audit_head SET seq = e.seq, hash = e.hash FROM (SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1) e`)
		},
	}
}

// TestChainConformance runs the same checks on the file chain and on the
// chain in PostgreSQL.
func TestChainConformance(t *testing.T) {
	backends := map[string]func(*testing.T) backend{"file": fileBackend}
	if !testing.Short() {
		backends["postgres"] = pgBackend
	}
	for name, mk := range backends {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				run  func(t *testing.T, b backend)
			}{
				{"append and verify", testAppendVerify},
				{"list filters", testListFilters},
				{"edited entry is named", testEdited},
				{"cut after a checkpoint", testCut},
				{"prune keeps it verifiable", testPrune},
				{"size counts the entries' bytes", testSize},
				{"concurrent writers keep one chain", testConcurrent},
				{"concurrent checkpoints never go back", testConcurrentCheckpoints},
			} {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, mk(t)) })
			}
		})
	}
}

func appendN(t *testing.T, c chain, n int, e audit.Entry) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for i := range n {
		e := e
		if e.Detail == "" {
			e.Detail = fmt.Sprintf("entry %d", i)
		}
		got, err := c.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got)
	}
	return out
}

func testAppendVerify(t *testing.T, b backend) {
	c := b.open(t)
	rep, err := c.VerifyAnchored(nil)
	if err != nil || rep.Entries != 0 {
		t.Fatalf("empty chain: %+v %v", rep, err)
	}
	es := appendN(t, c, 5, audit.Entry{Event: "device.connect", Identity: "room-1", Source: "10.0.0.1", Outcome: "ok"})
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		if h, _ := e.Digest(); h != e.Hash {
			t.Fatalf("seq %d: hash %s, its digest %s", e.Seq, e.Hash, h)
		}
	}
	got, err := c.Entries(audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		a, _ := json.Marshal(es[i])
		b, _ := json.Marshal(got[i])
		if !bytes.Equal(a, b) {
			t.Fatalf("read back\n%s\nappended\n%s", b, a)
		}
	}
	rep, err = c.VerifyAnchored(nil)
	if err != nil || rep.Entries != 5 || rep.First != 1 || rep.Last != 5 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

func testListFilters(t *testing.T, b backend) {
	c := b.open(t)
	t0 := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for i, ev := range []string{"viewer.login", "device.enroll", "viewer.disable", "login", "device.connect", "viewer.login"} {
		if _, err := c.Append(audit.Entry{Time: t0.Add(time.Duration(i) * time.Hour), Event: ev, Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want []uint64
	}{
		{"all", audit.Filter{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"a part of the event", audit.Filter{Types: []string{"login"}}, []uint64{1, 4, 6}},
		{"a prefix part", audit.Filter{Types: []string{"device"}}, []uint64{2, 5}},
		{"an exact event", audit.Filter{Types: []string{"viewer.disable"}}, []uint64{3}},
		{"two types", audit.Filter{Types: []string{"enroll", "disable"}}, []uint64{2, 3}},
		{"not a substring", audit.Filter{Types: []string{"log"}}, nil},
		{"since", audit.Filter{Since: t0.Add(4 * time.Hour)}, []uint64{5, 6}},
		{"since, inclusive", audit.Filter{Since: t0.Add(3 * time.Hour), Types: []string{"login"}}, []uint64{4, 6}},
		{"last", audit.Filter{Types: []string{"viewer"}, Last: 2}, []uint64{3, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := c.Entries(tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range es {
				got = append(got, e.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got seqs %v, want %v", got, tc.want)
			}
		})
	}
}

func testEdited(t *testing.T, b backend) {
	c := b.open(t)
	appendN(t, c, 6, audit.Entry{Event: "viewer.login", Identity: "alice", Outcome: "denied"})
	b.edit(t, 4, "nothing happened here")
	_, err := c.VerifyAnchored(nil)
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 4 {
		t.Fatalf("verify after editing seq 4: %v, want a VerifyError at seq 4", err)
	}
	t.Logf("verify says: %v", err)
}

func testCut(t *testing.T, b backend) {
	c := b.open(t)
	key := newKey(t)
	appendN(t, c, 5, audit.Entry{Event: "device.connect", Outcome: "ok"})
	cp, written, err := c.Checkpoint(key)
	if err != nil || !written || cp.Seq != 5 {
		t.Fatalf("checkpoint: %+v %v %v", cp, written, err)
	}
	if again, written, err := c.Checkpoint(key); err != nil || written || again != cp {
		t.Fatalf("checkpoint of an unmoved head: %+v %v %v", again, written, err)
	}
	rep, err := c.VerifyAnchored(key.Public().(ed25519.PublicKey))
	if err != nil || rep.Checkpoint == nil || rep.Checkpoint.Seq != 5 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if _, err := c.VerifyAnchored(newKey(t).Public().(ed25519.PublicKey)); !errors.Is(err, audit.ErrCheckpointKey) {
		t.Fatalf("verify with another key: %v", err)
	}
	b.cut(t, 2)
	_, err = c.VerifyAnchored(nil)
	var ce *audit.CheckpointError
	if !errors.As(err, &ce) || ce.Missing != 2 {
		t.Fatalf("verify after cutting 2: %v, want 2 entries missing", err)
	}
	if _, _, err := c.Checkpoint(key); !errors.As(err, &ce) {
		t.Fatalf("checkpoint over a cut chain: %v", err)
	}
}

func testPrune(t *testing.T, b backend) {
	c := b.open(t)
	key := newKey(t)
	old := time.Now().Add(-48 * time.Hour).UTC()
	for i := range 4 {
		if _, err := c.Append(audit.Entry{Time: old.Add(time.Duration(i) * time.Minute), Event: "viewer.login", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Checkpoint(key); err != nil {
		t.Fatal(err)
	}
	appendN(t, c, 3, audit.Entry{Event: "device.connect", Outcome: "ok"})
	before, _ := c.Size()
	n, err := c.Prune(24 * time.Hour)
	if err != nil || n != 4 {
		t.Fatalf("prune: %d %v, want 4 removed", n, err)
	}
	if after, _ := c.Size(); after >= before {
		t.Fatalf("size %d after prune, %d before", after, before)
	}
	rep, err := c.VerifyAnchored(key.Public().(ed25519.PublicKey))
	if err != nil || rep.First != 5 || rep.Last != 7 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 4 {
		t.Fatalf("verify after prune: %+v %v", rep, err)
	}
	if _, written, err := c.Checkpoint(key); err != nil || !written {
		t.Fatalf("checkpoint after prune: %v %v", written, err)
	}
	// Everything expired: the newest stays as the head.
	if n, err := c.Prune(time.Nanosecond); err != nil || n != 2 {
		t.Fatalf("prune of all: %d %v, want 2 removed", n, err)
	}
	if rep, err := c.VerifyAnchored(nil); err != nil || rep.Entries != 1 || rep.First != 7 {
		t.Fatalf("verify after pruning all: %+v %v", rep, err)
	}
	b.edit(t, 7, "x")
	if _, err := c.Prune(24 * time.Hour); err == nil {
		t.Fatal("a broken chain was pruned")
	}
}

func testSize(t *testing.T, b backend) {
	c := b.open(t)
	appendN(t, c, 7, audit.Entry{Event: "viewer.login", Identity: "bob", Source: "192.0.2.7", Outcome: "denied"})
	es, err := c.Entries(audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, e := range es {
		line, _ := json.Marshal(e)
		want += int64(len(line) + 1)
	}
	if got, err := c.Size(); err != nil || got != want {
		t.Fatalf("size %d %v, the entries' lines take %d", got, err, want)
	}
}

func testConcurrent(t *testing.T, b backend) {
	const writers, each = 4, 25
	handles := []chain{b.open(t), b.open(t)}
	var fns []func() error
	for w := range writers {
		fns = append(fns, func() error {
			c := handles[w%len(handles)]
			for i := range each {
				if _, err := c.Append(audit.Entry{Event: "device.connect", Identity: fmt.Sprintf("w%d", w), Outcome: "ok", Detail: fmt.Sprint(i)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	together(t, fns...)
	rep, err := handles[0].VerifyAnchored(nil)
	if err != nil || rep.Entries != writers*each || rep.Last != writers*each {
		t.Fatalf("after %d concurrent appends: %+v %v", writers*each, rep, err)
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testConcurrentCheckpoints: two writers checkpoint (as every receiver's
// timer does) while two others append; the checkpoints, read back in the
// order they were stored, never go back, and the chain verifies against
// the last.
func testConcurrentCheckpoints(t *testing.T, b backend) {
	key := newKey(t)
	handles := []chain{b.open(t), b.open(t)}
	var fns []func() error
	for i, c := range handles {
		fns = append(fns, func() error {
			for j := range 20 {
				if _, err := c.Append(audit.Entry{Event: "device.connect", Outcome: "ok", Detail: fmt.Sprint(i, j)}); err != nil {
					return err
				}
			}
			return nil
		}, func() error {
			for range 10 {
				if _, _, err := c.Checkpoint(key); err != nil {
					return err
				}
			}
			return nil
		})
	}
	together(t, fns...)
	if _, _, err := handles[0].Checkpoint(key); err != nil {
		t.Fatal(err)
	}
	rep, err := handles[1].VerifyAnchored(key.Public().(ed25519.PublicKey))
	if err != nil || rep.Entries != 40 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 40 {
		t.Fatalf("after concurrent checkpoints: %+v %v", rep, err)
	}
}

// together runs fns at once and fails t with the first error.
func together(t *testing.T, fns ...func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(fns))
	for _, f := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
