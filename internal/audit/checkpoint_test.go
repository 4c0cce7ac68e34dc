package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func newKey(t *testing.T, seed byte) ed25519.PrivateKey {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

func checkpoint(t *testing.T, l *Log, key ed25519.PrivateKey) Checkpoint {
	t.Helper()
	c, written, err := l.Checkpoint(key)
	if err != nil || !written {
		t.Fatalf("checkpoint: written %t, %v", written, err)
	}
	return c
}

func writeLines(t *testing.T, l *Log, ls []string) {
	t.Helper()
	data := ""
	if len(ls) > 0 {
		data = strings.Join(ls, "\n") + "\n"
	}
	if err := os.WriteFile(l.Path(), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheckpointedLogVerifies(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 1)
	appendN(t, l, 4)
	c := checkpoint(t, l, key)
	if c.Seq != 4 || c.Verify(key.Public().(ed25519.PublicKey)) != nil {
		t.Fatalf("checkpoint %+v", c)
	}
	appendN(t, l, 3) // entries after the checkpoint are fine
	rep, err := VerifyAnchored(l.Path(), key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 7 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 4 {
		t.Fatalf("report %+v", rep)
	}
	if st, err := os.Stat(CheckpointPath(l.Path())); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoints file: %v %v", st, err)
	}
	// Without checkpoints a log verifies as before.
	l2 := newLog(t)
	appendN(t, l2, 2)
	if rep, err := VerifyAnchored(l2.Path(), nil); err != nil || rep.Checkpoint != nil || rep.Entries != 2 {
		t.Fatalf("unanchored log: %+v %v", rep, err)
	}
}

// TestTruncationIsDetected: removing the last 1..k entries verifies as a
// chain, but not against the checkpoint, which names how many are gone.
func TestTruncationIsDetected(t *testing.T) {
	const n = 8
	for k := 1; k <= n; k++ {
		t.Run(fmt.Sprintf("last %d", k), func(t *testing.T) {
			l := newLog(t)
			key := newKey(t, 2)
			appendN(t, l, n)
			checkpoint(t, l, key)
			ls := lines(t, l)
			writeLines(t, l, ls[:n-k])
			if _, err := VerifyFile(l.Path()); err != nil {
				t.Fatalf("the chain alone cannot see a cut: %v", err)
			}
			_, err := VerifyAnchored(l.Path(), key.Public().(ed25519.PublicKey))
			var ce *CheckpointError
			if !errors.As(err, &ce) || ce.Missing != uint64(k) {
				t.Fatalf("err = %v, want %d missing", err, k)
			}
			want := fmt.Sprintf("%d entries missing after the last checkpoint", k)
			if k == 1 {
				want = "1 entry missing after the last checkpoint"
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("message %q does not say %q", err, want)
			}
			// The cut head is never signed over.
			if _, _, err := l.Checkpoint(key); !errors.As(err, &ce) {
				t.Fatalf("checkpoint over a cut log: %v", err)
			}
		})
	}
}

// TestCutThenAppendedIsDetected: entries removed and new ones appended
// in their place (the log keeps being written) reach the checkpoint's seq
// with another hash.
func TestCutThenAppendedIsDetected(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 3)
	appendN(t, l, 3)
	checkpoint(t, l, key)
	appendN(t, l, 3)
	checkpoint(t, l, key)
	writeLines(t, l, lines(t, l)[:4])
	appendN(t, l, 4)
	_, err := VerifyAnchored(l.Path(), nil)
	var ce *CheckpointError
	if !errors.As(err, &ce) || ce.Missing != 0 || ce.LastGood != 3 {
		t.Fatalf("err = %#v", err)
	}
	if !strings.Contains(err.Error(), "seq 6 has another hash") || !strings.Contains(err.Error(), "checkpoint at seq 3") {
		t.Fatalf("message: %v", err)
	}
}

// rebuild rewrites every entry with new content and recomputes the chain,
// as someone who can write the file could.
func rebuild(t *testing.T, ls []string) []string {
	t.Helper()
	prev := genesis
	var out []string
	for _, s := range ls {
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			t.Fatal(err)
		}
		e.Identity = strings.Replace(e.Identity, "viewer", "nobody", 1)
		e.Prev = prev
		var err error
		if e.Hash, err = e.digest(); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		b, _ := json.Marshal(e)
		out = append(out, string(b))
	}
	return out
}

func TestRebuiltChainIsDetected(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 4)
	appendN(t, l, 5)
	checkpoint(t, l, key)
	writeLines(t, l, rebuild(t, lines(t, l)))
	if _, err := VerifyFile(l.Path()); err != nil {
		t.Fatalf("a rebuilt chain verifies on its own: %v", err)
	}
	_, err := VerifyAnchored(l.Path(), key.Public().(ed25519.PublicKey))
	var ce *CheckpointError
	if !errors.As(err, &ce) || ce.Missing != 0 {
		t.Fatalf("rebuilt chain: %v", err)
	}

	// Re-signing the checkpoints with the rebuilder's own key does not
	// help: the expected key is not theirs.
	evil := newKey(t, 5)
	last, _ := lastEntryOf(t, l)
	c, err := SignCheckpoint(evil, last.Seq, last.Hash, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c)
	if err := os.WriteFile(CheckpointPath(l.Path()), append(b, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAnchored(l.Path(), key.Public().(ed25519.PublicKey)); !errors.Is(err, ErrCheckpointKey) {
		t.Fatalf("checkpoint by another key: %v", err)
	}
}

func lastEntryOf(t *testing.T, l *Log) (*Entry, error) {
	t.Helper()
	f, err := os.Open(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return lastEntry(f)
}

func TestCheckpointsAreMonotonic(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 6)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	if _, written, err := l.Checkpoint(key); err != nil || written {
		t.Fatalf("an empty log got a checkpoint: %t %v", written, err)
	}
	appendN(t, l, 2)
	a := checkpoint(t, l, key)
	// Unchanged head: nothing new is written.
	if c, written, err := l.Checkpoint(key); err != nil || written || c != a {
		t.Fatalf("unchanged head: %+v %t %v", c, written, err)
	}
	appendN(t, l, 1)
	now = now.Add(-time.Hour) // the clock was set back
	b := checkpoint(t, l, key)
	if b.Seq != 3 || b.Time.Before(a.Time) {
		t.Fatalf("second checkpoint %+v after %+v", b, a)
	}
	cps, err := ReadCheckpoints(CheckpointPath(l.Path()))
	if err != nil || len(cps) != 2 {
		t.Fatalf("checkpoints %+v %v", cps, err)
	}
	// Lines swapped: the file goes backwards and is refused.
	data, _ := os.ReadFile(CheckpointPath(l.Path()))
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	os.WriteFile(CheckpointPath(l.Path()), []byte(ls[1]+"\n"+ls[0]+"\n"), 0o600)
	if _, err := ReadCheckpoints(CheckpointPath(l.Path())); err == nil || !strings.Contains(err.Error(), "goes back") {
		t.Fatalf("swapped checkpoints: %v", err)
	}
}

func TestCheckpointSignatureCoversEveryField(t *testing.T) {
	key := newKey(t, 7)
	h := sha256.Sum256([]byte("head"))
	hash := hex.EncodeToString(h[:])
	c, err := SignCheckpoint(key, 9, hash, time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("x"))
	tests := []struct {
		name   string
		mutate func(*Checkpoint)
		want   error
	}{
		{"seq", func(c *Checkpoint) { c.Seq++ }, ErrCheckpointSignature},
		{"hash", func(c *Checkpoint) { c.Hash = hex.EncodeToString(other[:]) }, ErrCheckpointSignature},
		{"time", func(c *Checkpoint) { c.Time = c.Time.Add(time.Nanosecond) }, ErrCheckpointSignature},
		{"key", func(c *Checkpoint) {
			c.Key = base64.StdEncoding.EncodeToString(newKey(t, 8).Public().(ed25519.PublicKey))
		}, ErrCheckpointSignature},
		{"upper-case hash", func(c *Checkpoint) { c.Hash = strings.ToUpper(c.Hash) }, ErrCheckpointMalformed},
		{"short sig", func(c *Checkpoint) { c.Sig = c.Sig[:10] }, ErrCheckpointMalformed},
		{"zero seq", func(c *Checkpoint) { c.Seq = 0 }, ErrCheckpointMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := c
			tc.mutate(&m)
			if err := m.Verify(nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Through JSON the checkpoint still verifies (time keeps its nanoseconds).
	b, _ := json.Marshal(c)
	p, err := ParseCheckpoint(b)
	if err != nil || p.Verify(key.Public().(ed25519.PublicKey)) != nil {
		t.Fatalf("round trip: %v", err)
	}
	// The signature is over the domain-separated message, not the bare fields.
	msg, _, _ := c.signedMessage()
	if !strings.HasPrefix(string(msg), checkpointContext) {
		t.Fatal("signed message lacks the context")
	}
	sig, _ := base64.StdEncoding.DecodeString(c.Sig)
	if ed25519.Verify(key.Public().(ed25519.PublicKey), msg[len(checkpointContext):], sig) {
		t.Fatal("signature verifies without the context")
	}
}

func TestParseCheckpointRefusesMalformed(t *testing.T) {
	key := newKey(t, 9)
	c, _ := SignCheckpoint(key, 1, hex.EncodeToString(make([]byte, 32)), time.Now())
	good, _ := json.Marshal(c)
	for name, in := range map[string]string{
		"not json":      "{",
		"unknown field": strings.Replace(string(good), `{"seq"`, `{"x":1,"seq"`, 1),
		"trailing data": string(good) + "{}",
		"too big":       strings.Repeat(" ", MaxCheckpointSize+1),
		"missing time":  `{"seq":1,"hash":"` + c.Hash + `","key":"` + c.Key + `","sig":"` + c.Sig + `"}`,
	} {
		if _, err := ParseCheckpoint([]byte(in)); !errors.Is(err, ErrCheckpointMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := ParseCheckpoint(good); err != nil {
		t.Fatal(err)
	}
}

func TestCheckpointSurvivesPrune(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 10)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	for range 5 {
		appendN(t, l, 1)
		checkpoint(t, l, key)
		now = now.Add(24 * time.Hour)
	}
	// Day 4.5: entries and checkpoints of days 0 and 1 are past a 2.5-day retention.
	now = now.Add(-12 * time.Hour)
	if _, err := l.Prune(60 * time.Hour); err != nil {
		t.Fatal(err)
	}
	cps, err := ReadCheckpoints(CheckpointPath(l.Path()))
	if err != nil || len(cps) != 3 || cps[0].Seq != 3 {
		t.Fatalf("checkpoints after prune: %+v %v", cps, err)
	}
	// Everything expired: the newest entry and the newest checkpoint stay.
	now = now.Add(365 * 24 * time.Hour)
	if _, err := l.Prune(time.Hour); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyAnchored(l.Path(), nil)
	if err != nil || rep.Entries != 1 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 5 {
		t.Fatalf("after prune: %+v %v", rep, err)
	}
	if _, _, err := l.Checkpoint(key); err != nil {
		t.Fatalf("checkpoint after prune: %v", err)
	}
}

// TestCheckpointReadsOnlyNewEntries: once a Log signed a head, the next
// checkpoint starts from that entry, so a long log is not re-read every
// interval; a change to that entry or after it is still caught.
func TestCheckpointReadsOnlyNewEntries(t *testing.T) {
	l := newLog(t)
	key := newKey(t, 13)
	appendN(t, l, 5)
	checkpoint(t, l, key)
	appendN(t, l, 2)
	ls := lines(t, l)
	// An edit before the signed head is not re-read (verify reports it) …
	edited := append([]string(nil), ls...)
	edited[1] = strings.Replace(edited[1], "viewer-1", "viewer-X", 1)
	writeLines(t, l, edited)
	if c, written, err := l.Checkpoint(key); err != nil || !written || c.Seq != 7 {
		t.Fatalf("checkpoint after an old edit: %+v %t %v", c, written, err)
	}
	if _, err := VerifyAnchored(l.Path(), nil); err == nil {
		t.Fatal("verify missed the edit")
	}
	// … an edit of the signed head itself is caught by the next checkpoint.
	writeLines(t, l, ls)
	appendN(t, l, 1)
	ls = lines(t, l)
	ls[6] = strings.Replace(ls[6], "viewer-1", "viewer-Y", 1)
	writeLines(t, l, ls)
	if _, _, err := l.Checkpoint(key); err == nil || !strings.Contains(err.Error(), "edited") {
		t.Fatalf("checkpoint over an edited head: %v", err)
	}
}

func TestRunCheckpointsWritesAtShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLog(t)
		key := newKey(t, 11)
		appendN(t, l, 1)
		ctx, cancel := context.WithCancel(t.Context())
		var got []uint64
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.RunCheckpoints(ctx, time.Minute, key, func(c Checkpoint, written bool, err error) {
				if err != nil {
					t.Error(err)
				}
				if written {
					got = append(got, c.Seq)
				}
			})
		}()
		time.Sleep(time.Minute + time.Second) // one tick
		synctest.Wait()
		appendN(t, l, 2)
		cancel() // the last entry is in: the shutdown checkpoint covers it
		<-done
		if fmt.Sprint(got) != "[1 3]" {
			t.Fatalf("checkpoints written at %v, want [1 3]", got)
		}
	})
}

func TestFollowsAndSave(t *testing.T) {
	key := newKey(t, 12)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(seq uint64, s string) Checkpoint {
		h := sha256.Sum256([]byte(s))
		c, err := SignCheckpoint(key, seq, hex.EncodeToString(h[:]), at.Add(time.Duration(seq)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	held := mk(5, "a")
	for _, tc := range []struct {
		name string
		c    Checkpoint
		same bool
		want error
	}{
		{"newer", mk(6, "b"), false, nil},
		{"same", mk(5, "a"), true, nil},
		{"older", mk(4, "a"), false, ErrCheckpointStale},
		{"fork", mk(5, "x"), false, ErrCheckpointFork},
	} {
		same, err := tc.c.Follows(held)
		if same != tc.same || !errors.Is(err, tc.want) {
			t.Errorf("%s: same %t, err %v", tc.name, same, err)
		}
	}
	path := t.TempDir() + "/dev.json"
	if err := SaveCheckpoint(path, held); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadCheckpoint(path); err != nil || c != held {
		t.Fatalf("load: %+v %v", c, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
}

// FuzzParseCheckpoint: whatever ParseCheckpoint accepts encodes back to a
// checkpoint that parses to the same value, and Verify never panics.
func FuzzParseCheckpoint(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	c, _ := SignCheckpoint(key, 7, hex.EncodeToString(make([]byte, 32)), time.Date(2026, 3, 1, 12, 0, 0, 1, time.UTC))
	good, _ := json.Marshal(c)
	f.Add(good)
	f.Add([]byte(`{"seq":1}`))
	f.Add([]byte(`{"seq":18446744073709551615,"hash":"` + c.Hash + `","time":"9999-12-31T23:59:59Z","key":"` + c.Key + `","sig":"` + c.Sig + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCheckpoint(data)
		if err != nil {
			if !errors.Is(err, ErrCheckpointMalformed) {
				t.Fatalf("error %v is not ErrCheckpointMalformed", err)
			}
			return
		}
		_ = c.Verify(nil)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseCheckpoint(b)
		if err != nil || !d.Time.Equal(c.Time) || d.Seq != c.Seq || d.Hash != c.Hash || d.Key != c.Key || d.Sig != c.Sig {
			t.Fatalf("%s parsed to %+v, re-encoded %s parsed to %+v (%v)", data, c, b, d, err)
		}
	})
}
