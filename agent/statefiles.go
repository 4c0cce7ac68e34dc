package agent

import (
	"github.com/uploadbox/uploadbox/internal/ownership"
)

// checkStateFiles logs each file of the state directory that the daemon's
// user cannot use as it is (owner, mode), with the command that fixes it,
// and reports whether there was one.
func (a *Agent) checkStateFiles(dir string) bool {
	u := ownership.Current()
	ps, err := ownership.Check(dir, u)
	if err != nil {
		a.log.Warn("state directory not checked", "state", dir, "err", err)
		return false
	}
	for _, p := range ps {
		a.log.Error("state file unusable by the daemon's user", "file", p.Path, "problem", p.What, "fix", p.Fix, "user", u.Name)
	}
	return len(ps) > 0
}

// stateProblems names, on one line, what in the state directory dir the
// daemon's user cannot use and the commands that fix it; empty if nothing.
func stateProblems(dir string) string {
	u := ownership.Current()
	ps, err := ownership.Check(dir, u)
	if err != nil || len(ps) == 0 {
		return ""
	}
	return ownership.Explain(ps, 3)
}

// explainUnreadable adds to err, when it is a permission error, which
// state file the daemon cannot read and how to fix it.
func explainUnreadable(dir string, err error) error {
	return ownership.Annotate(dir, ownership.Current(), err)
}
