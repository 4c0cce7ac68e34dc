package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// openPTY returns the controlling and terminal ends of a new pseudo-terminal.
func openPTY(t *testing.T) (ctl, term *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	// Non-blocking, so that read deadlines work on it.
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	ctl = os.NewFile(uintptr(fd), "ptmx")
	t.Cleanup(func() { ctl.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return ctl, term
}

func TestNewPassword(t *testing.T) {
	t.Run("stdin", func(t *testing.T) {
		cmd := &cobra.Command{}
		cmd.SetIn(strings.NewReader("Some-password-12\r\nnext line\n"))
		pw, gen, err := newPassword(cmd, true)
		if err != nil || gen || pw != "Some-password-12" {
			t.Fatalf("%q %v %v", pw, gen, err)
		}
		cmd.SetIn(strings.NewReader(""))
		if _, _, err := newPassword(cmd, true); err == nil {
			t.Fatal("empty stdin accepted")
		}
	})
	t.Run("not a terminal", func(t *testing.T) {
		null, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer null.Close()
		cmd := &cobra.Command{}
		cmd.SetIn(null)
		pw, gen, err := newPassword(cmd, false)
		if err != nil || !gen || len(pw) < 20 {
			t.Fatalf("%q %v %v", pw, gen, err)
		}
	})
	for _, tc := range []struct {
		name, typed, want string
		ok                bool
	}{
		{"terminal", "Typed-secret-99\nTyped-secret-99\n", "Typed-secret-99", true},
		{"terminal mismatch", "Typed-secret-99\nTyped-secret-98\n", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctl, term := openPTY(t)
			var prompts bytes.Buffer
			cmd := &cobra.Command{}
			cmd.SetIn(term)
			cmd.SetErr(&prompts)
			// Type only once echo is off, as a person would after the prompt.
			typed := make(chan error, 1)
			go func() {
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					st, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
					if err == nil && st.Lflag&unix.ECHO == 0 {
						_, err := ctl.WriteString(tc.typed)
						typed <- err
						return
					}
					time.Sleep(time.Millisecond)
				}
				typed <- fmt.Errorf("echo was never turned off")
				term.Close() // unblocks the prompt
			}()
			pw, gen, err := newPassword(cmd, false)
			if terr := <-typed; terr != nil {
				t.Fatal(terr)
			}
			if (err == nil) != tc.ok || gen || pw != tc.want {
				t.Fatalf("%q %v %v", pw, gen, err)
			}
			if !strings.Contains(prompts.String(), "New password: ") || !strings.Contains(prompts.String(), "Repeat it: ") {
				t.Fatalf("prompts %q", prompts.String())
			}
			// Nothing typed was echoed to the terminal.
			ctl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			echo := make([]byte, 256)
			n, _ := ctl.Read(echo)
			if strings.Contains(string(echo[:n]), "secret") {
				t.Fatalf("the terminal echoed %q", echo[:n])
			}
			// Echo is back on afterwards.
			st, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
			if err != nil || st.Lflag&unix.ECHO == 0 {
				t.Fatalf("echo not restored: %v", err)
			}
		})
	}
}
