package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// segmentID turns a queue ID (the segment name, ".ubx" optional) into the
// spool's segment name.
func segmentID(id string) (string, error) {
	if id == "" {
		return "", control.Errorf("bad-request", "give the segment's ID as `uploadbox queue` lists it")
	}
	if !strings.HasSuffix(id, spool.SealedSuffix) {
		id += spool.SealedSuffix
	}
	return id, nil
}

func queueError(id string, err error) error {
	var te *spool.TransitionError
	switch {
	case errors.Is(err, spool.ErrUnknownSegment):
		return control.Errorf("not-found", "segment %q is not in the queue: use an ID that `uploadbox queue` lists", id)
	case errors.As(err, &te):
		return control.Errorf("conflict", "%v", te)
	}
	return err
}

// handleQueue answers "queue.retry" and "queue.discard". Both are audited
// with the caller's uid.
func (a *Agent) handleQueue(r control.Request) (any, error) {
	switch r.Method {
	case "queue.retry":
		var p QueueID
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		name, err := segmentID(p.ID)
		if err != nil {
			return nil, err
		}
		before, err := a.spool.Get(name)
		if err != nil {
			return nil, queueError(p.ID, err)
		}
		if before.State != spool.Quarantined {
			return nil, control.Errorf("conflict", "segment %s is %s: only a quarantined segment can be retried", before.Name, before.State)
		}
		rec, err := a.spool.Retry(name)
		if err != nil {
			return nil, queueError(p.ID, err)
		}
		a.auditEvent("queue.retry", r.Caller(), "ok", fmt.Sprintf("segment=%s now=%s%s", rec.Name, rec.State, refusalDetail(before.Refusal)))
		a.log.Info("quarantined segment put back in the queue", "segment", rec.Name, "state", rec.State, "by", r.Caller())
		a.kickUpload()
		return HeldSegment{ID: rec.Name, State: string(rec.State), File: a.spool.Path(rec), Bytes: rec.Size, Sealed: rec.SealedAt, Message: rec.Reason}, nil
	case "queue.discard":
		var p QueueDiscard
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		name, err := segmentID(p.ID)
		if err != nil {
			return nil, err
		}
		cur, err := a.spool.Get(name)
		if err != nil {
			return nil, queueError(p.ID, err)
		}
		if cur.State != spool.Quarantined && cur.State != spool.Corrupt {
			return nil, control.Errorf("conflict", "segment %s is %s: only a quarantined or corrupt segment can be discarded", cur.Name, cur.State)
		}
		if !p.Yes {
			return nil, control.Errorf("confirm", "nothing deleted: this would delete %s (%d bytes, %s%s), which the receiver never confirmed; run `uploadbox queue discard %s --yes` to delete it for good",
				a.spool.Path(cur), cur.Size, cur.State, refusalText(cur.Refusal), p.ID)
		}
		rec, err := a.spool.Discard(name)
		if err != nil {
			return nil, queueError(p.ID, err)
		}
		alg, sum := rec.Hash()
		a.auditEvent("queue.discard", r.Caller(), "deleted", fmt.Sprintf("segment=%s file=%s bytes=%d %s=%x was=%s%s",
			rec.Name, a.spool.Path(rec), rec.Size, alg, sum, rec.State, refusalDetail(rec.Refusal)))
		a.log.Warn("segment discarded without a receipt", "segment", rec.Name, "bytes", rec.Size, "by", r.Caller())
		return HeldSegment{ID: rec.Name, State: string(spool.Discarded), File: a.spool.Path(rec), Bytes: rec.Size, Sealed: rec.SealedAt}, nil
	}
	return nil, control.Errorf("unknown-method", "unknown control method %q", r.Method)
}

func refusalDetail(r *spool.Refusal) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf(" status=%d reason=%s message=%q", r.Status, r.Reason, r.Message)
}

func refusalText(r *spool.Refusal) string {
	if r == nil {
		return ""
	}
	return ": the receiver said " + r.String()
}
