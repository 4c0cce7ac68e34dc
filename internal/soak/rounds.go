package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
)

// The kinds of fault round.
const (
	killSession  = "kill-session"  // SIGKILL the daemon at a random moment of a session
	killCommit   = "kill-commit"   // SIGKILL the daemon as the receiver logs a commit
	killReceiver = "kill-receiver" // SIGKILL the receiver while bytes flow, restart it
	cutLink      = "cut"           // cut every connection, three times, while bytes flow
	stallLink    = "stall"         // hold every byte for 5-30 s, connections left open
	fullDisk     = "full-disk"     // fill the spool's filesystem during a session
)

var kinds = []string{killSession, killCommit, killReceiver, cutLink, stallLink, fullDisk}

// plan orders the rounds: every kind at least once, daemon kills during
// sessions twice as often as the rest, shuffled; the last round fills the
// disk, so that the final drain sees what a full disk leaves behind
// without a restart.
func (s *soak) plan() []string {
	cycle := append(kinds[:len(kinds):len(kinds)], killSession)
	var p []string
	for i := range s.o.rounds - 1 {
		p = append(p, cycle[i%len(cycle)])
	}
	s.rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
	return append(p, fullDisk)
}

// round runs one fault round and says what happened.
func (s *soak) round(ctx context.Context, kind string) (string, error) {
	if err := s.heal(ctx); err != nil {
		return "", err
	}
	st, err := s.startSession(ctx)
	if err != nil {
		return "", err
	}
	switch kind {
	case killSession:
		if err := sleep(ctx, s.between(1500*time.Millisecond, 12*time.Second)); err != nil {
			return "", err
		}
		at := s.killDaemon(st, kind)
		return fmt.Sprintf("daemon killed %.2fs into recording %.8s", at.Seconds(), st.Recording), s.restartDaemon(ctx)
	case killCommit:
		if err := sleep(ctx, s.between(2*time.Second, 10*time.Second)); err != nil {
			return "", err
		}
		for len(s.committed) > 0 {
			<-s.committed
		}
		var line string
		select {
		case line = <-s.committed:
		case <-time.After(30 * time.Second):
			return "", errors.New("no commit within 30 s")
		case <-ctx.Done():
			return "", ctx.Err()
		}
		at := s.killDaemon(st, kind)
		s.window[1]++
		state, err := s.boxState(keyOf(line))
		if err != nil {
			return "", err
		}
		in := state == "uploading"
		if in {
			s.window[0]++
		}
		return fmt.Sprintf("daemon killed %.2fs into recording %.8s as %s was committed; the box had it %s (in the window: %v)", at.Seconds(), st.Recording, keyOf(line), state, in), s.restartDaemon(ctx)
	case killReceiver:
		if err := sleep(ctx, s.between(2*time.Second, 6*time.Second)); err != nil {
			return "", err
		}
		mid, err := s.flowing(ctx)
		if err != nil {
			return "", err
		}
		s.rcv.kill()
		down := s.between(time.Second, 5*time.Second)
		if err := sleep(ctx, down); err != nil {
			return "", err
		}
		if _, err := s.startReceiver(ctx, s.rcvAddr); err != nil {
			return "", err
		}
		return fmt.Sprintf("receiver killed (mid-transfer: %v), down %.1fs", mid, down.Seconds()), s.endSession(ctx, s.between(5*time.Second, 20*time.Second))
	case cutLink:
		mids := 0
		for range 3 {
			if err := sleep(ctx, s.between(time.Second, 5*time.Second)); err != nil {
				return "", err
			}
			mid, err := s.flowing(ctx)
			if err != nil {
				return "", err
			}
			if mid {
				mids++
			}
			s.proxy.Cut()
		}
		return fmt.Sprintf("3 cuts, %d mid-transfer", mids), s.endSession(ctx, s.between(5*time.Second, 20*time.Second))
	case stallLink:
		if err := sleep(ctx, s.between(time.Second, 4*time.Second)); err != nil {
			return "", err
		}
		mid, err := s.flowing(ctx)
		if err != nil {
			return "", err
		}
		d := s.between(5*time.Second, 30*time.Second)
		s.proxy.Stall()
		err = sleep(ctx, d)
		s.proxy.Resume()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("link stalled %.1fs (mid-transfer: %v)", d.Seconds(), mid), s.endSession(ctx, s.between(5*time.Second, 20*time.Second))
	case fullDisk:
		return s.fullDiskRound(ctx, st)
	}
	return "", fmt.Errorf("unknown round kind %q", kind)
}

func (s *soak) startSession(ctx context.Context) (session, error) {
	var st session
	out, err := s.ctl(ctx, "session", "start", "--for", "2m")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("session start: %q: %w", out, err)
	}
	if st.Started.IsZero() {
		st.Started = time.Now()
	}
	s.sessions = append(s.sessions, st.Recording)
	return st, nil
}

// endSession lets the session run d more and stops it.
func (s *soak) endSession(ctx context.Context, d time.Duration) error {
	if err := sleep(ctx, d); err != nil {
		return err
	}
	if st, err := s.sessionStatus(ctx); err != nil || !st.Active {
		return err
	}
	_, err := s.ctl(ctx, "session", "stop")
	return err
}

// killDaemon SIGKILLs the daemon and books the kill against the session.
func (s *soak) killDaemon(st session, kind string) time.Duration {
	killed := time.Now()
	s.box.cmd.Process.Signal(syscall.SIGKILL)
	<-s.box.done
	at := killed.Sub(st.Started)
	s.kills = append(s.kills, kill{recording: st.Recording, at: at, kind: kind})
	return at
}

func (s *soak) restartDaemon(ctx context.Context) error {
	if err := sleep(ctx, s.between(300*time.Millisecond, 2*time.Second)); err != nil {
		return err
	}
	return s.startDaemon(ctx)
}

// flowing waits (at most 15 s) until bytes go up through the proxy, so
// that a fault lands mid-transfer; false if none came.
func (s *soak) flowing(ctx context.Context) (bool, error) {
	deadline := time.Now().Add(15 * time.Second)
	last := s.proxy.Sent()
	for time.Now().Before(deadline) {
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return false, err
		}
		if n := s.proxy.Sent(); n != last {
			return true, nil
		}
	}
	return false, nil
}

// keyOf finds the stored key in a receiver "segment committed" log line.
func keyOf(line string) string {
	for _, f := range strings.Fields(line) {
		if k, ok := strings.CutPrefix(f, "key="); ok {
			return k
		}
	}
	return ""
}

// boxName is the spool's name for the receiver's key
// "<device>/<recording>/<seq>.ubx": "<recording>-<seq>.ubx".
func boxName(key string) string {
	parts := strings.Split(key, "/")
	if len(parts) != 3 {
		return ""
	}
	return parts[1] + "-" + parts[2]
}

// indexRecord is the part of a spool index entry (uploader/spool) the soak
// reads.
type indexRecord struct {
	Name        string
	File        string
	Sequence    uint64
	Size        int64
	State       string
	Reason      string
	Receipt     []byte
	RecordingID string
	BLAKE3      string // the segment hash; records of older releases have SHA256
	SHA256      string
	Refusal     *struct {
		Status int
		Reason string
	}
}

// hash is the record's hash of the file (hex) and whether it is the
// BLAKE3 segment hash.
func (r indexRecord) hash() (string, bool) {
	if r.BLAKE3 != "" {
		return r.BLAKE3, true
	}
	return r.SHA256, false
}

// index reads the box's spool index read-only; the daemon must not run.
func (s *soak) index() (map[string]indexRecord, error) {
	db, err := bbolt.Open(filepath.Join(s.spool, "spool.db"), 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("spool index: %w", err)
	}
	defer db.Close()
	recs := map[string]indexRecord{}
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("segments"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r indexRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("spool index entry %s: %w", k, err)
			}
			recs[string(k)] = r
			return nil
		})
	})
	return recs, err
}

// boxState is the spool state of the segment the receiver stored as key.
func (s *soak) boxState(key string) (string, error) {
	recs, err := s.index()
	if err != nil {
		return "", err
	}
	r, ok := recs[boxName(key)]
	if !ok {
		return "not in the index", nil
	}
	return r.State, nil
}

// fullDiskRound fills the spool's filesystem at a random moment of the
// session (leaving up to 256 KiB) and keeps it full (what wipes free is
// taken again, leaving up to 64 KiB) until the session stops or 20 s
// passed, frees the space and checks that what was being written is not
// left behind.
func (s *soak) fullDiskRound(ctx context.Context, st session) (string, error) {
	if err := sleep(ctx, s.between(1500*time.Millisecond, 12*time.Second)); err != nil {
		return "", err
	}
	partial := "no segment open"
	if ps, _ := filepath.Glob(filepath.Join(s.spool, st.Recording+"-*.partial")); len(ps) > 0 {
		if fi, err := os.Stat(ps[0]); err == nil {
			partial = fmt.Sprintf("%s at %d bytes", filepath.Base(ps[0]), fi.Size())
		}
	}
	leave := s.rng.Int64N(256 << 10)
	filled, err := s.fill(leave)
	if err != nil {
		return "", err
	}
	var now session
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if now, err = s.sessionStatus(ctx); err != nil || !now.Active {
			break
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", err
		}
		// Wipes free space as uploads go on: another writer takes it, so
		// the disk stays full until the recorder runs into it.
		if _, err := s.fill(s.rng.Int64N(64 << 10)); err != nil {
			return "", err
		}
	}
	if err != nil {
		s.note("full disk, recording %.8s: the daemon does not answer: %v", st.Recording, err)
	}
	detail := fmt.Sprintf("filled %d MiB leaving %d KiB, %s; ", filled>>20, leave>>10, partial)
	if now.Active {
		detail += "still recording after 20 s"
		if _, err := s.ctl(ctx, "session", "stop"); err != nil {
			return detail, err
		}
	} else {
		detail += fmt.Sprintf("session stopped (%s) after %d segments, alert %q", now.StopReason, now.Segments, now.Alert)
		if now.Alert == "" {
			s.note("full disk, recording %.8s: the session stopped (%s: %s) without an alert", st.Recording, now.StopReason, now.Error)
		}
	}
	if err := sleep(ctx, s.between(time.Second, 4*time.Second)); err != nil {
		return detail, err
	}
	if err := s.unfill(); err != nil {
		return detail, err
	}
	// With room again and a healthy link, everything sealed should leave.
	var q queue
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if q, err = s.queue(ctx); err != nil || q.Count == 0 {
			break
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return detail, err
		}
	}
	if err != nil {
		return detail, err
	}
	if q.Count > 0 {
		detail += fmt.Sprintf("; 30 s after the space was freed the queue holds %d segments %v", q.Count, q.ByState)
		if q.ByState["recording"] > 0 {
			s.note("full disk, recording %.8s: 30 s after the space was freed, with no session running, the queue holds %d segment(s) in state recording (not uploaded until a restart)", st.Recording, q.ByState["recording"])
		}
	}
	return detail, nil
}
