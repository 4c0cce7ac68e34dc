package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// daemonVsEncode runs the daemon for one session of d with upload to a
// real receiver on loopback, and compares its CPU time and peak RSS with a
// bare encode of the same source for d, measured in the same run.
func daemonVsEncode(bin string, d time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	enc := exec.Command(self, "-encode-only", d.String())
	if _, err := enc.Output(); err != nil {
		return fmt.Errorf("bare encode: %v", err)
	}
	encRU := enc.ProcessState.SysUsage().(*syscall.Rusage)

	dir, err := os.MkdirTemp("", "uploadbox-bench-daemon-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	box, err := startBox(bin, dir, "")
	if err != nil {
		return err
	}
	defer box.stop()
	daemon, ctl := box.daemon, box.ctl
	if out, err := ctl("session", "start", "--for", d.String()); err != nil {
		return fmt.Errorf("session start: %v: %s", err, out)
	}
	time.Sleep(d)
	deadline := time.Now().Add(d + time.Minute)
	for {
		st, _ := ctl("session", "status")
		q, _ := ctl("queue")
		if strings.Contains(string(st), `"active": false`) && strings.Contains(string(q), `"count": 0`) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the session's segments were not all uploaded in time: %s", q)
		}
		time.Sleep(200 * time.Millisecond)
	}
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		return fmt.Errorf("daemon: %v", err)
	}
	ru := daemon.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Printf("uploadbox daemon, one %s session with upload, vs bare encode of the same source (1280x720 30 fps 2.5 Mbit/s + Opus):\n", d)
	fmt.Printf("  bare encode CPU   %7.2f s   peak RSS %6.1f MiB\n", cpuOf(encRU).Seconds(), float64(encRU.Maxrss)/1024)
	fmt.Printf("  daemon CPU        %7.2f s   peak RSS %6.1f MiB\n", cpuOf(ru).Seconds(), float64(ru.Maxrss)/1024)
	fmt.Printf("  CPU ratio         %7.2f   (capture + seal + upload + wipe against encode alone)\n", cpuOf(ru).Seconds()/cpuOf(encRU).Seconds())
	fmt.Printf("  RSS ratio         %7.2f\n", float64(ru.Maxrss)/float64(encRU.Maxrss))
	return nil
}
