package audit

import (
	"bufio"
	"bytes"
	"context"
	stdcrypto "crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"time"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// A hash chain shows that nothing inside the log changed, but not that
// its end is still there: whoever can write the file can drop the last
// entries, or rebuild the whole chain. A checkpoint anchors the head: the
// seq and hash of the last entry, signed by a key the writer of the file
// does not hold (the box's device key, the receiver's receipt key) and,
// on the box, also sent to the receiver. Checkpoints live in their own
// file beside the log (CheckpointPath), so limits on the log's size
// never drop them.

// CheckpointSuffix is appended to a log's path to name its checkpoints
// file: JSON lines, one Checkpoint each, appended and fsynced.
const CheckpointSuffix = ".checkpoints"

// CheckpointPath is the checkpoints file of the log at logPath.
func CheckpointPath(logPath string) string { return logPath + CheckpointSuffix }

// checkpointContext separates what a checkpoint signs from every other
// message the same key signs (segments, enrollment proofs, receipts).
const checkpointContext = "uploadbox audit checkpoint v1\x00"

// MaxCheckpointSize bounds one encoded checkpoint (a request body, a line).
const MaxCheckpointSize = 1024

// Checkpoint is a signed statement that a log held Seq entries, the last
// one with hash Hash, at Time.
type Checkpoint struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"` // hex SHA-256 of entry Seq
	Time time.Time `json:"time"`
	Key  string    `json:"key"` // the signer's Ed25519 public key, standard base64
	Sig  string    `json:"sig"` // Ed25519 signature over signedMessage, standard base64
}

// Errors of a checkpoint itself (not of the log it anchors).
var (
	ErrCheckpointMalformed = errors.New("malformed audit checkpoint")
	ErrCheckpointSignature = errors.New("audit checkpoint signature does not verify")
	ErrCheckpointKey       = errors.New("audit checkpoint is signed by another key")
)

// signedMessage is the canonical encoding a checkpoint's signature covers:
// the context, then seq, the raw hash, the time (Unix seconds and
// nanoseconds) and the signer's public key, all fixed-size big-endian.
func (c Checkpoint) signedMessage() ([]byte, ed25519.PublicKey, error) {
	hash, err := hex.DecodeString(c.Hash)
	if err != nil || len(hash) != 32 || hex.EncodeToString(hash) != c.Hash {
		return nil, nil, fmt.Errorf("%w: hash must be 64 lower-case hex digits", ErrCheckpointMalformed)
	}
	key, err := base64.StdEncoding.DecodeString(c.Key)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("%w: key must be a base64 Ed25519 public key", ErrCheckpointMalformed)
	}
	if c.Seq == 0 || c.Time.IsZero() {
		return nil, nil, fmt.Errorf("%w: seq and time are required", ErrCheckpointMalformed)
	}
	m := make([]byte, 0, len(checkpointContext)+8+32+12+32)
	m = append(m, checkpointContext...)
	m = binary.BigEndian.AppendUint64(m, c.Seq)
	m = append(m, hash...)
	m = binary.BigEndian.AppendUint64(m, uint64(c.Time.Unix()))
	m = binary.BigEndian.AppendUint32(m, uint32(c.Time.Nanosecond()))
	m = append(m, key...)
	return m, key, nil
}

// SignCheckpoint signs the head (seq, hash) at t with signer, which must
// hold an Ed25519 key.
func SignCheckpoint(signer stdcrypto.Signer, seq uint64, hash string, t time.Time) (Checkpoint, error) {
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok {
		return Checkpoint{}, errors.New("audit checkpoint: the signing key is not Ed25519")
	}
	c := Checkpoint{Seq: seq, Hash: hash, Time: t.UTC().Round(0), Key: base64.StdEncoding.EncodeToString(pub)}
	msg, _, err := c.signedMessage()
	if err != nil {
		return Checkpoint{}, err
	}
	sig, err := signer.Sign(nil, msg, stdcrypto.Hash(0))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: sign: %w", err)
	}
	c.Sig = base64.StdEncoding.EncodeToString(sig)
	return c, nil
}

// Verify checks c's form and signature, and, if key is not nil, that key
// made it.
func (c Checkpoint) Verify(key ed25519.PublicKey) error {
	msg, signer, err := c.signedMessage()
	if err != nil {
		return err
	}
	if key != nil && !signer.Equal(key) {
		return fmt.Errorf("%w: made by %s, expected %s", ErrCheckpointKey, c.Key, base64.StdEncoding.EncodeToString(key))
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: sig must be a base64 Ed25519 signature", ErrCheckpointMalformed)
	}
	if !ed25519.Verify(signer, msg, sig) {
		return ErrCheckpointSignature
	}
	return nil
}

// ParseCheckpoint decodes one checkpoint strictly (no unknown fields, no
// trailing data) and checks its form; the signature is checked by Verify.
func ParseCheckpoint(data []byte) (Checkpoint, error) {
	var c Checkpoint
	if len(data) > MaxCheckpointSize {
		return c, fmt.Errorf("%w: more than %d bytes", ErrCheckpointMalformed, MaxCheckpointSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrCheckpointMalformed, err)
	}
	if dec.More() {
		return c, fmt.Errorf("%w: data after the checkpoint", ErrCheckpointMalformed)
	}
	if _, _, err := c.signedMessage(); err != nil {
		return c, err
	}
	return c, nil
}

// ReadCheckpoints reads a checkpoints file. Every checkpoint must be
// well-formed and signed by the key it names, and seq and time must never
// go backwards from one line to the next. A missing file holds none.
func ReadCheckpoints(path string) ([]Checkpoint, error) {
	f, err := openCheckpoints(path)
	if f == nil {
		return nil, err
	}
	defer f.Close()
	return readCheckpoints(f, path)
}

// openCheckpoints opens a checkpoints file; a missing one is nil, nil.
func openCheckpoints(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	return f, nil
}

// ReadCheckpointsFrom reads checkpoints as ReadCheckpoints does, one per
// line from r (a chain's checkpoints stored elsewhere than a file); name
// says where they are in its errors.
func ReadCheckpointsFrom(r io.Reader, name string) ([]Checkpoint, error) {
	return readCheckpoints(r, name)
}

func readCheckpoints(r io.Reader, path string) ([]Checkpoint, error) {
	var cps []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4<<10), MaxCheckpointSize)
	line := 0
	for sc.Scan() {
		line++
		c, err := ParseCheckpoint(sc.Bytes())
		if err == nil {
			err = c.Verify(nil)
		}
		if err != nil {
			return nil, fmt.Errorf("audit checkpoints %s line %d: %w", path, line, err)
		}
		if n := len(cps); n > 0 && (c.Seq < cps[n-1].Seq || c.Time.Before(cps[n-1].Time)) {
			return nil, fmt.Errorf("audit checkpoints %s line %d: goes back from seq %d at %s to seq %d at %s (lines reordered or replaced)",
				path, line, cps[n-1].Seq, cps[n-1].Time.Format(time.RFC3339), c.Seq, c.Time.Format(time.RFC3339))
		}
		cps = append(cps, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit checkpoints %s line %d: %w", path, line+1, err)
	}
	return cps, nil
}

// CheckpointError says that a log no longer holds what a checkpoint
// signed: entries after it were removed, or the chain was rewritten.
type CheckpointError struct {
	Checkpoint Checkpoint
	// Missing is how many entries the checkpoint covers past the log's
	// last one; 0 when the log is long enough but holds other entries.
	Missing uint64
	// LastGood is the seq of the newest checkpoint the log still matches
	// (0: none), when the log was rewritten.
	LastGood uint64
}

func (e *CheckpointError) Error() string {
	at := e.Checkpoint.Time.Format(time.RFC3339)
	if e.Missing > 0 {
		n := fmt.Sprintf("%d entries", e.Missing)
		if e.Missing == 1 {
			n = "1 entry"
		}
		return fmt.Sprintf("%s missing after the last checkpoint: the checkpoint of %s covers seq %d, the log ends at seq %d (entries were removed)",
			n, at, e.Checkpoint.Seq, e.Checkpoint.Seq-e.Missing)
	}
	s := fmt.Sprintf("the log does not hold the entries the last checkpoint (%s) covers: seq %d has another hash, so entries were removed and others appended, or the chain was rebuilt", at, e.Checkpoint.Seq)
	if e.LastGood > 0 {
		s += fmt.Sprintf("; it still matches the checkpoint at seq %d, so entries after that are missing or replaced", e.LastGood)
	}
	return s
}

// VerifyCheckpointed verifies the log read from r like Verify and checks
// it against cps (as ReadCheckpoints returns them, oldest first): the log
// must hold the entry the last checkpoint covers, with the hash it
// signed. rep.Checkpoint is the last checkpoint. A *CheckpointError
// says what is missing.
//
// After retention removed the covered entry (seq before the log's first),
// only the count is checked, or the anchor if it is exactly that entry.
func VerifyCheckpointed(r io.Reader, cps []Checkpoint) (Report, error) {
	want := checkpointSeqs(cps)
	rep, err := verify(r, want)
	if err != nil {
		return rep, err
	}
	return checkHead(rep, want, cps)
}

// VerifyEntries verifies a chain read from elsewhere than a file (a
// database), given as its entries in seq order, by the same rules as
// VerifyCheckpointed: a *VerifyError names the first bad entry by seq, a
// *CheckpointError what the last of cps covers and the chain lacks.
func VerifyEntries(entries iter.Seq2[Entry, error], cps []Checkpoint) (Report, error) {
	want := checkpointSeqs(cps)
	c := chain{hashes: want}
	for e, err := range entries {
		if err != nil {
			return c.rep, err
		}
		if err := c.add(0, e); err != nil {
			return c.rep, err
		}
	}
	return checkHead(c.rep, want, cps)
}

func checkpointSeqs(cps []Checkpoint) map[uint64]string {
	want := map[uint64]string{}
	for _, c := range cps {
		want[c.Seq] = ""
	}
	return want
}

// checkHead checks a verified chain (rep, with the hashes at the
// checkpoints' seqs in want) against the last of cps.
func checkHead(rep Report, want map[uint64]string, cps []Checkpoint) (Report, error) {
	if len(cps) == 0 {
		return rep, nil
	}
	last := cps[len(cps)-1]
	rep.Checkpoint = &last
	if rep.Last < last.Seq {
		return rep, &CheckpointError{Checkpoint: last, Missing: last.Seq - rep.Last}
	}
	got := want[last.Seq]
	if got == "" && last.Seq+1 == rep.First {
		got = rep.Anchor
	}
	if got == "" || got == last.Hash {
		return rep, nil
	}
	e := &CheckpointError{Checkpoint: last}
	for i := len(cps) - 2; i >= 0; i-- {
		if h := want[cps[i].Seq]; h != "" && h == cps[i].Hash {
			e.LastGood = cps[i].Seq
			break
		}
	}
	return rep, e
}

// VerifyAnchored verifies the log at path against its checkpoints file
// (CheckpointPath). If key is not nil, the last checkpoint must be signed
// by it; a log without checkpoints verifies as Verify does.
func VerifyAnchored(path string, key ed25519.PublicKey) (Report, error) {
	cps, err := ReadCheckpoints(CheckpointPath(path))
	if err != nil {
		return Report{}, err
	}
	if key != nil && len(cps) > 0 {
		if err := cps[len(cps)-1].Verify(key); err != nil {
			return Report{}, fmt.Errorf("audit checkpoints %s: last checkpoint: %w", CheckpointPath(path), err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return Report{}, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	return VerifyCheckpointed(f, cps)
}

// Checkpoint signs the log's current head with signer and appends it to
// the checkpoints file (fsynced), under the log's lock. It first checks
// that the log still holds what the previous checkpoint signed: a log cut
// short or rebuilt is reported, never signed over. If the head has not
// moved since the last checkpoint, nothing is written and that one is
// returned with written false. An empty log gets no checkpoint.
func (l *Log) Checkpoint(signer stdcrypto.Signer) (c Checkpoint, written bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := l.lock(os.O_RDONLY)
	if err != nil {
		return c, false, err
	}
	defer f.Close()
	cpath := CheckpointPath(l.path)
	prev, err := lastCheckpoint(cpath)
	if err != nil {
		return c, false, err
	}
	st, err := f.Stat()
	if err != nil {
		return c, false, err
	}
	h := l.head
	l.head = nil // set again once this head is verified
	head, start, err := verifyHead(f, st, prev, h)
	if err != nil {
		return c, false, fmt.Errorf("audit log %s: not checkpointed: %w", l.path, err)
	}
	if head == nil {
		return c, false, nil
	}
	signed := &signedHead{file: st, start: start, seq: head.Seq, hash: head.Hash}
	if prev != nil && prev.Seq == head.Seq && prev.Hash == head.Hash {
		l.head = signed
		return *prev, false, nil
	}
	t := l.now()
	if prev != nil && t.Before(prev.Time) {
		t = prev.Time // a clock set back must not make the file go backwards
	}
	if c, err = SignCheckpoint(signer, head.Seq, head.Hash, t); err != nil {
		return c, false, err
	}
	line, err := json.Marshal(c)
	if err != nil {
		return c, false, err
	}
	cf, err := os.OpenFile(cpath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return c, false, fmt.Errorf("audit checkpoints: %w", err)
	}
	if _, err := cf.Write(append(line, '\n')); err != nil {
		cf.Close()
		return c, false, fmt.Errorf("audit checkpoints: write %s: %w", cpath, err)
	}
	if err := cf.Sync(); err != nil {
		cf.Close()
		return c, false, fmt.Errorf("audit checkpoints: sync %s: %w", cpath, err)
	}
	if err := cf.Close(); err != nil {
		return c, false, err
	}
	l.head = signed
	return c, true, nil
}

// signedHead is where the entry the last checkpoint signed stands in the
// log file, so that the next Checkpoint reads only from there on.
type signedHead struct {
	file  os.FileInfo
	start int64 // offset of the entry's line
	seq   uint64
	hash  string
}

// verifyHead verifies the log in f (locked; st its stat) against prev,
// the last checkpoint, and returns its last entry and the offset of that
// entry's line (nil for an empty log). If h, the head this Log signed
// last, is prev's in this same file, only the lines from h on are read:
// they must start with that entry, unchanged, and chain from it;
// otherwise, or if that fails, the whole file is verified, which names
// the problem.
func verifyHead(f *os.File, st os.FileInfo, prev *Checkpoint, h *signedHead) (*Entry, int64, error) {
	size := st.Size()
	last := uint64(0)
	fast := false
	if h != nil && prev != nil && h.seq == prev.Seq && h.hash == prev.Hash && os.SameFile(h.file, st) && size > h.start {
		at := map[uint64]string{h.seq: ""}
		rep, err := verify(io.NewSectionReader(f, h.start, size-h.start), at)
		if fast = err == nil && rep.First == h.seq && at[h.seq] == h.hash; fast {
			last = rep.Last
		}
	}
	if !fast {
		var cps []Checkpoint
		if prev != nil {
			cps = []Checkpoint{*prev}
		}
		rep, err := VerifyCheckpointed(io.NewSectionReader(f, 0, size), cps)
		if err != nil {
			return nil, 0, err
		}
		if rep.Entries == 0 {
			return nil, 0, nil
		}
		last = rep.Last
	}
	line, start, err := lastLine(f)
	if err != nil {
		return nil, 0, err
	}
	var e Entry
	if err := json.Unmarshal(line, &e); err != nil || e.Seq != last {
		return nil, 0, fmt.Errorf("read head: the last line is not entry %d", last)
	}
	return &e, start, nil
}

// lastCheckpoint reads the last line of the checkpoints file at path (nil
// if there is none) and checks its form and signature.
func lastCheckpoint(path string) (*Checkpoint, error) {
	f, err := openCheckpoints(path)
	if f == nil {
		return nil, err
	}
	defer f.Close()
	line, _, err := lastLine(f)
	if err != nil || line == nil {
		return nil, err
	}
	c, err := ParseCheckpoint(line)
	if err == nil {
		err = c.Verify(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints %s: last line: %w", path, err)
	}
	return &c, nil
}

// pruneCheckpoints removes checkpoints older than cutoff from the file at
// path, keeping always the newest. A file that does not read cleanly is
// left as it is, for verify to report.
func pruneCheckpoints(path string, cutoff time.Time) error {
	cps, err := ReadCheckpoints(path)
	if err != nil || len(cps) < 2 || !cps[0].Time.Before(cutoff) {
		return nil
	}
	var kept bytes.Buffer
	for i, c := range cps {
		if i < len(cps)-1 && c.Time.Before(cutoff) {
			continue
		}
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		kept.Write(append(b, '\n'))
	}
	return atomicfile.Write(path, kept.Bytes(), 0o600)
}

// RunCheckpoints writes a checkpoint with signer every interval while ctx
// runs, and one more when ctx ends (so cancel ctx after the last entry).
// done, if not nil, is called after every attempt: with written false
// when the head had not moved, with err when the log could not be
// checkpointed (it was cut short or rewritten, or the disk failed).
func (l *Log) RunCheckpoints(ctx context.Context, every time.Duration, signer stdcrypto.Signer, done func(c Checkpoint, written bool, err error)) {
	RunCheckpoints(ctx, every, func() (Checkpoint, bool, error) { return l.Checkpoint(signer) }, done)
}

// RunCheckpoints calls checkpoint every interval while ctx runs, and once
// more when ctx ends, as Log.RunCheckpoints does, for a chain stored
// elsewhere.
func RunCheckpoints(ctx context.Context, every time.Duration, checkpoint func() (Checkpoint, bool, error), done func(c Checkpoint, written bool, err error)) {
	if every <= 0 {
		every = MaxCheckpointInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		stop := false
		select {
		case <-ctx.Done():
			stop = true
		case <-t.C:
		}
		c, written, err := checkpoint()
		if done != nil {
			done(c, written, err)
		}
		if stop {
			return
		}
	}
}

// MaxCheckpointInterval is the longest time between two checkpoints.
const MaxCheckpointInterval = 10 * time.Minute

// Errors of a checkpoint that would replace a held one.
var (
	ErrCheckpointStale = errors.New("audit checkpoint is older than the one already held")
	ErrCheckpointFork  = errors.New("audit checkpoint signs another head at the seq already held (the log was rewritten)")
)

// Follows checks that c may replace held, the newest checkpoint of the
// same log known so far: it does not go back in seq and, at the same seq,
// signs the same head. same is true when c says nothing new.
func (c Checkpoint) Follows(held Checkpoint) (same bool, err error) {
	switch {
	case c.Seq < held.Seq:
		return false, fmt.Errorf("%w: seq %d, held seq %d", ErrCheckpointStale, c.Seq, held.Seq)
	case c.Seq == held.Seq && c.Hash != held.Hash:
		return false, fmt.Errorf("%w: seq %d", ErrCheckpointFork, c.Seq)
	}
	return c.Seq == held.Seq, nil
}

// SaveCheckpoint replaces the file at path with c (atomically, 0600).
func SaveCheckpoint(path string, c Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save audit checkpoint %s: %w", path, err)
	}
	return nil
}

// LoadCheckpoint reads a checkpoint SaveCheckpoint wrote and checks its
// form and signature (by the key it names; callers compare the key).
func LoadCheckpoint(path string) (Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	c, err := ParseCheckpoint(bytes.TrimSpace(b))
	if err == nil {
		err = c.Verify(nil)
	}
	if err != nil {
		return c, fmt.Errorf("audit checkpoint %s: %w", path, err)
	}
	return c, nil
}
