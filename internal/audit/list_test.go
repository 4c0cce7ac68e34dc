package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestListFilter(t *testing.T) {
	l := newLog(t)
	t0 := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for i, ev := range []string{"viewer.login", "device.enroll", "viewer.disable", "login", "device.connect", "viewer.login"} {
		if _, err := l.Append(Entry{Time: t0.Add(time.Duration(i) * time.Hour), Event: ev, Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"a part of the event", Filter{Types: []string{"login"}}, []uint64{1, 4, 6}},
		{"a prefix part", Filter{Types: []string{"device"}}, []uint64{2, 5}},
		{"an exact event", Filter{Types: []string{"viewer.disable"}}, []uint64{3}},
		{"two types", Filter{Types: []string{"enroll", "disable"}}, []uint64{2, 3}},
		{"not a substring", Filter{Types: []string{"log"}}, nil},
		{"since", Filter{Since: t0.Add(4 * time.Hour)}, []uint64{5, 6}},
		{"since, inclusive", Filter{Since: t0.Add(3 * time.Hour), Types: []string{"login"}}, []uint64{4, 6}},
		{"last", Filter{Types: []string{"viewer"}, Last: 2}, []uint64{3, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := List(l.Path(), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range es {
				got = append(got, e.Seq)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got seqs %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got seqs %v, want %v", got, tc.want)
				}
			}
		})
	}
	os.WriteFile(l.Path(), []byte("{broken\n"), 0o600)
	if _, err := List(l.Path(), Filter{}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a damaged log: %v", err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"24h", now.Add(-24 * time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"7d", now.Add(-7 * 24 * time.Hour), true},
		{"0s", now, true},
		{"2026-11-20", time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), true},
		{"2026-11-20T08:30:00+01:00", time.Date(2026, 11, 20, 7, 30, 0, 0, time.UTC), true},
		{"-1h", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"", time.Time{}, false},
		{"1.5d", time.Time{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSince(tc.in, now)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadSince)) {
				t.Fatalf("err %v", err)
			}
			if tc.ok && !got.Equal(tc.want) {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestSnapshotConsistent: Snapshot reads the log and its checkpoints
// under the log's lock, so what an appender or Checkpoint writes while it
// holds the lock is in the copy whole, in both files, or in neither.
func TestSnapshotConsistent(t *testing.T) {
	l := newLog(t)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	appendN(t, l, 3)
	if _, _, err := l.Checkpoint(key); err != nil {
		t.Fatal(err)
	}
	log, cps, err := Snapshot(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := readCheckpoints(bytes.NewReader(cps), "copy")
	if err != nil || len(parsed) != 1 {
		t.Fatalf("checkpoints in the copy: %v %v", parsed, err)
	}
	if rep, err := VerifyCheckpointed(bytes.NewReader(log), parsed); err != nil || rep.Entries != 3 {
		t.Fatalf("the copy does not verify against its checkpoints: %+v %v", rep, err)
	}

	// A writer holds the lock and writes to both files: the snapshot
	// taken meanwhile has both writes.
	f, err := l.lock(os.O_RDWR | os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan [2][]byte, 1)
	go func() {
		log, cps, err := Snapshot(l.Path())
		if err != nil {
			t.Error(err)
		}
		done <- [2][]byte{log, cps}
	}()
	f.WriteString("log-marker\n")
	if err := os.WriteFile(CheckpointPath(l.Path()), append(cps, "checkpoint-marker\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := <-done
	if !bytes.HasSuffix(got[0], []byte("log-marker\n")) || !bytes.HasSuffix(got[1], []byte("checkpoint-marker\n")) {
		t.Fatalf("the snapshot was read while the lock was held:\n%s\n%s", got[0], got[1])
	}
}
