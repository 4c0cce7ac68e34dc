package wire

import "time"

// OpConsentState is a control request the box sends the receiver (with
// OpBoxReport, fleet.go): params ConsentState, the box's consent state
// for its room, sent whenever it changes (at most one push per
// ConsentStateEvery, always the latest) and once after every (re)connect.
// The receiver answers 200 and keeps the latest per device in memory, for
// the teacher's page; it shows an offline box as offline, not as its last
// state.
const OpConsentState = "consent.state"

// ConsentStateEvery is the least time between two pushes of the state.
const ConsentStateEvery = 100 * time.Millisecond

// MaxConsentStateItems bounds each list of a ConsentState; the box sends
// the oldest pending requests and grants first and cuts the rest.
const MaxConsentStateItems = 64

// ConsentState is a box's consent state: whether it records, who asks,
// who may watch and whose asks are refused for a while.
type ConsentState struct {
	Recording bool `json:"recording"`
	// SessionUntil is when the recording session ends (zero: open-ended,
	// or none runs).
	SessionUntil time.Time         `json:"session_until,omitzero"`
	Pending      []ConsentPending  `json:"pending"`
	Watching     []ConsentWatching `json:"watching"`
	Cooldowns    []ConsentCooldown `json:"cooldowns"`
	// At is when the box took this state.
	At time.Time `json:"at"`
	// Anonymise is the running session's anonymisation mode (AnonymiseOff,
	// AnonymiseWhole, AnonymiseMasks); empty when none runs.
	Anonymise string `json:"anonymise,omitempty"`
	// AnonymiseDefault is the mode a session started without one gets
	// (the box's recording.anonymise), and Masks whether the box has a
	// rectangle for AnonymiseMasks (capture.masks): the teacher's page
	// offers the modes with them.
	AnonymiseDefault string `json:"anonymise_default,omitempty"`
	Masks            bool   `json:"masks,omitempty"`
}

// ConsentPending is a request that waits for the teacher.
type ConsentPending struct {
	Request string    `json:"request"`
	Viewer  string    `json:"viewer"`
	AskedAt time.Time `json:"asked_at"`
	Audio   bool      `json:"audio"`
}

// ConsentWatching is a live grant: a viewer who may watch now.
type ConsentWatching struct {
	Viewer string    `json:"viewer"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"`
	Audio  bool      `json:"audio"`
	// Talk: the grant lets this viewer speak to the teacher (talk-back).
	Talk bool `json:"talk,omitempty"`
	// Speaking: the box is playing this viewer's voice now.
	Speaking bool `json:"speaking,omitempty"`
}

// ConsentCooldown is a viewer whose asks are refused until Until, and why:
// "declined", "revoked" or "ended".
type ConsentCooldown struct {
	Viewer string    `json:"viewer"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
}
