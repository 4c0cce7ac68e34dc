package wire

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzBoxReportCheck: whatever a box sends that Check accepts is within
// the bounds the receiver stores and the fleet page shows.
func FuzzBoxReportCheck(f *testing.F) {
	f.Add([]byte(`{"version":"1.2.3","uptime_seconds":5,"backlog":{"segments":1,"bytes":10,"held":0},"alerts":[{"kind":"recording-stopped","message":"spool full"}],"diag":{"status":"warn","checks":{"camera":"warn"}}}`))
	f.Add([]byte(`{"alerts":[{"kind":"/home/alice","message":"x"}]}`))
	f.Add([]byte(`{"diag":{"status":"pass","checks":{"camera":"great"}}}`))
	f.Add([]byte(`{"backlog":{"segments":-1}}`))
	f.Add([]byte(`{"version":"` + strings.Repeat("v", 65) + `"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r BoxReport
		if json.Unmarshal(body, &r) != nil || r.Check() != nil {
			return
		}
		if len(r.Version) > maxReportVersion || len(r.Alerts) > MaxReportAlerts || r.Backlog.Segments < 0 || r.Backlog.Bytes < 0 {
			t.Fatalf("accepted %+v", r)
		}
		for _, a := range r.Alerts {
			if !reportName.MatchString(a.Kind) || len(a.Message) > MaxAlertMessage || !utf8.ValidString(a.Message) {
				t.Fatalf("accepted alert %+v", a)
			}
		}
		if d := r.Diag; d != nil {
			for n, s := range d.Checks {
				if !reportName.MatchString(n) || !diagStatuses[s] {
					t.Fatalf("accepted diag check %q=%q", n, s)
				}
			}
		}
	})
}
