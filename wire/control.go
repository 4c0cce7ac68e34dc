package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// The control connection: one WebSocket the enrolled box opens to the
// receiver (GET ControlPath, upgraded, over the box's mutual TLS). Every
// message is an Envelope in a WebSocket text message.
const (
	// ControlPath is the receiver's endpoint for the control connection.
	ControlPath = "/v1/control"
	// ControlSubprotocol is the WebSocket subprotocol both sides name.
	ControlSubprotocol = "uploadbox.control.v1"
	// ControlVersion is the envelope version this code speaks.
	ControlVersion = 1
	// MaxControlMessage bounds one message in bytes.
	MaxControlMessage = 1 << 20
)

// Envelope types.
const (
	// TypeHello is the box's first message (body Hello).
	TypeHello = "hello"
	// TypeWelcome is the receiver's answer to a hello (body Welcome).
	TypeWelcome = "welcome"
	// TypeError says a message was refused (body ControlError); its ID is
	// the refused message's, if it had one.
	TypeError = "error"
	// TypeRequest asks the other side for something (body Request); the
	// answer is a TypeResponse with the same ID.
	TypeRequest = "request"
	// TypeResponse answers the request with the same ID (body Response).
	TypeResponse = "response"
)

var knownTypes = map[string]bool{TypeHello: true, TypeWelcome: true, TypeError: true, TypeRequest: true, TypeResponse: true}

// Codes of a ControlError.
const (
	CodeUnknownVersion = "unknown-version"
	CodeUnknownType    = "unknown-type"
	CodeBadMessage     = "bad-message"
	CodeUnknownOp      = "unknown-op"
	CodeRefused        = "refused"
)

// Errors of ParseEnvelope, for callers that branch.
var (
	ErrUnknownVersion = errors.New("unknown control message version")
	ErrUnknownType    = errors.New("unknown control message type")
	ErrBadMessage     = errors.New("malformed control message")
)

// Envelope is one control message: a version, a type, an ID that pairs a
// response with its request, and a body whose shape the type decides.
type Envelope struct {
	V    int             `json:"v"`
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Hello is the box's first message on a new control connection.
type Hello struct {
	// Device is the name on the box's certificate; the receiver refuses a
	// hello that names another device.
	Device string `json:"device"`
	// Version is the box's software version.
	Version string `json:"version"`
	// Capabilities name the request ops the box answers (none yet).
	Capabilities []string `json:"capabilities"`
}

// Welcome is the receiver's answer to a hello.
type Welcome struct {
	Device string `json:"device"`
	// PingSeconds is how often the receiver pings; the box may use it to
	// choose its own timeout.
	PingSeconds int `json:"ping_seconds"`
}

// ControlError refuses a message.
type ControlError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Versions are the envelope versions the sender speaks (with
	// CodeUnknownVersion).
	Versions []int `json:"versions,omitempty"`
}

func (e *ControlError) Error() string { return e.Code + ": " + e.Message }

// Request asks for Op with Params.
type Request struct {
	Op     string          `json:"op"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response answers a request: Status is HTTP-like (200 ok, 4xx refused,
// 5xx failed), Error says why when it is not 2xx.
type Response struct {
	Status int             `json:"status"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// NewEnvelope makes an envelope of type typ with body encoded as JSON
// (nil: no body).
func NewEnvelope(typ, id string, body any) (Envelope, error) {
	e := Envelope{V: ControlVersion, Type: typ, ID: id}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Envelope{}, fmt.Errorf("control message %s: %w", typ, err)
		}
		e.Body = b
	}
	return e, nil
}

// ParseEnvelope decodes one message. A version other than ControlVersion
// is ErrUnknownVersion, a type this code does not know ErrUnknownType, and
// anything else malformed ErrBadMessage; ErrorEnvelope turns each into the
// answer to send back.
func ParseEnvelope(data []byte) (Envelope, error) {
	var e Envelope
	if len(data) > MaxControlMessage {
		return e, fmt.Errorf("%w: %d bytes, more than %d", ErrBadMessage, len(data), MaxControlMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if dec.More() {
		return e, fmt.Errorf("%w: data after the message", ErrBadMessage)
	}
	if e.V != ControlVersion {
		return e, fmt.Errorf("%w: v=%d (this side speaks v=%d)", ErrUnknownVersion, e.V, ControlVersion)
	}
	if !knownTypes[e.Type] {
		return e, fmt.Errorf("%w: %q", ErrUnknownType, e.Type)
	}
	return e, nil
}

// Decode decodes the envelope's body into v; fields v does not know are
// ignored, so that a newer peer may add some within a version.
func (e Envelope) Decode(v any) error {
	if len(e.Body) == 0 {
		return fmt.Errorf("%w: %s without a body", ErrBadMessage, e.Type)
	}
	if err := json.Unmarshal(e.Body, v); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrBadMessage, e.Type, err)
	}
	return nil
}

// ErrorEnvelope is the error message that answers a refused message: the
// ParseEnvelope sentinels map to their codes, a *ControlError is sent as
// it is, and anything else is CodeBadMessage. id is the refused message's
// ID, if known.
func ErrorEnvelope(id string, err error) Envelope {
	ce := &ControlError{Code: CodeBadMessage, Message: err.Error()}
	switch {
	case errors.As(err, &ce):
	case errors.Is(err, ErrUnknownVersion):
		ce = &ControlError{Code: CodeUnknownVersion, Message: err.Error(), Versions: []int{ControlVersion}}
	case errors.Is(err, ErrUnknownType):
		ce.Code = CodeUnknownType
	}
	e, _ := NewEnvelope(TypeError, id, ce)
	return e
}

// Calls pairs requests with their responses: Add gives a new request ID
// and the channel its response arrives on, Resolve delivers a response to
// it. The zero value is ready to use.
type Calls struct {
	mu    sync.Mutex
	next  uint64
	waits map[string]chan Envelope
}

// Add reserves a request ID; the caller must Forget it when done.
func (c *Calls) Add() (string, <-chan Envelope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waits == nil {
		c.waits = map[string]chan Envelope{}
	}
	c.next++
	id := "r" + strconv.FormatUint(c.next, 10)
	ch := make(chan Envelope, 1)
	c.waits[id] = ch
	return id, ch
}

// Resolve delivers a response or error envelope to the request with its
// ID; false if no request waits for it (unknown, answered or forgotten).
func (c *Calls) Resolve(e Envelope) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.waits[e.ID]
	if !ok {
		return false
	}
	delete(c.waits, e.ID)
	ch <- e
	return true
}

// Forget drops a request that no longer waits.
func (c *Calls) Forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waits, id)
}

// Await waits for the answer to a request on ch (from Calls.Add) or for
// ctx: an error answer is returned as a *ControlError.
func Await(ctx context.Context, ch <-chan Envelope) (Response, error) {
	select {
	case <-ctx.Done():
		return Response{}, ctx.Err()
	case e := <-ch:
		if e.Type == TypeError {
			var ce ControlError
			if err := e.Decode(&ce); err != nil {
				return Response{}, err
			}
			return Response{}, &ce
		}
		var r Response
		return r, e.Decode(&r)
	}
}
