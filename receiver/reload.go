package receiver

import (
	"fmt"
	"strings"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/pki"
)

// Reload applies a configuration read again on SIGHUP (from source):
// the server certificate's names (a change reissues it), the web
// listener's certificate files (read again in any case), and the limits
// on login and enrollment attempts. restart lists the keys that changed
// but take effect only at the next restart; they are logged. Reload is
// called from one goroutine at a time.
func (s *Server) Reload(source string, cfg ServerConfig, restart []string) {
	var applied []string
	before := s.serverCert.Load()
	if err := s.followHosts(cfg.Hosts, "reload"); err != nil {
		s.log.Error("server certificate not reissued: the current one stays in use", "err", err)
	} else if after := s.serverCert.Load(); after != before && !pki.SameNames(after.Leaf, pki.Names(before.Leaf)) {
		applied = append(applied, "hostnames")
	}
	if cfg.WebCert != s.cfg.WebCert || cfg.WebKey != s.cfg.WebKey {
		s.cfg.WebCert, s.cfg.WebKey = cfg.WebCert, cfg.WebKey
		applied = append(applied, "web.cert", "web.key")
		if cfg.WebCert == "" && s.cfg.WebListen != "" {
			s.webCert.Store(s.serverCert.Load())
			s.logWebCertificate("web listener presents the server certificate", s.webCert.Load())
		}
	}
	if cfg.WebCert != "" {
		s.ReloadWebCertificate() // logged and audited
	}
	if cfg.AuthRate != 0 && cfg.AuthBurst != 0 && (cfg.AuthRate != s.cfg.AuthRate || cfg.AuthBurst != s.cfg.AuthBurst) {
		s.cfg.AuthRate, s.cfg.AuthBurst = cfg.AuthRate, cfg.AuthBurst
		s.byAddress.SetLimit(cfg.AuthRate, cfg.AuthBurst)
		s.byAccount.SetLimit(cfg.AuthRate, cfg.AuthBurst)
		applied = append(applied, "auth.rate", "auth.burst")
	}
	s.log.Info("configuration reloaded", "file", source, "applied", strings.Join(applied, " "))
	if len(restart) > 0 {
		s.log.Warn("configuration changed where only a restart applies it: restart the receiver", "file", source, "keys", strings.Join(restart, " "))
	}
	detail := fmt.Sprintf("%s: applied [%s], waiting for a restart [%s]", source, strings.Join(applied, " "), strings.Join(restart, " "))
	if _, err := s.audit.Append(audit.Entry{Event: "config.reload", Source: "local", Outcome: "ok", Detail: detail}); err != nil {
		s.log.Error("audit", "err", err)
	}
}

// ReloadRefused logs and audits a configuration that could not be read
// again on SIGHUP: everything stays as it is.
func (s *Server) ReloadRefused(source string, err error) {
	s.log.Error("configuration not reloaded: everything stays as it is", "file", source, "err", err)
	if _, aerr := s.audit.Append(audit.Entry{Event: "config.reload", Source: "local", Outcome: "failed", Detail: source + ": " + err.Error()}); aerr != nil {
		s.log.Error("audit", "err", aerr)
	}
}
