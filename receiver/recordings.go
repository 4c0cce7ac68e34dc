package receiver

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/store"
)

// DefaultDeleteGrace is how long a deleted recording is kept before it is
// purged (3 months: the seeds' "kept 3 months then purged").
const DefaultDeleteGrace = 90 * 24 * time.Hour

var (
	// ErrNoRecording: no recording has that id.
	ErrNoRecording = errors.New("no such recording")
	// ErrRecordingState: the recording is not in a state that allows the
	// call (deleting a deleted one, restoring one that is not deleted or
	// whose grace period ended).
	ErrRecordingState = errors.New("recording state does not allow this")
)

// RecordingTimes is when a recording's media started and ended, from its
// segments' headers: Start is the earliest segment's start_ns; End is the
// start of the last segment that holds media plus that segment's length,
// estimated from its size at the rate of the recording's earlier segments
// (a header carries its start only). End is zero when the recording has a
// single segment with media, or its segments came before times were kept.
type RecordingTimes struct {
	Start           time.Time `json:"start,omitzero"`
	End             time.Time `json:"end,omitzero"`
	DurationSeconds float64   `json:"duration_seconds,omitempty"`
}

// RecordingLife says whether a recording was deleted, by whom ("admin" or
// "retention") and when it will be purged; zero for a listed recording.
type RecordingLife struct {
	Deleted    time.Time `json:"deleted,omitzero"`
	DeletedBy  string    `json:"deleted_by,omitempty"`
	PurgeAfter time.Time `json:"purge_after,omitzero"`
}

// timesOf derives a recording's RecordingTimes (see there).
func timesOf(segs []SegmentRecord) RecordingTimes {
	var media []SegmentRecord
	for _, s := range segs {
		if !s.Start.IsZero() && s.Media > 0 {
			media = append(media, s)
		}
	}
	if len(media) == 0 {
		return RecordingTimes{}
	}
	slices.SortFunc(media, func(a, b SegmentRecord) int { return cmp.Compare(a.Sequence, b.Sequence) })
	t := RecordingTimes{Start: media[0].Start}
	var bytes int64
	var span, longest time.Duration
	for i := 1; i < len(media); i++ {
		a, b := media[i-1], media[i]
		if b.Sequence != a.Sequence+1 || !b.Start.After(a.Start) {
			continue
		}
		d := b.Start.Sub(a.Start)
		bytes, span, longest = bytes+a.Media, span+d, max(longest, d)
	}
	if bytes == 0 {
		return t
	}
	last := media[len(media)-1]
	length := min(time.Duration(float64(span)*float64(last.Media)/float64(bytes)), longest)
	t.End = last.Start.Add(length)
	t.DurationSeconds = t.End.Sub(t.Start).Seconds()
	return t
}

// anonymiseOf is the anonymisation mode the segments' headers name in
// their codec field ("video/mp4; anonymise=whole"; none named is "off"),
// the distinct modes comma-separated if they disagree, and "" when no
// segment record kept its codec.
func anonymiseOf(segs []SegmentRecord) string {
	var modes []string
	for _, s := range segs {
		if s.Codec == "" {
			continue
		}
		mode := "off"
		if _, params, err := mime.ParseMediaType(s.Codec); err == nil && params["anonymise"] != "" {
			mode = params["anonymise"]
		} else if err != nil {
			mode = "unknown"
		}
		if !slices.Contains(modes, mode) {
			modes = append(modes, mode)
		}
	}
	slices.Sort(modes)
	return strings.Join(modes, ",")
}

var (
	lifeBucket   = []byte("recordings")
	policyBucket = []byte("recording_policy")
	policyKey    = []byte("policy")
)

// lifeRecord is a recording's lifecycle in the database, kept after the
// purge so that a segment of it committed late is purged too.
type lifeRecord struct {
	Deleted  time.Time `json:"deleted,omitzero"`
	By       string    `json:"by,omitempty"`
	Restored time.Time `json:"restored,omitzero"`
	Purged   time.Time `json:"purged,omitzero"`
}

func (l lifeRecord) deleted() bool { return !l.Deleted.IsZero() }

// recordingPolicy is what serve was started with, kept in the database so
// that admin commands apply it too.
type recordingPolicy struct {
	Grace     time.Duration `json:"grace"`
	Retention time.Duration `json:"retention,omitempty"`
	// FSStore: the server keeps segments in the data directory's store
	// (not in S3), so admin commands can reach them without it.
	FSStore bool `json:"fs_store"`
}

func initLife(db kv.DB, p *recordingPolicy) error {
	return db.Update(func(tx kv.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(lifeBucket); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(policyBucket)
		if err != nil || p == nil {
			return err
		}
		v, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return b.Put(policyKey, v)
	})
}

func readPolicy(db kv.DB) (recordingPolicy, error) {
	p := recordingPolicy{Grace: DefaultDeleteGrace, FSStore: true}
	err := db.View(func(tx kv.Tx) error {
		if b := tx.Bucket(policyBucket); b != nil {
			if v := b.Get(policyKey); v != nil {
				return json.Unmarshal(v, &p)
			}
		}
		return nil
	})
	return p, err
}

// life is the recordings' lifecycle: soft delete, restore, retention,
// purge and scrub, on the database and the store.
type life struct {
	db    kv.DB
	audit auditChain
	now   func() time.Time
	// store is nil when it cannot be reached: an S3 store without the
	// server that was given its configuration.
	store store.Store
	log   *slog.Logger
}

// recordings reads every segment record grouped into recordings, with
// their lifecycle; deleted tells which ones to return.
func (l *life) recordings(deleted bool) ([]Recording, error) {
	byID := map[string]*Recording{}
	segs := map[string][]SegmentRecord{}
	lives := map[string]lifeRecord{}
	err := l.db.View(func(tx kv.Tx) error {
		if err := tx.Bucket(lifeBucket).ForEach(func(k, v []byte) error {
			var lr lifeRecord
			if err := json.Unmarshal(v, &lr); err != nil {
				return fmt.Errorf("recording %s: damaged lifecycle record: %w", k, err)
			}
			lives[string(k)] = lr
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(segmentsBucket).ForEach(func(k, v []byte) error {
			var rec SegmentRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("segment %s: damaged record: %w", k, err)
			}
			if lives[rec.Recording].deleted() != deleted {
				return nil
			}
			r := byID[rec.Recording]
			if r == nil {
				r = &Recording{Device: rec.Device, ID: rec.Recording, First: rec.Committed}
				byID[rec.Recording] = r
			}
			segs[rec.Recording] = append(segs[rec.Recording], rec)
			r.Segments++
			r.Bytes += rec.Size
			r.Keys = append(r.Keys, rec.Key)
			if rec.Outcome != "OK" {
				r.Truncated++
			}
			if rec.Committed.Before(r.First) {
				r.First = rec.Committed
			}
			if rec.Committed.After(r.Last) {
				r.Last = rec.Committed
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	p, err := readPolicy(l.db)
	if err != nil {
		return nil, err
	}
	var out []Recording
	now := l.now()
	for id, r := range byID {
		st := RecordingState(segs[id], now)
		r.Complete, r.Ended, r.Missing = st.Complete, st.Ended, st.Missing
		r.RecordingTimes = timesOf(segs[id])
		r.Anonymise = anonymiseOf(segs[id])
		if lr := lives[id]; lr.deleted() {
			r.RecordingLife = RecordingLife{Deleted: lr.Deleted, DeletedBy: lr.By, PurgeAfter: lr.Deleted.Add(p.Grace)}
		}
		sort.Strings(r.Keys)
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(out[j].First) })
	return out, nil
}

// checkRecordingID accepts a recording id as listed: 32 hex digits.
func checkRecordingID(id string) error {
	if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
		return fmt.Errorf("%w: %q is not a recording id (32 hex digits, see recordings list)", ErrNoRecording, id)
	}
	return nil
}

// find returns recording id with its lifecycle, deleted or not.
func (l *life) find(id string) (*Recording, lifeRecord, error) {
	var lr lifeRecord
	if err := checkRecordingID(id); err != nil {
		return nil, lr, err
	}
	err := l.db.View(func(tx kv.Tx) error {
		if v := tx.Bucket(lifeBucket).Get([]byte(id)); v != nil {
			return json.Unmarshal(v, &lr)
		}
		return nil
	})
	if err != nil {
		return nil, lr, err
	}
	rs, err := l.recordings(lr.deleted())
	if err != nil {
		return nil, lr, err
	}
	for _, r := range rs {
		if r.ID == id {
			return &r, lr, nil
		}
	}
	if !lr.Purged.IsZero() {
		return nil, lr, fmt.Errorf("%w: recording %s was purged on %s", ErrNoRecording, id, lr.Purged.Format(time.RFC3339))
	}
	return nil, lr, fmt.Errorf("%w: %s (see recordings list)", ErrNoRecording, id)
}

func (l *life) put(id string, lr lifeRecord) error {
	v, err := json.Marshal(lr)
	if err != nil {
		return err
	}
	return l.db.Update(func(tx kv.Tx) error { return tx.Bucket(lifeBucket).Put([]byte(id), v) })
}

func (l *life) record(e audit.Entry) error {
	if _, err := l.audit.Append(e); err != nil {
		return fmt.Errorf("audit %s: %w", e.Event, err)
	}
	return nil
}

// remove soft-deletes recording id: hidden from the list and export, purged
// after the grace period. by is "admin" or "retention".
func (l *life) remove(id, by string) (*Recording, error) {
	r, lr, err := l.find(id)
	if err != nil {
		return nil, err
	}
	if lr.deleted() {
		return nil, fmt.Errorf("%w: recording %s was already deleted on %s (recordings list --deleted)", ErrRecordingState, id, lr.Deleted.Format(time.RFC3339))
	}
	p, err := readPolicy(l.db)
	if err != nil {
		return nil, err
	}
	lr = lifeRecord{Deleted: l.now().UTC(), By: by}
	r.RecordingLife = RecordingLife{Deleted: lr.Deleted, DeletedBy: by, PurgeAfter: lr.Deleted.Add(p.Grace)}
	if err := l.put(id, lr); err != nil {
		return nil, err
	}
	return r, l.record(audit.Entry{Event: "recording.delete", Identity: r.Device, By: by, Source: "local", Outcome: "ok",
		Detail: fmt.Sprintf("recording %s, %d segments, %d bytes; purged after %s", id, r.Segments, r.Bytes, r.PurgeAfter.Format(time.RFC3339))})
}

// restore undoes a delete within the grace period.
func (l *life) restore(id string) (*Recording, error) {
	r, lr, err := l.find(id)
	if err != nil {
		return nil, err
	}
	if !lr.deleted() {
		return nil, fmt.Errorf("%w: recording %s is not deleted", ErrRecordingState, id)
	}
	if now := l.now(); !now.Before(r.PurgeAfter) {
		return nil, fmt.Errorf("%w: the grace period of recording %s ended on %s; it is purged at the next pass", ErrRecordingState, id, r.PurgeAfter.Format(time.RFC3339))
	}
	if err := l.put(id, lifeRecord{Restored: l.now().UTC()}); err != nil {
		return nil, err
	}
	r.RecordingLife = RecordingLife{}
	return r, l.record(audit.Entry{Event: "recording.restore", Identity: r.Device, By: "admin", Source: "local", Outcome: "ok", Detail: "recording " + id})
}

// PurgeReport is what one lifecycle pass did.
type PurgeReport struct {
	// Expired lists the recordings retention deleted in this pass.
	Expired []string `json:"expired"`
	// Purged lists the recordings whose objects were removed.
	Purged   []string `json:"purged"`
	Segments int      `json:"segments"`
	Bytes    int64    `json:"bytes"`
}

// pass applies the policy once: retention deletes recordings older than
// p.Retention (by their start, else their first commit; a recording an
// admin restored is left alone), and recordings deleted at least p.Grace
// ago are purged: their objects removed from the store, their segment
// records and upload ids forgotten, an audit entry each.
func (l *life) pass(ctx context.Context) (*PurgeReport, error) {
	if l.store == nil {
		return nil, errors.New("purge: the store is not reachable from here (an S3 store): run it through the running server (uploadbox-receiver serve)")
	}
	del, ok := l.store.(store.Deleter)
	if !ok {
		return nil, fmt.Errorf("purge: the store (%T) cannot delete objects", l.store)
	}
	p, err := readPolicy(l.db)
	if err != nil {
		return nil, err
	}
	rep := &PurgeReport{Expired: []string{}, Purged: []string{}}
	now := l.now()
	if p.Retention > 0 {
		rs, err := l.recordings(false)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			born := r.Start
			if born.IsZero() {
				born = r.First
			}
			if now.Sub(born) < p.Retention {
				continue
			}
			var lr lifeRecord
			l.db.View(func(tx kv.Tx) error {
				if v := tx.Bucket(lifeBucket).Get([]byte(r.ID)); v != nil {
					json.Unmarshal(v, &lr)
				}
				return nil
			})
			if !lr.Restored.IsZero() {
				continue
			}
			if _, err := l.remove(r.ID, "retention"); err != nil {
				return rep, err
			}
			rep.Expired = append(rep.Expired, r.ID)
		}
	}
	rs, err := l.recordings(true)
	if err != nil {
		return rep, err
	}
	for _, r := range rs {
		if now.Before(r.PurgeAfter) {
			continue
		}
		for _, k := range r.Keys {
			if err := del.Delete(ctx, k); err != nil {
				return rep, fmt.Errorf("purge recording %s: %w", r.ID, err)
			}
		}
		keys := map[string]bool{}
		for _, k := range r.Keys {
			keys[k] = true
		}
		err := l.db.Update(func(tx kv.Tx) error {
			sb := tx.Bucket(segmentsBucket)
			for k := range keys {
				if err := sb.Delete([]byte(k)); err != nil {
					return err
				}
			}
			if ub := tx.Bucket(uploadsBucket); ub != nil {
				var gone [][]byte
				ub.ForEach(func(id, key []byte) error {
					if keys[string(key)] {
						gone = append(gone, id)
					}
					return nil
				})
				for _, id := range gone {
					if err := ub.Delete(id); err != nil {
						return err
					}
				}
			}
			v, err := json.Marshal(lifeRecord{Deleted: r.Deleted, By: r.DeletedBy, Purged: now.UTC()})
			if err != nil {
				return err
			}
			return tx.Bucket(lifeBucket).Put([]byte(r.ID), v)
		})
		if err != nil {
			return rep, err
		}
		rep.Purged = append(rep.Purged, r.ID)
		rep.Segments += r.Segments
		rep.Bytes += r.Bytes
		if err := l.record(audit.Entry{Event: "recording.purge", Identity: r.Device, By: r.DeletedBy, Source: "local", Outcome: "ok",
			Detail: fmt.Sprintf("recording %s: %d segments, %d bytes removed from the store (deleted %s)", r.ID, r.Segments, r.Bytes, r.Deleted.Format(time.RFC3339))}); err != nil {
			return rep, err
		}
		l.log.Info("recording purged", "recording", r.ID, "device", r.Device, "segments", r.Segments, "bytes", r.Bytes)
	}
	return rep, nil
}
