package receiver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/store"
)

// ScrubReport is what a scrub read and found.
type ScrubReport struct {
	Time     time.Time `json:"time"`
	Segments int       `json:"segments"`
	Bytes    int64     `json:"bytes"`
	Damaged  []Damage  `json:"damaged"`
	// TimesFilled counts intact segments committed before the receiver
	// kept their start and media size, which this scrub filled in from
	// their headers (so that recordings list shows their times).
	TimesFilled int `json:"times_filled,omitempty"`
}

// Damage is one stored segment that is not what was committed.
type Damage struct {
	Device    string `json:"device"`
	Recording string `json:"recording"`
	Sequence  uint64 `json:"sequence"`
	Key       string `json:"key"`
	Problem   string `json:"problem"`
}

// scrub re-reads the stored objects of recording id (every recording,
// deleted ones not yet purged included, when id is empty) and checks each
// against its commit: size, the hash it was committed with (the BLAKE3
// segment hash, which the verification gives, or SHA-256), the device
// signature (keyless
// verification, the same outcome as at commit), the header's device,
// recording, sequence and commitment, and the chain link to the stored
// previous segment.
func (l *life) scrub(ctx context.Context, id string) (*ScrubReport, error) {
	if l.store == nil {
		return nil, errors.New("scrub: the store is not reachable from here (an S3 store): run it through the running server (uploadbox-receiver serve)")
	}
	if id != "" {
		if _, _, err := l.find(id); err != nil {
			return nil, err
		}
	}
	recs := map[string]SegmentRecord{}
	err := l.db.View(func(tx kv.Tx) error {
		return tx.Bucket(segmentsBucket).ForEach(func(k, v []byte) error {
			var rec SegmentRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("segment %s: damaged record: %w", k, err)
			}
			if id == "" || rec.Recording == id {
				recs[rec.Key] = rec
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rep := &ScrubReport{Time: l.now().UTC(), Damaged: []Damage{}}
	fill := map[string]*crypto.Info{}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec := recs[k]
		problems, n, info, err := l.check(ctx, rec)
		if err != nil {
			return nil, err
		}
		if rec.Sequence > 0 {
			prev, ok := recs[fmt.Sprintf("%s%06d.ubx", k[:len(k)-len("000000.ubx")], rec.Sequence-1)]
			if ok && prev.Commitment != rec.Prev {
				problems = append(problems, fmt.Sprintf("does not link to segment %d (chain broken)", rec.Sequence-1))
			}
		}
		rep.Segments++
		rep.Bytes += n
		if len(problems) > 0 {
			rep.Damaged = append(rep.Damaged, Damage{Device: rec.Device, Recording: rec.Recording, Sequence: rec.Sequence, Key: k, Problem: strings.Join(problems, "; ")})
		} else if rec.Start.IsZero() && info.Header.StartUnixNs != 0 {
			fill[k] = info
		}
	}
	if len(fill) > 0 {
		n, err := l.fillTimes(fill)
		if err != nil {
			return nil, err
		}
		rep.TimesFilled = n
	}
	return rep, nil
}

// fillTimes sets the start and media size of records that lack them.
func (l *life) fillTimes(fill map[string]*crypto.Info) (int, error) {
	n := 0
	err := l.db.Update(func(tx kv.Tx) error {
		n = 0 // counted afresh on each run (kv.DB may run this again)
		b := tx.Bucket(segmentsBucket)
		for k, info := range fill {
			v := b.Get([]byte(k))
			if v == nil {
				continue // purged meanwhile
			}
			var rec SegmentRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("segment %s: damaged record: %w", k, err)
			}
			if !rec.Start.IsZero() {
				continue
			}
			rec.Start, rec.Media = time.Unix(0, info.Header.StartUnixNs).UTC(), info.MediaBytes()
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// check reads one stored object and says how it differs from its record;
// info is what verification read (a header whenever problems is empty).
// Only a failure to reach the store is an error.
func (l *life) check(ctx context.Context, rec SegmentRecord) (problems []string, n int64, info *crypto.Info, err error) {
	rc, _, err := l.store.Get(ctx, rec.Key)
	if errors.Is(err, store.ErrNotFound) {
		return []string{"missing from the store"}, 0, nil, nil
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("scrub: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	var r io.Reader = rc
	if rec.SHA256 != "" {
		r = io.TeeReader(rc, h)
	}
	cr := &countReader{r: r}
	info, verr := crypto.Verify(cr, nil)
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, cr.n, nil, fmt.Errorf("scrub: read %s: %w", rec.Key, err)
	}
	if cr.n != rec.Size {
		problems = append(problems, fmt.Sprintf("%d bytes, committed %d", cr.n, rec.Size))
	}
	if rec.SHA256 != "" {
		if sum := hex.EncodeToString(h.Sum(nil)); sum != rec.SHA256 {
			problems = append(problems, fmt.Sprintf("SHA-256 %s…, committed %s…", sum[:16], rec.SHA256[:min(16, len(rec.SHA256))]))
		}
	} else if info != nil && info.Header != nil {
		if sum := hex.EncodeToString(info.FileHash[:]); sum != rec.BLAKE3 {
			problems = append(problems, fmt.Sprintf("BLAKE3 %s…, committed %s…", sum[:16], rec.BLAKE3[:min(16, len(rec.BLAKE3))]))
		}
	}
	if got := crypto.OutcomeOf(verr).String(); got != rec.Outcome {
		problems = append(problems, fmt.Sprintf("verifies %s (%v), committed %s", got, verr, rec.Outcome))
	}
	if info == nil || info.Header == nil {
		if len(problems) == 0 { // cannot be: the record says it verified
			problems = append(problems, "no readable header")
		}
		return problems, cr.n, info, nil
	}
	hdr := info.Header
	if !ed25519.PublicKey(hdr.Device.Bytes()).Equal(ed25519.PublicKey(rec.DeviceKey)) {
		problems = append(problems, "signed by another device key than the one that committed it")
	}
	if hex.EncodeToString(hdr.RecordingID[:]) != rec.Recording || hdr.Sequence != rec.Sequence {
		problems = append(problems, fmt.Sprintf("header names recording %x segment %d", hdr.RecordingID, hdr.Sequence))
	}
	if info.Trailer != nil || crypto.OutcomeOf(verr) == crypto.Truncated {
		if c := hex.EncodeToString(info.Commitment[:]); c != rec.Commitment {
			problems = append(problems, "commitment differs from the committed one")
		}
	}
	if hex.EncodeToString(hdr.Prev[:]) != rec.Prev {
		problems = append(problems, "chain link differs from the committed one")
	}
	return problems, cr.n, info, nil
}
