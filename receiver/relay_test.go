package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/uploadbox/uploadbox/wire"
)

func TestRelayAnswer(t *testing.T) {
	answer := func(a wire.WHEPResponse) wire.Response {
		b, _ := json.Marshal(a)
		return wire.Response{Status: http.StatusOK, Result: b}
	}
	tests := []struct {
		name   string
		resp   wire.Response
		err    error
		status int
		msg    bool
	}{
		{name: "created", resp: answer(wire.WHEPResponse{Status: 201, Body: []byte("v=0")}), status: 201},
		{name: "pending passes unchanged", resp: answer(wire.WHEPResponse{Status: 403, Body: []byte(`{"reason":"pending"}`)}), status: 403},
		{name: "box refuses token", resp: answer(wire.WHEPResponse{Status: 401}), status: 401},
		{name: "patch not served", resp: answer(wire.WHEPResponse{Status: 405, Header: http.Header{"Allow": {"GET, DELETE"}}}), status: 405},
		{name: "offline", err: fmt.Errorf("%w: box1", ErrOffline), status: 503, msg: true},
		{name: "timeout", err: context.DeadlineExceeded, status: 504, msg: true},
		{name: "control error", err: &wire.ControlError{Code: wire.CodeUnknownOp, Message: "x"}, status: 502, msg: true},
		{name: "other error", err: errors.New("boom"), status: 502, msg: true},
		{name: "old box", resp: wire.Response{Status: 501, Error: "op not served"}, status: 503, msg: true},
		{name: "live off", resp: wire.Response{Status: 503, Error: "off"}, status: 503, msg: true},
		{name: "bad request", resp: wire.Response{Status: 400, Error: "bad"}, status: 502, msg: true},
		{name: "malformed result", resp: wire.Response{Status: 200, Result: []byte(`"x"`)}, status: 502, msg: true},
		{name: "status out of range", resp: answer(wire.WHEPResponse{Status: 42}), status: 502, msg: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, msg := relayAnswer(tt.resp, tt.err)
			if status != tt.status || (msg != "") != tt.msg {
				t.Errorf("relayAnswer = %d %q, want %d (message: %t)", status, msg, tt.status, tt.msg)
			}
		})
	}
}

func TestWriteAnswer(t *testing.T) {
	rec := httptest.NewRecorder()
	writeAnswer(rec, "box1", wire.WHEPResponse{
		Status: http.StatusCreated,
		Header: http.Header{
			"Content-Type":       {"application/sdp"},
			"Location":           {"/whep/ABC"},
			"Etag":               {`"1"`},
			"Link":               {`<stun:example>; rel="ice-server"`},
			"Preference-Applied": {"wait=30"},
			"Talk":               {"allowed"},
			"Set-Cookie":         {"secret=1"},
			"X-Internal":         {"1"},
		},
		Body: []byte("v=0\r\n"),
	})
	h := rec.Result().Header
	for k, want := range map[string]string{
		"Content-Type": "application/sdp", "Location": "/v1/rooms/box1/whep/ABC", "ETag": `"1"`,
		"Link": `<stun:example>; rel="ice-server"`, "Preference-Applied": "wait=30", "Talk": "allowed", "Set-Cookie": "", "X-Internal": "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if rec.Code != 201 || rec.Body.String() != "v=0\r\n" {
		t.Errorf("answer %d %q, want 201 and the box's body unchanged", rec.Code, rec.Body.String())
	}
}

func TestRelayLocation(t *testing.T) {
	for loc, want := range map[string]string{
		"/whep/ABC":             "/v1/rooms/d/whep/ABC",
		"/whep":                 "/v1/rooms/d/whep",
		"https://elsewhere/x/y": "https://elsewhere/x/y",
	} {
		if got := relayLocation("d", loc); got != want {
			t.Errorf("relayLocation(%q) = %q, want %q", loc, got, want)
		}
	}
}
