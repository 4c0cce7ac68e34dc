package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/agent/diag"
	"github.com/uploadbox/uploadbox/internal/cli"
)

// TestDiagCommand runs `uploadbox diag` through the real command tree and
// the exit-code mapping main uses.
func TestDiagCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("capture:\n  fps: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	yaml := "state_dir: " + dir + "/state\nruntime_dir: " + dir + "/run\nspool:\n  dir: " + dir +
		"/spool\naudit:\n  path: " + dir + "/audit.jsonl\ncapture:\n  source: test\n"
	if err := os.WriteFile(good, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"bad config", []string{"diag", "--json", "--config", bad}, diag.ExitFail, `"status": "fail"`},
		{"missing config from the environment", []string{"diag"}, diag.ExitFail, "FAIL  config"},
		{"one passing check", []string{"diag", "--config", good, "--check", "spool"}, diag.ExitPass, "PASS  spool"},
		{"unknown check", []string{"diag", "--check", "kamera"}, cli.ExitUsage, ""},
		{"arguments", []string{"diag", "extra"}, cli.ExitUsage, ""},
	}
	t.Setenv("UPLOADBOX_CONFIG", filepath.Join(dir, "none.yaml"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newRootCommand()
			root.SilenceUsage, root.SilenceErrors = true, true // as cli.Main does
			var out, errOut bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&errOut)
			root.SetArgs(tt.args)
			err := root.Execute()
			if got := cli.ExitCode(err); got != tt.code {
				t.Fatalf("exit %d (%v), want %d\n%s", got, err, tt.code, out.String())
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("output lacks %q:\n%s", tt.out, out.String())
			}
			if strings.Contains(strings.Join(tt.args, " "), "--json") {
				var rep diag.Report
				if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Version != diag.SchemaVersion {
					t.Errorf("--json output does not parse as a version %d report: %v", diag.SchemaVersion, err)
				}
			}
		})
	}
}
