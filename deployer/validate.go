package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/kodekloud/counter/internal/environment"
)

func validateCommand() *command {
	return &command{
		name:     "validate",
		args:     "[options] [NAME...]",
		synopsis: "Check environment files without contacting any server",
		doc: `Reads every environment file (or the NAMEs given) as submit would, and
reports each bad value with its file, line and column. Nothing is contacted
and nothing is written, so it fits a pre-commit hook or a CI step. Each file
is checked alone: a value only the job spec rules out (a progress_deadline
below its kill_timeout) is reported by render, plan and submit.`,
		maxArgs: -1,
		exits:   append([]exitDoc{{exitOK, "every file is valid"}}, codes(exitError, exitUsage)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			dir := fs.String("environments", environment.DefaultDir, "folder `DIR` of environment files")
			return func(ctx context.Context, names []string) error {
				if len(names) == 0 {
					names = environment.List(*dir)
				}
				if len(names) == 0 {
					return fmt.Errorf("no environment files (*.hcl) in %s", *dir)
				}
				var errs []error
				for _, name := range names {
					e, err := environment.Load(*dir, name)
					if err == nil {
						err = environment.SharedJob(*dir, e)
					}
					if err != nil {
						errs = append(errs, err)
						continue
					}
					fmt.Fprintf(sh.stdout, "%s: ok (job %s, namespace %s, %d instance(s))\n", e.File, e.Job, e.Namespace, e.Count)
				}
				return errors.Join(errs...)
			}
		},
	}
}
