package receiver

import (
	"testing"
	"time"
)

func TestTimesOf(t *testing.T) {
	t0 := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	seg := func(seq uint64, at time.Duration, media int64) SegmentRecord {
		return SegmentRecord{Sequence: seq, Start: t0.Add(at), Media: media}
	}
	tests := []struct {
		name       string
		segs       []SegmentRecord
		start, end time.Duration // end < 0: no end
		none       bool
	}{
		{"no segments", nil, 0, -1, true},
		{"before times were kept", []SegmentRecord{{Sequence: 0, Media: 0}}, 0, -1, true},
		{"one segment: a start, no end", []SegmentRecord{seg(0, 0, 1000)}, 0, -1, false},
		{"last segment at the rate of the others", []SegmentRecord{seg(0, 0, 10_000), seg(1, 10*time.Second, 10_000), seg(2, 20*time.Second, 2500)}, 0, 22500 * time.Millisecond, false},
		{"unordered", []SegmentRecord{seg(2, 20*time.Second, 2500), seg(0, 0, 10_000), seg(1, 10*time.Second, 10_000)}, 0, 22500 * time.Millisecond, false},
		{"a longer last segment is cut at the longest one", []SegmentRecord{seg(0, 0, 1000), seg(1, 10*time.Second, 9000)}, 0, 20 * time.Second, false},
		{"the empty end segment after a crash does not count", []SegmentRecord{seg(0, 0, 4000), seg(1, 4*time.Second, 2000), seg(2, 5*time.Hour, 0)}, 0, 6 * time.Second, false},
		{"a gap: no rate across it", []SegmentRecord{seg(0, 0, 4000), seg(1, 4*time.Second, 4000), seg(3, 12*time.Second, 4000)}, 0, 16 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := timesOf(tc.segs)
			if tc.none {
				if got != (RecordingTimes{}) {
					t.Fatalf("times = %+v, want none", got)
				}
				return
			}
			if !got.Start.Equal(t0.Add(tc.start)) {
				t.Errorf("start = %s, want %s", got.Start, t0.Add(tc.start))
			}
			if tc.end < 0 {
				if !got.End.IsZero() || got.DurationSeconds != 0 {
					t.Errorf("end = %s, duration %v; want none", got.End, got.DurationSeconds)
				}
				return
			}
			if !got.End.Equal(t0.Add(tc.end)) || got.DurationSeconds != (tc.end-tc.start).Seconds() {
				t.Errorf("end = %s, duration %v; want %s, %v", got.End, got.DurationSeconds, t0.Add(tc.end), (tc.end - tc.start).Seconds())
			}
		})
	}
}

func TestAnonymiseOf(t *testing.T) {
	codecs := func(cs ...string) []SegmentRecord {
		var segs []SegmentRecord
		for i, c := range cs {
			segs = append(segs, SegmentRecord{Sequence: uint64(i), Codec: c})
		}
		return segs
	}
	tests := []struct {
		name string
		segs []SegmentRecord
		want string
	}{
		{"no segments", nil, ""},
		{"stored before the codec was kept", codecs("", ""), ""},
		{"unfiltered", codecs("video/mp4", "video/mp4"), "off"},
		{"whole", codecs("video/mp4; anonymise=whole", "video/mp4; anonymise=whole"), "whole"},
		{"masks, one old record", codecs("", "video/mp4; anonymise=masks"), "masks"},
		{"segments that disagree", codecs("video/mp4; anonymise=whole", "video/mp4", "video/mp4; anonymise=masks"), "masks,off,whole"},
		{"a codec field that is no media type", codecs("video/mp4; ;;="), "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := anonymiseOf(tc.segs); got != tc.want {
				t.Errorf("anonymiseOf = %q, want %q", got, tc.want)
			}
		})
	}
}
