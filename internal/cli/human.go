package cli

import (
	"fmt"
	"time"
)

// Bytes prints a size for people: "512 B", "3.4 KiB", "12.0 MiB", "1.5 GiB".
func Bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

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
