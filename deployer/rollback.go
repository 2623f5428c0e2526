package main

import (
	"context"
	"flag"
	"strconv"

	"github.com/kodekloud/counter/internal/deploy"
)

func rollbackCommand() *command {
	return &command{
		name:     "rollback",
		args:     "-env NAME [-to vN | -to-version N] [options]",
		synopsis: "Go back to an earlier release: its image and its config",
		doc: `Reverts the job to an earlier version through Nomad's job history, which
brings back that release's image and config snapshot. Checks first that the
image is still pullable and the snapshot intact; then watches the
deployment. A snapshot edited or deleted in Consul is not reverted to:
the config Nomad recorded with that version goes to a fresh snapshot, and
the version's job spec and variables are submitted again as a new version
(also when that release is the one running). Default target: the newest
stable version older than the current one that runs a different release.`,
		required: []string{"env"},
		exits: append([]exitDoc{{exitOK, "the deployment succeeded, or the release already runs"}},
			codes(exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitUnknown)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			to := fs.String("to", "", "version `TAG` to go back to, e.g. v7")
			toVersion := fs.String("to-version", "", "job version number `N` to go back to")
			var w watchFlags
			w.register(fs, "reverting")
			return func(ctx context.Context, _ []string) error {
				target, err := rollbackTarget(*to, *toVersion)
				if err != nil {
					return err
				}
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				rec, err := d.Rollback(ctx, e.Namespace, e.Job, target,
					deploy.RollbackOptions{Detach: w.detach, Wait: w.wait, Who: submitter(ctx, sh.getenv)})
				return finishRecord(sh, rec, err, f.json)
			}
		},
	}
}

// rollbackTarget reads -to and -to-version; neither means the default target.
func rollbackTarget(to, toVersion string) (deploy.Target, error) {
	var t deploy.Target
	if to != "" && toVersion != "" {
		return t, usageError("rollback: give -to or -to-version, not both")
	}
	t.Tag = to
	if toVersion != "" {
		n, err := strconv.ParseUint(toVersion, 10, 64)
		if err != nil {
			return t, usageError("rollback: -to-version %q is not a version number", toVersion)
		}
		t.Version = &n
	}
	return t, nil
}
