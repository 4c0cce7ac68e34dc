package receiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// DatabaseFile, in the data directory, says that the receiver's state is in
// PostgreSQL: it holds the database's URL without its password. A receiver
// started on that directory without --database refuses (rather than start
// afresh on an empty bbolt file), and a backup leaves the state to pg_dump.
const DatabaseFile = "database.postgres"

// openState opens the receiver's state for data: the PostgreSQL database
// at database when it is set, else the bbolt file data/DBFile (waiting up
// to timeout for another process to let go of it).
func openState(data, database string, timeout time.Duration) (kv.DB, error) {
	marker := filepath.Join(data, DatabaseFile)
	if database == "" {
		if b, err := os.ReadFile(marker); err == nil {
			return nil, fmt.Errorf("the state of %s is in PostgreSQL (%s, as %s says): give --database URL (the password in the URL or in PGPASSWORD), or run this while serve runs", data, strings.TrimSpace(string(b)), marker)
		}
		path := filepath.Join(data, DBFile)
		db, err := kv.OpenBolt(path, timeout)
		if err != nil {
			return nil, fmt.Errorf("database %s: %w (is another receiver running on this data directory?)", path, err)
		}
		return db, nil
	}
	if _, err := os.Stat(filepath.Join(data, DBFile)); err == nil {
		return nil, fmt.Errorf("%s holds a bbolt state (%s) but --database was given: the two would diverge; move %s out of the data directory to keep the state in PostgreSQL only", data, DBFile, filepath.Join(data, DBFile))
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, 10*time.Second))
	defer cancel()
	db, err := kv.OpenPostgres(ctx, database)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(marker, []byte(kv.Redact(database)+"\n"), 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return db, nil
}

// statePostgres reports whether the state of data is in PostgreSQL.
func statePostgres(data string) bool {
	_, err := os.Stat(filepath.Join(data, DatabaseFile))
	return !errors.Is(err, os.ErrNotExist)
}
