package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func manTree() *cobra.Command {
	root := &cobra.Command{Use: "tool", Short: "A tool"}
	run := func(*cobra.Command, []string) error { return nil }
	sub := &cobra.Command{
		Use:   "queue",
		Short: "Work on the queue",
	}
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List segments",
		Long:  "Lists every segment.\n.TH looks like a request\n\n  indented C:\\path line",
		RunE:  run,
	}
	list.Flags().Bool("json", false, "print JSON")
	list.Flags().StringP("state", "s", "/var/lib/x", "state `DIR`")
	sub.AddCommand(list)
	sub.PersistentFlags().String("config", "", "config file")
	hidden := &cobra.Command{Use: "secret", Hidden: true, RunE: run}
	root.AddCommand(sub, hidden, NewManCommand())
	return root
}

func TestWriteManPages(t *testing.T) {
	dir := t.TempDir()
	root := manTree()
	root.SetArgs([]string{"man", dir})
	root.SetOut(new(strings.Builder))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// Hidden commands (secret, man itself) get no page.
	want := []string{"tool-completion-bash.1", "tool-completion-fish.1", "tool-completion-powershell.1", "tool-completion-zsh.1", "tool-completion.1", "tool-queue-list.1", "tool-queue.1", "tool.1"}
	if !slices.Equal(names, want) {
		t.Fatalf("pages %q, want %q", names, want)
	}
	page, err := os.ReadFile(filepath.Join(dir, "tool-queue-list.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`.TH "TOOL\-QUEUE\-LIST" 1`,
		`tool\-queue\-list \- List segments`,
		".B tool queue list\n",
		`\&.TH looks like a request`, // not a request
		`C:\epath`,
		`\fB\-s\fR, \fB\-\-state\fR \fIDIR\fR` + "\nstate DIR (default /var/lib/x)",
		"\\fB\\-\\-json\\fR\nprint JSON\n", // no "(default false)"
		".SH OPTIONS INHERITED FROM PARENT COMMANDS\n.TP\n\\fB\\-\\-config\\fR",
		".BR tool\\-queue (1)",
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	// groff reads every page without a warning.
	if _, err := exec.LookPath("groff"); err == nil {
		for _, n := range names {
			out, err := exec.CommandContext(t.Context(), "groff", "-man", "-Tutf8", "-ww", "-z", filepath.Join(dir, n)).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("groff %s: %v %s", n, err, out)
			}
		}
	}
}
