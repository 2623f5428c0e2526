package main

import (
	"context"
	"flag"
)

func renderCommand() *command {
	return &command{
		name:     "render",
		args:     "-env NAME -image REF [options]",
		synopsis: "Print the Nomad job a submit would register",
		doc: `Prints the job, as JSON that "nomad job run -json" accepts, exactly as
submit would register it: the job spec rendered by the Nomad server's own
HCL2 parser with the release's variables. Nothing is written.`,
		required: releaseRequired(),
		exits:    codes(exitOK, exitError, exitUsage),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f releaseFlags
			f.register(fs)
			return func(ctx context.Context, _ []string) error {
				d, rel, closeClients, err := f.prepare(ctx, sh, nil)
				if err != nil {
					return err
				}
				defer closeClients()
				job, err := d.Render(ctx, rel)
				if err != nil {
					return err
				}
				return writeJSON(sh.stdout, map[string]any{"Job": job})
			}
		},
	}
}
