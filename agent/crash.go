package agent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// runMarker, in the state directory, exists while the daemon runs: Run
// creates it and removes it when it returns, so finding it at start means
// the previous run did not end cleanly.
const runMarker = "daemon.running"

// crashReport is what the start learns about a previous run that did not
// end cleanly.
type crashReport struct {
	session *SessionStatus // the session it left open, if any
	at      time.Time      // the last sign of life: about when it stopped
	last    int64          // the last sealed segment of the session, -1 if none
	cut     []string       // segments cut short: "name:truncated", "name:empty"
}

// lastRun reads the audit log and the spool for the previous run: the
// session it started and did not stop, and when it was last heard of.
// marker says the run marker was found.
func (a *Agent) lastRun(marker bool) (*crashReport, error) {
	es, err := audit.Tail(a.audit.Path(), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var open *audit.Entry
	var lastSeen time.Time
	stopped := false // the last daemon event is a clean daemon.stop
	for i := range es {
		e := &es[i]
		lastSeen = e.Time
		switch e.Event {
		case "session.start":
			if e.Outcome == "ok" {
				open = e
			}
		case "session.stop":
			open = nil
		case "daemon.start":
			stopped = false
		case "daemon.stop":
			stopped = true
		}
	}
	if open == nil && (!marker || stopped) {
		return nil, nil
	}
	r := &crashReport{at: lastSeen, last: -1}
	if open == nil {
		return r, nil
	}
	id := detailField(open.Detail, "recording")
	st := &SessionStatus{Recording: id, Started: open.Time, StopReason: StopCrashed}
	if until, err := time.Parse(time.RFC3339, detailField(open.Detail, "until")); err == nil {
		st.Until = until
	}
	recs, err := a.spool.All()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if hex.EncodeToString(rec.RecordingID[:]) != id {
			continue
		}
		for _, t := range []time.Time{rec.CreatedAt, rec.SealedAt} {
			if t.After(r.at) {
				r.at = t
			}
		}
		switch rec.State {
		case spool.Truncated:
			st.Segments++
			r.cut = append(r.cut, rec.Name+":truncated")
		case spool.Empty:
			r.cut = append(r.cut, rec.Name+":empty")
		case spool.Corrupt, spool.Missing, spool.Recording:
		default:
			st.Segments++
			r.last = max(r.last, int64(rec.Sequence))
		}
	}
	st.Ended = r.at
	r.session = st
	return r, nil
}

// detailField returns the value of key=value in an audit detail.
func detailField(detail, key string) string {
	for _, f := range strings.Fields(detail) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// recordUncleanStop writes daemon.unclean_stop (and ends the session the
// previous run left open) when that run did not end cleanly, and creates
// the run marker for this run.
func (a *Agent) recordUncleanStop() {
	path := filepath.Join(a.Config().StateDir, runMarker)
	_, err := os.Stat(path)
	marker := err == nil
	r, err := a.lastRun(marker)
	if err != nil {
		a.log.Error("cannot tell whether the previous run ended cleanly", "err", err)
	}
	if r != nil {
		detail := "recording=none"
		if s := r.session; s != nil {
			last := "none"
			if r.last >= 0 {
				last = strconv.FormatInt(r.last, 10)
			}
			detail = fmt.Sprintf("recording=%s last_sealed=%s segments=%d", s.Recording, last, s.Segments)
			if len(r.cut) > 0 {
				detail += " cut=" + strings.Join(r.cut, ",")
			}
		}
		detail += " at=" + r.at.UTC().Format(time.RFC3339)
		a.auditEvent("daemon.unclean_stop", consent.ByDaemon, "failed", detail)
		if s := r.session; s != nil {
			a.auditEvent("session.stop", consent.ByDaemon, "failed", fmt.Sprintf("recording=%s reason=%s segments=%d",
				s.Recording, strings.ReplaceAll(StopCrashed, " ", "_"), s.Segments))
			a.mu.Lock()
			a.last = s
			a.mu.Unlock()
			a.log.Warn("the previous run did not end cleanly: its session ended by a crash", "recording", s.Recording,
				"about", r.at.Format(time.DateTime), "segments", s.Segments)
		} else {
			a.log.Warn("the previous run did not end cleanly", "about", r.at.Format(time.DateTime))
		}
	}
	if err := writeMarker(path); err != nil {
		a.log.Error("run marker not written: a crash of this run may go unnoticed at the next start", "path", path, "err", err)
	}
}

// clearMarker removes the run marker at a clean stop.
func (a *Agent) clearMarker() {
	path := filepath.Join(a.Config().StateDir, runMarker)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Error("run marker not removed: the next start will report an unclean stop", "path", path, "err", err)
		return
	}
	atomicfile.SyncDir(filepath.Dir(path))
}

func writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := fmt.Fprintf(f, "pid=%d started=%s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}
