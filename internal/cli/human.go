package cli

import (
	"fmt"
	"time"
)

// Age prints a duration for people, in its largest whole unit: "40s",
// "12m", "3h", "5d" ("0s" below a second; a negative one counts as 0).
func Age(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d > 0:
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return "0s"
}
