package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

func newMigrateCommand() *cobra.Command {
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:DIR --to postgres://USER@HOST/DB",
		Short: "Copy the receiver's state from its bbolt file to an empty PostgreSQL database",
		Long: `Copies every bucket of DIR/receiver.db (serve must be stopped) into the PostgreSQL
database, which must hold no receiver state yet, then checks that both hold the same. The data
directory's files (CA, keys, audit log) stay where they are; afterwards run serve with the same
--data and --database URL. The bbolt file is left as it was. Give the password through PGPASSWORD
(or ~/.pgpass) rather than in the URL, which other users can see while the command runs.`,
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, ok := strings.CutPrefix(from, "bolt:")
			if !ok || dir == "" {
				return cli.Usagef("--from %q: give bolt:DIR, the data directory that holds %s", from, receiver.DBFile)
			}
			if !strings.HasPrefix(to, "postgres://") && !strings.HasPrefix(to, "postgresql://") {
				return cli.Usagef("--to %q: give a PostgreSQL URL, postgres://USER@HOST/DB", kv.Redact(to))
			}
			path := filepath.Join(dir, receiver.DBFile)
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("--from %s: %w (is DIR the receiver's data directory?)", from, err)
			}
			src, err := kv.OpenBolt(path, 2*time.Second)
			if errors.Is(err, bolt.ErrTimeout) {
				return fmt.Errorf("--from %s: %s is held by a running serve: stop it first (the copy must see every write)", from, path)
			}
			if err != nil {
				return fmt.Errorf("--from %s: %w", from, err)
			}
			defer src.Close()
			dst, err := kv.OpenPostgres(cmd.Context(), to)
			if err != nil {
				return err
			}
			defer dst.Close()
			st, err := kv.Copy(dst, src)
			if err != nil {
				return fmt.Errorf("migrate to %s: %w", kv.Redact(to), err)
			}
			if asJSON {
				return printJSON(cmd, st)
			}
			out := cmd.OutOrStdout()
			names := make([]string, 0, len(st.PerBucket))
			for n := range st.PerBucket {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(out, "%-24s %d\n", n, st.PerBucket[n])
			}
			fmt.Fprintf(out, "copied %d buckets, %d keys to %s and checked them; now run serve --data %s --database URL\n", st.Buckets, st.Keys, kv.Redact(to), dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "bolt:DIR, the receiver's data directory (serve stopped)")
	f.StringVar(&to, "to", "", "the PostgreSQL database, postgres://USER@HOST/DB (empty of receiver state)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
