package indicator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestTextFileShowsState(t *testing.T) {
	p := filepath.Join(t.TempDir(), "led")
	os.WriteFile(p, nil, 0o600)
	ind, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []State{Recording, Pending, Watching, Idle} {
		if err := ind.Set(s); err != nil {
			t.Fatal(err)
		}
		if got := read(t, p); got != s.String() {
			t.Errorf("after Set(%s) the file says %q", s, got)
		}
	}
}

func TestLEDBlinks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "brightness")
	os.WriteFile(p, []byte("0\n"), 0o600)
	ind, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	ind.Set(Recording)
	if got := read(t, p); got != "1" {
		t.Fatalf("recording: LED %q, want steady 1", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- ind.Run(ctx) }()
	ind.Set(Watching)
	seen := map[string]bool{}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && len(seen) < 2 {
		if v := read(t, p); v != "" { // "" is the moment between truncate and write
			seen[v] = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seen["0"] || !seen["1"] {
		t.Errorf("watching: the LED did not blink (saw %v)", seen)
	}
	cancel()
	<-done
	if got := read(t, p); got != "0" {
		t.Errorf("after Run ends the LED is %q, want off", got)
	}
}

func TestUndrivableIndicatorFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no-such-dir", "brightness")
	ind, err := New(p)
	if err == nil || !strings.Contains(err.Error(), "cannot be driven") || !strings.Contains(err.Error(), p) {
		t.Fatalf("New(%s) = %v", p, err)
	}
	if ind.Err() == nil || ind.Set(Watching) == nil {
		t.Error("a broken indicator reports no error")
	}
	none, err := New("")
	if err != nil || none.Configured() || none.Set(Watching) != nil {
		t.Errorf("no indicator: %v", err)
	}
}

// An indicator that stops working while nothing changes is noticed within
// a probe interval, and OnFail is called once.
func TestFailureNoticed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "led")
	os.WriteFile(p, nil, 0o600)
	ind, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 4)
	ind.OnFail = func(err error) { failed <- err }
	ind.Set(Watching)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- ind.Run(ctx) }()
	os.Remove(p)
	os.Mkdir(p, 0o700) // a directory cannot be written as a file
	broke := time.Now()
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "cannot be driven") {
			t.Errorf("OnFail: %v", err)
		}
		if d := time.Since(broke); d > 2*Probe {
			t.Errorf("noticed after %v", d)
		}
	case <-time.After(3 * Probe):
		t.Fatal("a broken indicator was not noticed")
	}
	time.Sleep(2 * Probe)
	if len(failed) != 0 {
		t.Errorf("OnFail called %d more times for the same failure", len(failed))
	}
	cancel()
	<-done
}
