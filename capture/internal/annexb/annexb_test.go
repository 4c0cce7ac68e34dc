package annexb

import (
	"bytes"
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want [][]byte
	}{
		{"empty", nil, nil},
		{"no start code", []byte{1, 2, 3, 4}, nil},
		{"three-byte start code", []byte{0, 0, 1, 0x65, 1, 2}, [][]byte{{0x65, 1, 2}}},
		{"four-byte start codes", []byte{0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x68, 8, 0, 0, 0, 1, 0x65, 7},
			[][]byte{{0x67, 9}, {0x68, 8}, {0x65, 7}}},
		{"leading garbage ignored", []byte{9, 9, 0, 0, 1, 0x41, 5}, [][]byte{{0x41, 5}}},
		{"trailing zeros dropped", []byte{0, 0, 1, 0x41, 5, 0, 0}, [][]byte{{0x41, 5}}},
		{"empty unit skipped", []byte{0, 0, 1, 0, 0, 1, 0x41}, [][]byte{{0x41}}},
		{"start code at end", []byte{0, 0, 1, 0x41, 0, 0, 1}, [][]byte{{0x41}}},
		{"emulation prevention kept", []byte{0, 0, 1, 0x41, 0, 0, 3, 1}, [][]byte{{0x41, 0, 0, 3, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Split(tt.in)
			if !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Fatalf("Split(% x) = % x, want % x", tt.in, got, tt.want)
			}
		})
	}
}

func TestTypes(t *testing.T) {
	idr := []byte{0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3}
	p := []byte{0, 0, 0, 1, 0x41, 3}
	tests := []struct {
		name      string
		au        []byte
		types     []int
		idr, code bool
	}{
		{"idr", idr, []int{TypeSPS, TypePPS, TypeIDR}, true, true},
		{"p", p, []int{TypeSlice}, false, true},
		{"three-byte code", []byte{0, 0, 1, 0x65}, []int{TypeIDR}, true, true},
		{"avcc is not annex-b", []byte{0, 0, 0, 2, 0x65, 1}, []int{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Types(tt.au); !slices.Equal(got, tt.types) {
				t.Errorf("Types = %v, want %v", got, tt.types)
			}
			if got := IsIDR(tt.au); got != tt.idr {
				t.Errorf("IsIDR = %v, want %v", got, tt.idr)
			}
			if got := HasStartCode(tt.au); got != tt.code {
				t.Errorf("HasStartCode = %v, want %v", got, tt.code)
			}
		})
	}
	if Type(nil) != 0 {
		t.Error("Type(nil) != 0")
	}
}

// splitBytewise is the byte-by-byte Split that Units replaced, kept as
// the reference the fuzz target compares against.
func splitBytewise(b []byte) [][]byte {
	var units [][]byte
	add := func(u []byte) {
		for len(u) > 0 && u[len(u)-1] == 0 {
			u = u[:len(u)-1]
		}
		if len(u) > 0 {
			units = append(units, u)
		}
	}
	start := -1
	i := 0
	for i+2 < len(b) {
		if b[i] != 0 || b[i+1] != 0 || b[i+2] != 1 {
			i++
			continue
		}
		if start >= 0 {
			add(b[start:i])
		}
		i += 3
		start = i
	}
	if start >= 0 && start <= len(b) {
		add(b[start:])
	}
	return units
}

func FuzzSplit(f *testing.F) {
	for _, seed := range [][]byte{
		nil, {0, 0, 1}, {0, 0, 0, 1, 0x67, 9, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 7, 0},
		{0, 0, 1, 0, 0, 1, 0x41}, {0, 0, 1, 0x41, 0, 0, 3, 1}, {9, 9, 0, 0, 1, 0x41, 5, 0, 0},
		{0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := splitBytewise(b)
		if got := Split(b); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("Split(% x) = % x, want % x", b, got, want)
		}
		idr := false
		for _, u := range want {
			idr = idr || Type(u) == TypeIDR
		}
		if got := IsIDR(b); got != idr {
			t.Fatalf("IsIDR(% x) = %v, want %v", b, got, idr)
		}
	})
}
