package uploader

import (
	"errors"
	"net/http"
	"testing"

	"github.com/uploadbox/uploadbox/wire"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		reason   string
		atCommit bool
		want     action
	}{
		{"incomplete resumes", http.StatusConflict, wire.ReasonIncomplete, true, actResume},
		{"not-found starts afresh", http.StatusNotFound, wire.ReasonNotFound, true, actFresh},
		{"mismatch starts afresh", http.StatusConflict, wire.ReasonMismatch, true, actFresh},
		{"exists quarantines", http.StatusConflict, wire.ReasonExists, true, actQuarantine},
		{"chain quarantines", http.StatusConflict, wire.ReasonChain, true, actQuarantine},
		{"foreign-key quarantines", http.StatusForbidden, wire.ReasonForeignKey, true, actQuarantine},
		{"key-compromised quarantines", http.StatusForbidden, wire.ReasonKeyCompromised, true, actQuarantine},
		{"key-compromised on a tus request quarantines too", http.StatusForbidden, wire.ReasonKeyCompromised, false, actQuarantine},
		{"corrupt quarantines", http.StatusUnprocessableEntity, wire.ReasonCorrupt, true, actQuarantine},
		{"device-inactive is the box, not the segment", http.StatusForbidden, wire.ReasonDeviceInactive, true, actDeviceRefused},
		{"device-inactive on a tus request", http.StatusForbidden, wire.ReasonDeviceInactive, false, actDeviceRefused},
		{"no-certificate", http.StatusUnauthorized, wire.ReasonNoCertificate, true, actDeviceRefused},
		{"busy", http.StatusServiceUnavailable, wire.ReasonBusy, true, actLater},
		{"internal", http.StatusInternalServerError, wire.ReasonInternal, true, actLater},
		{"quota", http.StatusRequestEntityTooLarge, wire.ReasonQuota, true, actLater},
		{"bad-request", http.StatusBadRequest, wire.ReasonBadRequest, true, actLater},
		{"reason wins over status", http.StatusForbidden, wire.ReasonBusy, true, actLater},
		// No reason (or one this box does not know): the status decides.
		{"404 without reason", http.StatusNotFound, "", true, actFresh},
		{"410 on a tus request", http.StatusGone, "", false, actFresh},
		{"404 on a tus request", http.StatusNotFound, "", false, actFresh},
		{"409 without reason: fresh, bounded", http.StatusConflict, "", true, actFresh},
		{"409 unknown reason", http.StatusConflict, "something-new", true, actFresh},
		{"409 on a tus PATCH is tus's offset conflict", http.StatusConflict, "", false, actLater},
		{"403 at commit without reason quarantines", http.StatusForbidden, "", true, actQuarantine},
		{"403 on a tus request is the box", http.StatusForbidden, "", false, actDeviceRefused},
		{"401", http.StatusUnauthorized, "", false, actDeviceRefused},
		{"422 without reason", http.StatusUnprocessableEntity, "", true, actQuarantine},
		{"413", http.StatusRequestEntityTooLarge, "", true, actLater},
		{"429", http.StatusTooManyRequests, "", true, actLater},
		{"500", http.StatusInternalServerError, "", true, actLater},
		{"503", http.StatusServiceUnavailable, "", false, actLater},
		{"400", http.StatusBadRequest, "", true, actLater},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.status, tt.reason, tt.atCommit); got != tt.want {
				t.Errorf("decide(%d, %q, %v) = %s, want %s", tt.status, tt.reason, tt.atCommit, got, tt.want)
			}
		})
	}
}

func TestRefusalOf(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantReason string
		wantMsg    string
		wantOffset int64 // -1: none
		wantDevice bool
	}{
		{"refusal with reason", 409, `{"error":"stored with other bytes","reason":"exists"}`, "exists", "stored with other bytes", -1, false},
		{"incomplete with offset", 409, `{"error":"not finished","reason":"incomplete","offset":4096}`, "incomplete", "not finished", 4096, false},
		{"old receiver: error only", 403, `{"error":"device is not active"}`, "", "device is not active", -1, false},
		{"device inactive", 403, `{"error":"device is not active","reason":"device-inactive"}`, "device-inactive", "device is not active", -1, true},
		{"plain text from a proxy", 502, "bad gateway\n", "", "bad gateway", -1, false},
		{"empty body", 503, "", "", "Service Unavailable", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := refusalOf("commit", tt.status, []byte(tt.body), true)
			if e.Reason != tt.wantReason || e.Message != tt.wantMsg || e.Status != tt.status {
				t.Errorf("got %+v", e)
			}
			if (e.Offset == nil) != (tt.wantOffset < 0) || (e.Offset != nil && *e.Offset != tt.wantOffset) {
				t.Errorf("offset %v, want %d", e.Offset, tt.wantOffset)
			}
			if errors.Is(e, ErrDeviceRefused) != tt.wantDevice {
				t.Errorf("errors.Is(%v, ErrDeviceRefused) = %v", e, !tt.wantDevice)
			}
		})
	}
}
