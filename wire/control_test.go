package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
		code string
	}{
		{name: "hello", in: `{"v":1,"type":"hello","body":{"device":"room-7","version":"1.0","capabilities":[]}}`},
		{name: "request with id", in: `{"v":1,"type":"request","id":"r1","body":{"op":"x"}}`},
		{name: "unknown version", in: `{"v":2,"type":"hello"}`, want: ErrUnknownVersion, code: CodeUnknownVersion},
		{name: "no version", in: `{"type":"hello"}`, want: ErrUnknownVersion, code: CodeUnknownVersion},
		{name: "unknown type", in: `{"v":1,"type":"shell"}`, want: ErrUnknownType, code: CodeUnknownType},
		{name: "unknown envelope field", in: `{"v":1,"type":"hello","extra":1}`, want: ErrBadMessage, code: CodeBadMessage},
		{name: "not JSON", in: `hello`, want: ErrBadMessage, code: CodeBadMessage},
		{name: "two messages", in: `{"v":1,"type":"hello"}{"v":1,"type":"hello"}`, want: ErrBadMessage, code: CodeBadMessage},
		{name: "too large", in: `{"v":1,"type":"hello","body":"` + strings.Repeat("a", MaxControlMessage) + `"}`, want: ErrBadMessage, code: CodeBadMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEnvelope([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseEnvelope: %v, want %v", err, tt.want)
			}
			if err == nil {
				return
			}
			ee := ErrorEnvelope(e.ID, err)
			back, perr := ParseEnvelope(mustJSON(t, ee))
			if perr != nil || back.Type != TypeError {
				t.Fatalf("error envelope %+v: %v", back, perr)
			}
			var ce ControlError
			if err := back.Decode(&ce); err != nil || ce.Code != tt.code {
				t.Fatalf("error body %+v (%v), want code %s", ce, err, tt.code)
			}
			if tt.code == CodeUnknownVersion && (len(ce.Versions) != 1 || ce.Versions[0] != ControlVersion) {
				t.Fatalf("unknown-version error names versions %v", ce.Versions)
			}
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	h := Hello{Device: "room-7", Version: "v1", Capabilities: []string{"a"}}
	e, err := NewEnvelope(TypeHello, "", h)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseEnvelope(mustJSON(t, e))
	if err != nil {
		t.Fatal(err)
	}
	var got Hello
	if err := back.Decode(&got); err != nil || got.Device != h.Device || got.Version != h.Version || len(got.Capabilities) != 1 {
		t.Fatalf("hello %+v: %v", got, err)
	}
	// A body field this side does not know is ignored (added within a version).
	e2, _ := ParseEnvelope([]byte(`{"v":1,"type":"hello","body":{"device":"d","later":true}}`))
	if err := e2.Decode(&got); err != nil || got.Device != "d" {
		t.Fatalf("hello with a newer field: %+v %v", got, err)
	}
	if err := (Envelope{V: 1, Type: TypeHello}).Decode(&got); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("decode without a body: %v", err)
	}
	// A *ControlError is sent as it is.
	ee := ErrorEnvelope("r9", &ControlError{Code: CodeUnknownOp, Message: "no such op"})
	var ce ControlError
	if err := ee.Decode(&ce); err != nil || ce.Code != CodeUnknownOp || ee.ID != "r9" {
		t.Fatalf("control error %+v id %q: %v", ce, ee.ID, err)
	}
}

func TestCalls(t *testing.T) {
	var c Calls
	id1, ch1 := c.Add()
	id2, ch2 := c.Add()
	if id1 == id2 {
		t.Fatalf("two requests got the same id %q", id1)
	}
	if !c.Resolve(Envelope{V: 1, Type: TypeResponse, ID: id2}) {
		t.Fatal("the response to a waiting request was not delivered")
	}
	if e := <-ch2; e.ID != id2 {
		t.Fatalf("got %q on %q's channel", e.ID, id2)
	}
	if c.Resolve(Envelope{V: 1, Type: TypeResponse, ID: id2}) {
		t.Fatal("a second response to the same request was delivered")
	}
	c.Forget(id1)
	if c.Resolve(Envelope{V: 1, Type: TypeResponse, ID: id1}) {
		t.Fatal("a response to a forgotten request was delivered")
	}
	select {
	case e := <-ch1:
		t.Fatalf("forgotten request got %+v", e)
	default:
	}
	if c.Resolve(Envelope{V: 1, Type: TypeResponse, ID: "r999"}) {
		t.Fatal("a response to an unknown id was delivered")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
