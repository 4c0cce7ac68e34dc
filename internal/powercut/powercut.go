// Package powercut measures what a kill -9 costs a recording, with the real
// binaries: it starts `uploadbox record`, SIGKILLs it at a chosen moment,
// exports whatever is on disk with `uploadbox-receiver export` and asks
// ffprobe how long the export plays. The e2e test and `make bench` share it.
//
// The loss of one kill is the wall time from the start of the recording to
// the kill minus the exported duration. The start is the moment the
// recorder prints its "recording …" line, read from its stdout: capture is
// open then, but its clock starts a little later and the first frame comes
// after the encoder's first output, so that delay is counted as lost too
// (the measure errs on the side of a larger loss). The kill moment is taken
// just before the signal is sent.
package powercut

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Keys are the key files a recording needs, made once per run.
type Keys struct{ Org, Pub, Dev string }

// MakeKeys generates an organisation key pair and a device key in dir with
// the binaries in bin.
func MakeKeys(ctx context.Context, bin, dir string) (Keys, error) {
	k := Keys{filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub"), filepath.Join(dir, "dev.key")}
	for _, c := range [][]string{
		{"uploadbox-receiver", "keys", "generate", "--out", k.Org, "--public-out", k.Pub},
		{"uploadbox", "keys", "device", "--out", k.Dev},
	} {
		if out, err := exec.CommandContext(ctx, filepath.Join(bin, c[0]), c[1:]...).CombinedOutput(); err != nil {
			return Keys{}, fmt.Errorf("%s: %v\n%s", strings.Join(c[:3], " "), err, out)
		}
	}
	return k, nil
}

// Result is one kill.
type Result struct {
	KilledAt time.Duration // from the "recording" line to the SIGKILL
	Exported time.Duration // duration of the export, per ffprobe
	Segments []string      // segment files found after the kill
	Export   string        // the exported MP4; "" when nothing was exportable
	Log      string        // what export printed (warnings included)
}

// Lost is the media the kill cost: KilledAt - Exported.
func (r Result) Lost() time.Duration { return r.KilledAt - r.Exported }

// Kill records with `uploadbox record --source test` and args (size, fps,
// bitrate, segment length) into a fresh spool under dir, SIGKILLs the
// recorder after the given time, and exports the spool to dir/rec.mp4.
func Kill(ctx context.Context, bin string, k Keys, dir string, after time.Duration, args ...string) (Result, error) {
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		return Result{}, err
	}
	rec := append([]string{"record", "--source", "test", "--duration", "10m"}, args...)
	rec = append(rec, "--recipients-file", k.Pub, "--device-key", k.Dev, "--out", spool)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "uploadbox"), rec...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return Result{}, err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var started time.Time
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "recording ") {
			started = time.Now()
			break
		}
	}
	if started.IsZero() {
		cmd.Wait()
		return Result{}, fmt.Errorf("record never said it started: %s", stderr.String())
	}
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdout)
		close(drained)
	}()
	select {
	case <-time.After(time.Until(started.Add(after))):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		<-drained
		cmd.Wait()
		return Result{}, fmt.Errorf("kill record: %w (it stopped early? %s)", err, stderr.String())
	}
	<-drained // the pipe closes with the process; Wait must come after the reads
	cmd.Wait()
	res := Result{KilledAt: killed.Sub(started)}

	res.Segments, _ = filepath.Glob(filepath.Join(spool, "*.ubx*"))
	res.Export = filepath.Join(dir, "rec.mp4")
	exp := exec.CommandContext(ctx, filepath.Join(bin, "uploadbox-receiver"), append([]string{"export", "--identity", k.Org, "-o", res.Export}, res.Segments...)...)
	out, err := exp.CombinedOutput()
	res.Log = string(out)
	if err != nil && (strings.Contains(res.Log, "no complete fragment") || strings.Contains(res.Log, "no segment holds any media")) {
		// Nothing on disk is playable: all of it was lost.
		res.Export = ""
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("export after a kill at %v: %v\n%s", res.KilledAt, err, out)
	}
	res.Exported, err = Duration(ctx, res.Export)
	return res, err
}

// Duration is the playing time of a media file according to ffprobe.
func Duration(ctx context.Context, path string) (time.Duration, error) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		return 0, fmt.Errorf("ffprobe is required (apt-get install ffmpeg): %w", err)
	}
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("ffprobe %s: %v: %s", path, err, ee.Stderr)
		}
		return 0, fmt.Errorf("ffprobe %s: %w", path, err)
	}
	s, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("ffprobe %s: duration %q: %w", path, out, err)
	}
	return time.Duration(s * float64(time.Second)), nil
}
