package control

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

func TestCallRoundTripAndErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(sock, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, %v; want a 0660 socket", st.Mode(), err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- s.Serve(ctx, func(_ context.Context, r Request) (any, error) {
			switch r.Method {
			case "echo":
				var p struct{ Text string }
				if err := r.Decode(&p); err != nil {
					return nil, err
				}
				return map[string]any{"text": p.Text, "uid": r.UID, "caller": r.Caller()}, nil
			}
			return nil, Errorf("unknown-method", "no method %q", r.Method)
		})
	}()
	var out struct {
		Text   string
		UID    int
		Caller string
	}
	if err := Call(t.Context(), sock, "echo", map[string]string{"text": "hi"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Text != "hi" || out.UID != os.Getuid() {
		t.Errorf("got %+v", out)
	}
	// The caller is named by the socket's peer credentials, for the audit log.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if want := "uid:" + me.Uid + "(" + me.Username + ")"; out.Caller != want {
		t.Errorf("caller %q, want %q", out.Caller, want)
	}
	err = Call(t.Context(), sock, "nope", nil, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != "unknown-method" {
		t.Errorf("err = %v", err)
	}
	err = Call(t.Context(), sock, "echo", map[string]int{"bogus": 1}, nil)
	if !errors.As(err, &ce) || ce.Code != "bad-request" || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("err = %v", err)
	}
	// a second daemon on the same socket is refused
	if _, err := Listen(sock, "", nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Listen: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Call(t.Context(), sock, "echo", nil, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after stop: %v", err)
	}
	if _, err := Listen(sock, "no-such-group-xyz", nil); err == nil || !strings.Contains(err.Error(), "control.group") {
		t.Errorf("bad group: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(sock, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ln.SetUnlinkOnClose(false) // a crash leaves the file behind
	s.ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	s2, err := Listen(sock, "", nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s2.ln.Close()
	long := "/" + strings.Repeat("x", 120)
	if _, err := Listen(long, "", nil); err == nil || !strings.Contains(err.Error(), "107") {
		t.Errorf("long path: %v", err)
	}
}

func TestCallerNames(t *testing.T) {
	tests := []struct {
		name string
		r    Request
		want string
	}{
		{"user", Request{UID: 1000, User: "alice"}, "uid:1000(alice)"},
		{"uid without a name", Request{UID: 4242}, "uid:4242"},
		{"no credentials", Request{UID: -1}, "uid:unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Caller(); got != tt.want {
				t.Errorf("Caller() = %q, want %q", got, tt.want)
			}
		})
	}
}
