package main

import (
	"context"
	"flag"
	"strconv"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
)

func submitCommand() *command {
	return &command{
		name:     "submit",
		args:     "-env NAME -image REF [options]",
		synopsis: "Release an image to an environment and watch the deployment",
		doc: `Writes the release's config snapshot to Consul (write-once), registers the
job as a new version named vN, and watches the deployment. Resubmitting
what already runs changes nothing.`,
		required: releaseRequired(),
		exits: append([]exitDoc{{exitOK, "the deployment succeeded, or nothing changed"}},
			codes(exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitUnknown)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f releaseFlags
			f.register(fs)
			var w watchFlags
			w.register(fs, "registering")
			w.prometheusFlag.register(fs)
			unplaceable := fs.Bool("allow-unplaceable", false, "register even when Nomad cannot place the release now (it waits for capacity)")
			checkIndex := fs.String("check-index", "", "register only if the job's modify `INDEX` is still this one (0: only if the job does not exist), as plan prints it")
			return func(ctx context.Context, _ []string) error {
				opts := deploy.SubmitOptions{Detach: w.detach, Wait: w.wait, AllowUnplaceable: *unplaceable}
				if *checkIndex != "" {
					n, err := strconv.ParseUint(*checkIndex, 10, 64)
					if err != nil {
						return usageError("submit: -check-index %q is not a number", *checkIndex)
					}
					opts.CheckIndex = &n
				}
				// No Prometheus for an analysis is a usage error whatever
				// runs on this machine: refused before the registry or
				// Nomad is asked.
				d, rel, closeClients, err := f.prepare(ctx, sh, func(e *environment.Environment) error { return w.judgeWith(sh, nil, e) })
				if err != nil {
					return err
				}
				defer closeClients()
				if err := w.judgeWith(sh, d, rel.Env); err != nil {
					return err
				}
				rec, err := d.Submit(ctx, rel, opts)
				callURL(ctx, sh, rec, err, rel.Env.URL)
				return finishRecord(sh, rec, err, f.json)
			}
		},
	}
}
