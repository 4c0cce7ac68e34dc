package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/powercut"
)

// result is what the final count found.
type result struct {
	sealed, truncated, committed, duplicated, lost, stuck int
	empty                                                 int // cut before any media, dropped on the box by design
	noMedia                                               int // cut by a crash before any media, and stored
	ends                                                  int // stored sealed ends of recordings, without media by design
	unknown                                               int // stored but not in the box's index
	lossMean, lossMax                                     time.Duration
	kills                                                 int
	recordings, playing                                   int
	incomplete                                            int // listed as not complete after the drain
	boxAudit, rcvAudit                                    bool
	windowIn, windowTried                                 int
}

func (r result) failed() bool {
	return r.lost > 0 || r.noMedia > 0 || r.incomplete > 0 || r.duplicated > 0 || r.stuck > 0 || r.unknown > 0 || r.playing < r.recordings || !r.boxAudit || !r.rcvAudit
}

func okWord(ok bool) string {
	if ok {
		return "OK"
	}
	return "FAILED"
}

// line is the one summary line `make soak` prints.
func (r result) line(rounds int, took time.Duration, seed uint64) string {
	return fmt.Sprintf("soak: %d rounds in %s (seed %d): segments sealed %d, committed %d (%d truncated, %d cut before any media, %d empty ends), duplicated %d, lost %d, stuck %d, empty after a crash %d; "+
		"media lost per kill (%d kills): mean %.2f s, max %.2f s; %d of %d commit-window kills in the window; %d/%d recordings export and play, %d incomplete; audit chains: box %s, receiver %s",
		rounds, took.Round(time.Second), seed, r.sealed, r.committed, r.truncated, r.noMedia, r.ends, r.duplicated, r.lost, r.stuck, r.empty,
		r.kills, r.lossMean.Seconds(), r.lossMax.Seconds(), r.windowIn, r.windowTried, r.playing, r.recordings, r.incomplete, okWord(r.boxAudit), okWord(r.rcvAudit))
}

type storedRecording struct {
	ID        string   `json:"id"`
	Segments  int      `json:"segments"`
	Complete  bool     `json:"complete"`
	Truncated int      `json:"truncated"`
	Ended     string   `json:"ended"`
	Keys      []string `json:"keys"`
}

// onBox: the index says the segment's file is still in the spool.
func onBox(state string) bool {
	switch state {
	case "wiped", "discarded", "missing", "empty":
		return false
	}
	return true
}

// finish heals everything, gives the box a quiet period to drain, stops
// it and counts.
func (s *soak) finish(ctx context.Context) (result, error) {
	r := result{windowIn: s.window[0], windowTried: s.window[1]}
	if err := s.heal(ctx); err != nil {
		return r, err
	}
	if st, err := s.sessionStatus(ctx); err == nil && st.Active {
		s.ctl(ctx, "session", "stop")
	}
	fmt.Printf("final: quiet period with a healthy link (at most %s) for the box to drain\n", s.o.drain)
	t0 := time.Now()
	var q queue
	var err error
	// It ends when the queue is empty and stays so for 5 s, when it has
	// not changed for a minute (what is left is stuck), or after -drain.
	last, changed := -1, time.Now()
	for deadline := time.Now().Add(s.o.drain); time.Now().Before(deadline); {
		q, err = s.queue(ctx)
		if err == nil && q.Count != last {
			last, changed = q.Count, time.Now()
		}
		if time.Since(changed) > time.Minute {
			break
		}
		if err == nil && q.Count == 0 {
			// Quiet: still empty a little later.
			if err := sleep(ctx, 5*time.Second); err != nil {
				return r, err
			}
			if q, err = s.queue(ctx); err == nil && q.Count == 0 {
				break
			}
		}
		if err := sleep(ctx, time.Second); err != nil {
			return r, err
		}
	}
	if err != nil {
		s.note("final drain: the daemon does not answer: %v", err)
	}
	fmt.Printf("final: queue %d after %s %v\n", q.Count, time.Since(t0).Round(time.Second), q.ByState)
	if !s.box.term(15 * time.Second) {
		s.note("the daemon did not stop cleanly on SIGTERM within 15 s: %v", s.box.cmd.ProcessState)
	}

	idx, err := s.index()
	if err != nil {
		return r, err
	}
	out, err := s.tool(ctx, "uploadbox-receiver", "recordings", "list", "--data", s.data, "--json")
	if err != nil {
		return r, err
	}
	recs, err := decode[[]storedRecording](out)
	if err != nil {
		return r, fmt.Errorf("recordings list: %w", err)
	}
	stored := map[string]int{} // box name -> times listed
	for _, rec := range recs {
		r.truncated += rec.Truncated
		for _, k := range rec.Keys {
			stored[boxName(k)]++
			if _, ok := idx[boxName(k)]; !ok {
				r.unknown++
				s.note("the receiver holds %s, which the box's index does not list", k)
			}
		}
	}
	files := map[string]string{} // box name -> stored file
	filepath.WalkDir(filepath.Join(s.data, "store"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(s.data, "store"), p)
			name := boxName(filepath.ToSlash(rel))
			if _, dup := files[name]; dup {
				r.duplicated++
				s.note("segment %s is stored twice: %s and %s", name, files[name], p)
			}
			files[name] = p
		}
		return nil
	})
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range idx {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		rec := idx[name]
		if rec.State == "recording" {
			// Never sealed, and still on the box after the drain.
			r.stuck++
			s.note("segment %s is still in state recording after the final drain (%s)", name, rec.Reason)
			continue
		}
		if rec.State == "empty" {
			// Cut before any media reached the disk: nothing to upload.
			r.empty++
			if stored[name] > 0 {
				r.noMedia++
				s.note("segment %s is empty on the box (%s) and still stored by the receiver", name, rec.Reason)
			}
			continue
		}
		r.sealed++
		switch n := stored[name]; {
		case n > 1:
			r.duplicated++
			s.note("segment %s is listed %d times by the receiver", name, n)
		case n == 1:
			r.committed++
			if want, blake := rec.hash(); want != "" && files[name] != "" {
				if sum, err := fileHash(files[name], blake); err == nil && sum != want {
					r.duplicated++
					s.note("segment %s: the receiver stored other bytes (hash %.16s) than the box sealed (%.16s)", name, sum, want)
				}
			}
		}
		if rec.Refusal != nil && (rec.Refusal.Reason == "exists" || rec.Refusal.Reason == "mismatch") {
			r.duplicated++
			s.note("segment %s was refused as %s: committed twice with other bytes", name, rec.Refusal.Reason)
		}
		if onBox(rec.State) {
			r.stuck++
			s.note("segment %s is still on the box after the final drain: state %s %s", name, rec.State, rec.Reason)
		} else if stored[name] == 0 {
			r.lost++
			s.note("segment %s was sealed and is neither on the receiver nor on the box: state %s %s", name, rec.State, rec.Reason)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(s.spool, "*.ubx*")); len(left) > 0 {
		for _, f := range left {
			if _, ok := idx[strings.TrimSuffix(filepath.Base(f), ".partial")]; !ok {
				r.stuck++
				s.note("file %s is in the spool but not in its index", filepath.Base(f))
			}
		}
	}

	// Every recording exports and plays.
	exported := map[string]time.Duration{}
	org := filepath.Join(s.data, "org.key")
	exports := filepath.Join(s.dir, "exports")
	os.MkdirAll(exports, 0o700)
	for _, rec := range recs {
		r.recordings++
		mp4 := filepath.Join(exports, rec.ID+".mp4")
		if _, err := s.tool(ctx, "uploadbox-receiver", "recordings", "export", rec.ID, "-o", mp4, "--identity", org, "--data", s.data); err != nil {
			s.note("recording %.8s (%d segments, %d truncated) does not export: %v", rec.ID, rec.Segments, rec.Truncated, err)
			continue
		}
		d, err := plays(ctx, mp4)
		if err != nil {
			s.note("recording %.8s does not play: %v", rec.ID, err)
			continue
		}
		r.playing++
		exported[rec.ID] = d
		if !s.o.keep {
			os.Remove(mp4)
		}
	}

	// No stored segment is without media (a header-only segment).
	if id, err := crypto.ReadIdentityFile(org); err != nil {
		s.note("org key: %v", err)
	} else {
		for name, f := range files {
			switch n, cut, err := plainBytes(f, id); {
			case err != nil:
				s.note("stored segment %s does not open: %v", name, err)
			case n == 0 && !cut:
				r.ends++ // a recording's sealed end, closed without media
			case n == 0:
				r.noMedia++
				s.note("the receiver stored segment %s (%s), cut by a crash before any media", name, rec(idx, name))
			}
		}
	}
	ended := map[string]int{}
	for _, rec := range recs {
		ended[fmt.Sprintf("%q complete=%v", rec.Ended, rec.Complete)]++
		if !rec.Complete {
			// The box holds nothing more: every segment it sealed is here.
			r.incomplete++
			s.note("recording %.8s is listed as %q, not complete, after the drain (%d segments, last %s)", rec.ID, rec.Ended, rec.Segments, rec.Keys[len(rec.Keys)-1])
		}
	}
	fmt.Printf("final: recordings by end reason: %v\n", ended)

	// Media lost per kill: wall time from the session's start to the kill
	// minus what the export plays.
	var sum time.Duration
	for _, k := range s.kills {
		lost := k.at - exported[k.recording]
		sum += lost
		r.lossMax = max(r.lossMax, lost)
		r.kills++
		if lost > time.Second {
			s.note("%s at %.2fs into recording %.8s lost %.2f s of media (export plays %.2f s)", k.kind, k.at.Seconds(), k.recording, lost.Seconds(), exported[k.recording].Seconds())
		}
	}
	if r.kills > 0 {
		r.lossMean = sum / time.Duration(r.kills)
	}

	// Both audit chains verify.
	if out, err := s.tool(ctx, "uploadbox", "consent", "audit", "--verify", "--file", s.audit); err != nil {
		s.note("box audit chain: %v", err)
	} else {
		r.boxAudit = true
		_ = out
	}
	if out, err := s.tool(ctx, "uploadbox-receiver", "audit", "verify", "--data", s.data); err != nil || !strings.Contains(out, "audit log OK") {
		s.note("receiver audit chain: %v %s", err, strings.TrimSpace(out))
	} else {
		r.rcvAudit = true
	}

	s.problemNotes()
	return r, nil
}

// plays checks with ffprobe that mp4 holds an H.264 video stream and
// returns how long it plays.
func plays(ctx context.Context, mp4 string) (time.Duration, error) {
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=codec_name", "-of", "csv=p=0", mp4).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ffprobe: %v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "h264" {
		return 0, fmt.Errorf("ffprobe finds no H.264 video stream: %q", out)
	}
	return powercut.Duration(ctx, mp4)
}

// plainBytes is how many bytes of media the sealed file at path opens to
// with id, and whether it was cut short (then it counts as far as it
// authenticates).
func plainBytes(path string, id *crypto.Identity) (n int64, cut bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	r, err := crypto.NewReader(f, id)
	if errors.Is(err, crypto.ErrTruncated) {
		return 0, true, nil // cut inside the header
	}
	if err != nil {
		return 0, false, err
	}
	defer r.Close()
	n, err = io.Copy(io.Discard, r)
	if errors.Is(err, crypto.ErrTruncated) {
		return n, true, nil
	}
	return n, false, err
}

func rec(idx map[string]indexRecord, name string) string {
	r, ok := idx[name]
	if !ok {
		return "not in the box's index"
	}
	return "box state " + r.State
}

// fileHash is the hex BLAKE3-256 of the file (the segment hash), or its
// SHA-256 unless blake.
func fileHash(path string, blake bool) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	if blake {
		sum = blake3.Sum256(b)
	}
	return hex.EncodeToString(sum[:]), nil
}

// problemNotes lists the warnings and errors the daemon and the receiver
// logged, by message, most frequent first.
func (s *soak) problemNotes() {
	s.probs.mu.Lock()
	defer s.probs.mu.Unlock()
	keys := make([]string, 0, len(s.probs.n))
	for k := range s.probs.n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return s.probs.n[b] - s.probs.n[a] })
	for _, k := range keys {
		fmt.Printf("  log: %4d× %s\n", s.probs.n[k], k)
	}
}

func decode[T any](s string) (T, error) {
	var v T
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}
