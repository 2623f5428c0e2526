package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/deploy"
)

func gcCommand() *command {
	return &command{
		name:     "gc",
		args:     "-env NAME [options]",
		synopsis: "Delete config snapshots no retained release uses",
		doc: `Deletes the config snapshots that no retained or tagged job version uses.
Nomad keeps every tagged version; -keep N untags all but the newest N
releases so that Nomad's version limit (job_tracked_versions) applies to the
rest: Nomad drops the untagged versions over it at once, and gc deletes
their snapshots in the same run (a dry run cannot know which, and lists only
the snapshots no version uses now). Afterwards every snapshot belongs to a
retained version and every retained version keeps its snapshot. Runs under
the job's deploy lock.`,
		required: []string{"env"},
		exits:    codes(exitOK, exitError, exitUsage, exitConflict),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			keep := fs.Int("keep", 0, "keep the release tags of the newest `N` versions only (0: keep all)")
			dryRun := fs.Bool("dry-run", false, "print what would be untagged and deleted, and change nothing")
			return func(ctx context.Context, _ []string) error {
				if *keep < 0 {
					return usageError("gc: -keep %d: want 0 (keep all tags) or more", *keep)
				}
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				res, err := d.GC(ctx, e.Namespace, e.Job, *keep, *dryRun, submitter(ctx, sh.getenv))
				if res != nil {
					if f.json {
						if jerr := writeJSON(sh.stdout, res); jerr != nil {
							return jerr
						}
					} else {
						printGC(sh.stdout, res)
					}
				}
				return err
			}
		},
	}
}

func printGC(w io.Writer, r *deploy.GCResult) {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	for _, t := range r.Untagged {
		fmt.Fprintf(w, "untagged %s\n", t)
	}
	for _, p := range r.Deleted {
		fmt.Fprintf(w, "%s %s\n", verb, p)
	}
	fmt.Fprintf(w, "%s: %d snapshots %s, %d kept for %d retained versions\n", r.Job, len(r.Deleted), verb, len(r.Kept), r.Retained)
}
