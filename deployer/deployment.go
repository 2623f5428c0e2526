package main

import (
	"context"
	"flag"

	"github.com/kodekloud/counter/internal/deploy"
)

func deploymentCommand() *command {
	return &command{
		name:     "deployment",
		args:     "-env NAME [options] promote|fail",
		synopsis: "Promote or fail the deployment that waits for a verdict",
		doc: `Gives the environment's deployment under way the verdict Nomad's API
offers: promote rolls out a version whose canaries are healthy and wait for
promotion (an update block with auto_promote = false, where submit ends
with awaiting-promotion, exit 7); fail ends the deployment, and Nomad
reverts the job where auto_revert is set. Holds the job's deploy lock and
watches the deployment to its end, as submit does.`,
		required: []string{"env"},
		maxArgs:  1,
		exits: append([]exitDoc{{exitOK, "promote: the deployment succeeded"}},
			codes(exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitUnknown)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			detach := fs.Bool("detach", false, "return once Nomad took the verdict, without watching the deployment")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 || (args[0] != string(deploy.Promote) && args[0] != string(deploy.Fail)) {
					return usageError("deployment: say promote or fail, after the options")
				}
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				rec, err := d.Decide(ctx, e.Namespace, e.Job, deploy.Verdict(args[0]),
					deploy.VerdictOptions{Env: e.Name, Who: submitter(ctx, sh.getenv), Detach: *detach})
				return finishRecord(sh, rec, err, f.json)
			}
		},
	}
}
