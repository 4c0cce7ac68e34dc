package receiver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/internal/limit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/leader"
	"github.com/uploadbox/uploadbox/receiver/peer"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/receiver/turn"
	"github.com/uploadbox/uploadbox/receiver/viewers"
	"github.com/uploadbox/uploadbox/wire"
)

// Files and directories inside the receiver's data directory.
const (
	DBFile         = "receiver.db"
	AuditFile      = "audit.jsonl"
	ReceiptKeyFile = "receipt.key"
	// TokenKeyFile signs viewer tokens; boxes get its public half at enrollment.
	TokenKeyFile   = "token.key"
	RecipientsFile = "org.pub"
	OrgKeyFile     = "org.key"
	UploadsDir     = "uploads"
	StoreDir       = "store"

	receiptKeyPrefix = "UBX-RECEIPT-KEY-ED25519:"
	// MaxSegmentSize bounds one upload.
	MaxSegmentSize = 1 << 30
)

// ServerConfig configures `uploadbox-receiver serve`.
type ServerConfig struct {
	Data   string
	Listen string // default 127.0.0.1:8443
	// Hosts are the names and IPs in the server certificate: a stored
	// certificate for other names is reissued (servercert.go). Without
	// them, the stored certificate is kept; the first run makes one for
	// the listen IP and localhost.
	Hosts      []string
	Recipients string      // organisation public keys; empty: generate a key pair in Data on first run
	Store      store.Store // nil: the local filesystem under Data/store
	// Database, if set, is the PostgreSQL database (postgres://… or
	// key=value) that holds the state instead of the bbolt file
	// Data/DBFile (state.go).
	Database string
	Logger   *slog.Logger
	// AuditRetention is how long audit entries are kept (default 180 days).
	AuditRetention time.Duration
	// AuditCheckpointEvery is how often the audit log's head is signed
	// with the receipt key (default and at most 10 minutes; once more at
	// shutdown).
	AuditCheckpointEvery time.Duration
	// PasswordPolicy for viewer accounts, stored in the database so admin
	// commands apply it too (default medium).
	PasswordPolicy viewers.Policy
	// ViewerTokenTTL is the lifetime of a token issued at login (default
	// 15 minutes, at most 12 hours).
	ViewerTokenTTL time.Duration
	// UploadQuota bounds the declared bytes of one device's unfinished
	// uploads (default DefaultUploadQuota); MaxOpenUploads bounds their number.
	UploadQuota int64
	// UploadExpiry is how long an unfinished upload is kept (default 24h).
	UploadExpiry time.Duration
	// PatchTimeout cuts a PATCH that receives no byte for this long (default
	// 30s); the bytes received so far stay, and the upload can be resumed.
	PatchTimeout time.Duration
	// AuthRate (per second, default DefaultAuthRate) and AuthBurst
	// (default DefaultAuthBurst) are the token buckets of POST /v1/login
	// and /v1/enroll, one per source address and one per account name.
	AuthRate  float64
	AuthBurst int
	// AuditMaxBytes caps the audit log (default DefaultAuditMaxBytes): see auditGuard.
	AuditMaxBytes int64
	// RequestTimeout bounds reading the body and writing the answer of every
	// non-upload request (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// ControlPing is how often each box's control connection is pinged; a
	// ping unanswered within as long again ends it (default
	// DefaultControlPing).
	ControlPing time.Duration
	// DrainGrace is how long a stopping server (SIGTERM) lets the uploads
	// and commits running at that moment finish before it cuts them
	// (default DefaultDrainGrace).
	DrainGrace time.Duration
	// WebListen, if set, is a second HTTPS listener for browsers: only the
	// coach-facing routes (web.go), no client certificate asked, and
	// WebCert/WebKey presented (PEM chain and key, reloaded by
	// ReloadWebCertificate) or, without them, the server certificate.
	WebListen, WebCert, WebKey string
	// TURN configures the embedded TURN server, off when TURN.Listen is
	// empty (see turn.Config; the server fills in its audit and logger).
	TURN turn.Config
	// DeviceCertTTL is the lifetime of the device certificates issued at
	// enrollment and renewal (default pki.DeviceLifetime, 2 years; boxes
	// renew at two thirds of it).
	DeviceCertTTL time.Duration
	// Recordings' lifecycle (recordings.go): DeleteGrace is how long a
	// deleted recording is kept before it is purged (default
	// DefaultDeleteGrace); Retention, if set, deletes recordings that
	// old; ScrubEvery is how often every stored segment is re-read and
	// checked (0: never). Now is the clock (default time.Now), for tests.
	DeleteGrace, Retention, ScrubEvery time.Duration
	Now                                func() time.Time
	// MetricsListen, if set, is a plain HTTP listener for Prometheus
	// (GET /metrics: the fleet's per-device series, metrics.go).
	MetricsListen string
	// Where unfinished uploads are staged (staging.go): UploadsDir, if
	// set, else S3Uploads, if set, else Data/uploads.
	UploadsDir string
	S3Uploads  *S3Uploads
	// PeerLease is how long a killed receiver's boxes still count as
	// connected on the other receivers sharing its PostgreSQL state
	// (default peer.DefaultLease; peers.go), and how long a receiver's tus
	// lock session (pglock) or lifecycle leader's session (leader) may stay
	// silent before another receiver ends it.
	PeerLease time.Duration
}

// Server is the cloud receiver.
type Server struct {
	cfg     ServerConfig
	drain   drain
	log     *slog.Logger
	db      kv.DB
	audit   auditChain
	devices *devices.Registry
	ca      *pki.CA
	// serverCert is what the main listener presents; oldCert the one a
	// reissue replaced, still presented for names only it covers.
	serverCert atomic.Pointer[tls.Certificate]
	oldCert    atomic.Pointer[tls.Certificate]
	receiptKey ed25519.PrivateKey
	tokenKey   ed25519.PrivateKey
	viewers    *viewers.Registry
	login      *viewers.LoginHandler
	recipients []*crypto.Recipient
	store      store.Store
	uploads    string
	tus        *tusd.Handler
	tusStore   staging
	locker     tusd.Locker
	// hashing hashes uploads as their bytes arrive (streamed.go).
	hashing       *hashing.Store
	commitMetrics commitMetrics
	// adoption moves committed uploads into the fs store (adopt.go).
	adoption adoption
	// fails takes every failed-authentication and refused-device entry
	// (coalesced, capped).
	fails *auditGuard
	// hub holds the boxes' control connections; peers, with a PostgreSQL
	// state, reaches those other receivers hold.
	hub       Hub
	peers     *peer.Forwarder
	byAddress *limit.Keyed
	byAccount *limit.Keyed
	// webCert is what the web listener presents; webAddr where it listens.
	webCert atomic.Pointer[tls.Certificate]
	webAddr string
	// metricsAddr is where the metrics listener listens (metrics.go).
	metricsAddr string
	// turn is the TURN server while Run runs with cfg.TURN.Listen set.
	turn *turn.Server
	// life is the recordings' lifecycle; lastScrub the last scrub of all.
	life      *life
	lastScrub atomic.Pointer[ScrubReport]
	// lifeLead, with the state in PostgreSQL, elects the one receiver
	// that runs the lifecycle jobs (nil: this one runs them).
	lifeLead *leader.Elector
	// Notes for the operator from the first run (e.g. a generated org key).
	Warnings []string
}

// Open prepares the data directory (CA, server certificate, receipt key,
// database, audit log; on first run it creates them) and the handlers.
func Open(cfg ServerConfig) (*Server, error) {
	if cfg.Data == "" {
		return nil, errors.New("serve: --data is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = 180 * 24 * time.Hour
	}
	var err error
	if cfg.AuditCheckpointEvery, err = checkpointInterval(cfg.AuditCheckpointEvery); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if err := cfg.uploadDefaults(); err != nil {
		return nil, err
	}
	if cfg.AuthRate == 0 {
		cfg.AuthRate = DefaultAuthRate
	}
	if cfg.AuthBurst == 0 {
		cfg.AuthBurst = DefaultAuthBurst
	}
	if cfg.AuditMaxBytes == 0 {
		cfg.AuditMaxBytes = DefaultAuditMaxBytes
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ControlPing == 0 {
		cfg.ControlPing = DefaultControlPing
	}
	if cfg.DrainGrace == 0 {
		cfg.DrainGrace = DefaultDrainGrace
	}
	if cfg.ControlPing < 100*time.Millisecond || cfg.ControlPing > 10*time.Minute {
		return nil, fmt.Errorf("serve: --control-ping %s: use 100ms to 10m", cfg.ControlPing)
	}
	if err := checkDeviceCertTTL(cfg.DeviceCertTTL); err != nil {
		return nil, err
	}
	if cfg.TURN.Listen != "" {
		if err := cfg.TURN.Check(); err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
	}
	if err := CheckHosts(cfg.Hosts); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	hosts := cfg.Hosts
	if len(hosts) == 0 {
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("serve: --listen %q: %w", cfg.Listen, err)
		}
		hosts = []string{"localhost"}
		if host != "" && host != "localhost" {
			hosts = append([]string{host}, hosts...)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("component", "receiver")}
	s.drain.init()
	s.byAddress = limit.NewKeyed(cfg.AuthRate, cfg.AuthBurst)
	s.byAccount = limit.NewKeyed(cfg.AuthRate, cfg.AuthBurst)
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return nil, fmt.Errorf("serve: data directory: %w", err)
	}
	ca, cert, created, err := pki.LoadOrCreate(cfg.Data, hosts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("serve: certificates: %w", err)
	}
	s.ca = ca
	s.serverCert.Store(&cert)
	if created {
		s.log.Info("created CA and server certificate", "fingerprint", s.ca.Fingerprint(), "hosts", hosts)
	}
	if err := s.openWeb(); err != nil {
		return nil, err
	}
	if s.receiptKey, err = loadOrCreateReceiptKey(filepath.Join(cfg.Data, ReceiptKeyFile)); err != nil {
		return nil, err
	}
	if s.tokenKey, err = viewtoken.LoadOrCreateKey(filepath.Join(cfg.Data, TokenKeyFile), ""); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if err := s.loadRecipients(); err != nil {
		return nil, err
	}
	// The server holds the database; admin commands reach it through the
	// admin socket while it runs (see admin.go), so they never wait on it.
	if s.db, err = openState(cfg.Data, cfg.Database, 2*time.Second); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if cfg.Database != "" {
		s.log.Info("state in PostgreSQL", "database", kv.Redact(cfg.Database), "schema", kv.SchemaVersion())
	} else {
		s.log.Info("state in bbolt", "file", filepath.Join(cfg.Data, DBFile))
	}
	if pg, ok := s.db.(*kv.Postgres); ok {
		if err := s.usePeers(pg); err != nil {
			s.db.Close()
			return nil, err
		}
		s.lifeLead = leader.New(pg.Pool(), "lifecycle", 0, s.log)
		s.lifeLead.Lease = cfg.PeerLease
	}
	// The audit chain is the file in Data, or with the state in
	// PostgreSQL the one the receivers there share (auditchain.go).
	if err := s.openAudit(); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.followHosts(cfg.Hosts, "start"); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	if s.devices, err = devices.New(s.db, s.audit, devices.WithFailures(s.fails)); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := initSegments(s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := initUploads(s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := initControl(s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := initFleet(s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.openViewers(); err != nil {
		s.db.Close()
		return nil, err
	}
	s.store = cfg.Store
	if s.store == nil {
		if s.store, err = store.NewFS(filepath.Join(cfg.Data, StoreDir)); err != nil {
			s.db.Close()
			return nil, err
		}
	}
	if err := s.openLife(); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.openStaging(); err != nil {
		s.db.Close()
		return nil, err
	}
	composer := tusd.NewStoreComposer()
	s.tusStore.UseIn(composer)
	s.locker = s.newLocker(s.db)
	composer.UseLocker(s.locker)
	s.hashing = hashing.Wrap(composer, s.hashStates(s.db))
	// SHA-256 only where a commit copies (S3, another filesystem): Put checks it.
	s.hashing.SetCopying(!s.canAdopt())
	s.commitMetrics = newCommitMetrics(s.hashing)
	s.tus, err = tusd.NewHandler(tusd.Config{
		StoreComposer:           composer,
		BasePath:                "/v1/uploads/",
		MaxSize:                 MaxSegmentSize,
		DisableDownload:         true,
		DisableConcatenation:    true,
		Logger:                  expslog.New(expslog.NewTextHandler(io.Discard, nil)),
		PreUploadCreateCallback: s.preCreate,
		// The owner's DELETE also ends the upload's ownership.
		PreUploadTerminateCallback: s.preTerminate,
		// A PATCH is cut when no byte arrives for this long (a per-read
		// deadline, renewed by every read); its bytes so far are kept.
		NetworkTimeout: cfg.PatchTimeout,
		// Bytes of a cut PATCH are saved within this time; short, so that
		// shutdown stays well inside systemd's stop timeout.
		GracefulRequestCompletionTimeout: 2 * time.Second,
	})
	if err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// Fingerprint is the CA fingerprint boxes pin at enrollment.
func (s *Server) Fingerprint() string { return s.ca.Fingerprint() }

// Devices is the device registry.
func (s *Server) Devices() *devices.Registry { return s.devices }

// Hub holds the boxes' control connections.
func (s *Server) Hub() *Hub { return &s.hub }

// Viewers is the viewer account registry.
func (s *Server) Viewers() *viewers.Registry { return s.viewers }

// openViewers opens the viewer accounts, stores the password policy and
// prepares the login handler.
func (s *Server) openViewers() error {
	var err error
	if s.viewers, err = viewers.New(s.db, s.audit, viewers.WithFailures(s.fails)); err != nil {
		return err
	}
	policy := s.cfg.PasswordPolicy
	if policy == "" {
		policy = viewers.Medium
	}
	if err := s.viewers.SetPolicy(policy); err != nil {
		return fmt.Errorf("serve: --password-policy: %w", err)
	}
	if s.login, err = viewers.NewLoginHandler(s.viewers, s.tokenKey, s.cfg.ViewerTokenTTL, s.log); err != nil {
		return fmt.Errorf("serve: --viewer-token-ttl %s: %w", s.cfg.ViewerTokenTTL, err)
	}
	return nil
}

// Close releases the database.
func (s *Server) Close() error { return s.db.Close() }

func loadOrCreateReceiptKey(path string) (ed25519.PrivateKey, error) {
	data, err := crypto.ReadPrivateFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		content := "# uploadbox receiver receipt-signing key\n" + receiptKeyPrefix + base64.RawURLEncoding.EncodeToString(priv.Seed()) + "\n"
		if err := crypto.WriteKeyFile(path, content, 0o600); err != nil {
			return nil, err
		}
		return priv, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), receiptKeyPrefix); ok {
			seed, err := base64.RawURLEncoding.DecodeString(v)
			if err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("%s: receipt key is not a 32-byte seed", path)
			}
			return ed25519.NewKeyFromSeed(seed), nil
		}
	}
	return nil, fmt.Errorf("%s: no %s line", path, receiptKeyPrefix)
}

// loadRecipients reads the organisation's public keys. Without any, the
// first run makes a key pair in the data directory and warns that the
// private key belongs offline.
func (s *Server) loadRecipients() error {
	path := s.cfg.Recipients
	local := filepath.Join(s.cfg.Data, RecipientsFile)
	if path == "" {
		path = local
		if _, err := os.Stat(local); errors.Is(err, os.ErrNotExist) {
			if _, err := crypto.GenerateIdentityFile(crypto.SuiteXWing, filepath.Join(s.cfg.Data, OrgKeyFile), local); err != nil {
				return fmt.Errorf("serve: generate organisation key: %w", err)
			}
			w := fmt.Sprintf("generated an organisation key pair in %s: move %s offline (boxes only need %s)", s.cfg.Data, OrgKeyFile, RecipientsFile)
			s.Warnings = append(s.Warnings, w)
			s.log.Warn(w)
		}
	}
	rs, err := crypto.ReadRecipientsFile(path)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	s.recipients = rs
	return nil
}

// Handler returns the receiver's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/enroll", s.perAddress("device.enroll", s.bounded(s.perAccount("device.enroll", enrollName, http.HandlerFunc(s.handleEnroll)))))
	mux.Handle("POST /v1/login", s.perAddress("viewer.login", s.bounded(s.perAccount("viewer.login", loginName, s.login)))) // viewers: a password, no client certificate
	mux.Handle("/v1/uploads/", s.drainable(s.deviceOnly(http.StripPrefix("/v1/uploads/", s.ownUploads(s.tus)))))
	mux.Handle("POST /v1/commit", s.drainable(s.bounded(s.deviceOnly(http.HandlerFunc(s.handleCommit)))))
	s.healthRoutes(mux)
	mux.Handle("POST "+wire.RenewPath, s.bounded(s.deviceOnly(http.HandlerFunc(s.handleRenew))))
	// The control connection is long-lived: not bounded by the request
	// timeout (pings bound it instead).
	mux.Handle("GET "+wire.ControlPath, s.deviceOnly(http.HandlerFunc(s.handleControl)))
	s.relayRoutes(mux)
	s.coachRoutes(mux)
	s.teacherRoutes(mux)
	mux.Handle("GET /v1/fleet", s.bounded(http.HandlerFunc(s.handleFleet)))
	mux.Handle("POST /v1/audit/checkpoint", s.bounded(s.deviceOnly(http.HandlerFunc(s.handleAuditCheckpoint))))
	// Anything else is answered 404, also within the request timeout: a
	// slow body sent to an unknown path is not kept either.
	mux.Handle("/", s.bounded(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httpError(w, http.StatusNotFound, "no such endpoint")
	})))
	return mux
}

// TLSConfig is the server's TLS configuration: 1.2 minimum with AEAD
// suites only, device certificates checked against the CA and the
// registry (revoked devices are refused in the handshake), every device
// connection audited, and every refused client certificate (a foreign
// CA's, an expired or a revoked one) audited as a failure with its source.
func (s *Server) TLSConfig() *tls.Config {
	base := pki.ServerTLS(s.ca, tls.Certificate{}, nil)
	// The certificate is picked per handshake, so that a reissue applies
	// to the next one.
	base.Certificates = nil
	base.GetCertificate = s.serverCertFor
	// The per-connection configurations below replace the one http.Server
	// extends with ALPN: name its protocols here.
	base.NextProtos = []string{"h2", "http/1.1"}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		src := hello.Conn.RemoteAddr().String()
		c := base.Clone()
		verify := c.VerifyPeerCertificate
		c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			err := verify(raw, chains)
			if err != nil {
				s.fails.Record(audit.Entry{Event: "device.connect", Source: src, Outcome: "denied", Detail: err.Error()})
			}
			return err
		}
		// Revocation is checked here rather than through pki.ServerTLS's
		// hook so that the refusal names the device.
		c.VerifyConnection = func(cs tls.ConnectionState) error { return s.verifyDevice(cs, src) }
		return c, nil
	}
	return cfg
}

func (s *Server) verifyDevice(cs tls.ConnectionState, src string) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // enrollment: anonymous TLS
	}
	c := cs.PeerCertificates[0]
	d, ok := s.devices.Authorized(c.SerialNumber.String())
	name := c.Subject.CommonName
	if d != nil {
		name = d.Name
	}
	if !ok {
		s.fails.Record(audit.Entry{Event: "device.connect", Identity: name, Source: src, Outcome: "denied", Detail: "certificate serial " + c.SerialNumber.String() + ": not enrolled or not active"})
		return fmt.Errorf("device %q is not enrolled or not active", name)
	}
	if _, err := s.audit.Append(audit.Entry{Event: "device.connect", Identity: name, Source: src, Outcome: "ok", Detail: "certificate serial " + c.SerialNumber.String()}); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Run serves on cfg.Listen until ctx is done; ready gets the address.
func (s *Server) Run(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen %s: %w", s.cfg.Listen, err)
	}
	srv := s.httpServer(ctx, s.Handler(), s.TLSConfig())
	if err := s.startTURN(); err != nil {
		ln.Close()
		return err
	}
	admin, err := s.listenAdmin()
	if err != nil {
		ln.Close()
		s.stopTURN()
		return err
	}
	// Forwarded calls are answered until the last control connection here
	// has ended (and released its box).
	stopPeers := s.runPeers(ctx)
	defer stopPeers()
	// Long admin calls (scrub, purge) end when serve stops.
	adminSrv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 4)
	web, err := s.startWeb(ctx, errc)
	if err != nil {
		ln.Close()
		admin.Close()
		s.stopTURN()
		return err
	}
	metrics, err := s.startMetrics(ctx, errc)
	if err != nil {
		ln.Close()
		admin.Close()
		if web != nil {
			web.Close()
		}
		s.stopTURN()
		return err
	}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	go func() { errc <- adminSrv.Serve(admin) }()
	// The checkpoint loop outlives the servers: its last checkpoint
	// covers the last entry a connection wrote.
	cpCtx, cpStop := context.WithCancel(context.WithoutCancel(ctx))
	cpDone := make(chan struct{})
	go func() { defer close(cpDone); s.runCheckpoints(cpCtx) }()
	defer func() { cpStop(); <-cpDone }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	prune := time.NewTicker(24 * time.Hour)
	defer prune.Stop()
	bg, stopBg := context.WithCancel(ctx)
	janitorDone := make(chan struct{})
	go func() { s.runJanitor(bg); close(janitorDone) }()
	lifeDone := make(chan struct{})
	go func() { s.leadLife(bg); close(lifeDone) }()
	lockerDone := make(chan struct{})
	go func() { s.runLocker(bg); close(lockerDone) }()
	// The coalesced failures are summed up once a minute and at shutdown.
	fctx, stopFails := context.WithCancel(context.WithoutCancel(ctx))
	failsDone := make(chan error, 1)
	go func() { failsDone <- s.fails.fails.Run(fctx) }()
	sizeCheck := time.NewTicker(time.Minute)
	defer sizeCheck.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err = <-errc:
			break wait
		case <-sizeCheck.C:
			s.fails.check()
		case <-prune.C:
			if n, perr := s.audit.Prune(s.cfg.AuditRetention); perr != nil {
				s.log.Warn("audit retention not applied", "err", perr)
			} else if n > 0 {
				s.log.Info("audit entries past retention removed", "count", n)
			}
		}
	}
	// Drain: stop accepting (the listeners close, /readyz says draining on
	// the listeners that stay up until the end), let the uploads and
	// commits running now finish within the grace, then cut what is left.
	s.drain.draining.Store(true)
	grace := s.cfg.DrainGrace
	s.log.Info("draining", "grace", grace)
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	serr := srv.Shutdown(shutdown)
	if errors.Is(serr, context.DeadlineExceeded) {
		s.log.Warn("drain grace over: cutting the requests still running (their boxes resume them)", "grace", grace)
		s.drain.hardCancel()
		serr = srv.Close()
	} else {
		s.log.Info("drained: every running request finished")
	}
	s.drain.hardCancel()
	aerr := adminSrv.Shutdown(shutdown)
	var werr error
	if web != nil {
		werr = web.Shutdown(shutdown)
	}
	if metrics != nil {
		werr = errors.Join(werr, metrics.Shutdown(shutdown))
	}
	// Control connections are hijacked, so Shutdown does not wait for
	// them: their handlers end with ctx and audit the disconnect.
	s.hub.wg.Wait()
	s.stopTURN()
	stopBg()
	<-janitorDone
	<-lifeDone
	<-lockerDone
	stopFails()
	ferr := <-failsDone
	os.Remove(filepath.Join(s.cfg.Data, AdminSocket))
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, serr, aerr, werr, ferr)
}
