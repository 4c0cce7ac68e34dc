package diag

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteText writes the report for a person: one aligned line per check,
// and the remedy under every check that did not pass.
//
//	PASS  camera       30.0 fps measured (configured 30), camera /dev/video0
//	FAIL  receiver     tcp to rx.example.org:443 failed (refused): …
//	      remedy: nothing listens on rx.example.org:443: check that the receiver runs …
func WriteText(w io.Writer, r Report) error {
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", strings.ToUpper(c.Status), width, c.Name, c.Summary)
		if c.Remedy != "" {
			fmt.Fprintf(&b, "      remedy: %s\n", c.Remedy)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note  %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON document (schema
// version SchemaVersion, documented in docs/diag.md).
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
