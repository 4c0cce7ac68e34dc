package stream

import (
	"bytes"
	"compress/zlib"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/uploadbox/uploadbox/crypto/internal/testvec"
)

type wycheproofFile struct {
	Algorithm     string `json:"algorithm"`
	NumberOfTests int    `json:"numberOfTests"`
	TestGroups    []struct {
		Type  string `json:"type"`
		Tests []struct {
			TcID      int      `json:"tcId"`
			Comment   string   `json:"comment"`
			Key       string   `json:"key"`
			Ctx       string   `json:"ctx"`
			Ct        string   `json:"ct"`
			AeadKey   *string  `json:"aeadKey"`
			BaseNonce *string  `json:"baseNonce"`
			MsgLength *int     `json:"msgLength"`
			MsgSha512 *string  `json:"msgSha512"`
			Result    string   `json:"result"`
			Flags     []string `json:"flags"`
		} `json:"tests"`
	} `json:"testGroups"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

// TestWycheproof runs every Cobblestone-256 vector from ../shared/vectors.
// A missing file is a failure, not a skip.
func TestWycheproof(t *testing.T) {
	dir, err := testvec.Dir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c2sp_chunked_encryption_aes_256_gcm_test.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the Wycheproof vectors are required: %v", err)
	}
	var f wycheproofFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if f.Algorithm != "Cobblestone-256" {
		t.Fatalf("algorithm %q, want Cobblestone-256", f.Algorithm)
	}
	ran := 0
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			ran++
			t.Run(strconv.Itoa(tc.TcID), func(t *testing.T) {
				zr, err := zlib.NewReader(bytes.NewReader(unhex(t, tc.Ct)))
				if err != nil {
					t.Fatal(err)
				}
				ct, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				key, ctx := unhex(t, tc.Key), unhex(t, tc.Ctx)
				headerFailure := slices.Contains(tc.Flags, "HeaderFailure")

				if tc.AeadKey != nil && len(ct) >= SaltSize {
					ak, bn, err := DerivedForTest(key, ct[:SaltSize], ctx)
					if err != nil {
						t.Fatal(err)
					}
					if hex.EncodeToString(ak) != *tc.AeadKey || hex.EncodeToString(bn) != *tc.BaseNonce {
						t.Errorf("derived key/nonce mismatch")
					}
				}

				r, err := NewReader(key, ctx, bytes.NewReader(ct))
				var released []byte
				if err == nil {
					released, err = io.ReadAll(r)
					// Errors are sticky: a second read fails the same way.
					if n, err2 := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err2, err) && !(err == nil && err2 == io.EOF) {
						t.Errorf("read after end: n=%d err=%v, first err %v", n, err2, err)
					}
				} else if !headerFailure {
					t.Errorf("failed in the header but the vector is not a HeaderFailure: %v", err)
				}
				if headerFailure && r != nil {
					t.Errorf("HeaderFailure vector passed the header check")
				}
				switch tc.Result {
				case "valid":
					if err != nil {
						t.Fatalf("%s: valid vector failed: %v", tc.Comment, err)
					}
				case "invalid":
					if err == nil {
						t.Fatalf("%s: invalid vector opened", tc.Comment)
					}
				default:
					t.Fatalf("unknown result %q", tc.Result)
				}
				if tc.MsgLength == nil {
					if len(released) != 0 {
						t.Errorf("released %d bytes, want none", len(released))
					}
					return
				}
				if len(released) != *tc.MsgLength {
					t.Fatalf("released %d bytes, want %d", len(released), *tc.MsgLength)
				}
				sum := sha512.Sum512(released)
				if hex.EncodeToString(sum[:]) != *tc.MsgSha512 {
					t.Errorf("released plaintext SHA-512 mismatch")
				}
			})
		}
	}
	if ran != f.NumberOfTests || ran != 35 {
		t.Fatalf("ran %d vectors, file declares %d, want 35", ran, f.NumberOfTests)
	}
}
