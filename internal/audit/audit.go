// Package audit is an append-only, hash-chained audit log in JSON lines.
//
// Every entry carries the SHA-256 of the previous entry's line and its own
// hash, so removing, reordering or editing an entry breaks the chain at
// that point and Verify names it. Appends from several processes (the
// receiver's server and its admin commands) are serialised with flock.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// Entry is one audit record.
type Entry struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Event    string    `json:"event"`              // e.g. "enroll", "device.connect", "login", "consent.accept"
	Identity string    `json:"identity,omitempty"` // device, viewer or administrator
	Source   string    `json:"source,omitempty"`   // remote address, or "local"
	// By is who decided what the entry records, when that is not Identity:
	// e.g. "uid:1000(alice)" for a call on the box's control socket, or
	// "daemon" for what the daemon does itself.
	By      string `json:"by,omitempty"`
	Outcome string `json:"outcome"` // "ok", "denied", "locked", …
	Detail  string `json:"detail,omitempty"`
	// Receiver names the receiver that wrote the entry in a chain several
	// receivers share (PostgreSQL: host and replica id); empty in a file.
	Receiver string `json:"receiver,omitempty"`
	// Prev is the hash of the previous entry; for the first entry of a
	// file it is the anchor: zero for a new log, or the hash of the last
	// entry removed by retention.
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// Genesis is the Prev of the first entry of a new log.
var Genesis = hex.EncodeToString(make([]byte, sha256.Size))

// genesis is Genesis, for this package.
var genesis = Genesis

// Digest is the hash an entry carries: SHA-256 over its JSON encoding with
// Hash empty, the same wherever the entry is stored.
func (e Entry) Digest() (string, error) { return e.digest() }

func (e Entry) digest() (string, error) {
	e.Hash = ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Log appends to one audit file.
type Log struct {
	path string
	now  func() time.Time
	mu   sync.Mutex
	// head is what the last Checkpoint verified and signed (checkpoint.go).
	head *signedHead
}

// Open opens (creating, 0600) the log at path.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f.Close()
	return &Log{path: path, now: time.Now}, nil
}

// Path returns the log file's path.
func (l *Log) Path() string { return l.path }

// Append writes e as the next entry (Seq, Time if zero, Prev and Hash are
// filled in) and fsyncs it before returning.
func (l *Log) Append(e Entry) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := l.lock(os.O_RDWR | os.O_APPEND)
	if err != nil {
		return e, err
	}
	defer f.Close() // closing releases the lock
	last, err := lastEntry(f)
	if err != nil {
		return e, fmt.Errorf("audit log %s: %w", l.path, err)
	}
	if last == nil {
		e.Seq, e.Prev = 1, genesis
	} else {
		e.Seq, e.Prev = last.Seq+1, last.Hash
	}
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	if e.Hash, err = e.digest(); err != nil {
		return e, err
	}
	line, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return e, fmt.Errorf("audit log: write %s: %w", l.path, err)
	}
	if err := f.Sync(); err != nil {
		return e, fmt.Errorf("audit log: sync %s: %w", l.path, err)
	}
	return e, nil
}

// lock opens the log and takes the exclusive flock. If a concurrent Prune
// replaced the file while we waited, the lock is on the old inode: reopen.
func (l *Log) lock(flag int) (*os.File, error) { return lockPath(l.path, flag, syscall.LOCK_EX) }

// lockPath opens path and takes the flock how (LOCK_EX, LOCK_SH) on the
// file that is at path once it holds it.
func lockPath(path string, flag, how int) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, flag, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), how); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit log: lock %s: %w", path, err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
		if err1 != nil {
			return nil, err1
		}
	}
}

// lastLine returns the final line of f (nil for an empty file) and the
// offset it starts at; a line is at most 64 KiB.
func lastLine(f *os.File) ([]byte, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	if size == 0 {
		return nil, 0, nil
	}
	const window = 64 << 10
	start := max(0, size-window)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
		return nil, 0, err
	}
	buf = bytes.TrimRight(buf, "\n")
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf, start = buf[i+1:], start+int64(i)+1
	}
	return buf, start, nil
}

// lastEntry reads the final line of f, which the caller has locked.
func lastEntry(f *os.File) (*Entry, error) {
	buf, _, err := lastLine(f)
	if err != nil || buf == nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(buf, &e); err != nil {
		return nil, fmt.Errorf("last entry is not valid JSON (the log was damaged; run audit verify): %w", err)
	}
	return &e, nil
}

// VerifyError names the first entry where the chain breaks.
type VerifyError struct {
	Line   int
	Seq    uint64
	Reason string
}

func (e *VerifyError) Error() string {
	if e.Line == 0 {
		// A chain read from a database: the seq names the row.
		return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Reason)
	}
	return fmt.Sprintf("audit chain broken at line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Report is the result of a successful verification.
type Report struct {
	Entries int
	First   uint64 // seq of the first entry (above 1 after retention)
	Last    uint64
	Anchor  string // Prev of the first entry
	// Checkpoint is the last checkpoint the log was checked against
	// (VerifyCheckpointed, VerifyAnchored); nil if there was none.
	Checkpoint *Checkpoint
}

// Verify checks every entry's hash and link, and that seq increases by
// one. It returns a *VerifyError for the first bad entry.
func Verify(r io.Reader) (Report, error) { return verify(r, nil) }

// verify is Verify; for every seq in hashes it also records that entry's
// hash there.
func verify(r io.Reader, hashes map[uint64]string) (Report, error) {
	c := chain{hashes: hashes}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var e Entry
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return c.rep, &VerifyError{Line: line, Reason: "not a valid entry: " + err.Error()}
		}
		if err := c.add(line, e); err != nil {
			return c.rep, err
		}
	}
	if err := sc.Err(); err != nil {
		return c.rep, err
	}
	return c.rep, nil
}

// chain checks entries one at a time, in the order they are stored: each
// one's hash, its link to the one before, and seq increasing by one. It
// is the one verification both the file and a database chain go through.
type chain struct {
	rep  Report
	prev *Entry
	// hashes: for every seq in it, the hash of that entry is recorded.
	hashes map[uint64]string
}

// add checks e, found at line (0: in a database, named by its seq).
func (c *chain) add(line int, e Entry) error {
	want, err := e.digest()
	if err != nil {
		return err
	}
	if want != e.Hash {
		return &VerifyError{Line: line, Seq: e.Seq, Reason: "entry hash does not match its content (edited)"}
	}
	if c.prev == nil {
		c.rep.First, c.rep.Anchor = e.Seq, e.Prev
		if e.Seq == 1 && e.Prev != genesis {
			return &VerifyError{Line: line, Seq: e.Seq, Reason: "first entry does not start the chain"}
		}
	} else {
		if e.Prev != c.prev.Hash {
			return &VerifyError{Line: line, Seq: e.Seq, Reason: "previous-hash link does not match the entry before (removed or reordered entries)"}
		}
		if e.Seq != c.prev.Seq+1 {
			return &VerifyError{Line: line, Seq: e.Seq, Reason: fmt.Sprintf("sequence jumps from %d", c.prev.Seq)}
		}
	}
	if _, ok := c.hashes[e.Seq]; ok {
		c.hashes[e.Seq] = e.Hash
	}
	c.rep.Entries++
	c.rep.Last = e.Seq
	c.prev = &e
	return nil
}

// VerifyFile verifies the log at path.
func VerifyFile(path string) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{}, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	return Verify(f)
}

// Prune removes entries older than retention. The chain stays verifiable:
// the first kept entry still names the hash of the last removed one as its
// Prev (the anchor), and Verify starts from there. The file is replaced
// atomically under the lock.
func (l *Log) Prune(retention time.Duration) (removed int, err error) {
	if retention <= 0 {
		return 0, errors.New("audit log: retention must be positive")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := l.lock(os.O_RDWR)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := Verify(f); err != nil {
		return 0, fmt.Errorf("audit log: refusing to prune a broken chain: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	cutoff := l.now().Add(-retention)
	if err := pruneCheckpoints(CheckpointPath(l.path), cutoff); err != nil {
		return 0, err
	}
	var kept bytes.Buffer
	var lastOld []byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return 0, err
		}
		if kept.Len() == 0 && e.Time.Before(cutoff) {
			removed++
			lastOld = append(lastOld[:0], sc.Bytes()...)
			continue
		}
		kept.Write(sc.Bytes())
		kept.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if kept.Len() == 0 && lastOld != nil {
		// Everything expired: the newest entry stays as the chain's head.
		removed--
		kept.Write(lastOld)
		kept.WriteByte('\n')
	}
	if removed == 0 {
		return 0, nil
	}
	if err := atomicfile.Write(l.path, kept.Bytes(), 0o600); err != nil {
		return 0, err
	}
	return removed, nil
}
