package cli

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// AuditFlags are the flags of `audit list` on the box and the receiver.
type AuditFlags struct {
	since string
	types []string
	last  int
}

// AddFlags adds --since, --type and --last.
func (o *AuditFlags) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.since, "since", "", "only entries from this long ago (24h, 90m, 7d) or from this time (2026-11-24, RFC 3339) on")
	f.StringSliceVar(&o.types, "type", nil, "only these events: a name (viewer.login) or a part of one (login, device); repeat or separate with commas")
	f.IntVar(&o.last, "last", 0, "only the last N entries selected (0: all)")
}

// Filter is the audit.Filter the flags ask for; a bad value is a usage error.
func (o *AuditFlags) Filter(now time.Time) (audit.Filter, error) {
	f := audit.Filter{Types: o.types, Last: o.last}
	if o.last < 0 {
		return f, Usagef("--last %d: give a number of entries (0: all)", o.last)
	}
	if o.since != "" {
		var err error
		if f.Since, err = audit.ParseSince(o.since, now); err != nil {
			return f, Usagef("%v", err)
		}
	}
	return f, nil
}

// PrintAudit prints entries as a table, times in the local zone.
func PrintAudit(w io.Writer, es []audit.Entry) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	// A chain several receivers share names the writer of each entry.
	shared := slices.ContainsFunc(es, func(e audit.Entry) bool { return e.Receiver != "" })
	head := "SEQ\tTIME\tEVENT\tIDENTITY\tSOURCE\tBY\tOUTCOME\tDETAIL"
	if shared {
		head = "SEQ\tTIME\tRECEIVER\tEVENT\tIDENTITY\tSOURCE\tBY\tOUTCOME\tDETAIL"
	}
	fmt.Fprintln(tw, head)
	for _, e := range es {
		when := e.Time.Local().Format(time.DateTime)
		if shared {
			when += "\t" + dash(e.Receiver)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, when, e.Event,
			dash(e.Identity), dash(e.Source), dash(e.By), e.Outcome, e.Detail)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
