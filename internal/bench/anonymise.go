package main

import (
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/capture/anon"
)

// anonymiseBench alternates `uploadbox record` of the test source at
// 1280x720 30 fps (no audio: the filter works on the picture only) for d
// unfiltered and with `--anonymise whole` (off, whole, off, whole, …, pairs
// times each), and reports the median CPU time of each, the median ratio
// of the pairs with its range, and the filter's own CPU time per 720p frame
// measured in this process.
func anonymiseBench(bin string, d time.Duration, pairs int) error {
	if pairs < 1 {
		return fmt.Errorf("-anonymise-runs %d: need at least 1 (3 or more for a spread)", pairs)
	}
	dir, err := os.MkdirTemp("", "uploadbox-bench-anonymise-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pub, dev, err := benchKeys(bin, dir)
	if err != nil {
		return err
	}
	record := func(mode string, i int) (usage, error) {
		spool := filepath.Join(dir, fmt.Sprintf("spool-%s-%d", mode, i))
		if err := os.Mkdir(spool, 0o700); err != nil {
			return usage{}, err
		}
		defer os.RemoveAll(spool)
		rec := exec.Command(filepath.Join(bin, "uploadbox"), "record", "--source", "test", "--size", "1280x720", "--fps", "30",
			"--bitrate", "2500k", "--no-audio", "--duration", d.String(), "--segment", "10s", "--anonymise", mode,
			"--recipients-file", pub, "--device-key", dev, "--out", spool)
		if out, err := rec.CombinedOutput(); err != nil {
			return usage{}, fmt.Errorf("record --anonymise %s: %v: %s", mode, err, out)
		}
		return usageOf(rec.ProcessState), nil
	}
	var offs, wholes, ratios []float64
	for i := range pairs {
		off, err := record("off", i)
		if err != nil {
			return err
		}
		whole, err := record("whole", i)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: anonymise pair %d/%d: off %.2f s CPU, whole %.2f s CPU\n", i+1, pairs, off.cpu.Seconds(), whole.cpu.Seconds())
		offs, wholes = append(offs, off.cpu.Seconds()), append(wholes, whole.cpu.Seconds())
		ratios = append(ratios, whole.cpu.Seconds()/off.cpu.Seconds())
	}
	perFrame, err := filterCPU(1280, 720, 300)
	if err != nil {
		return err
	}
	fmt.Printf("uploadbox record --anonymise whole vs unfiltered (test source 1280x720 30 fps 2.5 Mbit/s, no audio, %s),\n", d)
	fmt.Printf("%d interleaved pairs, median (min–max); ratio per pair:\n", pairs)
	fmt.Printf("  unfiltered CPU    %s\n", spreadOf(offs).format("s"))
	fmt.Printf("  whole CPU         %s\n", spreadOf(wholes).format("s"))
	fmt.Printf("  CPU ratio         %s   (goal <= 1.25)\n", spreadOf(ratios))
	fmt.Printf("  filter alone      %7.2f ms CPU per 720p frame (%.1f%% of a frame at 30 fps)\n",
		float64(perFrame)/float64(time.Millisecond), 100*perFrame.Seconds()*30)
	return nil
}

// filterCPU is the CPU time the whole filter takes per w x h frame, over n
// frames, measured with this process's rusage.
func filterCPU(w, h, n int) (time.Duration, error) {
	f, err := anon.New(anon.Whole, nil)
	if err != nil {
		return 0, err
	}
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := range h {
		for x := range w {
			img.Y[y*img.YStride+x] = byte(x*200/w + (x*7+y*13)%37)
		}
	}
	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		return 0, err
	}
	// The filter reads every pixel whatever they hold: filtering the same
	// frame again costs what a fresh one does.
	for range n {
		if err := f.Apply(img); err != nil {
			return 0, err
		}
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		return 0, err
	}
	return (cpuOf(&after) - cpuOf(&before)) / time.Duration(n), nil
}

// benchKeys makes an organisation key pair and a device key in dir and
// returns the paths of the public key and the device key.
func benchKeys(bin, dir string) (pub, dev string, err error) {
	org, pub, dev := filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub"), filepath.Join(dir, "dev.key")
	if out, err := exec.Command(filepath.Join(bin, "uploadbox-receiver"), "keys", "generate", "--out", org, "--public-out", pub).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("keys generate: %v: %s", err, out)
	}
	if out, err := exec.Command(filepath.Join(bin, "uploadbox"), "keys", "device", "--out", dev).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("keys device: %v: %s", err, out)
	}
	return pub, dev, nil
}
