package button

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's uAPI v2 (linux/gpio.h), through golang.org/x/sys/unix: it
// has the structs and ioctl numbers, generated from that header, but not
// the line flags. (periph.io/x/host/v3's gpioioctl speaks v2 too, but
// opens every chip into a global registry at init, logs with package log,
// and does not give an edge's kind and kernel timestamp for one line: the
// classifier needs both, and ioctls are a page of code.)
const (
	flagUsed          = 1 << 0 // GPIO_V2_LINE_FLAG_USED
	flagActiveLow     = 1 << 1 // GPIO_V2_LINE_FLAG_ACTIVE_LOW
	flagInput         = 1 << 2 // GPIO_V2_LINE_FLAG_INPUT
	flagEdgeRising    = 1 << 4 // GPIO_V2_LINE_FLAG_EDGE_RISING
	flagEdgeFalling   = 1 << 5 // GPIO_V2_LINE_FLAG_EDGE_FALLING
	flagBiasPullUp    = 1 << 8 // GPIO_V2_LINE_FLAG_BIAS_PULL_UP
	flagBiasPullDown  = 1 << 9 // GPIO_V2_LINE_FLAG_BIAS_PULL_DOWN
	eventSize         = int(unsafe.Sizeof(unix.GPIOV2LineEvent{}))
	eventBufferEvents = 64 // the kernel keeps this many unread edges
)

// Consumer is the name the line is requested under: gpioinfo and
// `uploadbox diag` show it as the line's user.
const Consumer = "uploadbox-button"

// ChipPath is the device of chip: a name (gpiochip0) under /dev, or an
// absolute path as given.
func ChipPath(chip string) string {
	if filepath.IsAbs(chip) {
		return chip
	}
	return filepath.Join("/dev", chip)
}

// requestFlags are the line flags of the button: an input with both edges
// reported, biased towards the released level (pull-up for a button to
// ground, active low; pull-down for one to 3.3 V).
func requestFlags(activeLow bool) uint64 {
	f := uint64(flagInput | flagEdgeRising | flagEdgeFalling)
	if activeLow {
		return f | flagActiveLow | flagBiasPullUp
	}
	return f | flagBiasPullDown
}

func ioctl(fd uintptr, req uint, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// ChipInfo is what a chip says about itself and one of its lines.
type ChipInfo struct {
	Path  string
	Label string // e.g. pinctrl-bcm2711
	Lines int
	// Line's name on the board (e.g. GPIO17), its user if it is requested,
	// and whether it is requested.
	LineName string
	Consumer string
	Used     bool
}

// openChip opens the chip and checks that line is one of its lines.
func openChip(chip string, line int) (*os.File, ChipInfo, error) {
	path := ChipPath(chip)
	info := ChipInfo{Path: path}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, info, chipError(path, err)
	}
	var ci unix.GPIOChipInfo
	if err := ioctl(f.Fd(), unix.GPIO_GET_CHIPINFO_IOCTL, unsafe.Pointer(&ci)); err != nil {
		f.Close()
		return nil, info, fmt.Errorf("%w: %s: %v (consent.button.chip names a GPIO chip such as gpiochip0; list them with gpiodetect)", ErrNoChip, path, err)
	}
	info.Label = cString(ci.Label[:])
	info.Lines = int(ci.Lines)
	if line < 0 || line >= info.Lines {
		f.Close()
		return nil, info, fmt.Errorf("%w: line %d is not on %s (%s has lines 0 to %d): fix consent.button.line", ErrNoLine, line, path, info.Label, info.Lines-1)
	}
	li := unix.GPIOV2LineInfo{Offset: uint32(line)}
	if err := ioctl(f.Fd(), unix.GPIO_V2_GET_LINEINFO_IOCTL, unsafe.Pointer(&li)); err != nil {
		f.Close()
		return nil, info, fmt.Errorf("%w: line %d of %s: line info: %v", ErrNoLine, line, path, err)
	}
	info.LineName = cString(li.Name[:])
	info.Consumer = cString(li.Consumer[:])
	info.Used = li.Flags&flagUsed != 0
	return f, info, nil
}

// Errors Open and Probe wrap, for diag's remedies.
var (
	ErrNoChip     = errors.New("no GPIO chip")
	ErrNoLine     = errors.New("no such GPIO line")
	ErrBusy       = errors.New("GPIO line busy")
	ErrPermission = errors.New("no permission to use the GPIO chip")
)

func chipError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist (consent.button.chip: list the chips with gpiodetect; on a Raspberry Pi the header's is gpiochip0, on a Pi 5 with an older kernel maybe gpiochip4)", ErrNoChip, path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %s: permission denied (add the daemon's user to the chip's group: usermod -aG gpio uploadbox, and allow the device in the unit: DeviceAllow=char-gpiochip rw)", ErrPermission, path)
	}
	return fmt.Errorf("open GPIO chip %s: %w", path, err)
}

// Probe reads the chip and line without requesting the line.
func Probe(chip string, line int) (ChipInfo, error) {
	f, info, err := openChip(chip, line)
	if err != nil {
		return info, err
	}
	f.Close()
	return info, nil
}

// Read requests the line for a moment and returns its level (true:
// active, the button is down), then releases it.
func Read(chip string, line int, activeLow bool) (bool, error) {
	l, err := Open(chip, line, activeLow)
	if err != nil {
		return false, err
	}
	defer l.Close()
	return l.Value()
}

// GPIOLine is a GPIO line requested for the button.
type GPIOLine struct {
	f      *os.File
	events chan Edge
	done   chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
}

var _ Line = (*GPIOLine)(nil)

// Open requests line of chip as the button's input, with edge detection
// and the bias towards its released level (see requestFlags).
func Open(chip string, line int, activeLow bool) (*GPIOLine, error) {
	cf, info, err := openChip(chip, line)
	if err != nil {
		return nil, err
	}
	defer cf.Close()
	req := lineRequest(line, activeLow)
	if err := ioctl(cf.Fd(), unix.GPIO_V2_GET_LINE_IOCTL, unsafe.Pointer(&req)); err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			user := info.Consumer
			if user == "" {
				user = "another program or a kernel driver"
			}
			return nil, fmt.Errorf("%w: line %d of %s is used by %s (free it, or pick another line in consent.button.line)", ErrBusy, line, info.Path, user)
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, chipError(info.Path, fs.ErrPermission)
		}
		return nil, fmt.Errorf("request line %d of %s: %w", line, info.Path, err)
	}
	if err := unix.SetNonblock(int(req.Fd), true); err != nil {
		unix.Close(int(req.Fd))
		return nil, fmt.Errorf("line %d of %s: %w", line, info.Path, err)
	}
	// Non-blocking, so reads wait in the runtime's poller and Close ends them.
	return newLine(os.NewFile(uintptr(req.Fd), fmt.Sprintf("%s line %d", info.Path, line))), nil
}

// newLine reads edge events from f, the line's file.
func newLine(f *os.File) *GPIOLine {
	l := &GPIOLine{f: f, events: make(chan Edge), done: make(chan struct{})}
	go l.read()
	return l
}

// lineRequest is the GPIO_V2_GET_LINE_IOCTL argument for the button.
func lineRequest(line int, activeLow bool) unix.GPIOV2LineRequest {
	var req unix.GPIOV2LineRequest
	req.Offsets[0] = uint32(line)
	req.Num_lines = 1
	req.Event_buffer_size = eventBufferEvents
	copy(req.Consumer[:len(req.Consumer)-1], Consumer)
	req.Config.Flags = requestFlags(activeLow)
	return req
}

// Value reads the line's level now (true: active).
func (l *GPIOLine) Value() (bool, error) {
	v := unix.GPIOV2LineValues{Mask: 1}
	rc, err := l.f.SyscallConn()
	if err != nil {
		return false, err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = ioctl(fd, unix.GPIO_V2_LINE_GET_VALUES_IOCTL, unsafe.Pointer(&v))
	}); err != nil {
		return false, err
	}
	if ierr != nil {
		return false, fmt.Errorf("read %s: %w", l.f.Name(), ierr)
	}
	return v.Bits&1 != 0, nil
}

func (l *GPIOLine) read() {
	defer close(l.done)
	defer close(l.events)
	buf := make([]byte, eventSize*16)
	for {
		n, err := l.f.Read(buf)
		if err != nil {
			l.mu.Lock()
			if !l.closed {
				l.err = fmt.Errorf("read %s: %w", l.f.Name(), err)
			}
			l.mu.Unlock()
			return
		}
		for _, e := range decodeEvents(buf[:n]) {
			l.events <- e // Close drains what nobody reads
		}
	}
}

// Events implements Line.
func (l *GPIOLine) Events() <-chan Edge { return l.events }

// Err implements Line.
func (l *GPIOLine) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close releases the line and waits for its reader.
func (l *GPIOLine) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	err := l.f.Close()
	for {
		select {
		case <-l.done:
			return err
		case <-l.events:
		}
	}
}

// Offsets of struct gpio_v2_line_event's fields that decodeEvents reads.
var (
	offTimestamp = unsafe.Offsetof(unix.GPIOV2LineEvent{}.Timestamp_ns)
	offID        = unsafe.Offsetof(unix.GPIOV2LineEvent{}.Id)
)

// decodeEvents reads whole struct gpio_v2_line_event records (the kernel
// returns only whole ones) in the machine's byte order.
func decodeEvents(b []byte) []Edge {
	var es []Edge
	for ; len(b) >= eventSize; b = b[eventSize:] {
		ts := binary.NativeEndian.Uint64(b[offTimestamp:])
		id := binary.NativeEndian.Uint32(b[offID:])
		if id != unix.GPIO_V2_LINE_EVENT_RISING_EDGE && id != unix.GPIO_V2_LINE_EVENT_FALLING_EDGE {
			continue
		}
		es = append(es, Edge{Rising: id == unix.GPIO_V2_LINE_EVENT_RISING_EDGE, Time: time.Duration(ts)})
	}
	return es
}

func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// monotonic is CLOCK_MONOTONIC, the clock of the kernel's GPIO event
// timestamps.
type monotonic struct{}

func (monotonic) Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error()) // cannot fail on Linux
	}
	return time.Duration(ts.Nano())
}

func (m monotonic) At(t time.Duration) <-chan time.Time { return time.After(t - m.Now()) }
