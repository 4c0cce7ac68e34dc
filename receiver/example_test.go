package receiver_test

import (
	"context"
	"fmt"
	"log"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
)

// Export joins the sealed segments of one recording into rec.mp4.
func ExampleExport() {
	org, err := crypto.ReadIdentityFile("org.key")
	if err != nil {
		log.Fatal(err)
	}
	segments := []string{"rec-000000.ubx", "rec-000001.ubx", "rec-000002.ubx"}
	rep, err := receiver.Export(context.Background(), "rec.mp4", []*crypto.Identity{org}, segments, receiver.ExportOptions{
		Progress: func(done, total int64) { fmt.Printf("\r%3d%%", done*100/max(total, 1)) },
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range rep.Segments {
		fmt.Printf("%s segment %d %s: %d fragments\n", s.Outcome, s.Sequence, s.Path, s.Fragments)
	}
	for _, w := range rep.Warnings {
		fmt.Println("warning:", w)
	}
	fmt.Printf("%s: %v, %d bytes\n", rep.Output, rep.Duration, rep.Bytes)
}
