package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestButtonCannotOpenRefusesNothing: the real daemon with a consent
// button on a chip that does not exist starts, records a session and
// stops cleanly; its log says once why the button cannot be used, and
// diag's button check fails with the cause and the remedy.
func TestButtonCannotOpenRefusesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	chip := filepath.Join(dir, "gpiochip0")
	d := writeBoxConfig(t, dir, b.state, "consent:\n  button: {chip: "+chip+", line: 17, active_low: true}\n")
	p := startDaemon(t, d)

	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "60s")
	if !st.Active {
		t.Fatalf("session not started with a broken button: %+v", st)
	}
	ctl(t, d, &st, "session", "stop")
	ctl(t, d, &st, "session", "status")
	if st.Active || st.StopReason != "stopped" {
		t.Fatalf("session status %+v, want stopped", st)
	}

	out, err := exec.Command(filepath.Join(binDir, "uploadbox"), "diag", "--config", d.config, "--check", "button", "--json").Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("diag --check button: %v, want exit 2 (a failure)\n%s", err, out)
	}
	var rep struct {
		Checks []struct{ Name, Status, Summary, Remedy string }
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("diag --json: %v\n%s", err, out)
	}
	if len(rep.Checks) == 0 {
		t.Fatalf("diag printed no check:\n%s", out)
	}
	c := rep.Checks[len(rep.Checks)-1]
	if c.Name != "button" || c.Status != "fail" || !strings.Contains(c.Summary, chip+" does not exist") || !strings.Contains(c.Remedy, "consent.button.chip") {
		t.Errorf("diag button check %+v, want a failure naming %s with the remedy", c, chip)
	}

	// Stopped cleanly, the log is complete: the button was reported once.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("daemon exited %d after SIGTERM, want 0", code)
	}
	log := p.log()
	if n := strings.Count(log, "consent button cannot be used"); n != 1 || !strings.Contains(log, "does not exist") {
		t.Errorf("the daemon logged the broken button %d times, want once with the cause:\n%s", n, log)
	}
}
