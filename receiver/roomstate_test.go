package receiver

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/uploadbox/uploadbox/wire"
)

// TestRoomStates: the latest state per device is kept and forgotten;
// every subscriber is told which rooms changed, coalesced (one signal for
// many changes, each room once); subscriptions are bounded per teacher
// and in total.
func TestRoomStates(t *testing.T) {
	var rs roomStates
	a, err := rs.subscribe("tess")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rs.subscribe("tom")
	rs.set("room-1", &wire.ConsentState{Recording: true})
	rs.set("room-2", &wire.ConsentState{})
	rs.set("room-1", &wire.ConsentState{Recording: false})
	for _, sub := range []*roomSub{a, b} {
		select {
		case <-sub.ch:
		default:
			t.Fatal("a subscriber was not signalled")
		}
		select {
		case <-sub.ch:
			t.Fatal("three changes signalled more than once")
		default:
		}
		got := rs.take(sub)
		slices.Sort(got)
		if !slices.Equal(got, []string{"room-1", "room-2"}) {
			t.Fatalf("changed rooms %v", got)
		}
		if again := rs.take(sub); len(again) != 0 {
			t.Fatalf("taken twice: %v", again)
		}
	}
	if st := rs.get("room-1"); st == nil || st.Recording {
		t.Fatalf("room-1: %+v, want the latest (not recording)", st)
	}
	rs.set("room-1", nil)
	if st := rs.get("room-1"); st != nil {
		t.Fatalf("room-1 after it went offline: %+v", st)
	}
	rs.unsubscribe(b)
	rs.take(b)
	rs.set("room-3", &wire.ConsentState{})
	if len(b.dirty) != 0 {
		t.Fatal("an ended subscription is still told")
	}

	for range MaxTeacherStreams - 1 {
		if _, err := rs.subscribe("tess"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rs.subscribe("tess"); !errors.Is(err, errTeacherStreams) {
		t.Fatalf("stream %d of one teacher: %v", MaxTeacherStreams+1, err)
	}
	rs.unsubscribe(a)
	rs.unsubscribe(a) // twice: counted once
	if _, err := rs.subscribe("tess"); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	if _, err := rs.subscribe("tess"); !errors.Is(err, errTeacherStreams) {
		t.Fatalf("the bound after a double unsubscribe: %v", err)
	}
	for i := len(rs.subs); i < MaxTeacherStreamsTotal; i++ {
		if _, err := rs.subscribe(fmt.Sprintf("t%d", i)); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if _, err := rs.subscribe("someone-new"); !errors.Is(err, errAllStreams) {
		t.Fatalf("stream %d in all: %v", MaxTeacherStreamsTotal+1, err)
	}
}
