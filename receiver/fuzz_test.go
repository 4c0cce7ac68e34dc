package receiver

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func FuzzParseCommitRequest(f *testing.F) {
	f.Add([]byte(`{"upload_id":"0123456789abcdef0123456789abcdef","size":5,"sha256":"` + strings.Repeat("ab", 32) + `"}`))
	f.Add([]byte(`{"upload_id":"../../ca.key","size":5,"sha256":""}`))
	f.Add([]byte(`{"upload_id":"0123456789abcdef0123456789abcdef","size":-1,"sha256":"00"} {}`))
	f.Add([]byte(`{"upload_id":"0123456789abcdef0123456789abcdef","size":5,"blake3":"` + strings.Repeat("cd", 32) + `"}`))
	f.Add([]byte(`{"upload_id":"0123456789abcdef0123456789abcdef","size":5,"blake3":"` + strings.Repeat("cd", 32) + `","sha256":"` + strings.Repeat("ab", 32) + `"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCommitRequest(bytes.NewReader(body))
		if err != nil {
			return
		}
		// Whatever is accepted is safe to use as a file name and a hash.
		if !uploadID.MatchString(req.UploadID) || strings.ContainsAny(req.UploadID, "./\\") {
			t.Fatalf("accepted upload id %q", req.UploadID)
		}
		alg, sum := req.Hash()
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 || (req.SHA256 != "") == (req.BLAKE3 != "") {
			t.Fatalf("accepted %s %q (sha256 %q, blake3 %q)", alg, sum, req.SHA256, req.BLAKE3)
		}
		if req.Size <= 0 || req.Size > MaxSegmentSize {
			t.Fatalf("accepted size %d", req.Size)
		}
	})
}

func FuzzCheckMetadata(f *testing.F) {
	f.Add("filename " + base64.StdEncoding.EncodeToString([]byte("x.ubx")))
	f.Add("a,b YQ==,c")
	f.Add("name !!!")
	f.Add(strings.Repeat("k v,", 20))
	f.Fuzz(func(t *testing.T, h string) {
		if checkMetadata(h) != nil || h == "" {
			return
		}
		for _, p := range strings.Split(h, ",") {
			parts := strings.Fields(p)
			if len(parts) == 0 || !metadataKey.MatchString(parts[0]) {
				t.Fatalf("accepted pair %q", p)
			}
			if len(parts) == 2 {
				if _, err := base64.StdEncoding.Strict().DecodeString(parts[1]); err != nil {
					t.Fatalf("accepted value %q", parts[1])
				}
			}
		}
	})
}
