package viewers

import (
	"errors"
	"slices"
	"testing"
)

func TestRooms(t *testing.T) {
	r, _, logPath := open(t)
	if err := r.Add("anna", "lowercase12345"); err != nil {
		t.Fatal(err)
	}
	allowed := func(name, device string) bool {
		t.Helper()
		ok, err := r.RoomAllowed(name, device)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// Deny unless allowed.
	if allowed("anna", "room-7") || allowed("nobody", "room-7") {
		t.Fatal("a room is allowed without allow")
	}
	if err := r.AllowRoom("nobody", "room-7"); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("allow for an unknown viewer: %v", err)
	}
	if err := r.AllowRoom("anna", ""); !errors.Is(err, ErrBadName) {
		t.Fatalf("allow an empty room: %v", err)
	}
	for _, d := range []string{"room-7", "room-2", "room-7"} {
		if err := r.AllowRoom("anna", d); err != nil {
			t.Fatal(err)
		}
	}
	if !allowed("anna", "room-7") || !allowed("anna", "room-2") || allowed("anna", "room-8") {
		t.Fatal("allowed rooms not as set")
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || !slices.Equal(list[0].Rooms, []string{"room-2", "room-7"}) {
		t.Fatalf("List: %+v %v", list, err)
	}
	if err := r.DenyRoom("anna", "room-7"); err != nil {
		t.Fatal(err)
	}
	if err := r.DenyRoom("anna", "room-7"); err != nil {
		t.Fatalf("denying a room not allowed: %v", err)
	}
	if allowed("anna", "room-7") || !allowed("anna", "room-2") {
		t.Fatal("deny-room did not withdraw only that room")
	}
	n := 0
	for _, e := range entries(t, logPath) {
		if e.Event == "viewer.room" && e.Identity == "anna" && e.Outcome == "ok" {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d viewer.room entries, want 5", n)
	}
}
