package button

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The layout of the uAPI v2 structs as the kernel's linux/gpio.h has it:
// sizes and offsets printed by a C program with sizeof and offsetof
// against /usr/include/linux/gpio.h (Debian, kernel headers 6.x). The v2
// structs have no implicit padding, so they are the same on amd64, arm64
// and 32-bit arm.
func TestUAPILayout(t *testing.T) {
	var req unix.GPIOV2LineRequest
	var ev unix.GPIOV2LineEvent
	var cfg unix.GPIOV2LineConfig
	var info unix.GPIOV2LineInfo
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(gpio_v2_line_request)", unsafe.Sizeof(req), 592},
		{"gpio_v2_line_request.offsets", unsafe.Offsetof(req.Offsets), 0},
		{"gpio_v2_line_request.consumer", unsafe.Offsetof(req.Consumer), 256},
		{"gpio_v2_line_request.config", unsafe.Offsetof(req.Config), 288},
		{"gpio_v2_line_request.num_lines", unsafe.Offsetof(req.Num_lines), 560},
		{"gpio_v2_line_request.event_buffer_size", unsafe.Offsetof(req.Event_buffer_size), 564},
		{"gpio_v2_line_request.fd", unsafe.Offsetof(req.Fd), 588},
		{"sizeof(gpio_v2_line_config)", unsafe.Sizeof(cfg), 272},
		{"gpio_v2_line_config.num_attrs", unsafe.Offsetof(cfg.Num_attrs), 8},
		{"gpio_v2_line_config.attrs", unsafe.Offsetof(cfg.Attrs), 32},
		{"sizeof(gpio_v2_line_config_attribute)", unsafe.Sizeof(cfg.Attrs[0]), 24},
		{"sizeof(gpio_v2_line_event)", unsafe.Sizeof(ev), 48},
		{"gpio_v2_line_event.timestamp_ns", unsafe.Offsetof(ev.Timestamp_ns), 0},
		{"gpio_v2_line_event.id", unsafe.Offsetof(ev.Id), 8},
		{"gpio_v2_line_event.offset", unsafe.Offsetof(ev.Offset), 12},
		{"gpio_v2_line_event.seqno", unsafe.Offsetof(ev.Seqno), 16},
		{"gpio_v2_line_event.line_seqno", unsafe.Offsetof(ev.Line_seqno), 20},
		{"sizeof(gpio_v2_line_info)", unsafe.Sizeof(info), 256},
		{"gpio_v2_line_info.consumer", unsafe.Offsetof(info.Consumer), 32},
		{"gpio_v2_line_info.flags", unsafe.Offsetof(info.Flags), 72},
		{"sizeof(gpio_v2_line_values)", unsafe.Sizeof(unix.GPIOV2LineValues{}), 16},
		{"sizeof(gpiochip_info)", unsafe.Sizeof(unix.GPIOChipInfo{}), 68},
		{"decodeEvents' timestamp offset", offTimestamp, 0},
		{"decodeEvents' id offset", offID, 8},
		{"eventSize", uintptr(eventSize), 48},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d (linux/gpio.h)", tc.name, tc.got, tc.want)
		}
	}
}

// iowr is the kernel's _IOWR(type, nr, size) (asm-generic/ioctl.h), and
// ior its _IOR.
func iowr(typ, nr, size uintptr) uint { return uint(3<<30 | size<<16 | typ<<8 | nr) }
func ior(typ, nr, size uintptr) uint  { return uint(2<<30 | size<<16 | typ<<8 | nr) }

// The ioctl numbers encode the size of their argument: the Go structs
// passed with them must have that size, and the numbers must be the
// header's (values printed from /usr/include/linux/gpio.h).
func TestIoctlEncoding(t *testing.T) {
	tests := []struct {
		name      string
		got, want uint
		header    uint
	}{
		{"GPIO_V2_GET_LINE_IOCTL", unix.GPIO_V2_GET_LINE_IOCTL, iowr(0xB4, 0x07, unsafe.Sizeof(unix.GPIOV2LineRequest{})), 0xc250b407},
		{"GPIO_V2_GET_LINEINFO_IOCTL", unix.GPIO_V2_GET_LINEINFO_IOCTL, iowr(0xB4, 0x05, unsafe.Sizeof(unix.GPIOV2LineInfo{})), 0xc100b405},
		{"GPIO_V2_LINE_GET_VALUES_IOCTL", unix.GPIO_V2_LINE_GET_VALUES_IOCTL, iowr(0xB4, 0x0E, unsafe.Sizeof(unix.GPIOV2LineValues{})), 0xc010b40e},
		{"GPIO_GET_CHIPINFO_IOCTL", unix.GPIO_GET_CHIPINFO_IOCTL, ior(0xB4, 0x01, unsafe.Sizeof(unix.GPIOChipInfo{})), 0x8044b401},
	}
	for _, tc := range tests {
		if tc.got != tc.want || tc.got != tc.header {
			t.Errorf("%s = %#x; encoded from the Go struct %#x; linux/gpio.h %#x", tc.name, tc.got, tc.want, tc.header)
		}
	}
}

func TestLineRequest(t *testing.T) {
	// Flag values of enum gpio_v2_line_flag.
	for name, v := range map[string][2]uint64{
		"USED": {flagUsed, 0x1}, "ACTIVE_LOW": {flagActiveLow, 0x2}, "INPUT": {flagInput, 0x4},
		"EDGE_RISING": {flagEdgeRising, 0x10}, "EDGE_FALLING": {flagEdgeFalling, 0x20},
		"BIAS_PULL_UP": {flagBiasPullUp, 0x100}, "BIAS_PULL_DOWN": {flagBiasPullDown, 0x200},
	} {
		if v[0] != v[1] {
			t.Errorf("GPIO_V2_LINE_FLAG_%s = %#x, want %#x", name, v[0], v[1])
		}
	}
	req := lineRequest(17, true)
	// The bytes the kernel reads, at the header's offsets.
	b := unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req))
	u32 := func(off int) uint32 { return binary.NativeEndian.Uint32(b[off:]) }
	if u32(0) != 17 || u32(560) != 1 || u32(564) != eventBufferEvents {
		t.Errorf("offsets[0] %d num_lines %d event_buffer_size %d, want 17, 1, %d", u32(0), u32(560), u32(564), eventBufferEvents)
	}
	if c := string(b[256 : 256+len(Consumer)+1]); c != Consumer+"\x00" {
		t.Errorf("consumer %q", c)
	}
	if f := binary.NativeEndian.Uint64(b[288:]); f != 0x2|0x4|0x10|0x20|0x100 {
		t.Errorf("config.flags %#x: want input, both edges, active low, pull-up", f)
	}
	if f := requestFlags(false); f != 0x4|0x10|0x20|0x200 {
		t.Errorf("active high flags %#x: want input, both edges, pull-down", f)
	}
}

// rec is a struct gpio_v2_line_event as the kernel writes it.
func rec(ts uint64, id uint32) []byte {
	b := make([]byte, 48)
	binary.NativeEndian.PutUint64(b[0:], ts)
	binary.NativeEndian.PutUint32(b[8:], id)
	binary.NativeEndian.PutUint32(b[12:], 17) // offset
	binary.NativeEndian.PutUint32(b[16:], 1)  // seqno
	return b
}

// decodeEvents reads the records as the kernel writes them.
func TestDecodeEvents(t *testing.T) {
	buf := slices.Concat(rec(1_000_000_000, 1), rec(1_150_000_000, 2), rec(5, 9), rec(7, 1)[:20])
	got := decodeEvents(buf)
	want := []Edge{{Rising: true, Time: time.Second}, {Rising: false, Time: 1150 * time.Millisecond}}
	if !slices.Equal(got, want) {
		t.Errorf("decoded %v, want %v (unknown ids and a partial record skipped)", got, want)
	}
}

// Opening what is not a usable chip fails with an error that names it
// and says what to do. (No test opens a real chip: none is required here.)
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "gpiochip9")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		chip string
		is   error
		want []string
	}{
		{filepath.Join(dir, "none"), ErrNoChip, []string{"does not exist", "gpiodetect"}},
		{plain, ErrNoChip, []string{plain, "consent.button.chip"}},
	}
	for _, tc := range tests {
		_, err := Open(tc.chip, 17, true)
		if !errors.Is(err, tc.is) {
			t.Errorf("Open(%s) = %v, want %v", tc.chip, err, tc.is)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%s) = %q, does not say %q", tc.chip, err, w)
			}
		}
	}
	if ChipPath("gpiochip0") != "/dev/gpiochip0" || ChipPath("/dev/gpiochip4") != "/dev/gpiochip4" {
		t.Error("ChipPath")
	}
}

// The line's reader, on a pipe in place of the line's file: it delivers
// the edges written to it in order, Close ends it without an error, and
// a read that fails closes Events with the error.
func TestLineReader(t *testing.T) {
	pipe := func() (*GPIOLine, *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		return newLine(r), w
	}
	l, w := pipe()
	defer w.Close()
	if _, err := w.Write(slices.Concat(rec(1_000_000_000, 1), rec(1_150_000_000, 2))); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Edge{{Rising: true, Time: time.Second}, {Time: 1150 * time.Millisecond}} {
		if got := <-l.Events(); got != want {
			t.Errorf("edge %+v, want %+v", got, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-l.Events(); ok || l.Err() != nil {
		t.Errorf("after Close: Events open %v, Err %v; want closed, nil", ok, l.Err())
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	l, w = pipe()
	w.Close() // the read ends: as a line whose chip went away
	if _, ok := <-l.Events(); ok || l.Err() == nil || !strings.Contains(l.Err().Error(), "read ") {
		t.Errorf("after a failed read: Events open %v, Err %v; want closed with the error", ok, l.Err())
	}
	l.Close()
}
