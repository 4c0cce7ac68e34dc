package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/powercut"
)

// powerCuts SIGKILLs `uploadbox record` kills times at random moments and
// prints the media each kill lost (wall time from the "recording" line to
// the kill minus the export's duration, see internal/powercut), and what
// the fragment padding costs in the segments left on disk.
func powerCuts(bin string, kills int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "uploadbox-bench-powercut-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	k, err := powercut.MakeKeys(ctx, bin, dir)
	if err != nil {
		return err
	}
	id, err := crypto.ReadIdentityFile(k.Org)
	if err != nil {
		return err
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	var lost []time.Duration
	var media mediaBytes
	for i := range kills {
		// 10 s segments: moments in 1-13 s land in the first and the
		// second segment, some near the cut.
		after := time.Second + time.Duration(rng.Int64N(int64(12*time.Second)))
		d := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
		res, err := powercut.Kill(ctx, bin, k, d, after, "--size", "1280x720", "--fps", "30", "--bitrate", "2500k", "--segment", "10s")
		if err != nil {
			return err
		}
		lost = append(lost, res.Lost())
		for _, s := range res.Segments {
			if err := media.add(s, id); err != nil {
				return err
			}
		}
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	var sum time.Duration
	for _, l := range lost {
		sum += l
	}
	sorted := slices.Clone(lost)
	slices.Sort(sorted)
	fmt.Printf("power cuts: uploadbox record (test source 1280x720 30 fps 2.5 Mbit/s + Opus, 10 s segments) SIGKILLed %d times at random moments (seed %d):\n", kills, seed)
	fmt.Printf("  media lost        mean %.3f s, median %.3f s, min %.3f s, max %.3f s  (goal: mean <= 0.6 s, max <= 1.0 s)\n",
		(sum / time.Duration(kills)).Seconds(), sorted[kills/2].Seconds(), sorted[0].Seconds(), sorted[kills-1].Seconds())
	fmt.Printf("  padding           %d bytes of free boxes in %d fragments (%.0f bytes per fragment), %.2f %% of %d media bytes\n",
		media.free, media.fragments, float64(media.free)/float64(max(media.fragments, 1)), 100*float64(media.free)/float64(max(media.total-media.free, 1)), media.total-media.free)
	return nil
}

// mediaBytes counts what the segments on disk hold, decrypted.
type mediaBytes struct {
	total, free int64
	fragments   int
}

// add decrypts one segment file (sealed or cut) and walks its top-level
// boxes; a box cut off at the end counts as media.
func (m *mediaBytes) add(path string, id *crypto.Identity) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := crypto.NewReader(f, id)
	if errors.Is(err, crypto.ErrTruncated) {
		return nil // cut inside the header: no media
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer r.Close()
	plain, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, crypto.ErrTruncated) {
		return fmt.Errorf("%s: %w", path, err)
	}
	m.total += int64(len(plain))
	for b := plain; len(b) >= 8; {
		size := int64(binary.BigEndian.Uint32(b))
		if size < 8 || size > int64(len(b)) {
			break
		}
		switch {
		case bytes.Equal(b[4:8], []byte("free")):
			m.free += size
		case bytes.Equal(b[4:8], []byte("moof")):
			m.fragments++
		}
		b = b[size:]
	}
	return nil
}
