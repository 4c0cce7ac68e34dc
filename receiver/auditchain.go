package receiver

import (
	"context"
	stdcrypto "crypto"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
)

// auditChain is the receiver's audit chain, as the server, its checkpoint
// runner, the size guard and the audit commands use it: the file in the
// data directory (*audit.Log, with bbolt) or the one chain the receivers
// of a PostgreSQL database share (pgaudit.Chain). Both keep the same
// entries, hashed by the same rule, and verify them through the same code
// (internal/audit).
type auditChain interface {
	// Append writes e as the next entry (seq, time, prev and hash filled
	// in) durably before it returns.
	Append(e audit.Entry) (audit.Entry, error)
	// Entries returns the entries f selects, oldest first.
	Entries(f audit.Filter) ([]audit.Entry, error)
	// Size is the bytes the entries take (what --audit-max-bytes caps).
	Size() (int64, error)
	// Prune removes the entries older than retention, keeping the chain
	// verifiable from the first kept entry (and always the newest).
	Prune(retention time.Duration) (removed int, err error)
	// Checkpoint signs the head with signer, once the chain is verified
	// against the previous checkpoint; written false: the head had not
	// moved.
	Checkpoint(signer stdcrypto.Signer) (c audit.Checkpoint, written bool, err error)
	// VerifyAnchored verifies the chain and that it still holds what the
	// last checkpoint covers (signed by key, when key is not nil).
	VerifyAnchored(key ed25519.PublicKey) (audit.Report, error)
}

var _ auditChain = (*audit.Log)(nil)

// openAudit opens the server's audit chain: with the state in PostgreSQL,
// the chain the receivers on that database share, each entry naming this
// receiver (host and replica id); else the file in the data directory.
// Entries past retention are removed, and the size guard set up.
func (s *Server) openAudit() error {
	if pg, ok := s.db.(*kv.Postgres); ok {
		name := receiverName(s.peers.ID())
		s.audit = pgaudit.New(pg.Pool(), name)
		s.log.Info("audit chain shared with the other receivers in PostgreSQL", "receiver", name)
		if st, err := os.Stat(filepath.Join(s.cfg.Data, AuditFile)); err == nil && st.Size() > 0 {
			s.log.Warn("the audit file in the data directory is no longer written: the audit chain is in PostgreSQL (migrate copies a file chain there)", "file", filepath.Join(s.cfg.Data, AuditFile))
		}
	} else {
		l, err := audit.Open(filepath.Join(s.cfg.Data, AuditFile))
		if err != nil {
			return err
		}
		s.audit = l
	}
	if _, err := s.audit.Prune(s.cfg.AuditRetention); err != nil {
		return err
	}
	s.fails = &auditGuard{log: s.audit, fails: audit.NewFailures(s.audit, 0), max: s.cfg.AuditMaxBytes, slog: s.log}
	return nil
}

// receiverName is how entries in a shared chain name the receiver that
// wrote them: the host name, then the replica id (which its log lines
// carry too) or what wrote them ("admin").
func receiverName(id string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return host + "/" + id
}

// openAuditChain opens the audit chain of the receiver in data for the
// audit commands: the file in data, or with database (the state in
// PostgreSQL) the shared chain there. close releases it.
func openAuditChain(data, database string) (c auditChain, close func(), err error) {
	if database == "" {
		if b, err := os.ReadFile(filepath.Join(data, DatabaseFile)); err == nil {
			return nil, nil, fmt.Errorf("the audit chain of %s is in PostgreSQL (%s, as %s says), one chain for every receiver on that database: give --database URL (the password in the URL or in PGPASSWORD)",
				data, strings.TrimSpace(string(b)), filepath.Join(data, DatabaseFile))
		}
		path := filepath.Join(data, AuditFile)
		if _, err := os.Stat(path); err != nil {
			return nil, nil, fmt.Errorf("audit log: %w", err)
		}
		l, err := audit.Open(path)
		return l, func() {}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pg, err := kv.OpenPostgres(ctx, database)
	if err != nil {
		return nil, nil, err
	}
	return pgaudit.New(pg.Pool(), receiverName("admin")), func() { pg.Close() }, nil
}

// AuditEntries returns the entries of the audit chain of the receiver in
// data (with database: the chain in PostgreSQL) that f selects.
func AuditEntries(data, database string, f audit.Filter) ([]audit.Entry, error) {
	c, close, err := openAuditChain(data, database)
	if err != nil {
		return nil, err
	}
	defer close()
	return c.Entries(f)
}
