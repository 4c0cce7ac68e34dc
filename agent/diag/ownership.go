package diag

import (
	"fmt"
	"strings"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/internal/ownership"
)

// maxNamed is how many unusable state files a summary describes one by one.
const maxNamed = 3

// checkStateOwnership checks the state directory's files against the user
// the daemon runs as (the directory's owner, or the packaged uploadbox
// user where root owns the packaged daemon's state directory): a failure names each file, what is wrong and
// the commands that fix it. ok is false when it found a problem.
func checkStateOwnership(dir string) (r Result, ok bool) {
	u, err := ownership.ServiceUser(dir, ownership.Service{User: ownership.PackagedUser, StateDir: config.PackagedStateDir()})
	if err != nil {
		return Result{}, true
	}
	ps, err := ownership.Check(dir, u)
	if err != nil || len(ps) == 0 {
		return Result{}, true
	}
	return Result{Status: Fail, Metrics: map[string]any{"unusable_files": len(ps), "daemon_user": u.Name},
		Summary: fmt.Sprintf("the daemon, running as %s, cannot use %d state file(s): %s", u, len(ps), ownership.Describe(ps, maxNamed)),
		Remedy:  "run " + strings.Join(ownership.Fixes(ps), "; ") + ", then restart the daemon (systemctl restart uploadbox)"}, false
}
