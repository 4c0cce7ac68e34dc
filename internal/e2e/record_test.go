// Package e2e runs the real binaries end to end: record from the test
// source, seal, export, and check the result with ffprobe, a real peer.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/uploadbox/uploadbox/internal/netns"
	"github.com/uploadbox/uploadbox/internal/testbin"
)

var binDir string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m.Run, &binDir)) }

// ffprobePath finds ffprobe; CI installs it, so its absence is a failure.
func ffprobePath(t *testing.T) string { return mediaTool(t, "ffprobe") }

// mediaTool finds ffprobe or ffmpeg (package ffmpeg).
func mediaTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (apt-get install ffmpeg; .ci/run installs it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runIn(t, nil, name, args...)
}

// runIn runs a project binary inside ns (nil: here) and returns its stdout.
func runIn(t *testing.T, ns *netns.NS, name string, args ...string) string {
	t.Helper()
	cmd := binCommand(ns, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

type keys struct{ org, pub, dev string }

func makeKeys(t *testing.T, dir string) keys {
	k := keys{filepath.Join(dir, "org.key"), filepath.Join(dir, "org.pub"), filepath.Join(dir, "dev.key")}
	run(t, "uploadbox-receiver", "keys", "generate", "--out", k.org, "--public-out", k.pub)
	run(t, "uploadbox", "keys", "device", "--out", k.dev)
	return k
}

type probe struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		CodecType string `json:"codec_type"`
		Duration  string `json:"duration"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
	Packets []struct {
		CodecType string `json:"codec_type"`
		PtsTime   string `json:"pts_time"`
	} `json:"packets"`
}

func ffprobe(t *testing.T, path string) probe {
	t.Helper()
	out, err := exec.Command(ffprobePath(t), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "-show_packets", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v", err)
	}
	return p
}

func seconds(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("bad duration %q", s)
	}
	return f
}

// checkRecording applies the acceptance checks to an export.
func checkRecording(t *testing.T, mp4 string, audio bool) (duration float64) {
	t.Helper()
	p := ffprobe(t, mp4)
	var codecs []string
	durs := map[string]float64{}
	for _, s := range p.Streams {
		codecs = append(codecs, s.CodecType+":"+s.CodecName)
		durs[s.CodecType] = seconds(t, s.Duration)
	}
	want := []string{"video:h264"}
	if audio {
		want = append(want, "audio:opus")
	}
	slices.Sort(codecs)
	slices.Sort(want)
	if !slices.Equal(codecs, want) {
		t.Fatalf("streams %v, want %v", codecs, want)
	}
	if audio {
		if d := durs["video"] - durs["audio"]; d > 0.1 || d < -0.1 {
			t.Errorf("audio %.3fs and video %.3fs differ by more than 100 ms", durs["audio"], durs["video"])
		}
	}
	// No timestamp gaps: within a stream, consecutive packets are one
	// frame (or Opus packet) apart, also across segment boundaries.
	pts := map[string][]float64{}
	for _, pk := range p.Packets {
		pts[pk.CodecType] = append(pts[pk.CodecType], seconds(t, pk.PtsTime))
	}
	for kind, ts := range pts {
		if len(ts) < 3 {
			t.Fatalf("%s: only %d packets", kind, len(ts))
		}
		var diffs []float64
		for i := 1; i < len(ts); i++ {
			diffs = append(diffs, ts[i]-ts[i-1])
		}
		sorted := slices.Clone(diffs)
		slices.Sort(sorted)
		step := sorted[len(sorted)/2]
		for i, d := range diffs {
			if d <= 0 || d > 2*step {
				t.Errorf("%s: timestamp step of %.3fs at %.3fs (usual step %.3fs)", kind, d, ts[i], step)
			}
		}
	}
	return seconds(t, p.Format.Duration)
}

var sealedLine = regexp.MustCompile(`(?m)^sealed (\S+)`)

func TestRecordExportPlays(t *testing.T) {
	if testing.Short() {
		t.Skip("records 12 s of video; skipped under -short")
	}
	dir := t.TempDir()
	k := makeKeys(t, dir)
	out := filepath.Join(dir, "spool")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{out, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(binDir, "uploadbox"), "record", "--source", "test", "--size", "640x360", "--fps", "25",
		"--bitrate", "1000k", "--duration", "12s", "--segment", "4s",
		"--recipients-file", k.pub, "--device-key", k.dev, "--out", out)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// While the recording runs, scan what is on disk at every sealed segment.
	var printed []string
	var scans [][]string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := sealedLine.FindStringSubmatch(sc.Text()); m != nil {
			printed = append(printed, m[1])
			scans = append(scans, listFiles(t, out, tmp))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("record: %v\n%s", err, stderr.String())
	}
	if len(printed) < 3 {
		t.Fatalf("record printed %d sealed segments, want at least 3 for 12 s at 4 s each", len(printed))
	}
	mp4 := filepath.Join(dir, "rec.mp4")
	segs, _ := filepath.Glob(filepath.Join(out, "*.ubx"))
	run(t, "uploadbox-receiver", append([]string{"export", "--identity", k.org, "-o", mp4}, segs...)...)
	d := checkRecording(t, mp4, true)
	if d < 12*0.98 || d > 12*1.02 {
		t.Errorf("exported duration %.3fs, want 12 s ± 2%%", d)
	}

	// A browser plays it too: Chromium decodes video and Opus audio.
	bp := playInBrowser(t, mp4)
	t.Logf("chromium: %+v", bp)
	if bp.Width != 640 || bp.Height != 360 || bp.FramesDecoded < 25 || bp.AudioBytes == 0 {
		t.Errorf("chromium played %dx%d, %d frames decoded, %d audio bytes: want 640x360, >= 25 frames, some audio", bp.Width, bp.Height, bp.FramesDecoded, bp.AudioBytes)
	}
	if bp.Duration < 12*0.98 || bp.Duration > 12*1.02 {
		t.Errorf("chromium says the export lasts %.3fs, want 12 s ± 2%%", bp.Duration)
	}

	// No plaintext at rest, during the run and after it.
	sps, pps := paramSets(t, mp4)
	for i, files := range append(scans, listFiles(t, out, tmp)) {
		for _, f := range files {
			assertNoPlaintext(t, f, sps, pps, fmt.Sprintf("scan %d", i))
		}
	}
}

func listFiles(t *testing.T, dirs ...string) []string {
	var files []string
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				// Copy now: the file may be renamed or grow later.
				data, rerr := os.ReadFile(p)
				if rerr == nil {
					snap := filepath.Join(t.TempDir(), filepath.Base(p))
					os.WriteFile(snap, data, 0o600)
					files = append(files, snap)
				}
			}
			return nil
		})
	}
	return files
}

func paramSets(t *testing.T, mp4 string) (sps, pps []byte) {
	f, err := os.Open(mp4)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var init fmp4.Init
	if err := init.Unmarshal(f); err != nil {
		t.Fatalf("exported file has no fMP4 init: %v", err)
	}
	for _, tr := range init.Tracks {
		if c, ok := tr.Codec.(*fmp4.CodecH264); ok {
			return c.SPS, c.PPS
		}
	}
	t.Fatal("no H.264 track in the export")
	return nil, nil
}

func assertNoPlaintext(t *testing.T, path string, sps, pps []byte, when string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range [][]byte{[]byte("ftyp"), []byte("moof"), []byte("mdat"), []byte("moov"), sps, pps} {
		if len(needle) >= 4 && bytes.Contains(data, needle) {
			t.Errorf("%s: %s contains plaintext %q", when, filepath.Base(path), needle)
		}
	}
}
