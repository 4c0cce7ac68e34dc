// Command bench prints the project's speed figures as ratios against a
// baseline measured in the same run: `make bench`.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
)

func main() {
	bin := flag.String("bin", "bin", "directory with the built binaries")
	size := flag.Int("size", 256, "MiB sealed by the command-line comparison")
	rounds := flag.Int("rounds", 5, "repetitions; the median is reported")
	recordFor := flag.Duration("record", 30*time.Second, "length of the recording comparison")
	encodeOnly := flag.Duration("encode-only", 0, "internal: run the bare encode for this long in this process and exit")
	uploadMiB := flag.Int64("upload", 1024, "MiB of segments for the upload comparison")
	daemonFor := flag.Duration("daemon", 60*time.Second, "length of the daemon's session and of the bare encode in the daemon comparison (20s is enough for a quick look)")
	profiles := flag.String("profile", "", "directory for pprof profiles of the daemon comparison's runs (bare-N.cpu.pprof, daemon-N.cpu.pprof, daemon-N.allocs.pprof) and of the upload comparison's drain (upload.cpu.pprof, upload.trace)")
	cpuProfile := flag.String("cpu-profile", "", "internal: with -encode-only, write a pprof CPU profile to this file")
	daemonRuns := flag.Int("daemon-runs", 3, "daemon runs and bare encodes, each, interleaved, in the daemon comparison")
	only := flag.String("only", "", "run one comparison: "+strings.Join(stepNames, ", "))
	kills := flag.Int("kills", 20, "SIGKILLs of the recorder in the power-cut measurement")
	anonFor := flag.Duration("anonymise", 20*time.Second, "length of each recording in the anonymisation comparison (-only anonymise)")
	anonRuns := flag.Int("anonymise-runs", 3, "unfiltered and anonymised recordings, each, interleaved, in the anonymisation comparison")
	var capOpts capacityOptions
	capOpts.addFlags(flag.CommandLine)
	tusdData := flag.String("tusd-alone", "", "internal: serve tusd alone with the TLS identity of this receiver data directory and exit when killed")
	tusdUploads := flag.String("tusd-uploads", "", "internal: with -tusd-alone, the filestore directory")
	flag.Parse()
	if *tusdData != "" {
		if err := tusdAlone(*tusdData, *tusdUploads); err != nil {
			fmt.Fprintln(os.Stderr, "bench: tusd alone:", err)
			os.Exit(1)
		}
		return
	}
	if *encodeOnly > 0 {
		stop, err := cli.StartProfiles(*cpuProfile, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: bare encode:", err)
			os.Exit(1)
		}
		n, err := capture.EncodeOnly(context.Background(), benchCapture, *encodeOnly)
		err = errors.Join(err, stop())
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: bare encode:", err)
			os.Exit(1)
		}
		fmt.Println(n)
		return
	}
	anonymise := func() error { return anonymiseBench(*bin, *anonFor, *anonRuns) }
	if err := run(*bin, *size<<20, *rounds, *recordFor, anonymise, *uploadMiB<<20, *daemonFor, *daemonRuns, *profiles, *kills, capOpts, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// stepNames are run's steps in their order (README, "Benchmarks", lists
// them for -only).
var stepNames = []string{"seal", "age", "record", "anonymise", "upload", "commit", "daemon", "live", "relay", "login", "powercut", "teacher", "capacity", "talkback"}

func run(bin string, size, rounds int, recordFor time.Duration, anonymise func() error, upload int64, daemonFor time.Duration, daemonRuns int, profiles string, kills int, capOpts capacityOptions, only string) error {
	modules, err := filepath.Abs(".cache/npm/node_modules")
	if err != nil {
		return err
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"seal", func() error { return inProcess(rounds) }},
		{"age", func() error { return againstAge(bin, size, rounds) }},
		{"record", func() error { return recordVsEncode(bin, recordFor) }},
		{"anonymise", anonymise},
		{"upload", func() error { return uploadBench(upload, profiles) }},
		{"commit", func() error { return commitBench(rounds) }},
		{"daemon", func() error { return daemonVsEncode(bin, daemonFor, daemonRuns, profiles) }},
		{"live", func() error { return liveBench(bin, 10, modules) }},
		{"relay", func() error { return relayBench(bin, 10, modules) }},
		{"login", func() error { return loginBench(rounds) }},
		{"powercut", func() error { return powerCuts(bin, kills) }},
		{"teacher", func() error { return teacherBench(bin, 10, modules) }},
		{"capacity", func() error { return capacityBench(bin, capOpts) }},
		{"talkback", func() error { return talkbackBench(bin, 10) }},
	}
	for i, s := range steps {
		if i >= len(stepNames) || stepNames[i] != s.name {
			panic("bench: stepNames does not list step " + s.name + " in its place")
		}
	}
	if only != "" && !slices.Contains(stepNames, only) {
		return fmt.Errorf("-only %q: want one of %s", only, strings.Join(stepNames, ", "))
	}
	for _, s := range steps {
		if only != "" && only != s.name {
			continue
		}
		if err := s.f(); err != nil {
			return err
		}
	}
	return nil
}

// benchCapture is the source and encoder setting of the recording comparison.
var benchCapture = capture.Config{Source: "test", Width: 1280, Height: 720, FPS: 30, Bitrate: 2_500_000, Audio: true, KeyInterval: 2 * time.Second}

func cpuOf(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// recordVsEncode compares the CPU time of `uploadbox record --source test`
// with a bare encode of the same source and settings (no fan-out, muxing,
// sealing or disk), and reports the recorder's peak RSS.
func recordVsEncode(bin string, d time.Duration) error {
	// The bare encode runs in a fresh process, like the recorder, so that
	// neither inherits the other's heap and GC pacing.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	enc := exec.Command(self, "-encode-only", d.String())
	out, err := enc.Output()
	if err != nil {
		return fmt.Errorf("bare encode: %v", err)
	}
	frames := strings.TrimSpace(string(out))
	bare := cpuOf(enc.ProcessState.SysUsage().(*syscall.Rusage))

	dir, err := os.MkdirTemp("", "uploadbox-bench-record-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		return err
	}
	pub, dev, err := benchKeys(bin, dir)
	if err != nil {
		return err
	}
	rec := exec.Command(filepath.Join(bin, "uploadbox"), "record", "--source", "test", "--size", "1280x720", "--fps", "30",
		"--bitrate", "2500k", "--duration", d.String(), "--segment", "10s",
		"--recipients-file", pub, "--device-key", dev, "--out", spool)
	if out, err := rec.CombinedOutput(); err != nil {
		return fmt.Errorf("record: %v: %s", err, out)
	}
	ru := rec.ProcessState.SysUsage().(*syscall.Rusage)
	recorded := cpuOf(ru)
	fmt.Printf("uploadbox record vs bare encode (test source 1280x720 30 fps 2.5 Mbit/s + Opus, %s):\n", d)
	fmt.Printf("  bare encode CPU   %7.2f s  (%s frames)\n  record CPU        %7.2f s\n", bare.Seconds(), frames, recorded.Seconds())
	fmt.Printf("  ratio             %7.2f   (goal <= 1.10)\n", recorded.Seconds()/bare.Seconds())
	fmt.Printf("  record peak RSS   %7.1f MiB (goal <= 80)\n", float64(ru.Maxrss)/1024)
	return nil
}

// inProcess compares crypto.Writer with bare AES-256-GCM over 16 KiB chunks.
func inProcess(rounds int) error {
	const total = 256 << 20
	msg := make([]byte, 4<<20)
	rand.Read(msg)
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)

	raw := func() time.Duration {
		nonce := make([]byte, 12)
		out := make([]byte, 0, 16400)
		start := time.Now()
		for done := 0; done < total; done += len(msg) {
			for p := msg; len(p) > 0; p = p[min(16384, len(p)):] {
				nonce[11]++
				out = gcm.Seal(out[:0], nonce, p[:min(16384, len(p))], nil)
				io.Discard.Write(out)
			}
		}
		return time.Since(start)
	}
	id, err := crypto.GenerateIdentity(crypto.SuiteXWing)
	if err != nil {
		return err
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		return err
	}
	sealed := func() time.Duration {
		start := time.Now()
		w, err := crypto.NewWriter(io.Discard, []*crypto.Recipient{id.Recipient()}, dev, crypto.Params{Codec: "video/mp4"})
		if err != nil {
			panic(err)
		}
		for done := 0; done < total; done += len(msg) {
			w.Write(msg)
		}
		if err := w.Close(); err != nil {
			panic(err)
		}
		return time.Since(start)
	}
	var rs, ss []time.Duration
	for range rounds {
		rs = append(rs, raw())
		ss = append(ss, sealed())
	}
	r, s := median(rs), median(ss)
	mbps := func(d time.Duration) float64 { return float64(total) / d.Seconds() / 1e6 }
	fmt.Printf("seal writer vs raw AES-256-GCM (256 MiB in memory, median of %d):\n", rounds)
	fmt.Printf("  raw AES-256-GCM   %7.0f MB/s\n  crypto.Writer     %7.0f MB/s\n", mbps(r), mbps(s))
	fmt.Printf("  ratio             %7.2f   (goal >= 0.90)\n", r.Seconds()/s.Seconds())
	return nil
}

// againstAge times `uploadbox seal` and `age -r` on the same file on tmpfs.
func againstAge(bin string, size, rounds int) error {
	agePath, err := exec.LookPath("age")
	if err != nil {
		return fmt.Errorf("age is not installed (apt-get install age): %w", err)
	}
	keygen, err := exec.LookPath("age-keygen")
	if err != nil {
		return fmt.Errorf("age-keygen is not installed: %w", err)
	}
	dir, err := os.MkdirTemp("/dev/shm", "uploadbox-bench-")
	if err != nil {
		return fmt.Errorf("need tmpfs at /dev/shm: %w", err)
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in.bin")
	f, err := os.Create(in)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, int64(size)); err != nil {
		return err
	}
	f.Close()

	ageKey := filepath.Join(dir, "age.key")
	if out, err := exec.Command(keygen, "-o", ageKey).CombinedOutput(); err != nil {
		return fmt.Errorf("age-keygen: %v: %s", err, out)
	}
	pubOut, err := exec.Command(keygen, "-y", ageKey).Output()
	if err != nil {
		return err
	}
	agePub := strings.TrimSpace(string(pubOut))
	ub := filepath.Join(bin, "uploadbox")
	ubr := filepath.Join(bin, "uploadbox-receiver")
	org, pub, dev := filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub"), filepath.Join(dir, "dev.key")
	if out, err := exec.Command(ubr, "keys", "generate", "--out", org, "--public-out", pub).CombinedOutput(); err != nil {
		return fmt.Errorf("keys generate: %v: %s", err, out)
	}
	if out, err := exec.Command(ub, "keys", "device", "--out", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("keys device: %v: %s", err, out)
	}
	timeIt := func(name string, args ...string) (time.Duration, error) {
		start := time.Now()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v: %s", name, err, out)
		}
		return time.Since(start), nil
	}
	var as, us []time.Duration
	for i := range rounds {
		ageOut, ubOut := filepath.Join(dir, fmt.Sprint("out", i, ".age")), filepath.Join(dir, fmt.Sprint("out", i, ".ubx"))
		a, err := timeIt(agePath, "-r", agePub, "-o", ageOut, in)
		if err != nil {
			return err
		}
		u, err := timeIt(ub, "seal", "--recipients-file", pub, "--device-key", dev, "-o", ubOut, in)
		if err != nil {
			return err
		}
		as, us = append(as, a), append(us, u)
		os.Remove(ageOut)
		os.Remove(ubOut)
	}
	a, u := median(as), median(us)
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	fmt.Printf("uploadbox seal vs age -r (%d MiB on tmpfs, median of %d):\n", size>>20, rounds)
	fmt.Printf("  age -r            %7.0f MB/s\n  uploadbox seal    %7.0f MB/s\n", mbps(a), mbps(u))
	fmt.Printf("  ratio             %7.2f   (goal >= 1.5)\n", a.Seconds()/u.Seconds())
	return nil
}
