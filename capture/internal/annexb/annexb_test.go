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
