package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// The photograph and the detector come from Debian packages (not from
// this repository): scikit-image's astronaut (python3-skimage), OpenCV's
// Python binding (python3-opencv) and its frontal face Haar cascade
// (opencv-data). scripts/setup.sh and .ci/run install them.
const (
	facePhoto   = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png"
	faceCascade = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"
	// Debian's interpreter, where python3-opencv installs; a python3
	// earlier on PATH (a virtualenv, pyenv) has no cv2.
	debianPython = "/usr/bin/python3"
)

// faceRect is a face the detector found: x, y, w, h in pixels.
type faceRect [4]int

// detectFaces decodes every frame of mp4 (ffmpeg) and runs OpenCV's Haar
// cascade on it (testdata/faces.py); it returns the faces of each frame.
func detectFaces(t *testing.T, mp4 string, w, h int) [][]faceRect {
	t.Helper()
	for _, f := range []string{facePhoto, faceCascade, debianPython} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: install python3-opencv, opencv-data and python3-skimage (scripts/setup.sh does)", err)
		}
	}
	var frames bytes.Buffer
	for _, f := range lumaFrames(t, mp4, w, h) {
		frames.Write(f)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "faces.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(debianPython, script, strconv.Itoa(w), strconv.Itoa(h), faceCascade)
	cmd.Stdin = &frames
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("faces.py on %s: %v\n%s", filepath.Base(mp4), err, stderr.String())
	}
	var faces [][]faceRect
	if err := json.Unmarshal(out, &faces); err != nil {
		t.Fatalf("faces.py on %s: %v: %s", filepath.Base(mp4), err, out)
	}
	return faces
}

// TestAnonymisedFaces (issue 16, proof with a real face detector): a real
// photograph with a face goes through the real recorder (`uploadbox
// record --source image:PATH`, the picture panned slightly), is exported
// and decoded, and OpenCV's Haar cascade finds the face in the unfiltered
// export, none in the `whole` export, while in `masks` mode the rectangle
// over the face is uniform in every decoded frame.
func TestAnonymisedFaces(t *testing.T) {
	if testing.Short() {
		t.Skip("records three times 2 s of 720p video and runs a face detector; skipped under -short")
	}
	const w, h = 1280, 720
	dir := t.TempDir()
	k := makeKeys(t, dir)
	photo := anonRecording{source: "image:" + facePhoto, fps: 10, secs: 2}

	// The unfiltered export: the detector must find the face, or this test
	// proves nothing.
	off := detectFaces(t, recordFrom(t, dir, k, photo, "off"), w, h)
	var withFace int
	var face faceRect
	for _, fs := range off {
		if len(fs) > 0 {
			withFace++
			face = fs[0]
		}
	}
	t.Logf("off: a face found in %d of %d frames (last %v)", withFace, len(off), face)
	if len(off) < 15 || withFace < len(off)*4/5 {
		t.Fatalf("off: a face found in %d of %d frames, want one in most (>= 80%%) of about 20: the detector cannot see the photograph's face, so the other checks prove nothing", withFace, len(off))
	}

	whole := detectFaces(t, recordFrom(t, dir, k, photo, "whole"), w, h)
	if len(whole) < 15 {
		t.Fatalf("whole: %d frames decoded, want about 20", len(whole))
	}
	for i, fs := range whole {
		if len(fs) > 0 {
			t.Errorf("whole: frame %d: the detector found faces at %v", i, fs)
		}
	}

	// masks: x 0.375-0.625, y 0-0.4 of the frame (480-800, 0-288 px)
	// covers the astronaut's face wherever the pan moves it.
	mx0, my0, mx1, my1 := 480, 0, 800, 288
	if face[0] < mx0 || face[0]+face[2] > mx1 || face[1]+face[3] > my1 {
		t.Fatalf("off: the face at %v is not inside the mask %d,%d-%d,%d: the masks check would not cover it", face, mx0, my0, mx1, my1)
	}
	maskedMP4 := recordFrom(t, dir, k, photo, "masks", "--mask", "0.375,0,0.25,0.4")
	masked := lumaFrames(t, maskedMP4, w, h)
	if len(masked) < 15 {
		t.Fatalf("masks: %d frames decoded, want about 20", len(masked))
	}
	// Inside the mask, less 8 px of codec bleed at its edges.
	for i, f := range masked {
		if lo, hi := lumaRange(f, w, mx0+8, my0+8, mx1-8, my1-8); hi > 28 || hi-lo > 10 {
			t.Errorf("masks: frame %d: the masked rectangle spans luma %d..%d, want uniform near black", i, lo, hi)
		}
	}
	for i, fs := range detectFaces(t, maskedMP4, w, h) {
		for _, f := range fs {
			if f[0] >= mx0 && f[0]+f[2] <= mx1 && f[1]+f[3] <= my1 {
				t.Errorf("masks: frame %d: the detector found a face at %v inside the mask", i, f)
			}
		}
	}
}
