// Package testbin builds the project's real binaries for tests that run
// them as a user would.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
)

// Build compiles uploadbox (with cgo, for the codecs) and
// uploadbox-receiver (pure Go, as shipped) into dir.
func Build(dir string) error {
	for _, b := range []struct{ pkg, cgo string }{
		{"github.com/uploadbox/uploadbox/cmd/uploadbox", "1"},
		{"github.com/uploadbox/uploadbox/cmd/uploadbox-receiver", "0"},
	} {
		cmd := exec.Command("go", "build", "-o", dir, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// Main builds the binaries into a temporary directory, stores its path in
// *dir, runs the tests and removes the directory: a whole TestMain.
func Main(run func() int, dir *string) int {
	d, err := os.MkdirTemp("", "uploadbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(d)
	if err := Build(d); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*dir = d
	return run()
}
