package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/uploadbox/uploadbox/wire"
)

// Bounds on the teacher's event streams (GET /v1/teacher/events).
const (
	// MaxTeacherStreams is how many streams one teacher may hold open at
	// once (a few tabs and devices).
	MaxTeacherStreams = 4
	// MaxTeacherStreamsTotal is how many the receiver holds open at once.
	MaxTeacherStreamsTotal = 256
)

var (
	errTeacherStreams = errors.New("this account has too many event streams open (close a tab, or wait a minute)")
	errAllStreams     = errors.New("the receiver has too many teacher event streams open; try again in a minute")
)

// TeacherRoom is one room as the teacher endpoints show it: whether its
// box has a control connection and, while it has, the consent state the
// box last pushed (null until the box pushed one).
type TeacherRoom struct {
	Device string             `json:"device"`
	Online bool               `json:"online"`
	State  *wire.ConsentState `json:"state"`
}

// roomStates keeps each connected box's last consent state (memory only)
// and tells the subscribed event streams which rooms changed.
type roomStates struct {
	mu         sync.Mutex
	state      map[string]*wire.ConsentState
	subs       map[*roomSub]struct{}
	perTeacher map[string]int
}

// roomSub is one event stream's subscription: ch is signalled (coalesced)
// when a room in dirty changed.
type roomSub struct {
	teacher string
	ch      chan struct{}
	dirty   map[string]bool
}

// subscribe adds an event stream of teacher, within the bounds.
func (rs *roomStates) subscribe(teacher string) (*roomSub, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	switch {
	case rs.perTeacher[teacher] >= MaxTeacherStreams:
		return nil, errTeacherStreams
	case len(rs.subs) >= MaxTeacherStreamsTotal:
		return nil, errAllStreams
	}
	if rs.subs == nil {
		rs.subs, rs.perTeacher = map[*roomSub]struct{}{}, map[string]int{}
	}
	sub := &roomSub{teacher: teacher, ch: make(chan struct{}, 1), dirty: map[string]bool{}}
	rs.subs[sub] = struct{}{}
	rs.perTeacher[teacher]++
	return sub, nil
}

func (rs *roomStates) unsubscribe(sub *roomSub) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if _, ok := rs.subs[sub]; !ok {
		return
	}
	delete(rs.subs, sub)
	if rs.perTeacher[sub.teacher]--; rs.perTeacher[sub.teacher] <= 0 {
		delete(rs.perTeacher, sub.teacher)
	}
}

// take returns the rooms that changed since the last take.
func (rs *roomStates) take(sub *roomSub) []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]string, 0, len(sub.dirty))
	for d := range sub.dirty {
		out = append(out, d)
	}
	clear(sub.dirty)
	return out
}

// changedLocked marks device changed for every subscriber.
func (rs *roomStates) changedLocked(device string) {
	for sub := range rs.subs {
		sub.dirty[device] = true
		select {
		case sub.ch <- struct{}{}:
		default:
		}
	}
}

// set stores device's state (nil: forget it, the box went offline or
// reconnected) and tells the subscribers.
func (rs *roomStates) set(device string, st *wire.ConsentState) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.state == nil {
		rs.state = map[string]*wire.ConsentState{}
	}
	if st == nil {
		delete(rs.state, device)
	} else {
		rs.state[device] = st
	}
	rs.changedLocked(device)
}

func (rs *roomStates) get(device string) *wire.ConsentState {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.state[device]
}

// changed tells the subscribers that device changed on another receiver.
func (rs *roomStates) changed(device string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.changedLocked(device)
}

// room is device as the teacher endpoints show it (its state as the
// receiver holding it has it, when that is another one).
func (h *Hub) room(device string) TeacherRoom {
	if _, online := h.local(device); online {
		return TeacherRoom{Device: device, Online: true, State: h.rooms.get(device)}
	}
	r := TeacherRoom{Device: device}
	if h.peer == nil {
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	ho, ok, err := h.peer.Holder(ctx, device)
	if err != nil || !ok {
		return r
	}
	r.Online = true
	if ho.State != nil {
		var st wire.ConsentState
		if json.Unmarshal(ho.State, &st) == nil {
			r.State = &st
		}
	}
	return r
}

// setConsentState stores the state c's box pushed, unless c was replaced
// meanwhile (a late message of an old connection), and shares it with the
// other receivers.
func (h *Hub) setConsentState(ctx context.Context, c *controlConn, st wire.ConsentState) (bool, error) {
	h.mu.Lock()
	current := h.conns[c.device] == c
	h.mu.Unlock()
	if !current {
		return false, nil
	}
	h.rooms.set(c.device, &st)
	if h.peer == nil {
		return true, nil
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return true, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	return true, h.peer.SetState(ctx, c.device, c.since, raw)
}

// serveBoxRequest answers a request the box sent: OpConsentState and
// OpBoxReport (fleet.go) are stored and answered 200; any other op is
// refused (unknown-op).
func (s *Server) serveBoxRequest(ctx context.Context, c *controlConn, e wire.Envelope) {
	var req wire.Request
	if err := e.Decode(&req); err != nil {
		writeRaw(ctx, c.conn, wire.ErrorEnvelope(e.ID, err))
		return
	}
	if req.Op == wire.OpBoxReport {
		s.serveBoxReport(ctx, c, e.ID, req.Params)
		return
	}
	if req.Op != wire.OpConsentState {
		writeRaw(ctx, c.conn, wire.ErrorEnvelope(e.ID, &wire.ControlError{Code: wire.CodeUnknownOp, Message: fmt.Sprintf("op %q is not served by the receiver", req.Op)}))
		return
	}
	var st wire.ConsentState
	resp := wire.Response{Status: http.StatusOK}
	if err := json.Unmarshal(req.Params, &st); err != nil {
		resp = wire.Response{Status: http.StatusBadRequest, Error: "consent.state params: " + err.Error()}
	} else if current, err := s.hub.setConsentState(ctx, c, st); !current {
		resp = wire.Response{Status: http.StatusConflict, Error: "this control connection was replaced by a newer one"}
	} else if err != nil {
		s.log.Warn("consent state not shared with the other receivers: their teachers' pages show the previous one", "device", c.device, "err", err)
	}
	if err := writeEnvelope(ctx, c.conn, wire.TypeResponse, e.ID, resp); err != nil {
		s.log.Warn("consent.state answer not sent", "device", c.device, "err", err)
	}
}
