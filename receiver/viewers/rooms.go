package viewers

import (
	"errors"
	"fmt"
	"slices"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// ErrRoomDenied: the viewer is not allowed the device's live view.
var ErrRoomDenied = errors.New("the viewer is not allowed this room")

// A room is one device's live view. A viewer is denied every room unless
// an administrator allowed it (AllowRoom): the receiver relays nothing for
// a room not allowed.

// AllowRoom lets viewer ask for device's live view through the receiver
// (the box still asks its own consent). Audited as viewer.room.
func (r *Registry) AllowRoom(name, device string) error {
	return r.setRoom(name, device, true)
}

// DenyRoom withdraws AllowRoom; denying a room not allowed is no error.
func (r *Registry) DenyRoom(name, device string) error {
	return r.setRoom(name, device, false)
}

func (r *Registry) setRoom(name, device string, allow bool) error {
	if device == "" || len(device) > 128 {
		return fmt.Errorf("%w: device name %q", ErrBadName, device)
	}
	err := r.db.Update(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		if err != nil {
			return err
		}
		i := slices.Index(rec.Rooms, device)
		switch {
		case allow && i < 0:
			rec.Rooms = append(rec.Rooms, device)
			slices.Sort(rec.Rooms)
		case !allow && i >= 0:
			rec.Rooms = slices.Delete(rec.Rooms, i, i+1)
		}
		return put(tx, rec)
	})
	outcome, verb := "ok", "allowed"
	if err != nil {
		outcome = "failed"
	}
	if !allow {
		verb = "denied"
	}
	return errors.Join(err, r.audit("viewer.room", name, "local", outcome, verb+" room "+device))
}

// RoomAllowed reports whether viewer may ask for device's live view; an
// unknown viewer is allowed nothing.
func (r *Registry) RoomAllowed(name, device string) (bool, error) {
	rooms, err := r.Rooms(name)
	return slices.Contains(rooms, device), err
}

// Rooms returns the devices viewer may ask for (AllowRoom), sorted; an
// unknown viewer has none.
func (r *Registry) Rooms(name string) ([]string, error) {
	rooms := []string{}
	err := r.db.View(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		if errors.Is(err, ErrUnknownViewer) {
			return nil
		}
		if err != nil {
			return err
		}
		rooms = append(rooms, rec.Rooms...)
		return nil
	})
	return rooms, err
}
