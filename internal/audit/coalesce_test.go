package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func entries(t *testing.T, l *Log) []Entry {
	t.Helper()
	var out []Entry
	for _, line := range lines(t, l) {
		var e Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestFailuresCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLog(t)
		f := NewFailures(l, time.Minute)
		for i := range 1000 {
			wrote, err := f.Record(Entry{Event: "login", Identity: fmt.Sprintf("name-%d", i%5), Source: fmt.Sprintf("192.0.2.7:%d", 40000+i), Outcome: "denied"})
			if err != nil {
				t.Fatal(err)
			}
			if wrote != (i == 0) {
				t.Fatalf("failure %d: wrote=%v, want only the first written", i, wrote)
			}
		}
		if _, err := f.Record(Entry{Event: "login", Source: "198.51.100.1:1", Outcome: "denied"}); err != nil {
			t.Fatal(err)
		}
		if n := len(entries(t, l)); n != 2 {
			t.Fatalf("%d entries during the window, want 2 (one per source)", n)
		}
		time.Sleep(time.Minute)
		// The next failure closes the window: the summary comes first.
		if _, err := f.Record(Entry{Event: "login", Source: "192.0.2.7:1", Outcome: "denied"}); err != nil {
			t.Fatal(err)
		}
		es := entries(t, l)
		if len(es) != 4 {
			t.Fatalf("%d entries, want first, first, summary, new window's first: %+v", len(es), es)
		}
		sum := es[2]
		if sum.Source != "192.0.2.7" || sum.Outcome != "denied" || !strings.HasPrefix(sum.Detail, "999 more failures from 192.0.2.7") || !strings.Contains(sum.Detail, "name-1, name-2, name-3") {
			t.Fatalf("summary %+v", sum)
		}
		if es[3].Source != "192.0.2.7" || es[3].Detail != "" {
			t.Fatalf("new window's first entry %+v", es[3])
		}
		if _, err := VerifyFile(l.Path()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFailuresBoundedKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLog(t)
		f := NewFailures(l, time.Minute)
		f.MaxKeys = 4
		for i := range 100 {
			if _, err := f.Record(Entry{Event: "enroll", Source: fmt.Sprintf("10.0.0.%d:1", i), Outcome: "denied"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
		es := entries(t, l)
		// 4 tracked sources, one entry for the first untracked one under
		// "*", and one summary of the 95 others.
		if len(es) != 6 {
			t.Fatalf("%d entries, want 6: %+v", len(es), es)
		}
		if es[4].Source != "10.0.0.4" || !strings.Contains(es[4].Detail, "tracking limit") {
			t.Fatalf("overflow entry %+v", es[4])
		}
		if es[5].Source != "*" || !strings.HasPrefix(es[5].Detail, "95 more failures") {
			t.Fatalf("overflow summary %+v", es[5])
		}
	})
}

func TestFailuresRunFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLog(t)
		f := NewFailures(l, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		for range 3 {
			f.Record(Entry{Event: "whep.token", Source: "[::1]:5", Outcome: "denied"})
		}
		time.Sleep(61 * time.Second)
		synctest.Wait()
		es := entries(t, l)
		if len(es) != 2 || !strings.HasPrefix(es[1].Detail, "2 more failures from ::1") {
			t.Fatalf("after a window: %+v", es)
		}
		f.Record(Entry{Event: "whep.token", Source: "[::1]:6", Outcome: "denied"})
		f.Record(Entry{Event: "whep.token", Source: "[::1]:7", Outcome: "denied"})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if es := entries(t, l); len(es) != 4 || !strings.HasPrefix(es[3].Detail, "1 more failures") {
			t.Fatalf("after stop: %+v", es)
		}
	})
}
