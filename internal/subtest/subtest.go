// Package subtest runs one test of the running test binary as a child
// process: a stand-in for another receiver that a test can kill, freeze
// (SIGSTOP) and resume.
package subtest

import (
	"bufio"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Start runs the test called name of this test binary in a child process,
// with env (KEY=VALUE) added to its environment, and returns it and a
// scanner of its stdout. When t ends the child is resumed (if frozen),
// killed and waited for.
func Start(t testing.TB, name string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}
