package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// usage is what one child process cost, from its rusage.
type usage struct {
	cpu    time.Duration // user + system
	sys    time.Duration // system alone
	rss    int64         // peak RSS in bytes
	frames int           // video frames and audio packets encoded
}

func usageOf(ps *os.ProcessState) usage {
	ru := ps.SysUsage().(*syscall.Rusage)
	return usage{cpu: cpuOf(ru), sys: time.Duration(ru.Stime.Nano()), rss: ru.Maxrss * 1024} // Linux reports KiB
}

// spread is the median of some figures, their range and their
// interquartile range.
type spread struct{ med, lo, hi, q1, q3 float64 }

func spreadOf(xs []float64) spread {
	s := slices.Clone(xs)
	slices.Sort(s)
	return spread{med: quantile(s, 0.5), lo: s[0], hi: s[len(s)-1], q1: quantile(s, 0.25), q3: quantile(s, 0.75)}
}

// quantile is the q-quantile of sorted s, interpolated between the two
// nearest figures.
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

// String shows a ratio: the median, the range and the interquartile range
// as distances from the median.
func (s spread) String() string {
	return fmt.Sprintf("%.3f (range %.3f–%.3f: %+.3f/%+.3f; IQR %+.3f/%+.3f)", s.med, s.lo, s.hi, s.lo-s.med, s.hi-s.med, s.q1-s.med, s.q3-s.med)
}

// format shows a measurement with unit u: the median and the range.
func (s spread) format(u string) string {
	return fmt.Sprintf("%6.2f %s (%.2f–%.2f)", s.med, u, s.lo, s.hi)
}

// daemonVsEncode alternates bare encodes of the test source for d with
// daemon runs holding one session of d with upload to a real receiver on
// loopback (bare, daemon, bare, daemon, …, pairs times each), and reports
// the median ratio of the daemon's CPU time and peak RSS to the bare
// encode's, paired run by run, with its range. Interleaving spreads the
// machine's drift (other load, thermal state) over both sides.
// With profiles set, every run writes pprof profiles there: bare-N.cpu.pprof,
// daemon-N.cpu.pprof and daemon-N.allocs.pprof.
func daemonVsEncode(bin string, d time.Duration, pairs int, profiles string) error {
	if pairs < 1 {
		return fmt.Errorf("-daemon-runs %d: need at least 1 (3 or more for a spread)", pairs)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var bares, daemons []usage
	var cpuRatios, rssRatios []float64
	for i := range pairs {
		// Peak RSS counts the executable's pages a process touched, and the
		// kernel maps the neighbours of a touched page too when they are
		// cached: both executables are read into the page cache before each
		// run so neither side's figure depends on what was evicted.
		for _, exe := range []string{self, filepath.Join(bin, "uploadbox")} {
			if err := readAll(exe); err != nil {
				return err
			}
		}
		args := []string{"-encode-only", d.String()}
		var runArgs []string
		if profiles != "" {
			args = append(args, "-cpu-profile", filepath.Join(profiles, fmt.Sprintf("bare-%d.cpu.pprof", i+1)))
			runArgs = []string{"--cpu-profile", filepath.Join(profiles, fmt.Sprintf("daemon-%d.cpu.pprof", i+1)),
				"--mem-profile", filepath.Join(profiles, fmt.Sprintf("daemon-%d.allocs.pprof", i+1))}
		}
		enc := exec.Command(self, args...)
		out, err := enc.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return fmt.Errorf("bare encode: %w: %s", err, ee.Stderr)
			}
			return fmt.Errorf("bare encode: %w", err)
		}
		bare := usageOf(enc.ProcessState)
		bare.frames, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		dm, err := daemonSession(bin, d, runArgs)
		if err != nil {
			return fmt.Errorf("daemon run %d: %w", i+1, err)
		}
		fmt.Fprintf(os.Stderr, "bench: daemon pair %d/%d: bare %.2f s CPU (%.2f s sys) %.1f MiB %d frames, daemon %.2f s CPU (%.2f s sys) %.1f MiB %d frames\n",
			i+1, pairs, bare.cpu.Seconds(), bare.sys.Seconds(), mib(bare.rss), bare.frames, dm.cpu.Seconds(), dm.sys.Seconds(), mib(dm.rss), dm.frames)
		bares, daemons = append(bares, bare), append(daemons, dm)
		cpuRatios = append(cpuRatios, dm.cpu.Seconds()/bare.cpu.Seconds())
		rssRatios = append(rssRatios, float64(dm.rss)/float64(bare.rss))
	}
	col := func(us []usage, f func(usage) float64) spread {
		xs := make([]float64, len(us))
		for i, u := range us {
			xs[i] = f(u)
		}
		return spreadOf(xs)
	}
	cpu := func(u usage) float64 { return u.cpu.Seconds() }
	rss := func(u usage) float64 { return mib(u.rss) }
	fmt.Printf("uploadbox daemon, one %s session with upload, vs bare encode of the same source (1280x720 30 fps 2.5 Mbit/s + Opus),\n", d)
	fmt.Printf("%d interleaved pairs, median (min–max); ratios per pair:\n", pairs)
	fmt.Printf("  bare encode CPU   %s   peak RSS %s\n", col(bares, cpu).format("s"), col(bares, rss).format("MiB"))
	fmt.Printf("  daemon CPU        %s   peak RSS %s\n", col(daemons, cpu).format("s"), col(daemons, rss).format("MiB"))
	fmt.Printf("  CPU ratio         %s   (goal <= 1.05, spread within ±0.03)\n", spreadOf(cpuRatios))
	fmt.Printf("  RSS ratio         %s   (goal <= 1.20)\n", spreadOf(rssRatios))
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// daemonSession starts a receiver and an enrolled daemon, records one
// session of d, waits until every segment is uploaded and wiped, stops the
// daemon with SIGTERM and returns what the daemon process cost.
// runArgs are added to `uploadbox run`.
func daemonSession(bin string, d time.Duration, runArgs []string) (usage, error) {
	dir, err := os.MkdirTemp("", "uploadbox-bench-daemon-")
	if err != nil {
		return usage{}, err
	}
	defer os.RemoveAll(dir)
	box, err := startBox(bin, dir, "", runArgs...)
	if err != nil {
		return usage{}, err
	}
	defer box.stop()
	daemon, ctl := box.daemon, box.ctl
	if out, err := ctl("session", "start", "--for", d.String()); err != nil {
		return usage{}, fmt.Errorf("session start: %v: %s", err, out)
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
			return usage{}, fmt.Errorf("the session's segments were not all uploaded in time: %s", q)
		}
		time.Sleep(200 * time.Millisecond)
	}
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		return usage{}, fmt.Errorf("daemon: %v", err)
	}
	u := usageOf(daemon.ProcessState)
	log, err := os.ReadFile(box.log)
	if err != nil {
		return usage{}, err
	}
	u.frames, err = framesLogged(string(log))
	return u, err
}

// framesLogged reads the frames the capture encoded from the daemon's
// "capture stopped" log line.
func framesLogged(log string) (int, error) {
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="capture stopped"`) {
			continue
		}
		n := 0
		for _, key := range []string{"video_frames=", "audio_packets="} {
			_, v, ok := strings.Cut(line, key)
			if !ok {
				return 0, fmt.Errorf("daemon log: no %s in %q", key, line)
			}
			v, _, _ = strings.Cut(v, " ")
			k, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("daemon log: %s%s: %v", key, v, err)
			}
			n += k
		}
		return n, nil
	}
	return 0, fmt.Errorf("daemon log: no \"capture stopped\" line")
}
