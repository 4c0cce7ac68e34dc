package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/peer"
	"github.com/uploadbox/uploadbox/receiver/store"
)

type serveOptions struct {
	data, listen, recipients, confPath string
	database                           string
	s3                                 store.S3Options
	s3UploadsPrefix                    string
	auditRetention                     time.Duration
	auditCheckpointEvery               time.Duration
	authRate                           string
	authBurst                          int
	auditMaxBytes                      int64
	requestTimeout                     time.Duration
	controlPing                        time.Duration
	drainGrace                         time.Duration
	peerLease                          time.Duration
	webListen, webCert, webKey         string
	metricsListen                      string
	viewers                            viewerServeOptions
	uploads                            uploadServeOptions
	turn                               turnServeOptions
	keys                               keyServeOptions
	life                               lifeServeOptions

	// hostnames are the names and IPs of the server certificate.
	hostnames []string
}

func newServeCommand() *cobra.Command { return serveCommand(nil) }

// serveCommand is serve; with check, it only checks its configuration
// and hands it to check (a SIGHUP reads the configuration again so).
func serveCommand(check func(receiver.ServerConfig)) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve (--config FILE | --data DIR) [--listen 127.0.0.1:8443] [--hostname NAME]... [--recipients-file org.pub]",
		Short: "Run the receiver: enrollment, resumable uploads over TLS, commit with signed receipts",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := receiver.ServerConfig{Data: o.data, Listen: o.listen, Recipients: o.recipients, Database: o.database, Logger: slog.Default()}
			if o.auditRetention < 24*time.Hour {
				return cli.Usagef("--audit-retention %s: keep at least 24h of audit entries", o.auditRetention)
			}
			cfg.AuditRetention = o.auditRetention
			if o.auditCheckpointEvery < time.Second || o.auditCheckpointEvery > 10*time.Minute {
				return cli.Usagef("--audit-checkpoint-every %s: use 1s to 10m", o.auditCheckpointEvery)
			}
			cfg.AuditCheckpointEvery = o.auditCheckpointEvery
			rate, err := receiver.ParseRate(o.authRate)
			if err != nil {
				return cli.Usagef("--auth-rate: %v", err)
			}
			if o.authBurst < 1 || o.authBurst > 1000 {
				return cli.Usagef("--auth-burst %d: give 1 to 1000", o.authBurst)
			}
			if o.auditMaxBytes < 1<<20 {
				return cli.Usagef("--audit-max-bytes %d: give at least 1048576 (1 MiB)", o.auditMaxBytes)
			}
			if o.requestTimeout < time.Second {
				return cli.Usagef("--request-timeout %s: give at least 1s", o.requestTimeout)
			}
			cfg.AuthRate, cfg.AuthBurst, cfg.AuditMaxBytes, cfg.RequestTimeout = rate, o.authBurst, o.auditMaxBytes, o.requestTimeout
			cfg.ControlPing = o.controlPing
			if o.drainGrace < time.Second || o.drainGrace > time.Hour {
				return cli.Usagef("--drain-grace %s: give 1s to 1h", o.drainGrace)
			}
			cfg.DrainGrace = o.drainGrace
			if o.peerLease < time.Second || o.peerLease > 10*time.Minute {
				return cli.Usagef("--peer-lease %s: give 1s to 10m (how long a receiver that stopped answering still counts as holding its boxes)", o.peerLease)
			}
			cfg.PeerLease = o.peerLease
			if err := receiver.CheckWebFlags(o.webListen, o.webCert, o.webKey); err != nil {
				return cli.Usagef("%v", err)
			}
			cfg.WebListen, cfg.WebCert, cfg.WebKey = o.webListen, o.webCert, o.webKey
			cfg.MetricsListen = o.metricsListen
			if err := receiver.CheckHosts(o.hostnames); err != nil {
				return cli.Usagef("%v", err)
			}
			cfg.Hosts = o.hostnames
			if err := o.viewers.apply(&cfg); err != nil {
				return err
			}
			if err := o.uploads.apply(&cfg); err != nil {
				return err
			}
			if err := o.turn.apply(&cfg); err != nil {
				return err
			}
			if err := o.keys.apply(&cfg); err != nil {
				return err
			}
			if err := o.life.apply(&cfg); err != nil {
				return err
			}
			if check != nil {
				check(cfg)
				return nil
			}
			if o.s3.Bucket != "" {
				st, err := store.NewS3(cmd.Context(), o.s3)
				if err != nil {
					return err
				}
				cfg.Store = st
				cfg.S3Uploads = &receiver.S3Uploads{Client: st.Client(), Bucket: o.s3.Bucket, Prefix: o.s3UploadsPrefix}
			}
			srv, err := receiver.Open(cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			for _, w := range srv.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP reloads what can change (and does not end the
			// process).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						reload(cmd, &o, srv) // logged and audited
					}
				}
			}()
			return srv.Run(ctx, func(addr string) {
				if web := srv.WebAddr(); web != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "web listening on %s\n", web)
				}
				if m := srv.MetricsAddr(); m != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "metrics listening on %s\n", m)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "CA fingerprint %s\nlistening on %s\n", srv.Fingerprint(), addr)
				if t := srv.TURNAddr(); t != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "turn listening on %s (udp and tcp)\n", t)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", "", "data directory (CA, keys, database, uploads, store)")
	f.StringVar(&o.database, "database", "", "keep the state (devices, viewers, recordings, receipts, lockouts) in this PostgreSQL database, postgres://USER@HOST/DB?sslmode=…, instead of the bbolt file in --data; the password from PGPASSWORD (or ~/.pgpass), or in the URL; docs/receiver.md \"State: bbolt or PostgreSQL\"")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8443", "address to listen on (TLS only)")
	f.StringSliceVar(&o.hostnames, "hostname", nil, "a name or IP boxes use to reach the receiver; repeat it (or separate with commas) for several. The server certificate names exactly these: a stored one for other names is reissued from the CA (default: keep the stored certificate; the first run makes one for the --listen IP and localhost)")
	f.StringVar(&o.recipients, "recipients-file", "", "organisation public keys (default: generate a key pair in --data on first run)")
	f.StringVar(&o.s3.Bucket, "s3-bucket", "", "store segments in this S3 bucket instead of --data/store")
	f.StringVar(&o.s3.Endpoint, "s3-endpoint", "", "S3 endpoint URL (default: AWS)")
	f.StringVar(&o.s3.Region, "s3-region", "", "S3 region")
	f.BoolVar(&o.s3.PathStyle, "s3-path-style", false, "use path-style S3 addressing")
	f.StringVar(&o.s3UploadsPrefix, "s3-uploads-prefix", receiver.DefaultS3UploadsPrefix, "with --s3-bucket, unfinished uploads are staged in the bucket under this key prefix (unless --uploads-dir is given), so that any receiver on the bucket can continue them")
	f.DurationVar(&o.auditRetention, "audit-retention", 180*24*time.Hour, "how long audit entries are kept (pruned at start, daily while running)")
	f.DurationVar(&o.auditCheckpointEvery, "audit-checkpoint-every", 10*time.Minute, "how often the audit log's head is signed with the receipt key (1s to 10m; once more at shutdown)")
	f.StringVar(&o.authRate, "auth-rate", "10/min", "login and enrollment attempts allowed per source address and per account name (N/s, N/min or N/h); more get 429 with Retry-After")
	f.IntVar(&o.authBurst, "auth-burst", receiver.DefaultAuthBurst, "attempts allowed at once on top of --auth-rate")
	f.Int64Var(&o.auditMaxBytes, "audit-max-bytes", receiver.DefaultAuditMaxBytes, "audit log size that raises an alert at 90% and, when reached, drops failed-authentication entries (never logins or handshakes)")
	f.DurationVar(&o.requestTimeout, "request-timeout", receiver.DefaultRequestTimeout, "time to receive the body and send the answer of every non-upload request (login, enroll, commit)")
	f.DurationVar(&o.drainGrace, "drain-grace", receiver.DefaultDrainGrace, "on SIGTERM, how long the uploads and commits running then may take to finish before they are cut (1s to 1h)")
	f.DurationVar(&o.peerLease, "peer-lease", peer.DefaultLease, "with --database: how long another receiver's claim on a box's control connection counts without renewal (renewed every third of it); a receiver that died or froze holds its boxes at most this long, after which requests for them are answered offline until they reconnect; also how long a receiver's tus lock session (or the lifecycle leader's session, at least 6s) may stay silent before another receiver ends it (1s to 10m)")
	f.DurationVar(&o.controlPing, "control-ping", receiver.DefaultControlPing, "how often each box's control connection is pinged (100ms to 10m); one unanswered for as long again ends it")
	o.keys.addFlags(f)
	f.StringVar(&o.webListen, "web-listen", "", "a second HTTPS listener for browsers (the coach page, login and the live-view relay only; no client certificate)")
	f.StringVar(&o.webCert, "web-cert", "", "certificate chain (PEM) the web listener presents, e.g. from a public CA; reloaded on SIGHUP (default: the receiver's own server certificate)")
	f.StringVar(&o.webKey, "web-key", "", "private key (PEM, mode 0600) of --web-cert")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "plain HTTP listener for Prometheus, GET /metrics: each box's staleness, backlog, alerts and certificate expiry (e.g. 127.0.0.1:9465; off by default)")
	o.viewers.AddFlags(f)
	o.uploads.AddFlags(f)
	o.turn.AddFlags(f)
	o.life.AddFlags(f)
	f.StringVar(&o.confPath, "config", "", "YAML file setting any of these flags (flags given here win); SIGHUP reads it again: docs/receiver.md \"Configuration file\"")
	withConfigFile(cmd, &o)
	return cmd
}
