// Package diag is the technician's diagnosis of a box (`uploadbox diag`):
// a fixed list of checks, each ending pass, warn, fail or skip with a
// one-line summary, a one-line remedy and a few numbers.
//
// Run loads the daemon's config and runs every check (or one, by name) at
// once, each bounded in time, so a run ends within about 15 s whatever is
// broken. Checks only read and measure: the camera and microphone checks
// count frames and compute levels without writing or printing any frame
// or sample, and the spool is scanned by file name and size, never
// through the daemon's database. Every run is recorded in the audit log.
//
// The report's JSON form is the stable, documented schema of docs/diag.md
// (Version 1).
package diag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/uploader"
)

// SchemaVersion is the version of the JSON report; it changes only when a
// field is removed or changes meaning.
const SchemaVersion = 1

// Statuses of a check and of a whole report.
const (
	Pass = "pass"
	Warn = "warn"
	Fail = "fail"
	Skip = "skip" // not applicable or not checkable; counts as pass
)

// Exit codes of `uploadbox diag`.
const (
	ExitPass = 0 // every check passed or was skipped
	ExitWarn = 1 // at least one warning, no failure
	ExitFail = 2 // at least one failure
)

// Names are the checks in the order they run and are reported.
var Names = []string{"config", "enrollment", "certificate", "receiver", "clock",
	"camera", "microphone", "button", "disk", "spool", "daemon", "power"}

// Report is the result of one run.
type Report struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	// Status is the worst status of the checks: pass, warn or fail.
	Status string   `json:"status"`
	Checks []Result `json:"checks"`
	// Notes are lines of information that no check judges, such as the
	// live view's DTLS fingerprint; never null.
	Notes []string `json:"notes"`
}

// Result is the outcome of one check.
type Result struct {
	Name string `json:"name"`
	// Status is pass, warn, fail or skip.
	Status string `json:"status"`
	// Summary is one line: what was measured, or what is wrong.
	Summary string `json:"summary"`
	// Remedy is one line saying what to do; empty on pass and skip.
	Remedy string `json:"remedy"`
	// Metrics are the numbers behind the summary, keyed as documented in
	// docs/diag.md (fps_measured, dbfs_rms, free_bytes, …).
	Metrics map[string]any `json:"metrics"`
}

// ExitCode is ExitPass, ExitWarn or ExitFail from the report's status.
func (r Report) ExitCode() int {
	switch r.Status {
	case Fail:
		return ExitFail
	case Warn:
		return ExitWarn
	}
	return ExitPass
}

// Failed lists the names of the checks with status s.
func (r Report) Failed(s string) []string {
	var names []string
	for _, c := range r.Checks {
		if c.Status == s {
			names = append(names, c.Name)
		}
	}
	return names
}

// DaemonInfo is what the running daemon says about itself.
type DaemonInfo struct {
	Running bool
	PID     int
	Uptime  time.Duration
	// Session is true while a recording session runs (the camera is then
	// the daemon's).
	Session bool
	// Control is the daemon's control connection to the receiver; nil if
	// it does not run (not enrolled, or link.enabled off).
	Control *ControlInfo
	// LiveDTLS is the live view's DTLS certificate fingerprint as SDP
	// carries it ("sha-256 AB:…"); empty if the daemon has none.
	LiveDTLS string
}

// ControlInfo is the state of the daemon's control connection.
type ControlInfo struct {
	Connected bool
	// Since is when it opened, or when it was lost.
	Since     time.Time
	LastError string
	Cause     string // one of Classify's causes
	NextRetry time.Time
}

// QueueInfo is the spool backlog: segments not yet wiped.
type QueueInfo struct {
	Count  int
	Bytes  int64
	Oldest time.Time // zero when empty
	// Quarantined are the segments the receiver refused for good (only
	// the daemon knows them; a scan of the directory cannot tell).
	Quarantined []Quarantined
}

// Quarantined is one segment the receiver refused for good.
type Quarantined struct {
	ID      string
	Status  int
	Reason  string // the receiver's reason; empty if it sent none
	Message string
}

// DiskSpace is what statfs reports for the spool's filesystem.
type DiskSpace struct {
	Free  uint64 // bytes available to the daemon
	Total uint64
}

// Options configure a run. Only ConfigPath is needed; the hooks connect
// diag to the daemon and the outside world, and tests replace them.
type Options struct {
	// ConfigPath is the daemon's config file.
	ConfigPath string
	// Env holds environment overrides for the config; nil: the process
	// environment.
	Env []string
	// Check runs only the named check (one of Names); empty runs all.
	// When the config does not load, its failure is reported too.
	Check string

	// Daemon asks the running daemon about itself; an error means it is
	// not reachable. Nil: the daemon is treated as not reachable and
	// systemd is asked whether it runs.
	Daemon func(ctx context.Context) (DaemonInfo, error)
	// Queue asks the daemon for the spool backlog. Nil or an error: the
	// spool directory is scanned for segment files instead.
	Queue func(ctx context.Context) (QueueInfo, error)
	// Audit records the run. Nil: append to the config's audit.path.
	// An error is reported on Stderr and does not change the result.
	Audit func(ctx context.Context, e audit.Entry) error
	// Stderr receives warnings that are not part of the report (nil:
	// os.Stderr).
	Stderr io.Writer

	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Statfs measures the filesystem holding path (nil: statfs(2)).
	Statfs func(path string) (DiskSpace, error)
	// Command runs a system tool (systemctl, timedatectl, vcgencmd) and
	// returns its trimmed output; an error wrapping exec.ErrNotFound means
	// the tool is absent. Nil: run it from PATH.
	Command func(ctx context.Context, name string, args ...string) (string, error)
	// ButtonLine reads the consent button's line (nil: the GPIO
	// character device).
	ButtonLine func(chip string, line int, activeLow bool) (ButtonLine, error)

	// StageTimeout bounds each network stage and each tool (default 3 s).
	StageTimeout time.Duration
	// VideoTime and AudioTime are how long the camera and microphone are
	// measured (default 2 s and 1 s).
	VideoTime, AudioTime time.Duration
}

// checkTimeout bounds a whole check: a check that does not end in time
// (a driver stuck in the kernel) is reported as failed.
const checkTimeout = 20 * time.Second

func (o Options) withDefaults() Options {
	if o.ConfigPath == "" {
		o.ConfigPath = config.DefaultPath
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Statfs == nil {
		o.Statfs = statfs
	}
	if o.Command == nil {
		o.Command = runCommand
	}
	if o.ButtonLine == nil {
		o.ButtonLine = probeButton
	}
	if o.StageTimeout <= 0 {
		o.StageTimeout = 3 * time.Second
	}
	if o.VideoTime <= 0 {
		o.VideoTime = 2 * time.Second
	}
	if o.AudioTime <= 0 {
		o.AudioTime = time.Second
	}
	return o
}

// env is what the checks of one run share; each part is computed once,
// by whichever check asks first.
type env struct {
	ctx context.Context
	o   Options

	cfg    *config.Config
	cfgErr error

	stateOnce sync.Once
	state     *uploader.State
	stateErr  error

	probeOnce sync.Once
	probe     *probe

	daemonOnce sync.Once
	daemon     DaemonInfo
	daemonErr  error

	queueOnce   sync.Once
	queue       QueueInfo
	queueSource string // "daemon" or "scan"
	queueErr    error
}

type checkFunc func(*env) Result

var checks = map[string]checkFunc{
	"config":      checkConfig,
	"enrollment":  checkEnrollment,
	"certificate": checkCertificate,
	"receiver":    checkReceiver,
	"clock":       checkClock,
	"camera":      checkCamera,
	"microphone":  checkMicrophone,
	"button":      checkButton,
	"disk":        checkDisk,
	"spool":       checkSpool,
	"daemon":      checkDaemon,
	"power":       checkPower,
}

// needsConfig are the checks that cannot run without a config.
var needsConfig = map[string]bool{"enrollment": true, "certificate": true, "receiver": true,
	"clock": true, "camera": true, "microphone": true, "button": true, "disk": true, "spool": true}

// Run runs the checks and records the run in the audit log. It always
// returns a complete report: whatever goes wrong is a check's failure.
func Run(ctx context.Context, o Options) Report {
	o = o.withDefaults()
	host, _ := os.Hostname()
	rep := Report{Version: SchemaVersion, Time: o.Now().UTC().Truncate(time.Second), Host: host}
	e := &env{ctx: ctx, o: o}
	e.cfg, e.cfgErr = config.Load(o.ConfigPath, o.Env)

	var names []string
	switch {
	case o.Check == "":
		names = Names
	case !slices.Contains(Names, o.Check):
		rep.Checks = []Result{{Name: o.Check, Status: Fail, Metrics: map[string]any{},
			Summary: fmt.Sprintf("%q is not a check", o.Check),
			Remedy:  "use one of " + strings.Join(Names, ", ")}}
	case e.cfgErr != nil && o.Check != "config":
		names = []string{"config", o.Check}
	default:
		names = []string{o.Check}
	}

	results := make([]Result, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		done := make(chan Result, 1)
		go func() { done <- e.run(name) }()
		wg.Go(func() {
			timer := time.NewTimer(checkTimeout)
			defer timer.Stop()
			select {
			case results[i] = <-done:
			case <-timer.C:
				results[i] = Result{Name: name, Status: Fail, Metrics: map[string]any{},
					Summary: fmt.Sprintf("did not finish within %v", checkTimeout),
					Remedy:  "a device or tool hangs: see the kernel log (dmesg) and run uploadbox diag --check " + name + " again"}
			}
		})
	}
	wg.Wait()
	rep.Checks = append(rep.Checks, results...)
	rep.Status = worst(rep.Checks)
	rep.Notes = notes(rep.Checks)
	if err := e.record(rep); err != nil {
		fmt.Fprintf(o.Stderr, "uploadbox diag: warning: this run is not in the audit log: %v\n", err)
	}
	return rep
}

// worst is the status of a report: fail if a check failed, else warn if
// one warned, else pass (a skip counts as a pass).
func worst(checks []Result) string {
	status := Pass
	for _, c := range checks {
		switch {
		case c.Status == Fail:
			return Fail
		case c.Status == Warn:
			status = Warn
		}
	}
	return status
}

// run runs one check, standing in a skip when the config it needs did not
// load.
func (e *env) run(name string) Result {
	var r Result
	if needsConfig[name] && e.cfgErr != nil {
		r = Result{Status: Skip, Summary: "not checked: the config did not load (see the config check)"}
	} else {
		r = checks[name](e)
	}
	r.Name = name
	if r.Metrics == nil {
		r.Metrics = map[string]any{}
	}
	if r.Status == Pass || r.Status == Skip {
		r.Remedy = ""
	}
	return r
}

// ErrAuditDirect, returned by an Options.Audit hook, makes diag append to
// the config's audit log itself (the daemon that owns it is not running).
var ErrAuditDirect = errors.New("append to the audit log directly")

// record writes the run to the audit log.
func (e *env) record(rep Report) error {
	var detail []string
	for _, c := range rep.Checks {
		detail = append(detail, c.Name+"="+c.Status)
	}
	ident := "uid " + fmt.Sprint(os.Getuid())
	if u, err := user.Current(); err == nil {
		ident = u.Username
	}
	entry := audit.Entry{Time: rep.Time, Event: "diag", Identity: ident, Source: "local",
		Outcome: rep.Status, Detail: strings.Join(detail, " ")}
	if e.o.Audit != nil {
		if err := e.o.Audit(e.ctx, entry); !errors.Is(err, ErrAuditDirect) {
			return err
		}
	}
	if e.cfgErr != nil {
		return errors.New("the config did not load, so the audit log's path is unknown")
	}
	l, err := audit.Open(e.cfg.Audit.Path)
	if err != nil {
		return err
	}
	_, err = l.Append(entry)
	return err
}

// stageCtx is a context for one bounded step.
func (e *env) stageCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.o.StageTimeout)
}

// command runs a tool with the stage timeout.
func (e *env) command(name string, args ...string) (string, error) {
	ctx, cancel := e.stageCtx()
	defer cancel()
	return e.o.Command(ctx, name, args...)
}

func runCommand(ctx context.Context, name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func statfs(path string) (DiskSpace, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskSpace{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return DiskSpace{Free: st.Bavail * uint64(st.Bsize), Total: st.Blocks * uint64(st.Bsize)}, nil
}

// stateOf loads the enrolled state once.
func (e *env) stateOf() (*uploader.State, error) {
	e.stateOnce.Do(func() { e.state, e.stateErr = uploader.LoadState(e.cfg.StateDir) })
	return e.state, e.stateErr
}

// daemonInfo asks the daemon once.
func (e *env) daemonInfo() (DaemonInfo, error) {
	e.daemonOnce.Do(func() {
		if e.o.Daemon == nil {
			e.daemonErr = errors.New("this build cannot query the daemon")
			return
		}
		ctx, cancel := e.stageCtx()
		defer cancel()
		e.daemon, e.daemonErr = e.o.Daemon(ctx)
	})
	return e.daemon, e.daemonErr
}

// notes are the report's information lines: the live view's DTLS
// fingerprint the daemon check got, for a technician to compare with the
// a=fingerprint line of the SDP answer a coach's browser received
// (docs/receiver.md).
func notes(checks []Result) []string {
	notes := []string{}
	for _, c := range checks {
		if fp, ok := c.Metrics["live_dtls_fingerprint"].(string); ok && c.Name == "daemon" {
			notes = append(notes, "live view DTLS fingerprint "+fp)
		}
	}
	return notes
}
