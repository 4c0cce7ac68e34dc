// Package agent is the box's daemon (`uploadbox run`): it records only
// inside a session started on purpose, seals every segment into the spool,
// uploads in the background, wipes what the receiver confirmed, and answers
// the CLI on a control socket. Components run in one errgroup; SIGTERM seals
// the current segment, parks the upload and returns within 10 s; SIGHUP
// reloads the config (a bad file keeps the last good one).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/agent/indicator"
	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/agent/live"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/wire"
)

// StopTimeout is how long a stop (SIGTERM, session stop) may take.
const StopTimeout = 10 * time.Second

// Options are what `uploadbox run` passes besides the config.
type Options struct {
	// ConfigPath is re-read on SIGHUP.
	ConfigPath string
	Logger     *slog.Logger
	// LogLevel, if set, follows log.level on reload.
	LogLevel *slog.LevelVar
}

// Agent is a running daemon.
type Agent struct {
	opts  Options
	log   *slog.Logger
	audit *audit.Log
	// authFails audits refused viewer tokens, coalesced per source.
	authFails *audit.Failures
	spool     *spool.Spool
	m         *metrics
	ctl       *control.Server

	ledger  *consent.Ledger
	ind     *indicator.Indicator
	viewers atomic.Int64 // live viewers connected

	started time.Time

	mu      sync.Mutex
	cfg     *config.Config
	state   *uploader.State // nil until the box is enrolled
	sess    *session        // the running session, if any
	last    *SessionStatus  // the last session that ended
	reloads int
	alert   string // why recording stopped on its own (spool full, disk error), until the next start
	// unsettled are segments a failed session left in state recording
	// that the spool could not classify yet (settle retries them).
	unsettled []string
	upAlert   string // the receiver refuses this box's enrollment (uploads wait)
	kick      chan struct{}
	uploadOK  time.Time
	upErr     string
	// link is the control connection to the receiver, once it runs.
	link *link.Client
	// linkUp is signalled when the control connection opens
	// (consentstate.go).
	linkUp chan struct{}
	// reportUp (a new control connection) and reportKick (something to
	// report may have changed) wake the box report (report.go); diag is
	// the last diag run it reports.
	reportUp, reportKick chan struct{}
	diag                 *wire.DiagSummary
	// lastCommit is when the receiver last committed a segment of this
	// box (its receipt stored), for the box report.
	lastCommit time.Time
	// liveHandler is the live view's handler while it runs (relay.go).
	liveHandler http.Handler
	// checkpoint is the audit checkpoint waiting to be sent (checkpoint.go).
	checkpoint *audit.Checkpoint
	// dtls is the live view's DTLS identity (livedtls.go); dtlsErr why
	// there is none.
	dtls    *live.Identity
	dtlsErr error
}

// New opens what the daemon owns (audit log, spool, control socket) with
// cfg. Nothing runs until Run.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{cfg.Spool.Dir, cfg.StateDir, filepath.Dir(cfg.Audit.Path)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	a := &Agent{opts: opts, log: log, cfg: cfg, started: time.Now(), kick: make(chan struct{}, 1), linkUp: make(chan struct{}, 1),
		reportUp: make(chan struct{}, 1), reportKick: make(chan struct{}, 1)}
	var err error
	if a.audit, err = audit.Open(cfg.Audit.Path); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	a.authFails = audit.NewFailures(a.audit, time.Minute)
	a.loadDiag(cfg.Audit.Path)
	if n, err := a.audit.Prune(cfg.Audit.Retention.D()); err != nil {
		log.Warn("audit retention not applied", "err", err)
	} else if n > 0 {
		log.Info("audit entries past retention removed", "count", n)
	}
	unusable := a.checkStateFiles(cfg.StateDir)
	if st, err := uploader.LoadState(cfg.StateDir); err == nil {
		a.state = st
	} else if !unusable {
		log.Warn("box not enrolled yet: sessions and uploads wait for `uploadbox enroll`", "state", cfg.StateDir, "err", err)
	}
	sopts := spool.Options{MaxBytes: int64(cfg.Spool.MaxSize), MinFree: int64(cfg.Spool.MinFree), Logger: log}
	if a.state != nil {
		sopts.Device = a.state.Device.Public()
	}
	if a.spool, err = spool.Open(cfg.Spool.Dir, sopts); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	a.m = newMetrics(a)
	a.loadDTLS(cfg)
	if err := a.openConsent(cfg); err != nil {
		a.spool.Close()
		return nil, err
	}
	if a.ctl, err = control.Listen(cfg.SocketPath(), cfg.Control.Group, log); err != nil {
		a.spool.Close()
		a.ledger.Close()
		return nil, err
	}
	return a, nil
}

// Config returns the config in use.
func (a *Agent) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// enrolled returns the enrolled state, loading it if enrollment happened
// while the daemon ran.
func (a *Agent) enrolled() (*uploader.State, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state != nil {
		return a.state, nil
	}
	st, err := uploader.LoadState(a.cfg.StateDir)
	if err != nil {
		if why := stateProblems(a.cfg.StateDir); why != "" && errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("the box's state cannot be used: %s", why)
		}
		return nil, fmt.Errorf("box not enrolled (%v): run `uploadbox enroll --state %s` first", err, a.cfg.StateDir)
	}
	a.state = st
	return st, nil
}

// Run runs every component until ctx ends or SIGTERM/SIGINT arrives, then
// stops them in order: the session seals its current segment, the upload
// parks, the sockets close.
func (a *Agent) Run(ctx context.Context) error {
	defer a.spool.Close()
	defer a.ledger.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// A run that did not end cleanly is a fact in the audit log, before
	// this run's start; the marker says whether this one ends cleanly.
	a.recordUncleanStop()
	defer a.clearMarker()
	for _, d := range a.spool.Reconciled() {
		a.auditSegment(d)
	}
	a.auditEvent("daemon.start", "", "ok", fmt.Sprintf("pid=%d", os.Getpid()))
	a.closeCrashed()
	// Checkpoints outlive the group: the last one covers daemon.stop.
	cpCtx, cpStop := context.WithCancel(context.WithoutCancel(ctx))
	cpDone := make(chan struct{})
	go func() { defer close(cpDone); a.checkpointLoop(cpCtx) }()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.ctl.Serve(gctx, a.handle) })
	g.Go(func() error { return a.m.serve(gctx, a.Config().Metrics.Listen) })
	g.Go(func() error { return a.uploadLoop(gctx) })
	g.Go(func() error { return a.linkLoop(gctx) })
	g.Go(func() error { return a.renewLoop(gctx) })
	g.Go(func() error { return a.consentStateLoop(gctx) })
	g.Go(func() error { return a.reportLoop(gctx) })
	g.Go(func() error { return a.watchdog(gctx) })
	g.Go(func() error { return a.ledger.Run(gctx) })
	g.Go(func() error { return a.ind.Run(gctx) })
	g.Go(func() error { return a.serveLive(gctx) })
	g.Go(func() error { return a.runButton(gctx) })
	g.Go(func() error {
		// Flushes the counted failures every window and at shutdown; an
		// audit log that cannot be written must not stop the daemon.
		if err := a.authFails.Run(gctx); err != nil {
			a.log.Error("audit of failed live view logins", "err", err)
		}
		return nil
	})
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				a.reload()
			}
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		// The session is stopped before the group returns: its last
		// segment is sealed and its upload can be parked.
		if err := a.stopSession(StopDaemonStopping, consent.ByDaemon); err != nil && !errors.Is(err, errNoSession) {
			a.log.Warn("session stop", "err", err)
		}
		return nil
	})
	notify("READY=1\nSTATUS=idle: no session")
	a.log.Info("uploadbox daemon ready", "control", a.ctl.Path(), "spool", a.Config().Spool.Dir)
	err := g.Wait()
	notify("STOPPING=1")
	a.auditEvent("daemon.stop", "", "ok", "")
	cpStop()
	<-cpDone
	a.flushCheckpoint()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// reload re-reads the config file. A bad file keeps the last good config
// and says why; settings that need a restart say so.
func (a *Agent) reload() {
	notify("RELOADING=1")
	defer notify("READY=1")
	nc, err := config.Load(a.opts.ConfigPath, nil)
	if err != nil {
		a.m.reloadFailures.Inc()
		a.log.Error("config reload failed; keeping the last good config", "err", err)
		a.auditEvent("config.reload", "", "failed", err.Error())
		return
	}
	a.mu.Lock()
	old := a.cfg
	a.cfg = nc
	a.reloads++
	a.mu.Unlock()
	for key, changed := range map[string]bool{
		"spool.dir": old.Spool.Dir != nc.Spool.Dir, "state_dir": old.StateDir != nc.StateDir,
		"control.socket": old.SocketPath() != nc.SocketPath(), "metrics.listen": old.Metrics.Listen != nc.Metrics.Listen,
		"audit.path": old.Audit.Path != nc.Audit.Path, "audit.checkpoint_every": old.Audit.CheckpointEvery != nc.Audit.CheckpointEvery,
		"live": !reflect.DeepEqual(old.Live, nc.Live), "link": !reflect.DeepEqual(old.Link, nc.Link),
		"consent.decline_cooldown": old.Consent.DeclineCooldown != nc.Consent.DeclineCooldown,
		"consent.button":           old.Consent.Button != nc.Consent.Button,
	} {
		if changed {
			a.log.Warn("config key changed on reload takes effect after a restart", "key", key)
		}
	}
	a.spool.SetLimits(int64(nc.Spool.MaxSize), int64(nc.Spool.MinFree))
	if a.opts.LogLevel != nil {
		a.opts.LogLevel.Set(LogLevel(nc.Log.Level))
	}
	a.log.Info("config reloaded; capture settings apply from the next session", "path", a.opts.ConfigPath)
	a.auditEvent("config.reload", "", "ok", "")
}

// LogLevel maps log.level to a slog level.
func LogLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// auditEvent appends what the daemon did; by is who asked for it.
func (a *Agent) auditEvent(event, by, outcome, detail string) {
	if _, err := a.audit.Append(audit.Entry{Event: event, Source: "local", By: by, Outcome: outcome, Detail: detail}); err != nil {
		a.log.Error("audit log append failed", "event", event, "err", err)
	}
}

// kickUpload wakes the upload loop (a segment was sealed).
func (a *Agent) kickUpload() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}
