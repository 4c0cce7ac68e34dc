// Package cli holds what both binaries share: build information, the
// version command, and the one mapping from errors to exit codes.
package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
)

// Set at link time by the Makefile: -X github.com/uploadbox/uploadbox/internal/cli.Version=…
var (
	Version = "dev"
	Commit  = ""
)

// Exit codes shared by every command.
const (
	ExitOK        = 0
	ExitError     = 1
	ExitUsage     = 2
	ExitTruncated = 3
	ExitCorrupt   = 4
)

// UsageError marks bad command-line input.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// CodeError makes the process exit with Code; its message is printed like
// any error's. Commands with their own exit-code convention (diag: 0 pass,
// 1 warning, 2 failure) return it.
type CodeError struct {
	Code int
	Err  error
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	var ue *UsageError
	var ce *CodeError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ce):
		return ce.Code
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, crypto.ErrTruncated):
		return ExitTruncated
	case errors.Is(err, crypto.ErrCorrupt), errors.Is(err, crypto.ErrNoIdentity):
		return ExitCorrupt
	default:
		return ExitError
	}
}

func commit() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// NewVersionCommand prints version, commit, Go version and os/arch.
func NewVersionCommand(name string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit, Go version and platform",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (commit %s, %s, %s/%s)\n",
				name, Version, commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// Main runs root and exits with the mapped code. Only the binaries' main
// functions call it.
func Main(root *cobra.Command) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	err := root.Execute()
	if err != nil {
		if isCobraUsage(err) {
			err = &UsageError{Err: err}
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", root.Name(), err)
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", root.CommandPath())
		}
	}
	os.Exit(ExitCode(err))
}

// isCobraUsage recognises cobra's own plain errors for unknown commands
// and missing required flags.
func isCobraUsage(err error) bool {
	var ue *UsageError
	if errors.As(err, &ue) {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "required flag")
}

// Args wraps a cobra positional-argument check so its failure is a usage error.
func Args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &UsageError{Err: err}
		}
		return nil
	}
}

// Bytes renders a size in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func Bytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
