package diag

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/uploader/spool"
)

// Limits of the disk and spool checks.
const (
	minutesWarn = 60
	backlogWarn = time.Hour
	backlogFail = 24 * time.Hour
)

func checkDisk(e *env) Result {
	c := e.cfg
	dir := c.Spool.Dir
	measured := existingParent(dir)
	space, err := e.o.Statfs(measured)
	if err != nil {
		return Result{Status: Fail, Summary: fmt.Sprintf("free space of %s: %s", dir, oneLine(err)),
			Remedy: "check that spool.dir is on a mounted filesystem the daemon can use"}
	}
	q, _, _ := e.queueInfo()
	minFree := uint64(max(0, c.Spool.MinFree))
	rate := float64(c.Capture.Bitrate)
	if c.AudioOn() {
		rate += float64(c.Capture.AudioBitrate) * float64(c.Capture.Channels)
	}
	bytesPerSec := rate / 8
	usable := float64(0)
	if space.Free > minFree {
		usable = float64(space.Free - minFree)
	}
	if c.Spool.MaxSize > 0 {
		usable = min(usable, math.Max(0, float64(int64(c.Spool.MaxSize)-q.Bytes)))
	}
	left := math.Floor(usable / bytesPerSec / 60)
	m := map[string]any{"free_bytes": space.Free, "total_bytes": space.Total, "min_free_bytes": minFree,
		"backlog_bytes": q.Bytes, "bytes_per_second": math.Round(bytesPerSec), "minutes_left": left}
	where := dir
	if measured != dir {
		where = fmt.Sprintf("%s (not created yet; measured %s)", dir, measured)
	}
	sum := fmt.Sprintf("%s free on %s, %.0f minutes of recording left", bytesText(float64(space.Free)), where, left)
	switch {
	case space.Free <= minFree:
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("disk full: %s free on %s, at or below spool.min_free %s", bytesText(float64(space.Free)), where, bytesText(float64(minFree))),
			Remedy:  "disk full: recording stops; free space or lower spool.min_free"}
	case c.Spool.MaxSize > 0 && q.Bytes >= int64(c.Spool.MaxSize):
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("spool full: backlog %s reaches spool.max_size %s", bytesText(float64(q.Bytes)), bytesText(float64(c.Spool.MaxSize))),
			Remedy:  "recording stops until segments upload: fix the upload (see the receiver check) or raise spool.max_size"}
	case left < minutesWarn:
		return Result{Status: Warn, Metrics: m, Summary: sum,
			Remedy: "less than an hour of recording fits: free space, let the backlog upload, or lower capture.bitrate"}
	}
	return Result{Status: Pass, Metrics: m, Summary: sum}
}

// existingParent is dir or its nearest existing parent: a spool not yet
// created lives on its parent's filesystem.
func existingParent(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			return d
		}
	}
}

func checkSpool(e *env) Result {
	q, source, err := e.queueInfo()
	dir := e.cfg.Spool.Dir
	if err != nil {
		return Result{Status: Fail, Summary: fmt.Sprintf("cannot list the spool %s: %s", dir, oneLine(err)),
			Remedy: "run diag as root or the uploadbox user (sudo -u uploadbox uploadbox diag), or start the daemon"}
	}
	m := map[string]any{"segments": q.Count, "bytes": q.Bytes, "oldest_age_seconds": 0, "source": source}
	from := "from the daemon"
	if source == "scan" {
		from = "scanned " + dir
	}
	m["quarantined"] = len(q.Quarantined)
	if n := len(q.Quarantined); n > 0 {
		first := q.Quarantined[0]
		more := ""
		if n > 1 {
			more = fmt.Sprintf(" and %d more (uploadbox queue lists them)", n-1)
		}
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("%d segment(s) quarantined: the receiver refused %s for good (%s)%s; the segments after it still upload",
				n, first.ID, spool.Refusal{Status: first.Status, Reason: first.Reason, Message: first.Message}, more),
			Remedy: fmt.Sprintf("fix the cause, then `uploadbox queue retry %s`; or, if the segment is not wanted, `uploadbox queue discard %s --yes` (deletes it for good)", first.ID, first.ID)}
	}
	if q.Count == 0 {
		return Result{Status: Pass, Metrics: m, Summary: "empty: every segment is uploaded (" + from + ")"}
	}
	var age time.Duration
	if !q.Oldest.IsZero() {
		age = max(0, e.o.Now().Sub(q.Oldest))
	}
	m["oldest_age_seconds"] = math.Round(age.Seconds())
	sum := fmt.Sprintf("%d segment(s), %s waiting; oldest %s old (%s)", q.Count, bytesText(float64(q.Bytes)), age.Round(time.Second), from)
	remedy := "segments are not uploading: see the receiver check and the daemon's log (journalctl -u uploadbox)"
	if !e.cfg.UploadOn() {
		remedy = "upload.enabled is false in the config: turn it on, or collect the segments by hand"
	}
	switch {
	case age > backlogFail:
		return Result{Status: Fail, Metrics: m, Summary: sum, Remedy: remedy}
	case age > backlogWarn:
		return Result{Status: Warn, Metrics: m, Summary: sum, Remedy: remedy}
	}
	return Result{Status: Pass, Metrics: m, Summary: sum}
}

// queueInfo asks the daemon for the backlog once, or scans the spool
// directory when it does not answer.
func (e *env) queueInfo() (QueueInfo, string, error) {
	e.queueOnce.Do(func() {
		if e.o.Queue != nil {
			ctx, cancel := e.stageCtx()
			q, err := e.o.Queue(ctx)
			cancel()
			if err == nil {
				e.queue, e.queueSource = q, "daemon"
				return
			}
		}
		e.queue, e.queueErr = scanSpool(e.cfg.Spool.Dir)
		e.queueSource = "scan"
	})
	return e.queue, e.queueSource, e.queueErr
}

// scanSpool counts the segment files in dir by name, size and
// modification time. It never opens a file, least of all the daemon's
// index database.
func scanSpool(dir string) (QueueInfo, error) {
	var q QueueInfo
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return q, nil // nothing recorded yet
	}
	if err != nil {
		return q, err
	}
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() || !(strings.HasSuffix(name, spool.SealedSuffix) || strings.HasSuffix(name, spool.PartialSuffix)) {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // wiped meanwhile
		}
		q.Count++
		q.Bytes += info.Size()
		if q.Oldest.IsZero() || info.ModTime().Before(q.Oldest) {
			q.Oldest = info.ModTime()
		}
	}
	return q, nil
}

// bytesText renders a size in binary units.
func bytesText(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}
