package receiver

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/receiver/internal/join"
)

// Errors that make Export refuse a set of segments. Each is wrapped with
// the sequence numbers and files involved.
var (
	// ErrMixedRecordings: the segments are not all from one device and
	// recording.
	ErrMixedRecordings = errors.New("segments are not from one recording")
	// ErrMissingSegments: sequence numbers are missing (a gap, or no
	// segment 0).
	ErrMissingSegments = errors.New("segments are missing")
	// ErrConflictingSegments: two different segments claim one sequence
	// number (a fork or a replay).
	ErrConflictingSegments = errors.New("two different segments have the same sequence number")
	// ErrBrokenChain: a segment does not link to the one before it, or one
	// follows the segment marked last.
	ErrBrokenChain = errors.New("segment chain is broken")
)

// ExportOptions tunes Export.
type ExportOptions struct {
	// Progress, if set, is called as the segments are read, with the
	// bytes of segment files read so far and their total.
	Progress func(done, total int64)
	// Device, if set, is the only device whose segments are accepted: a
	// segment of another device is an error (crypto.ErrWrongDevice).
	Device *crypto.DevicePublicKey
}

// ExportReport describes a finished export.
type ExportReport struct {
	Output      string
	Device      *crypto.DevicePublicKey
	RecordingID [16]byte
	// Segments lists the exported segments in sequence order.
	Segments []ExportedSegment
	// Warnings are about the recording as a whole: skipped files,
	// reordered or duplicate arguments, a missing last flag. Warnings
	// about one segment (truncation, gaps) are in its ExportedSegment.
	Warnings  []string
	Duration  time.Duration // of the output, from its first to its last sample
	Fragments int           // in the output
	Bytes     int64         // size of the output
}

// ExportedSegment is what one segment contributed.
type ExportedSegment struct {
	Path      string
	Sequence  uint64
	Outcome   crypto.Outcome // OK or Truncated
	Last      bool           // carries the last-segment flag
	Bytes     int64          // media bytes taken into the output
	Fragments int
	Warnings  []string
}

// segmentFile is a segment argument after its header was read.
type segmentFile struct {
	path   string
	arg    int // position among the arguments
	size   int64
	header *crypto.Header
	commit [crypto.CommitmentSize]byte
}

// Export checks that segments form one unbroken recording, decrypts them
// with ids and writes their media as one fragmented MP4 to out: the first
// segment's init, then every complete fragment of every segment in
// sequence order, with continuous timestamps. A TRUNCATED segment
// contributes the complete fragments of its authentic prefix, with a
// warning. A segment that is corrupt or not for these keys, a gap in the
// sequence numbers, a conflict or a broken chain is an error, and then
// nothing is written. out appears only when complete (temporary file,
// fsync, rename), with mode 0600. Memory stays bounded by one fragment
// whatever the length of the recording.
func Export(ctx context.Context, out string, ids []*crypto.Identity, segments []string, opts ExportOptions) (*ExportReport, error) {
	if len(segments) == 0 {
		return nil, errors.New("export: no segments given")
	}
	if len(ids) == 0 {
		return nil, errors.New("export: no identity given")
	}
	rep := &ExportReport{Output: out}
	files, err := readHeaders(ctx, ids, segments, opts.Device, rep)
	if err != nil {
		return nil, err
	}
	files, err = order(files, rep)
	if err != nil {
		return nil, err
	}
	if err := writeJoined(ctx, out, ids, files, opts, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// readHeaders opens every segment far enough to authenticate its header
// and learn its chain link: key unwrap and key commitment, no media.
func readHeaders(ctx context.Context, ids []*crypto.Identity, paths []string, device *crypto.DevicePublicKey, rep *ExportReport) ([]*segmentFile, error) {
	var files []*segmentFile
	for i, path := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sf, err := readHeader(ids, path, device)
		if errors.Is(err, crypto.ErrTruncated) {
			// Cut inside the header: no authentic media, no place in the
			// chain. Typical of a power cut just after a segment began.
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: skipped, the file ends before its first media: %v", path, err))
			continue
		}
		if err != nil {
			return nil, err
		}
		sf.arg = i
		if len(files) > 0 {
			first := files[0]
			if !sf.header.Device.Equal(first.header.Device) || sf.header.RecordingID != first.header.RecordingID {
				return nil, fmt.Errorf("export: %w: %s is segment %d of recording %s from device %s, but %s is segment %d of recording %s from device %s; export one recording at a time",
					ErrMixedRecordings, path, sf.header.Sequence, hex.EncodeToString(sf.header.RecordingID[:]), sf.header.Device,
					first.path, first.header.Sequence, hex.EncodeToString(first.header.RecordingID[:]), first.header.Device)
			}
		}
		files = append(files, sf)
	}
	if len(files) == 0 {
		return nil, errors.New("export: no segment holds any media")
	}
	rep.Device = files[0].header.Device
	rep.RecordingID = files[0].header.RecordingID
	return files, nil
}

func readHeader(ids []*crypto.Identity, path string, device *crypto.DevicePublicKey) (*segmentFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	r, err := crypto.NewReader(bufio.NewReaderSize(f, 16<<10), ids...)
	if err != nil {
		return nil, fmt.Errorf("export: segment %s: %w", path, err)
	}
	defer r.Close()
	if device != nil {
		if err := r.Header().CheckDevice(device); err != nil {
			return nil, fmt.Errorf("export: segment %s: %w", path, err)
		}
	}
	return &segmentFile{path: path, size: st.Size(), header: r.Header(), commit: r.Commitment()}, nil
}

// order sorts the segments by sequence number and checks the chain: no
// gap, no conflict, every link in place. Duplicates (the same segment
// twice) and arguments out of order are warnings.
func order(files []*segmentFile, rep *ExportReport) ([]*segmentFile, error) {
	slices.SortStableFunc(files, func(a, b *segmentFile) int { return cmp.Compare(a.header.Sequence, b.header.Sequence) })
	var uniq []*segmentFile
	for _, sf := range files {
		if n := len(uniq); n > 0 && uniq[n-1].header.Sequence == sf.header.Sequence {
			prev := uniq[n-1]
			if prev.commit != sf.commit {
				return nil, fmt.Errorf("export: %w: %s and %s are both segment %d but differ (a fork or a replayed segment); keep the one the receiver committed",
					ErrConflictingSegments, prev.path, sf.path, sf.header.Sequence)
			}
			// The same segment twice; keep the longer copy (a local one may
			// be truncated).
			keep, drop := prev, sf
			if sf.size > prev.size {
				keep, drop = sf, prev
				uniq[n-1] = sf
			}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("segment %d was given twice (%s and %s, the same segment); using %s", sf.header.Sequence, keep.path, drop.path, keep.path))
			continue
		}
		uniq = append(uniq, sf)
	}
	var missing []uint64
	next := uint64(0)
	for _, sf := range uniq {
		for ; next < sf.header.Sequence && len(missing) < 10_000; next++ {
			missing = append(missing, next)
		}
		next = sf.header.Sequence + 1
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("export: %w: segment %s of recording %s not given (have %s)",
			ErrMissingSegments, ranges(missing), hex.EncodeToString(rep.RecordingID[:]), ranges(sequences(uniq)))
	}
	byArg := slices.Clone(uniq)
	slices.SortFunc(byArg, func(a, b *segmentFile) int { return cmp.Compare(a.arg, b.arg) })
	if !slices.Equal(byArg, uniq) {
		given := sequences(byArg)
		list := make([]string, 0, min(len(given), 20))
		for _, s := range given[:min(len(given), 20)] {
			list = append(list, strconv.FormatUint(s, 10))
		}
		if len(given) > 20 {
			list = append(list, "…")
		}
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("segments were given out of order (as %s); exporting them in sequence order %s", strings.Join(list, ", "), ranges(sequences(uniq))))
	}
	for i := 1; i < len(uniq); i++ {
		prev, sf := uniq[i-1], uniq[i]
		if sf.header.Prev != prev.commit {
			return nil, fmt.Errorf("export: %w: segment %d (%s) does not link to segment %d (%s): it names another previous segment (spliced from another recording, or forged)",
				ErrBrokenChain, sf.header.Sequence, sf.path, prev.header.Sequence, prev.path)
		}
	}
	return uniq, nil
}

func sequences(files []*segmentFile) []uint64 {
	s := make([]uint64, len(files))
	for i, f := range files {
		s[i] = f.header.Sequence
	}
	return s
}

// ranges formats ascending numbers compactly: 1, 3-5, 9.
func ranges(nums []uint64) string {
	var parts []string
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.FormatUint(nums[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", nums[i], nums[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// progress counts the bytes read from segment files.
type progress struct {
	r     io.Reader
	done  *int64
	total int64
	fn    func(done, total int64)
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	*p.done += int64(n)
	return n, err
}

func (p *progress) report() {
	if p.fn != nil {
		p.fn(*p.done, p.total)
	}
}

// writeJoined decrypts the segments in order and writes the joined MP4.
func writeJoined(ctx context.Context, out string, ids []*crypto.Identity, files []*segmentFile, opts ExportOptions, rep *ExportReport) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	var total, done int64
	for _, sf := range files {
		total += sf.size
	}
	prog := &progress{done: &done, total: total, fn: opts.Progress}
	prog.report()

	var jw *join.Writer
	for i, sf := range files {
		seg := ExportedSegment{Path: sf.path, Sequence: sf.header.Sequence}
		jw, err = exportSegment(ctx, ids, sf, bw, jw, prog, &seg)
		if err != nil {
			return err
		}
		final := i == len(files)-1
		if seg.Last && !final {
			return fmt.Errorf("export: %w: segment %d (%s) is marked as the last of the recording, but segment %d (%s) follows",
				ErrBrokenChain, sf.header.Sequence, sf.path, files[i+1].header.Sequence, files[i+1].path)
		}
		if final && !seg.Last {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("segment %d, the final one given, is not marked as the last of the recording: the recording may be incomplete (later segments missing, or it stopped on an error or a power cut)", sf.header.Sequence))
		}
		rep.Segments = append(rep.Segments, seg)
		done = 0
		for _, f := range files[:i+1] {
			done += f.size
		}
		prog.report()
	}
	if jw == nil || jw.Fragments() == 0 {
		return errors.New("export: the segments hold no complete fragment of media")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: write %s: %w", out, err)
	}
	// The init goes first but states the total duration: rewrite it in
	// place now that the duration is known. Its size does not change.
	init, err := jw.Init()
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := tmp.WriteAt(init, 0); err != nil {
		return fmt.Errorf("export: write %s: %w", out, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("export: sync %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("export: close %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(out)); err != nil {
		return fmt.Errorf("export: sync directory of %s: %w", out, err)
	}
	rep.Duration = jw.Duration()
	rep.Fragments = jw.Fragments()
	rep.Bytes = jw.Size()
	return nil
}

// exportSegment streams one segment: decrypt, split into units, append
// its fragments. The first segment's init starts the output.
func exportSegment(ctx context.Context, ids []*crypto.Identity, sf *segmentFile, w io.Writer, jw *join.Writer, prog *progress, seg *ExportedSegment) (*join.Writer, error) {
	f, err := os.Open(sf.path)
	if err != nil {
		return jw, fmt.Errorf("export: %w", err)
	}
	defer f.Close()
	r, err := crypto.NewReader(bufio.NewReaderSize(&progress{r: f, done: prog.done}, 256<<10), ids...)
	if err != nil {
		return jw, fmt.Errorf("export: segment %d (%s): %w", sf.header.Sequence, sf.path, err)
	}
	defer r.Close()
	if !bytes.Equal(r.Header().Bytes(), sf.header.Bytes()) || r.Commitment() != sf.commit {
		return jw, fmt.Errorf("export: segment %d (%s) changed while it was being exported", sf.header.Sequence, sf.path)
	}
	fail := func(err error) error {
		return fmt.Errorf("export: segment %d (%s): %w", sf.header.Sequence, sf.path, err)
	}
	units := join.NewReader(r)
	var gapped bool
	for {
		if err := ctx.Err(); err != nil {
			return jw, err
		}
		u, err := units.Next()
		switch {
		case err == io.EOF:
			seg.Outcome = crypto.OK
			seg.Last = r.Trailer() != nil && r.Trailer().Last()
			return jw, nil
		case errors.Is(err, crypto.ErrTruncated):
			seg.Outcome = crypto.Truncated
			w := fmt.Sprintf("TRUNCATED (its end is missing, as after a power cut): exported the %d complete fragment(s) of its authentic prefix", seg.Fragments)
			if units.Partial > 0 {
				w += fmt.Sprintf(", dropped %d bytes of an incomplete fragment", units.Partial)
			}
			seg.Warnings = append(seg.Warnings, w)
			return jw, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			// Authentic and complete, yet the media stops inside a box: the
			// recorder stopped mid-fragment. Keep what is whole.
			seg.Outcome = crypto.OK
			seg.Last = r.Trailer() != nil && r.Trailer().Last()
			seg.Warnings = append(seg.Warnings, fmt.Sprintf("the media ends inside a fragment; dropped its %d bytes", units.Partial))
			return jw, nil
		case err != nil:
			return jw, fail(err)
		}
		switch u.Kind {
		case join.Init:
			if jw == nil {
				if jw, err = join.NewWriter(w, u.Bytes); err != nil {
					return nil, fail(err)
				}
				continue
			}
			warn, err := jw.CheckInit(u.Bytes)
			if err != nil {
				return jw, fail(err)
			}
			if warn != "" {
				seg.Warnings = append(seg.Warnings, warn)
			}
		case join.Fragment:
			if jw == nil {
				return jw, fail(join.ErrFormat)
			}
			jumps, err := jw.WriteFragment(u.Bytes)
			if err != nil {
				return jw, fail(err)
			}
			if !gapped {
				for _, j := range jumps {
					gapped = true
					if j.Delta > 0 {
						seg.Warnings = append(seg.Warnings, fmt.Sprintf("%s: a gap of %v before fragment %d of this segment (media is missing there)", j.Kind, j.Delta.Round(time.Millisecond), seg.Fragments+1))
					} else {
						seg.Warnings = append(seg.Warnings, fmt.Sprintf("%s: fragment %d of this segment overlaps the media before it by %v", j.Kind, seg.Fragments+1, (-j.Delta).Round(time.Millisecond)))
					}
				}
			}
			seg.Fragments++
			seg.Bytes += int64(len(u.Bytes))
			prog.report()
		}
	}
}
