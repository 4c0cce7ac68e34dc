package wire

import (
	"encoding/json"
	"testing"
)

// TestJSONNames pins the field names both ends speak: a box and a
// receiver of different versions must still understand each other.
func TestJSONNames(t *testing.T) {
	off := int64(42)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"refusal", Refusal{Error: "e", Reason: ReasonIncomplete, Offset: &off}, `{"error":"e","reason":"incomplete","offset":42}`},
		{"refusal without reason", Refusal{Error: "e"}, `{"error":"e"}`},
		{"commit request", CommitRequest{UploadID: "u", Size: 1, SHA256: "s"}, `{"upload_id":"u","size":1,"sha256":"s"}`},
		{"commit response", CommitResponse{Receipt: "r", Key: "k", Outcome: "OK", Repeated: true}, `{"receipt":"r","key":"k","outcome":"OK","repeated":true}`},
		{"enroll request", EnrollRequest{Token: "t", DeviceKey: "d", Proof: "p"}, `{"token":"t","device_key":"d","proof":"p"}`},
		{"enroll response", EnrollResponse{Certificate: "c", CA: "a", ReceiptKey: "r", Recipients: []string{"x"}, TokenKey: "k"}, `{"certificate":"c","ca":"a","receipt_key":"r","recipients":["x"],"token_key":"k"}`},
		{"enroll response from an old receiver", EnrollResponse{}, `{"certificate":"","ca":"","receipt_key":"","recipients":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("got  %s\nwant %s", b, tt.want)
			}
		})
	}
}

func TestEnrollProofDomain(t *testing.T) {
	if got := string(EnrollProof("tok")); got != "uploadbox.enroll.v1\x00tok" {
		t.Fatalf("EnrollProof = %q", got)
	}
}
