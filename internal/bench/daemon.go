package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	ub, urcv := filepath.Join(bin, "uploadbox"), filepath.Join(bin, "uploadbox-receiver")
	data := filepath.Join(dir, "receiver")
	srv := exec.Command(urcv, "serve", "--data", data, "--listen", "127.0.0.1:0")
	stdout, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	addr := ""
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		return fmt.Errorf("receiver did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	out, err := exec.Command(urcv, "devices", "add", "bench", "--data", data, "--json").Output()
	if err != nil {
		return fmt.Errorf("devices add: %v", err)
	}
	var add struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	json.Unmarshal(out, &add)
	state := filepath.Join(dir, "state")
	if out, err := exec.Command(ub, "enroll", "--receiver", "https://"+addr, "--token", add.Token, "--ca-fingerprint", add.CAFingerprint, "--state", state).CombinedOutput(); err != nil {
		return fmt.Errorf("enroll: %v: %s", err, out)
	}
	sock := filepath.Join(dir, "run", "control.sock")
	cfg := fmt.Sprintf("state_dir: %s\nruntime_dir: %s\ncapture: {source: test, width: 1280, height: 720, fps: 30, bitrate: 2500k}\n"+
		"recording: {segment: 10s}\nspool: {dir: %s}\nmetrics: {listen: \"\"}\naudit: {path: %s}\n",
		state, filepath.Dir(sock), filepath.Join(dir, "spool"), filepath.Join(dir, "audit.jsonl"))
	cfgPath := filepath.Join(dir, "box.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	daemon := exec.Command(ub, "run", "--config", cfgPath)
	if err := daemon.Start(); err != nil {
		return err
	}
	defer daemon.Process.Kill()
	ctl := func(args ...string) ([]byte, error) {
		return exec.Command(ub, append(args, "--socket", sock, "--json")...).Output()
	}
	for i := 0; ; i++ {
		if _, err := ctl("session", "status"); err == nil {
			break
		}
		if i > 100 {
			return fmt.Errorf("the daemon did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
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
