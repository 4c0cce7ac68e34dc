package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/store"
)

// recordingAdmin is the part of Admin that manages recordings' lifecycle.
type recordingAdmin interface {
	// ListDeletedRecordings lists deleted recordings not yet purged.
	ListDeletedRecordings() ([]Recording, error)
	// DeleteRecording soft-deletes a recording: hidden from list and
	// export, purged after the grace period.
	DeleteRecording(id string) (*Recording, error)
	// RestoreRecording undoes a delete within the grace period.
	RestoreRecording(id string) (*Recording, error)
	// PurgeRecordings applies retention and purges what is due, now.
	PurgeRecordings() (*PurgeReport, error)
	// ScrubRecordings re-reads and checks recording id, or all if "".
	ScrubRecordings(id string) (*ScrubReport, error)
}

// openLife is the lifecycle for admin commands without a server: the
// database's policy, and the data directory's store unless serve keeps
// segments in S3.
func openLife(data string, db kv.DB, log auditChain) (*life, error) {
	if err := initLife(db, nil); err != nil {
		return nil, err
	}
	p, err := readPolicy(db)
	if err != nil {
		return nil, err
	}
	l := &life{db: db, audit: log, now: time.Now, log: slog.New(slog.DiscardHandler)}
	if p.FSStore {
		if l.store, err = store.NewFS(filepath.Join(data, StoreDir)); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (a *localAdmin) ListDeletedRecordings() ([]Recording, error) { return a.life.recordings(true) }
func (a *localAdmin) DeleteRecording(id string) (*Recording, error) {
	return a.life.remove(id, "admin")
}
func (a *localAdmin) RestoreRecording(id string) (*Recording, error) { return a.life.restore(id) }
func (a *localAdmin) PurgeRecordings() (*PurgeReport, error) {
	return a.life.pass(context.Background())
}
func (a *localAdmin) ScrubRecordings(id string) (*ScrubReport, error) {
	return a.life.scrub(context.Background(), id)
}

// recordingRoutes adds the lifecycle calls to the admin socket.
func (s *Server) recordingRoutes(mux *http.ServeMux, reply func(http.ResponseWriter, any, error)) {
	answer := func(w http.ResponseWriter, v any, err error) {
		switch {
		case errors.Is(err, ErrNoRecording):
			httpError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrRecordingState):
			httpError(w, http.StatusConflict, err.Error())
		default:
			reply(w, v, err)
		}
	}
	mux.HandleFunc("GET /recordings/deleted", func(w http.ResponseWriter, _ *http.Request) {
		v, err := s.life.recordings(true)
		answer(w, v, err)
	})
	mux.HandleFunc("POST /recordings/{id}/delete", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.life.remove(r.PathValue("id"), "admin")
		answer(w, v, err)
	})
	mux.HandleFunc("POST /recordings/{id}/restore", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.life.restore(r.PathValue("id"))
		answer(w, v, err)
	})
	mux.HandleFunc("POST /recordings/purge", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.life.pass(r.Context())
		answer(w, v, err)
	})
	mux.HandleFunc("POST /recordings/scrub", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.scrub(r.Context(), "")
		answer(w, v, err)
	})
	mux.HandleFunc("POST /recordings/{id}/scrub", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.scrub(r.Context(), r.PathValue("id"))
		answer(w, v, err)
	})
}

// scrub runs a scrub; a scrub of every recording sets the metrics.
func (s *Server) scrub(ctx context.Context, id string) (*ScrubReport, error) {
	rep, err := s.life.scrub(ctx, id)
	if err != nil {
		return nil, err
	}
	if id == "" {
		s.lastScrub.Store(rep)
	}
	if n := len(rep.Damaged); n > 0 {
		s.log.Error("scrub found damaged segments", "damaged", n, "segments", rep.Segments)
		for _, d := range rep.Damaged {
			if _, err := s.audit.Append(audit.Entry{Event: "recording.scrub", Identity: d.Device, Source: "local", Outcome: "damaged",
				Detail: fmt.Sprintf("recording %s segment %d (%s): %s", d.Recording, d.Sequence, d.Key, d.Problem)}); err != nil {
				s.log.Warn("audit recording.scrub", "err", err)
			}
		}
	}
	return rep, nil
}

// ScrubCollectors are the scrub's Prometheus series: when the last scrub
// of every recording ran and how many segments it found damaged.
func (s *Server) ScrubCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "uploadbox_receiver_scrub_last_run_timestamp_seconds",
			Help: "When the last scrub of every stored segment finished (Unix time; 0: none since the server started)."},
			func() float64 {
				if r := s.lastScrub.Load(); r != nil {
					return float64(r.Time.Unix())
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "uploadbox_receiver_scrub_damaged_segments",
			Help: "Stored segments the last scrub of every recording found damaged."},
			func() float64 {
				if r := s.lastScrub.Load(); r != nil {
					return float64(len(r.Damaged))
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "uploadbox_receiver_lifecycle_leader",
			Help: "1 on the receiver that runs the lifecycle jobs (retention, purge, scrub): always with the state in bbolt, the one holding the job's lock with the state in PostgreSQL."},
			func() float64 {
				if s.lifeLead == nil || s.lifeLead.Leading() {
					return 1
				}
				return 0
			}),
	}
}

// leadLife runs the lifecycle jobs (runLife) until ctx ends: here, or
// with the state in PostgreSQL while this receiver is their leader, so
// that the receivers on one database run them once between them.
func (s *Server) leadLife(ctx context.Context) {
	if s.lifeLead == nil {
		s.runLife(ctx)
		return
	}
	s.lifeLead.Run(ctx, s.runLife)
}

// runLife runs the lifecycle pass at start (or on becoming the leader) and hourly, and a scrub of
// every recording every cfg.ScrubEvery (0: never), until ctx ends.
func (s *Server) runLife(ctx context.Context) {
	pass := func() {
		rep, err := s.life.pass(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("recording retention and purge not applied", "err", err)
		} else if rep != nil && len(rep.Expired)+len(rep.Purged) > 0 {
			s.log.Info("recording lifecycle", "deleted_by_retention", len(rep.Expired), "purged", len(rep.Purged), "bytes", rep.Bytes)
		}
	}
	pass()
	hourly := time.NewTicker(time.Hour)
	defer hourly.Stop()
	var scrubC <-chan time.Time
	if s.cfg.ScrubEvery > 0 {
		t := time.NewTicker(s.cfg.ScrubEvery)
		defer t.Stop()
		scrubC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hourly.C:
			pass()
		case <-scrubC:
			if _, err := s.scrub(ctx, ""); err != nil && ctx.Err() == nil {
				s.log.Warn("scrub did not finish", "err", err)
			}
		}
	}
}

// socketAdmin: scrub and purge can take long, so their calls have no
// client timeout.
func (a *socketAdmin) long() *socketAdmin {
	c := *a.client
	c.Timeout = 0
	return &socketAdmin{client: &c, dir: a.dir}
}

// lifeCall calls the server about recording id ("": none).
func (a *socketAdmin) lifeCall(method, id, path string, out any) error {
	if id != "" {
		if err := checkRecordingID(id); err != nil {
			return err
		}
	}
	return a.do(method, path, nil, out, ErrNoRecording, ErrRecordingState)
}

func (a *socketAdmin) ListDeletedRecordings() ([]Recording, error) {
	var rs []Recording
	return rs, a.lifeCall("GET", "", "/recordings/deleted", &rs)
}

func (a *socketAdmin) DeleteRecording(id string) (*Recording, error) {
	var r Recording
	return &r, a.lifeCall("POST", id, "/recordings/"+id+"/delete", &r)
}

func (a *socketAdmin) RestoreRecording(id string) (*Recording, error) {
	var r Recording
	return &r, a.lifeCall("POST", id, "/recordings/"+id+"/restore", &r)
}

func (a *socketAdmin) PurgeRecordings() (*PurgeReport, error) {
	var r PurgeReport
	return &r, a.long().lifeCall("POST", "", "/recordings/purge", &r)
}

func (a *socketAdmin) ScrubRecordings(id string) (*ScrubReport, error) {
	var r ScrubReport
	path := "/recordings/scrub"
	if id != "" {
		path = "/recordings/" + id + "/scrub"
	}
	return &r, a.long().lifeCall("POST", id, path, &r)
}

// openLife checks the lifecycle settings, keeps them in the database for
// admin commands and prepares the lifecycle.
func (s *Server) openLife() error {
	c := &s.cfg
	if c.DeleteGrace == 0 {
		c.DeleteGrace = DefaultDeleteGrace
	}
	if c.DeleteGrace < 0 || c.Retention < 0 || c.ScrubEvery < 0 {
		return fmt.Errorf("serve: --delete-grace, --retention and --scrub-every cannot be negative")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	_, fs := s.store.(*store.FS)
	if err := initLife(s.db, &recordingPolicy{Grace: c.DeleteGrace, Retention: c.Retention, FSStore: fs && c.Store == nil}); err != nil {
		return err
	}
	s.life = &life{db: s.db, audit: s.audit, now: c.Now, store: s.store, log: s.log}
	return nil
}
