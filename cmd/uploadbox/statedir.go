package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/internal/ownership"
)

// stateFlags are --state, --config and --user of the commands that write
// into the box's state directory (enroll, viewer token).
type stateFlags struct{ state, config, user string }

func (f *stateFlags) add(cmd *cobra.Command, what string) {
	fl := cmd.Flags()
	fl.StringVar(&f.state, "state", "", what+" (default: state_dir of the daemon's config)")
	fl.StringVar(&f.config, "config", "", "the daemon's config file, for its state_dir when --state is not given (default $UPLOADBOX_CONFIG or "+config.DefaultPath+")")
	fl.StringVar(&f.user, "user", "", "write the files as this user, the one the daemon runs as (default: the state directory's owner; as root, the packaged daemon's state directory owned by root is refused where the packaged uploadbox user exists)")
}

// dir is --state, else the state_dir of the daemon's config.
func (f stateFlags) dir() (string, error) {
	if f.state != "" {
		return f.state, nil
	}
	path := configPath(f.config)
	cfg, err := config.Load(path, nil)
	if err != nil {
		return "", fmt.Errorf("--state not given, and its default, the daemon config's state_dir, is unknown: %w (give --state DIR or --config FILE)", err)
	}
	return cfg.StateDir, nil
}

// become makes this process the user the daemon runs as (--user, else the
// state directory's owner) before anything is written to dir, or refuses
// with the command to run instead.
func (f stateFlags) become(dir string) (ownership.User, error) {
	u, err := ownership.Writer(dir, f.user, commandLine(), packagedService())
	if err != nil {
		return u, err
	}
	return u, ownership.Become(dir, u)
}

// commandLine is this process's command line to show in an error: --user
// left out and a token given on the command line replaced by TOKEN.
func commandLine() string {
	args := []string{filepath.Base(os.Args[0])}
	in := os.Args[1:]
	for i := 0; i < len(in); i++ {
		a := in[i]
		switch {
		case a == "--user" && i+1 < len(in):
			i++
		case strings.HasPrefix(a, "--user="):
		case a == "--token" && i+1 < len(in):
			i++
			tok := in[i]
			if tok != "-" {
				tok = "TOKEN"
			}
			args = append(args, a, tok)
		case strings.HasPrefix(a, "--token="):
			args = append(args, "--token=TOKEN")
		default:
			args = append(args, a)
		}
	}
	return strings.Join(args, " ")
}

// packagedService is the packaged daemon: its user and the state_dir of
// the packaged config.
func packagedService() ownership.Service {
	return ownership.Service{User: ownership.PackagedUser, StateDir: config.PackagedStateDir()}
}
