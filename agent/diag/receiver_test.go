package diag

import (
	"crypto/tls"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
)

// tlsServer starts a real HTTPS server on 127.0.0.1:0 with cfg; the
// handler sets the Date header from date when it is not nil.
func tlsServer(t *testing.T, cfg *tls.Config, date func() time.Time) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if date != nil {
			w.Header().Set("Date", date().UTC().Format(http.TimeFormat))
		}
		http.NotFound(w, r)
	}))
	srv.TLS = cfg
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "https://" + srv.Listener.Addr().String()
}

// TestReceiverCauses connects to a real TLS peer for each way the
// connection fails and checks the stage and cause named.
func TestReceiverCauses(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		server func(t *testing.T, b *box) string // returns the receiver URL
		status string
		stage  string
		cause  string
		remedy string
	}{
		{"good", func(t *testing.T, b *box) string {
			return tlsServer(t, pki.ServerTLS(b.ca, b.serverCert(t, []string{"127.0.0.1"}, now), nil), nil)
		}, Pass, "http", "", ""},
		{"wrong name", func(t *testing.T, b *box) string {
			return tlsServer(t, &tls.Config{Certificates: []tls.Certificate{b.serverCert(t, []string{"other.example"}, now)}}, nil)
		}, Fail, "tls", "wrong-name", "receiver URL"},
		{"unknown CA", func(t *testing.T, b *box) string {
			other, err := pki.NewCA("other", now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := other.IssueServer([]string{"127.0.0.1"}, now)
			if err != nil {
				t.Fatal(err)
			}
			return tlsServer(t, &tls.Config{Certificates: []tls.Certificate{c}}, nil)
		}, Fail, "tls", "unknown-ca", "CA"},
		{"TLS 1.1 only", func(t *testing.T, b *box) string {
			return tlsServer(t, &tls.Config{MaxVersion: tls.VersionTLS11,
				Certificates: []tls.Certificate{b.serverCert(t, []string{"127.0.0.1"}, now)}}, nil)
		}, Fail, "tls", "tls-version", "TLS 1.2"},
		{"expired certificate", func(t *testing.T, b *box) string {
			old := now.Add(-pki.ServerLifetime - 48*time.Hour)
			return tlsServer(t, &tls.Config{Certificates: []tls.Certificate{b.serverCert(t, []string{"127.0.0.1"}, old)}}, nil)
		}, Fail, "tls", "clock", "clock"},
		{"refused", func(t *testing.T, b *box) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			return "https://" + addr
		}, Fail, "tcp", "refused", "nothing listens"},
		{"no handshake", func(t *testing.T, b *box) string {
			// The kernel completes the TCP handshake from the backlog;
			// nobody ever accepts or answers.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return "https://" + ln.Addr().String()
		}, Fail, "tls", "timeout", "no answer"},
		{"unresolvable name", func(t *testing.T, b *box) string {
			return "https://receiver.invalid:443"
		}, Fail, "dns", "dns", "DNS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBox(t, "")
			b.enroll(t, "https://placeholder.invalid", now)
			url := tt.server(t, b)
			rewriteReceiver(t, b, url)
			start := time.Now()
			rep := Run(t.Context(), b.options("receiver"))
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the check took %v", d)
			}
			r := result(t, rep, "receiver")
			if r.Status != tt.status || r.Metrics["stage"] != tt.stage {
				t.Fatalf("got %s at stage %v (%s), want %s at stage %s", r.Status, r.Metrics["stage"], r.Summary, tt.status, tt.stage)
			}
			if cause, _ := r.Metrics["cause"].(string); cause != tt.cause {
				t.Fatalf("cause %q, want %q (%s)", cause, tt.cause, r.Summary)
			}
			if !strings.Contains(r.Remedy, tt.remedy) {
				t.Errorf("remedy %q does not mention %q", r.Remedy, tt.remedy)
			}
			if tt.status == Pass {
				if r.Metrics["http_status"] != http.StatusNotFound || r.Remedy != "" {
					t.Errorf("pass with metrics %v, remedy %q", r.Metrics, r.Remedy)
				}
			} else if !strings.Contains(r.Summary, tt.cause) {
				t.Errorf("summary %q does not name the cause", r.Summary)
			}
			if want := map[string]int{Pass: ExitPass, Fail: ExitFail}[tt.status]; rep.ExitCode() != want {
				t.Errorf("exit code %d, want %d", rep.ExitCode(), want)
			}
		})
	}
}

func rewriteReceiver(t *testing.T, b *box, url string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.state, "receiver"), []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClockSkew fakes the receiver's Date header.
func TestClockSkew(t *testing.T) {
	tests := []struct {
		name   string
		offset time.Duration // receiver's clock minus ours
		ntp    string
		status string
	}{
		{"in sync", 0, "yes", Pass},
		{"receiver 10 s ahead", 10 * time.Second, "yes", Warn},
		{"receiver 2 min behind", -2 * time.Minute, "yes", Fail},
		{"in sync, NTP off", 0, "no", Warn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			b := newBox(t, "")
			b.enroll(t, "https://placeholder.invalid", now)
			b.tool("timedatectl show -p NTPSynchronized --value", tt.ntp)
			url := tlsServer(t, pki.ServerTLS(b.ca, b.serverCert(t, []string{"127.0.0.1"}, now), nil),
				func() time.Time { return time.Now().Add(tt.offset) })
			rewriteReceiver(t, b, url)
			rep := Run(t.Context(), b.options("clock"))
			r := result(t, rep, "clock")
			if r.Status != tt.status {
				t.Fatalf("got %s (%s), want %s", r.Status, r.Summary, tt.status)
			}
			skew, ok := r.Metrics["skew_seconds"].(float64)
			// Our skew is the negative of the receiver's offset; the Date
			// header has whole seconds.
			if !ok || math.Abs(skew+tt.offset.Seconds()) > 1 {
				t.Errorf("skew %v, want about %.0f s", r.Metrics["skew_seconds"], -tt.offset.Seconds())
			}
			if r.Metrics["ntp_synchronized"] != (tt.ntp == "yes") {
				t.Errorf("ntp_synchronized %v with timedatectl %q", r.Metrics["ntp_synchronized"], tt.ntp)
			}
		})
	}
}

// TestClockExpiredCertificate: TLS failing on certificate dates fails the
// clock check too.
func TestClockExpiredCertificate(t *testing.T) {
	now := time.Now()
	b := newBox(t, "")
	b.enroll(t, "https://placeholder.invalid", now)
	old := now.Add(-pki.ServerLifetime - 48*time.Hour)
	rewriteReceiver(t, b, tlsServer(t, &tls.Config{Certificates: []tls.Certificate{b.serverCert(t, []string{"127.0.0.1"}, old)}}, nil))
	if r := result(t, Run(t.Context(), b.options("clock")), "clock"); r.Status != Fail || !strings.Contains(r.Summary, "certificate dates") {
		t.Fatalf("clock: %s %q, want a failure naming the certificate dates", r.Status, r.Summary)
	}
	if r := result(t, Run(t.Context(), b.options("receiver")), "receiver"); r.Metrics["cause"] != "clock" {
		t.Fatalf("receiver: %v", r.Metrics)
	}
}

// TestClockWithoutReceiver: with no receiver the clock check falls back
// on timedatectl, or skips with a reason.
func TestClockWithoutReceiver(t *testing.T) {
	b := newBox(t, "")
	if r := result(t, Run(t.Context(), b.options("clock")), "clock"); r.Status != Skip || !strings.Contains(r.Summary, "timedatectl") {
		t.Errorf("no receiver, no timedatectl: %s %q, want a skip naming why", r.Status, r.Summary)
	}
	b.tool("timedatectl show -p NTPSynchronized --value", "yes")
	if r := result(t, Run(t.Context(), b.options("clock")), "clock"); r.Status != Pass {
		t.Errorf("NTP synchronised: %s %q, want pass", r.Status, r.Summary)
	}
}
