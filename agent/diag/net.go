package diag

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/netfail"
)

// Stages of the connection to the receiver, in order.
const (
	stageDNS  = "dns"
	stageTCP  = "tcp"
	stageTLS  = "tls"
	stageHTTP = "http"
)

// Causes of a failed connection, named as the daemon's log names them.
const (
	causeClock      = netfail.Clock
	causeWrongName  = netfail.WrongName
	causeUnknownCA  = netfail.UnknownCA
	causeTLSVersion = netfail.TLSVersion
	causeRefused    = netfail.Refused
	causeTimeout    = netfail.Timeout
	causeDNS        = netfail.DNS
	causeOther      = netfail.Other
)

// probe is one connection to the receiver, stage by stage.
type probe struct {
	host, port string
	addr       string // the address connected to
	stage      string // the stage reached (failed, or http when all passed)
	cause      string // empty on success
	err        error
	tlsVersion uint16
	status     int           // HTTP status
	rtt        time.Duration // of the HTTP request
	date       time.Time     // the receiver's Date header; zero if none
	local      time.Time     // local time when the response arrived
}

// probeReceiver connects to the receiver once for the receiver and clock
// checks.
func (e *env) probeReceiver() *probe {
	e.probeOnce.Do(func() {
		st, err := e.stateOf()
		if err != nil {
			return
		}
		e.probe = e.connect(st.Receiver.Hostname(), st.Receiver.Port(), st.TLSConfig())
	})
	return e.probe
}

// connect resolves host, connects to port, shakes hands with cfg and sends
// one GET, each stage bounded by the stage timeout.
func (e *env) connect(host, port string, cfg *tls.Config) *probe {
	if port == "" {
		port = "443"
	}
	p := &probe{host: host, port: port, stage: stageDNS}
	fail := func(err error) *probe {
		p.err, p.cause = err, classify(err)
		if p.stage == stageDNS {
			// Not found, no server or no answer: all a DNS problem.
			p.cause = causeDNS
		}
		return p
	}

	addrs := []string{host}
	if net.ParseIP(host) == nil {
		ctx, cancel := e.stageCtx()
		var err error
		addrs, err = net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		if err != nil {
			return fail(err)
		}
	}

	p.stage = stageTCP
	ctx, cancel := e.stageCtx()
	var conn net.Conn
	var err error
	for _, a := range addrs {
		var d net.Dialer
		p.addr = net.JoinHostPort(a, port)
		if conn, err = d.DialContext(ctx, "tcp", p.addr); err == nil {
			break
		}
	}
	cancel()
	if err != nil {
		return fail(err)
	}
	defer conn.Close()

	p.stage = stageTLS
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(conn, cfg)
	ctx, cancel = e.stageCtx()
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		return fail(err)
	}
	p.tlsVersion = tc.ConnectionState().Version

	p.stage = stageHTTP
	req, _ := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(host, port)+"/", nil)
	req.Header.Set("User-Agent", "uploadbox-diag")
	req.Close = true
	start := time.Now()
	tc.SetDeadline(start.Add(e.o.StageTimeout))
	if err := req.Write(tc); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return fail(err)
	}
	p.local = e.o.Now()
	p.rtt = time.Since(start)
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	p.status = resp.StatusCode
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		p.date = d
	}
	p.cause = ""
	return p
}

// classify names the cause of a connection failure.
func classify(err error) string { return netfail.Classify(err) }

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func checkReceiver(e *env) Result {
	st, err := e.stateOf()
	if err != nil {
		return Result{Status: Skip, Summary: "not checked: the box is not enrolled (see the enrollment check)"}
	}
	p := e.probeReceiver()
	target := net.JoinHostPort(p.host, p.port)
	m := map[string]any{"stage": p.stage}
	if p.err == nil {
		m["tls_version"] = tlsVersionName(p.tlsVersion)
		m["http_status"] = p.status
		m["rtt_ms"] = p.rtt.Milliseconds()
		return Result{Status: Pass, Metrics: m,
			Summary: fmt.Sprintf("%s reachable over TLS %s (HTTP %d in %d ms)", st.Receiver.Redacted(), tlsVersionName(p.tlsVersion), p.status, p.rtt.Milliseconds())}
	}
	m["cause"] = p.cause
	r := Result{Status: Fail, Metrics: m,
		Summary: fmt.Sprintf("%s to %s failed (%s): %s", p.stage, target, p.cause, oneLine(p.err))}
	t := e.o.StageTimeout
	switch p.cause {
	case causeDNS:
		r.Remedy = fmt.Sprintf("check the receiver's name %q in %s/receiver and the box's DNS (resolvectl status, /etc/resolv.conf)", p.host, st.Dir)
	case causeRefused:
		r.Remedy = fmt.Sprintf("nothing listens on %s: check that the receiver runs and the port in the receiver URL", target)
	case causeTimeout:
		if p.stage == stageTCP || p.stage == stageDNS {
			r.Remedy = fmt.Sprintf("no answer within %v: check the network, and a firewall or proxy between the box and %s", t, target)
		} else {
			r.Remedy = fmt.Sprintf("the connection opened but the %s stage got no answer within %v: is %s the receiver? check for a proxy or firewall that holds TLS", p.stage, t, target)
		}
	case causeWrongName:
		r.Remedy = fmt.Sprintf("the receiver's certificate is not for %q: check the receiver URL in %s/receiver (it must be a name on the receiver's certificate)", p.host, st.Dir)
	case causeUnknownCA:
		r.Remedy = "the server's certificate is not from the CA this box enrolled with: a wrong receiver or a TLS-intercepting proxy; check the URL, or re-enroll if the receiver's CA was replaced"
	case causeClock:
		r.Remedy = fmt.Sprintf("a certificate is expired or not yet valid at the box's time %s: check the clock (timedatectl) and the receiver certificate's dates", e.o.Now().UTC().Format(time.RFC3339))
	case causeTLSVersion:
		r.Remedy = "the receiver offers neither TLS 1.2 nor 1.3 and the box refuses older versions: upgrade the receiver or the proxy in front of it"
	default:
		if strings.Contains(p.err.Error(), "certificate") {
			r.Remedy = "the receiver refused this box's certificate: it may be revoked or expired (see the certificate check); ask the administrator or re-enroll"
		} else {
			r.Remedy = fmt.Sprintf("check that %s is the receiver and that it runs (journal of uploadbox-receiver)", target)
		}
	}
	return r
}

// Clock skew limits against the receiver's Date header.
const (
	skewWarn = 2 * time.Second
	skewFail = 60 * time.Second
)

func checkClock(e *env) Result {
	m := map[string]any{}
	var ntp *bool
	if out, err := e.command("timedatectl", "show", "-p", "NTPSynchronized", "--value"); err == nil {
		v := out == "yes"
		ntp = &v
		m["ntp_synchronized"] = v
	}
	ntpText := "NTP state unknown (no timedatectl)"
	if ntp != nil && *ntp {
		ntpText = "NTP synchronised"
	} else if ntp != nil {
		ntpText = "NTP not synchronised"
	}
	ntpRemedy := "turn on time sync (timedatectl set-ntp true) and check systemd-timesyncd reaches an NTP server (timedatectl timesync-status)"

	var p *probe
	if _, err := e.stateOf(); err == nil {
		p = e.probeReceiver()
	}
	switch {
	case p != nil && p.cause == causeClock:
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("TLS to the receiver failed on certificate dates at local time %s; %s", e.o.Now().UTC().Format(time.RFC3339), ntpText),
			Remedy:  "set the clock right: " + ntpRemedy}
	case p != nil && !p.date.IsZero():
		// Date has whole seconds: the receiver's time was within the
		// second after it, so compare with its middle.
		skew := p.local.Sub(p.date.Add(500 * time.Millisecond))
		m["skew_seconds"] = math.Round(skew.Seconds()*10) / 10
		abs := skew.Abs()
		sum := fmt.Sprintf("skew %+.1f s against the receiver's Date header; %s", skew.Seconds(), ntpText)
		switch {
		case abs > skewFail:
			return Result{Status: Fail, Metrics: m, Summary: sum,
				Remedy: "the clock is off by more than a minute: TLS and receipts depend on it; " + ntpRemedy}
		case abs > skewWarn:
			return Result{Status: Warn, Metrics: m, Summary: sum, Remedy: ntpRemedy}
		case ntp != nil && !*ntp:
			return Result{Status: Warn, Metrics: m, Summary: sum, Remedy: ntpRemedy}
		}
		return Result{Status: Pass, Metrics: m, Summary: sum}
	case ntp != nil && *ntp:
		return Result{Status: Pass, Metrics: m, Summary: ntpText + " (the receiver's time is not available to measure skew)"}
	case ntp != nil:
		return Result{Status: Warn, Metrics: m, Summary: ntpText + " and the receiver's time is not available", Remedy: ntpRemedy}
	}
	return Result{Status: Skip, Metrics: m, Summary: "no reference: the receiver's Date header is not available and timedatectl is not present"}
}

// oneLine flattens an error message to one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
