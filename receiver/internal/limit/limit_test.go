package limit

import (
	"testing"
	"time"
)

func TestKeyed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := NewKeyed(10.0/60, 3)
	k.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := k.Allow("a"); !ok {
			t.Fatalf("attempt %d within the burst refused", i+1)
		}
	}
	ok, retry := k.Allow("a")
	if ok || retry < 5*time.Second || retry > 6*time.Second {
		t.Fatalf("beyond the burst: ok %v, retry %v, want refused with about 6 s", ok, retry)
	}
	if ok, _ := k.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	now = now.Add(6 * time.Second)
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("refused after a token refilled")
	}
	k.max = 2
	k.Allow("c") // the table is full: refilled or arbitrary buckets go
	if len(k.m) > 2 {
		t.Fatalf("%d buckets, want at most 2", len(k.m))
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10/min", 10.0 / 60, true}, {"2/s", 2, true}, {"36/h", 0.01, true},
		{"10", 0, false}, {"0/min", 0, false}, {"-1/s", 0, false}, {"10/day", 0, false}, {"x/s", 0, false},
	} {
		got, err := ParseRate(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (got < tc.want*0.999 || got > tc.want*1.001)) {
			t.Errorf("ParseRate(%q) = %v, %v", tc.in, got, err)
		}
	}
	if RetryAfter(1500*time.Millisecond) != "2" {
		t.Error("RetryAfter does not round up")
	}
}

// SetLimit applies to the buckets already made and to new ones.
func TestSetLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := NewKeyed(1.0/3600, 5)
	k.now = func() time.Time { return now }
	k.Allow("a")
	k.Allow("a")
	k.SetLimit(1.0/3600, 1)
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("the one token of the lowered burst refused")
	}
	if ok, _ := k.Allow("a"); ok {
		t.Fatal("an existing bucket kept its old burst")
	}
	if ok, _ := k.Allow("b"); !ok {
		t.Fatal("a new bucket refused its first attempt")
	}
	if ok, _ := k.Allow("b"); ok {
		t.Fatal("a new bucket got the old burst")
	}
	k.SetLimit(1, 1)
	now = now.Add(time.Second)
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("the raised rate did not refill within a second")
	}
}
