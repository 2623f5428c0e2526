package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
)

func promoteCommand() *command {
	return &command{
		name:     "promote",
		args:     "-from SOURCE[@vN] -env NAME [options]",
		synopsis: "Release the build another environment runs, with this environment's config",
		doc: `Releases to -env exactly the image (by digest) and git commit of the
release that environment SOURCE runs (or of its release vN), with -env's
own config, as submit does: same plan (printed to stderr first, as plan
prints it), lock, watch and exit codes. Refuses,
changing nothing, a source release that is not stable, has no healthy
instance, has drifted, or was not made by the deployer. Promoting what
-env already runs changes nothing. The new job version records
release_promoted_from ("test v7"), which history shows.`,
		required: []string{"from", "env"},
		exits: append([]exitDoc{{exitOK, "the deployment succeeded, or nothing changed"}},
			codes(exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitUnknown)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			from := fs.String("from", "", "environment `SOURCE` whose running release to promote; SOURCE@vN for its release vN")
			jobFile := fs.String("job", defaultJobFile, "Nomad job spec `FILE`")
			var w watchFlags
			w.register(fs, "registering")
			w.prometheusFlag.register(fs)
			return func(ctx context.Context, _ []string) error {
				srcName, at, err := promotionSource(*from)
				if err != nil {
					return err
				}
				if srcName == f.env {
					return usageError("promote: -from and -env are both %q: a promotion goes from one environment to another", f.env)
				}
				e, err := f.load()
				if err != nil {
					return err
				}
				src, err := environment.Load(f.dir, srcName)
				if err != nil {
					return err
				}
				spec, err := os.ReadFile(*jobFile)
				if err != nil {
					return fmt.Errorf("read job spec: %w", err)
				}
				d, closeClients, err := newDeployer(sh, f.kvPrefix, string(spec))
				if err != nil {
					return err
				}
				defer closeClients()
				if err := w.judgeWith(sh, d, e); err != nil {
					return err
				}
				b, err := d.PromotableBuild(ctx, srcName, src.Namespace, src.Job, at)
				if err != nil {
					return err
				}
				// The digest must still be served: a registry that answers
				// that it is gone stops the promotion here.
				img, err := imageref.Resolver{}.Resolve(ctx, b.Image)
				if err != nil {
					return fmt.Errorf("cannot promote %s: %w; nothing was changed", b.From, err)
				}
				img.Ref = b.Image
				r, err := newRelease(ctx, sh, e, img, b.GitCommit, d)
				if err != nil {
					return err
				}
				r.PromotedFrom = b.From
				fmt.Fprintf(sh.stderr, "==> promoting %s to %s: %s%s, with %s's config %s\n",
					b.From, f.env, b.Image.Pinned(), commitNote(b.GitCommit), f.env, r.ConfigHash())
				// The plan goes to stderr, as progress does: with -json,
				// stdout is the record alone.
				rec, err := d.Promote(ctx, r, deploy.SubmitOptions{Detach: w.detach, Wait: w.wait,
					OnPlan: func(p *deploy.Plan) { printPlan(sh.stderr, p) }})
				callURL(ctx, sh, rec, err, e.URL)
				return finishRecord(sh, rec, err, f.json)
			}
		},
	}
}

// promotionSource reads -from: SOURCE, SOURCE@vN (a release's tag) or
// SOURCE@N (a job version).
func promotionSource(from string) (string, deploy.Target, error) {
	var t deploy.Target
	name, at, found := strings.Cut(from, "@")
	if name == "" || (found && at == "") {
		return "", t, usageError("promote: -from %q is not SOURCE or SOURCE@vN", from)
	}
	if !found {
		return name, t, nil
	}
	if n, err := strconv.ParseUint(at, 10, 64); err == nil {
		t.Version = &n
	} else {
		t.Tag = at
	}
	return name, t, nil
}
