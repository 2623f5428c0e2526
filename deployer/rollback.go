package main

import (
	"context"
	"flag"
	"io"
	"strconv"

	"github.com/kodekloud/counter/internal/deploy"
)

func rollbackCommand() *command {
	return &command{
		name:     "rollback",
		args:     "-env NAME [-to vN | -to-version N] [options]",
		synopsis: "Go back to an earlier release: its image and its config",
		doc: `Reverts the job to an earlier version through Nomad's job history, which
brings back that release's image, config snapshot and every value its
environment file set (count, resources, update, datacenters). Checks first
that the image is still pullable and the snapshot intact; says on stderr
what the rollback undoes (with -json also in "undoes"); then watches the
deployment. A snapshot edited or deleted in Consul is not reverted to:
the config Nomad recorded with that version goes to a fresh snapshot, and
the version's job spec and variables are submitted again as a new version
(also when that release is the one running). Default target: the newest
stable version older than the current one that runs a different release
(another image, config or environment value), made by the deployer.`,
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
				rec, undoes, err := d.Rollback(ctx, e.Namespace, e.Job, target,
					deploy.RollbackOptions{Detach: w.detach, Wait: w.wait, Who: submitter(ctx, sh.getenv)})
				callURL(ctx, sh, rec, err, e.URL)
				if rec == nil || !f.json {
					return finishRecord(sh, rec, err, f.json)
				}
				// The record as submit prints it, and what the rollback undid.
				if jerr := writeJSON(sh.stdout, rollbackOutput{rec, undoes}); jerr != nil {
					return jerr
				}
				quiet := *sh
				quiet.stdout = io.Discard
				return finishRecord(&quiet, rec, err, true)
			}
		},
	}
}

// rollbackOutput is rollback's -json: the record, and how the version it
// replaced differed from the one it went back to.
type rollbackOutput struct {
	*deploy.Record
	Undoes []deploy.Difference `json:"undoes,omitempty"`
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
