package crypto_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/uploadbox/uploadbox/crypto"
)

// A box seals media to the organisation's public key; the receiver checks
// the segment without keys; whoever holds the private key opens it.
func Example() {
	org, _ := crypto.GenerateIdentity(crypto.SuiteXWing) // lives offline
	device, _ := crypto.GenerateDeviceKey()              // lives on the box

	var segment bytes.Buffer
	w, err := crypto.NewWriter(&segment, []*crypto.Recipient{org.Recipient()}, device, crypto.Params{Codec: "video/mp4"})
	if err != nil {
		panic(err)
	}
	w.Write([]byte("one second of video"))
	if err := w.Close(); err != nil {
		panic(err)
	}

	info, err := crypto.Verify(bytes.NewReader(segment.Bytes()), device.Public())
	fmt.Println("verify:", crypto.OutcomeOf(err), info.Commitment == w.Commitment())

	r, err := crypto.NewReader(bytes.NewReader(segment.Bytes()), org)
	if err != nil {
		panic(err)
	}
	media, err := io.ReadAll(r)
	fmt.Printf("open: %s %q\n", crypto.OutcomeOf(err), media)

	// A power cut before the trailer leaves an authentic but unfinished segment.
	_, err = crypto.Verify(bytes.NewReader(segment.Bytes()[:segment.Len()-10]), device.Public())
	fmt.Println("cut:", crypto.OutcomeOf(err), errors.Is(err, crypto.ErrTruncated))
	// Output:
	// verify: OK true
	// open: OK "one second of video"
	// cut: TRUNCATED true
}
