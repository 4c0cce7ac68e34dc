package consent_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
)

// A coach asks, the teacher accepts without audio, the coach watches, and
// a revoke ends the watch.
func Example() {
	dir, _ := os.MkdirTemp("", "consent-example")
	defer os.RemoveAll(dir)
	log, _ := audit.Open(filepath.Join(dir, "audit.jsonl"))
	l, err := consent.Open(filepath.Join(dir, "consent.db"), consent.Options{Audit: log})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	l.SessionStarted(time.Time{})

	_, err = l.Ask("coach-anna", true)
	var denied *consent.Denied
	if errors.As(err, &denied) {
		fmt.Println("live view refused:", denied.Reason)
	}
	g, _ := l.Accept(denied.Request, 20*time.Minute, true, "uid:1000(teacher)")
	g, _ = l.Ask("coach-anna", true)
	fmt.Println("granted to", g.Viewer, "audio:", g.Audio)

	ended, cancel := l.Watch("coach-anna")
	defer cancel()
	l.Revoke("coach-anna", "uid:1000(teacher)")
	fmt.Println("watch ended:", <-ended)

	rep, err := consent.VerifyAudit(filepath.Join(dir, "audit.jsonl"))
	fmt.Println("audit entries:", rep.Entries, "error:", err)
	// Output:
	// live view refused: pending
	// granted to coach-anna audio: false
	// watch ended: revoked
	// audit entries: 3 error: <nil>
}
