package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/uploader/tus"
)

// A simulated box records 10 s segments at 2.5 Mbit/s.
const (
	capSegmentPeriod = 10 * time.Second
	capSegmentBytes  = 2_500_000 / 8 * 10 // plaintext bytes of one segment
	capCommitGoal    = 2 * time.Second    // commit latency p99 that a step must stay under
)

// capacityOptions bound the capacity measurement.
type capacityOptions struct {
	budget   time.Duration // no step pair starts that would end after this
	start    int           // boxes in the first step; each next step doubles
	max      int           // no step with more boxes
	segments int           // segments each box sends per step
	clock    float64       // compression: a box sends a segment every 10 s / clock
}

func (o *capacityOptions) addFlags(f *flag.FlagSet) {
	f.DurationVar(&o.budget, "capacity-time", 5*time.Minute, "capacity: no step starts that would end after this (enrollment included)")
	f.IntVar(&o.start, "capacity-start", 20, "capacity: simulated boxes in the first step; each next step doubles them")
	f.IntVar(&o.max, "capacity-max", 2560, "capacity: no step with more boxes than this")
	f.IntVar(&o.segments, "capacity-segments", 2, "capacity: segments each box sends per step")
	f.Float64Var(&o.clock, "capacity-clock", 1, "capacity: clock compression; each box sends a segment every 10s/N (1: real time)")
}

// period is the time between two segments of one box.
func (o capacityOptions) period() time.Duration {
	return time.Duration(float64(capSegmentPeriod) / o.clock)
}

// capStep is what one step measured on one server.
type capStep struct {
	boxes    int
	commits  []time.Duration // POST /v1/commit to verified receipt (receiver), or tus create to last byte (tusd)
	e2e      []time.Duration // the segment's planned end of recording to its receipt stored (receiver only)
	late     time.Duration   // the latest a segment was sealed after its planned time
	bytes    int64
	cpu      time.Duration // the server process's CPU time during the step
	boxCPU   time.Duration // the simulated boxes' (this process's) CPU time during the step
	wall     time.Duration
	segments int
}

// simBox is one simulated box: its own enrolled state (device key and
// certificate), spool, recording and chain.
type simBox struct {
	name  string
	st    *uploader.State
	sp    *spool.Spool
	tus   *tus.Client // to the tusd-alone server
	rec   [16]byte
	seq   uint64
	prev  [crypto.CommitmentSize]byte
	dir   string // spool directory
	blobs int    // uploads made to the tusd-alone server
}

// capacityBench steps the number of simulated boxes up against one
// `uploadbox-receiver serve` and, interleaved, against a tusd-alone server
// (tusd's filestore handler, the receiver's TLS, no hooks, no commit),
// until the receiver's commit latency p99 passes 2 s or the time budget
// ends.
func capacityBench(bin string, o capacityOptions) error {
	if o.start < 1 || o.segments < 1 || o.clock <= 0 || o.max < o.start {
		return fmt.Errorf("capacity: -capacity-start %d, -capacity-max %d, -capacity-segments %d, -capacity-clock %g: give positive numbers with max ≥ start", o.start, o.max, o.segments, o.clock)
	}
	began := time.Now()
	dir, err := os.MkdirTemp("", "uploadbox-bench-capacity-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The boxes' spools and states on tmpfs: they stand for other machines'
	// disks, so that only the servers write to this one.
	boxRoot, err := os.MkdirTemp("/dev/shm", "uploadbox-bench-capacity-boxes-")
	if err != nil {
		return fmt.Errorf("need tmpfs at /dev/shm for the simulated boxes: %w", err)
	}
	defer os.RemoveAll(boxRoot)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	data := filepath.Join(dir, "receiver")
	recv, recvAddr, err := startServer(dir, "receiver", filepath.Join(bin, "uploadbox-receiver"), "serve", "--data", data, "--listen", "127.0.0.1:0",
		// Hundreds of boxes enroll from one address.
		"--auth-rate", "1000/s", "--auth-burst", "1000")
	if err != nil {
		return err
	}
	defer stopServer(recv)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tusdProc, tusdAddr, err := startServer(dir, "tusd", self, "-tusd-alone", data, "-tusd-uploads", filepath.Join(dir, "tusd"))
	if err != nil {
		return err
	}
	defer stopServer(tusdProc)
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		return err
	}
	defer admin.Close()

	plain := make([]byte, capSegmentBytes)
	rand.Read(plain)
	var boxes []*simBox
	defer func() {
		for _, b := range boxes {
			b.sp.Close()
		}
	}()
	enroll := func(n int) error {
		if n <= len(boxes) {
			return nil
		}
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		next := make(chan int)
		fresh := make([]*simBox, n-len(boxes))
		for range 4 {
			wg.Go(func() {
				for i := range next {
					b, err := enrollSimBox(ctx, admin, recvAddr, tusdAddr, boxRoot, len(boxes)+i)
					mu.Lock()
					fresh[i] = b
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		for i := range fresh {
			next <- i
		}
		close(next)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			for _, b := range fresh {
				if b != nil {
					b.sp.Close()
				}
			}
			return err
		}
		boxes = append(boxes, fresh...)
		return nil
	}
	blob, err := sealedBlob(plain)
	if err != nil {
		return err
	}

	p := o.period()
	// A step pair lasts about 2 × segments periods, plus the tail of the
	// last uploads and the enrollment of the new boxes.
	pairTime := func(n int) time.Duration {
		return 2*time.Duration(o.segments)*p + 2*p/time.Duration(max(o.segments, 2)) + time.Duration(max(n-len(boxes), 0))*20*time.Millisecond
	}
	var recvSteps, tusdSteps []capStep
	good, bad := 0, 0 // the most boxes whose commit p99 held, the fewest whose did not
	stopped := ""
	for {
		n, ok := nextBoxes(o.start, o.max, good, bad)
		if !ok {
			stopped = "-capacity-max reached"
			if bad > 0 {
				stopped = fmt.Sprintf("commit p99 passed 2 s at %d boxes", bad)
			}
			break
		}
		if time.Since(began)+pairTime(n) > o.budget {
			stopped = "time budget (-capacity-time) reached"
			break
		}
		if err := enroll(n); err != nil {
			return fmt.Errorf("enroll %d boxes: %w", n, err)
		}
		r, err := receiverStep(ctx, recv.Process.Pid, boxes[:n], plain, o)
		if err != nil {
			return fmt.Errorf("%d boxes against the receiver: %w", n, err)
		}
		t, err := tusdStep(ctx, tusdProc.Process.Pid, boxes[:n], blob, o)
		if err != nil {
			return fmt.Errorf("%d boxes against tusd alone: %w", n, err)
		}
		recvSteps, tusdSteps = append(recvSteps, r), append(tusdSteps, t)
		if percentile(r.commits, 0.99) > capCommitGoal {
			bad = n
		} else {
			good = n
		}
	}
	printCapacity(recvSteps, tusdSteps, o, int64(len(blob)), good, bad, stopped, time.Since(began))
	return nil
}

// nextBoxes is the number of boxes of the next step: from start, doubling
// while every step held (bad == 0: no step failed yet), then halving the
// gap between the most boxes that held (good) and the fewest that did not
// (bad) until it is at most a quarter of good. ok is false when no step
// is left (or the next would pass maxBoxes).
func nextBoxes(start, maxBoxes, good, bad int) (n int, ok bool) {
	if bad == 0 {
		n = start
		if good > 0 {
			n = 2 * good
		}
		return n, n <= maxBoxes
	}
	if bad-good <= max(good/4, 1) {
		return 0, false
	}
	return (good + bad) / 2, true
}

// startServer starts a server that prints "listening on ADDR" on stdout
// and returns it with that address; its stderr goes to dir/name.log.
func startServer(dir, name, path string, args ...string) (*exec.Cmd, string, error) {
	cmd := exec.Command(path, args...)
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			go io.Copy(io.Discard, stdout)
			return cmd, a, nil
		}
	}
	stopServer(cmd)
	log, _ := os.ReadFile(logPath)
	return nil, "", fmt.Errorf("%s did not start: %s", name, log)
}

func stopServer(cmd *exec.Cmd) {
	if cmd.Process != nil && cmd.ProcessState == nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// enrollSimBox adds a device on the receiver, enrolls it as a box does and
// opens its spool.
func enrollSimBox(ctx context.Context, admin receiver.Admin, recvAddr, tusdAddr, root string, i int) (*simBox, error) {
	b := &simBox{name: fmt.Sprintf("cap-%04d", i)}
	nd, err := admin.AddDevice(b.name)
	if err != nil {
		return nil, err
	}
	if b.st, err = uploader.Enroll(ctx, "https://"+recvAddr, nd.Token, nd.CAFingerprint, filepath.Join(root, b.name, "state")); err != nil {
		return nil, fmt.Errorf("enroll %s: %w", b.name, err)
	}
	b.dir = filepath.Join(root, b.name, "spool")
	if b.sp, err = spool.Open(b.dir, spool.Options{Device: b.st.Device.Public()}); err != nil {
		return nil, err
	}
	// The same client (TLS settings, device certificate, connection pool)
	// against tusd alone, which presents the receiver's certificate.
	b.tus = tus.NewClient(b.st.HTTPClient(), &url.URL{Scheme: "https", Host: tusdAddr, Path: "/v1/uploads/"}, tus.Options{})
	b.rec, err = crypto.NewRecordingID()
	return b, err
}

// sealedBlob is one sealed segment of plain, made with a throwaway key,
// for the tusd-alone server (which checks nothing).
func sealedBlob(plain []byte) ([]byte, error) {
	id, err := crypto.GenerateIdentity(crypto.SuiteXWing)
	if err != nil {
		return nil, err
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := crypto.NewWriter(&buf, []*crypto.Recipient{id.Recipient()}, dev, crypto.Params{Codec: "video/mp4"})
	if err != nil {
		return nil, err
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// nextName is the spool name of the box's next segment.
func (b *simBox) nextName() string { return fmt.Sprintf("%x-%06d.ubx", b.rec, b.seq) }

// seal writes the box's next segment (nextName) into its spool and marks
// it sealed, as the recorder does at the end of a segment.
func (b *simBox) seal(plain []byte) error {
	name := b.nextName()
	f, err := os.Create(filepath.Join(b.dir, name))
	if err != nil {
		return err
	}
	w, err := crypto.NewWriter(f, b.st.Recipients, b.st.Device, crypto.Params{RecordingID: b.rec, Sequence: b.seq, Prev: b.prev, Start: time.Now(), Codec: "video/mp4"})
	if err != nil {
		f.Close()
		return err
	}
	w.Write(plain)
	if err := errors.Join(w.Close(), f.Close()); err != nil {
		return err
	}
	if err := b.sp.MarkSealed(name); err != nil {
		return err
	}
	b.prev = w.Commitment()
	b.seq++
	return nil
}

// schedule runs each box's part of a step: box i acts at
// t0 + i·period/n + k·period for k < segments, so that the n boxes spread
// their segments evenly over each period.
func schedule(o capacityOptions, n int, t0 time.Time, i, k int) time.Time {
	p := o.period()
	return t0.Add(time.Duration(i)*p/time.Duration(n) + time.Duration(k)*p)
}

// stepMeter collects one step's samples from every box.
type stepMeter struct {
	mu sync.Mutex
	s  capStep
}

func (m *stepMeter) add(f func(s *capStep)) {
	m.mu.Lock()
	f(&m.s)
	m.mu.Unlock()
}

// run starts each(i, box, t0) for every box on its own goroutine, t0
// being the step's start, and takes the server process pid's CPU time and
// the wall time around them.
func (m *stepMeter) run(pid int, boxes []*simBox, each func(i int, b *simBox, t0 time.Time) error) (capStep, error) {
	m.s.boxes = len(boxes)
	cpu0, err := processCPU(pid)
	if err != nil {
		return capStep{}, err
	}
	self0, err := processCPU(os.Getpid())
	if err != nil {
		return capStep{}, err
	}
	start := time.Now()
	t0 := start.Add(100 * time.Millisecond)
	errs := make([]error, len(boxes))
	var wg sync.WaitGroup
	for i, b := range boxes {
		wg.Go(func() { errs[i] = each(i, b, t0) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return capStep{}, err
	}
	m.s.wall = time.Since(start)
	cpu1, err := processCPU(pid)
	if err != nil {
		return capStep{}, err
	}
	self1, err := processCPU(os.Getpid())
	if err != nil {
		return capStep{}, err
	}
	m.s.cpu, m.s.boxCPU = cpu1-cpu0, self1-self0
	return m.s, nil
}

// receiverStep: every box seals its segments on schedule (a recorder) and
// drains its spool with the real uploader (tus, commit, receipt checked,
// wipe) as soon as one is sealed, on its own goroutines.
func receiverStep(ctx context.Context, pid int, boxes []*simBox, plain []byte, o capacityOptions) (capStep, error) {
	m := &stepMeter{}
	return m.run(pid, boxes, func(i int, b *simBox, t0 time.Time) error {
		return b.receiverRun(ctx, m, plain, o, len(boxes), t0, i)
	})
}

func (b *simBox) receiverRun(ctx context.Context, m *stepMeter, plain []byte, o capacityOptions, n int, t0 time.Time, i int) error {
	var mu sync.Mutex
	due := map[string]time.Time{} // when each segment's recording ended
	up := uploader.New(b.st, b.sp, nil, uploader.WithCommitObserver(func(d time.Duration) {
		m.add(func(s *capStep) { s.commits = append(s.commits, d) })
	}))
	report := func(r uploader.Result) {
		mu.Lock()
		at := due[r.Name]
		mu.Unlock()
		m.add(func(s *capStep) {
			if r.Quarantined == nil {
				s.e2e = append(s.e2e, time.Since(at))
				s.bytes += r.Size
				s.segments++
			}
		})
	}
	kick := make(chan struct{}, 1)
	sealed := make(chan error, 1)
	go func() {
		for k := range o.segments {
			at := schedule(o, n, t0, i, k)
			time.Sleep(time.Until(at))
			late := time.Since(at)
			m.add(func(s *capStep) { s.late = max(s.late, late) })
			mu.Lock()
			due[b.nextName()] = at
			mu.Unlock()
			if err := b.seal(plain); err != nil {
				sealed <- fmt.Errorf("%s: seal: %w", b.name, err)
				return
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		sealed <- nil
	}()
	for done := false; ; {
		var err error
		select {
		case <-kick:
		case err = <-sealed:
			done = true
		}
		if err != nil {
			return err
		}
		sum, err := up.Drain(ctx, report, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		if sum.Quarantined > 0 {
			return fmt.Errorf("%s: the receiver refused %d segments for good", b.name, sum.Quarantined)
		}
		if done {
			return nil
		}
	}
}

// tusdStep: every box uploads a sealed segment's bytes on the same
// schedule to tusd alone, with the same tus client, and no commit.
func tusdStep(ctx context.Context, pid int, boxes []*simBox, blob []byte, o capacityOptions) (capStep, error) {
	m := &stepMeter{}
	return m.run(pid, boxes, func(i int, b *simBox, t0 time.Time) error {
		for k := range o.segments {
			at := schedule(o, len(boxes), t0, i, k)
			time.Sleep(time.Until(at))
			late := time.Since(at)
			start := time.Now()
			b.blobs++
			loc, err := b.tus.Create(ctx, int64(len(blob)), map[string]string{"filename": fmt.Sprintf("%s-%06d.ubx", b.name, b.blobs)})
			if err == nil {
				err = b.tus.Upload(ctx, loc, bytes.NewReader(blob), int64(len(blob)), nil)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			d := time.Since(start)
			m.add(func(s *capStep) {
				s.late = max(s.late, late)
				s.commits = append(s.commits, d)
				s.bytes += int64(len(blob))
				s.segments++
			})
		}
		return nil
	})
}

func printCapacity(recv, base []capStep, o capacityOptions, segBytes int64, good, bad int, stopped string, took time.Duration) {
	p := o.period()
	fmt.Printf("capacity: simulated boxes against one `uploadbox-receiver serve` (bbolt, fs store, on this machine's disk), %d segment(s) per box per step, interleaved with tusd alone (filestore handler, the receiver's TLS and client certificates, no hooks, no commit) taking the same bytes on the same schedule:\n", o.segments)
	fmt.Printf("  each box: its own enrolled device, real sealed segments of 10 s at 2.5 Mbit/s (%d bytes sealed), its own spool (tmpfs), uploader.Drain (tus, POST /v1/commit, receipt checked, wipe)\n", segBytes)
	if o.clock == 1 {
		fmt.Printf("  clock: real time, one segment per box every %s, the boxes' segments spread evenly over each period\n", p)
	} else {
		fmt.Printf("  clock: compressed ×%g, one segment per box every %s: N boxes send the bytes of %g·N real boxes over N connections\n", o.clock, p, o.clock)
	}
	fmt.Printf("  %6s  %6s  %9s  %9s  %9s  %9s  %11s  %11s  %6s  %10s  %s\n", "boxes", "MB/s", "commit50", "commit99", "e2e99", "tus99", "recv CPU/GB", "tusd CPU/GB", "ratio", "cores r/b", "late")
	var rc, tc time.Duration
	var rb, tb int64
	// In the order of the number of boxes, not of the run.
	order := make([]int, len(recv))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return recv[a].boxes - recv[b].boxes })
	for _, i := range order {
		r, t := recv[i], base[i]
		c99 := percentile(r.commits, 0.99)
		rc, tc, rb, tb = rc+r.cpu, tc+t.cpu, rb+r.bytes, tb+t.bytes
		rg, tg := cpuPerGB(r.cpu, r.bytes), cpuPerGB(t.cpu, t.bytes)
		ratio := 0.0
		if rg > 0 {
			ratio = tg / rg
		}
		fmt.Printf("  %6d  %6.1f  %7.0fms  %7.0fms  %7.0fms  %7.0fms  %9.1f s  %9.1f s  %6.2f  %4.2f/%4.2f  %s\n", r.boxes,
			float64(r.boxes)*float64(segBytes)/p.Seconds()/1e6,
			ms(percentile(r.commits, 0.5)), ms(c99), ms(percentile(r.e2e, 0.99)), ms(percentile(t.commits, 0.99)),
			rg, tg, ratio, r.cpu.Seconds()/r.wall.Seconds(), r.boxCPU.Seconds()/r.wall.Seconds(), max(r.late, t.late).Round(time.Millisecond))
	}
	fmt.Println("  (MB/s: the load the boxes' schedule offers; commit: POST /v1/commit to verified receipt; e2e: planned end of the segment's recording to receipt (sealing, waiting, upload, commit); tus99: tusd alone, creation to last byte;")
	fmt.Println("   cores r/b: the receiver's and the simulated boxes' CPU over the receiver step, in cores, on this machine's shared cores; late: the latest a segment started after its planned time)")
	switch {
	case len(recv) == 0:
		fmt.Printf("  no step ran within %s: give -capacity-time more\n", o.budget)
	case good == 0:
		fmt.Printf("  largest N with commit p99 ≤ 2 s: none (stopped: %s; try -capacity-start lower)\n", stopped)
	case bad == 0:
		fmt.Printf("  largest N with commit p99 ≤ 2 s: ≥ %d boxes (stopped: %s, before p99 passed 2 s; -capacity-time or -capacity-clock go further)\n", good, stopped)
	default:
		fmt.Printf("  largest N with commit p99 ≤ 2 s: %d boxes (stopped: %s)\n", good, stopped)
	}
	if rb > 0 && tb > 0 {
		rg, tg := cpuPerGB(rc, rb), cpuPerGB(tc, tb)
		fmt.Printf("  CPU per GB over all steps: receiver %.1f s, tusd alone %.1f s; ratio tusd/receiver %.2f (goal >= 0.7)\n", rg, tg, tg/rg)
	}
	fmt.Printf("  the upload goodput against curl is the upload comparison's (-only upload); this step took %s\n", took.Round(time.Second))
}

// tusdAlone serves tusd's handler with its filestore in uploads and no
// hooks, with the TLS configuration, CA and server certificate of the
// receiver data directory data, until it is killed. It prints
// "listening on ADDR".
func tusdAlone(data, uploads string) error {
	ca, cert, _, err := pki.LoadOrCreate(data, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(uploads, 0o700); err != nil {
		return err
	}
	composer := tusd.NewStoreComposer()
	filestore.New(uploads).UseIn(composer)
	composer.UseLocker(filelocker.New(uploads))
	h, err := tusd.NewHandler(tusd.Config{
		StoreComposer:        composer,
		BasePath:             "/v1/uploads/",
		MaxSize:              receiver.MaxSegmentSize,
		DisableDownload:      true,
		DisableConcatenation: true,
		// The receiver discards tusd's log too.
		Logger: expslog.New(expslog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	cfg := pki.ServerTLS(ca, cert, nil)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: http.StripPrefix("/v1/uploads/", h), ReadHeaderTimeout: 10 * time.Second, TLSConfig: cfg}
	return srv.ServeTLS(ln, "", "")
}
