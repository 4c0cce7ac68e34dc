package crypto

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFiles covers SealFile, OpenFile and VerifyFile: outputs appear only
// when they should, with the right modes, and no temporary files remain.
func TestFiles(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	dir := t.TempDir()
	in, seg := filepath.Join(dir, "media.mp4"), filepath.Join(dir, "media.seg")
	msg := plaintext(t.Name(), 3*chunk+1000)
	if err := os.WriteFile(in, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	p := testParams("files", 0, [CommitmentSize]byte{})
	hdr, commitment, err := SealFile(in, seg, rcs, dev, p)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	l := layoutOf(t, data)
	if !bytes.Equal(data[:l.hdr], hdr.Bytes()) {
		t.Error("SealFile returned another header than it wrote")
	}
	if _, _, err := SealFile(in, filepath.Join(dir, "no", "dir.seg"), rcs, dev, p); err == nil {
		t.Error("SealFile into a missing directory succeeded")
	}
	if _, _, err := SealFile(filepath.Join(dir, "missing"), filepath.Join(dir, "x.seg"), rcs, dev, p); err == nil {
		t.Error("SealFile of a missing input succeeded")
	}

	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name    string
		seg     string
		want    error // nil, ErrTruncated, ErrCorrupt or ErrNoIdentity
		written int
	}{
		{"ok", seg, nil, len(msg)},
		{"truncated", write("cut.seg", data[:l.final+10]), ErrTruncated, 3 * chunk},
		{"corrupt", write("flip.seg", flipBit(data, (l.chunks+10)*8)), ErrCorrupt, 0},
		{"corrupt trailer", write("sig.seg", flipBit(data, (len(data)-1)*8)), ErrCorrupt, 0},
		{"wrong header", write("hdr.seg", flipBit(data, 0)), ErrCorrupt, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".out")
			res, err := OpenFile(tc.seg, out, ids...)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("OpenFile = %v, want %v", err, tc.want)
			}
			got, rerr := os.ReadFile(out)
			if tc.want == ErrCorrupt {
				if rerr == nil {
					t.Fatal("a corrupt segment produced an output file")
				}
				return
			}
			if rerr != nil || !bytes.Equal(got, msg[:tc.written]) || res.Written != int64(tc.written) {
				t.Fatalf("output holds %d bytes (Written %d), want %d: %v", len(got), res.Written, tc.written, rerr)
			}
			if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
				t.Errorf("plaintext output mode %04o, want 0600", st.Mode().Perm())
			}
			if res.Commitment != commitment {
				t.Error("commitment differs from SealFile's")
			}
			if (res.Trailer != nil) != (tc.want == nil) {
				t.Errorf("Trailer = %v", res.Trailer)
			}
			info, verr := VerifyFile(tc.seg, dev.Public())
			if tc.want == nil && (verr != nil || info.Commitment != commitment) || tc.want != nil && !errors.Is(verr, tc.want) {
				t.Errorf("VerifyFile = %v", verr)
			}
		})
	}
	if _, err := VerifyFile(filepath.Join(dir, "flip.seg"), dev.Public()); err == nil || !strings.Contains(err.Error(), "flip.seg") {
		t.Errorf("VerifyFile error %v does not name the file", err)
	}
	// OpenFile replaces its output atomically, so opening again is fine.
	if _, err := OpenFile(seg, filepath.Join(dir, "ok.out"), ids...); err != nil {
		t.Errorf("second OpenFile: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ok.out")); !bytes.Equal(got, msg) {
		t.Error("second OpenFile changed the output")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestOpenFileFromDevice: OpenFileFrom and Verify refuse a segment of
// another device with ErrWrongDevice (also an ErrCorrupt) naming both
// keys, before anything is written, even when the segment is whole and
// validly signed by its own device; the right device opens it.
func TestOpenFileFromDevice(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev, other := newDevice(t), newDevice(t)
	dir := t.TempDir()
	in, seg := filepath.Join(dir, "media"), filepath.Join(dir, "media.seg")
	msg := plaintext(t.Name(), chunk+10)
	if err := os.WriteFile(in, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := SealFile(in, seg, rcs, dev, testParams("from", 0, [CommitmentSize]byte{})); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.seg")
	if err := os.WriteFile(cut, data[:len(data)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{seg, cut} {
		out := filepath.Join(dir, "wrong.out")
		_, err := OpenFileFrom(path, out, other.Public(), ids...)
		if !errors.Is(err, ErrWrongDevice) || !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) {
			t.Fatalf("%s from another device: %v, want ErrWrongDevice and ErrCorrupt", path, err)
		}
		text := err.Error()
		if !strings.Contains(text, "signed by another device than "+other.Public().String()) || !strings.Contains(text, dev.Public().String()) {
			t.Errorf("the error does not name both devices: %v", err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s from another device wrote an output (%v)", path, err)
		}
		if _, err := VerifyFile(path, other.Public()); !errors.Is(err, ErrWrongDevice) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("VerifyFile(%s) from another device: %v, want ErrWrongDevice", path, err)
		}
		// Not for this key either: the device is refused first.
		stranger, _ := newIdentities(t, SuiteX25519, 1)
		if _, err := OpenFileFrom(path, out, other.Public(), stranger...); !errors.Is(err, ErrWrongDevice) {
			t.Errorf("another device and another key: %v, want ErrWrongDevice", err)
		}
	}
	out := filepath.Join(dir, "right.out")
	if _, err := OpenFileFrom(seg, out, dev.Public(), ids...); err != nil {
		t.Fatalf("OpenFileFrom with the right device: %v", err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("output %d bytes (%v), want %d", len(got), err, len(msg))
	}
	if _, err := OpenFileFrom(cut, filepath.Join(dir, "cut.out"), dev.Public(), ids...); !errors.Is(err, ErrTruncated) {
		t.Errorf("a cut segment of the right device: %v, want ErrTruncated", err)
	}
}
