package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
)

func statusCommand() *command {
	return &command{
		name:     "status",
		args:     "[-env NAME] [options]",
		synopsis: "Show the running release, its health, and drift; without -env, of every environment",
		doc: `Shows the running release, whether its deployment ever succeeded, the
instances that run and pass their checks now, and drift, judged from the
running job version itself: a version not made by the deployer that differs
from its release's own version (nomad job scale, nomad job run, a UI edit:
each difference is named, "count 1 -> 3 since v0"), a template that reads
another snapshot or a task that runs another image than its meta names, a
version with no release meta at all, or its config snapshot missing or
edited in Consul. A deployment whose canaries are healthy and wait for
promotion (auto_promote = false) is said, with the command that decides
it: deployer deployment -env NAME promote or fail; for an environment with
an analysis block, "canary awaiting analysis since TIME" and deployer
analyze -env NAME, which resumes the judging.

Without -env, shows every environment in the -environments folder, one row
each, in pipeline order: dev, test and prod (those that exist), then the
others alphabetically. A row has the release, its image digest (short), git
commit, config hash, healthy instances of those the job asks for, drift,
whether it runs the same build (image digest) as the row before it, and the
environment's URL (its file's url). An
environment whose job is not registered is a row that says so; one that
cannot be read shows why, and status exits 1 once every row is shown.

Each environment's URL is called (GET /readyz, which counts no visit): an
answer of any HTTP status means its front door is up (a 503 says only that
no instance passes, which HEALTH shows); no answer within 2 s means the
front door is down, said with why, and status exits 8 (before drift's 6; an
environment that cannot be read, 1, comes first). make up starts a local
front door again.`,
		exits: append([]exitDoc{{exitOK, "no drift, every front door up"}}, codes(exitError, exitUsage, exitDrift, exitFrontDoor)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			return func(ctx context.Context, _ []string) error {
				if f.env == "" {
					return statusAll(ctx, sh, &f)
				}
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				st, err := d.Status(ctx, e.Namespace, e.Job)
				if err != nil {
					return err
				}
				st.URL = e.URL
				st.FrontDoor = frontDoorState(ctx, e.URL)
				if f.json {
					if err := writeJSON(sh.stdout, st); err != nil {
						return err
					}
				} else {
					printStatus(sh.stdout, st, e.Name, e.Analysis != nil)
				}
				if down(st.FrontDoor) {
					return &exitStatus{code: exitFrontDoor, err: fmt.Errorf("status: the front door of %s is %s", e.Name, st.FrontDoor)}
				}
				if len(st.Drift) > 0 {
					return &exitStatus{code: exitDrift}
				}
				return nil
			}
		},
	}
}

// statusAll shows every environment's status, one row each, in pipeline
// order. An environment that cannot be read does not hide the others: its
// row says why, and the command fails once all are shown.
func statusAll(ctx context.Context, sh *shell, f *envFlags) error {
	names := environment.Pipeline(environment.List(f.dir))
	if len(names) == 0 {
		return fmt.Errorf("status: no environment files (NAME.hcl) in %s", f.dir)
	}
	envs := make([]deploy.EnvJob, len(names))
	for i, name := range names {
		e, err := environment.Load(f.dir, name)
		if err == nil {
			err = environment.SharedJob(f.dir, e)
		}
		if err != nil {
			envs[i] = deploy.EnvJob{Environment: name, Err: err}
			continue
		}
		envs[i] = deploy.EnvJob{Environment: name, Namespace: e.Namespace, Job: e.Job}
	}
	d, closeClients, err := newDeployer(sh, f.kvPrefix, "")
	if err != nil {
		return err
	}
	defer closeClients()
	rows := d.StatusAll(ctx, envs)
	judged := map[string]bool{}
	for i, name := range names {
		if e, err := environment.Load(f.dir, name); err == nil {
			rows[i].URL = e.URL
			judged[name] = e.Analysis != nil
		}
	}
	callFrontDoors(ctx, rows)
	if f.json {
		if err := writeJSON(sh.stdout, rows); err != nil {
			return err
		}
	} else {
		printStatusTable(sh.stdout, rows, judged)
	}
	var failed, closed []string
	drift := false
	for _, r := range rows {
		if r.Error != "" {
			failed = append(failed, r.Environment)
		}
		if down(r.FrontDoor) {
			closed = append(closed, r.Environment)
		}
		drift = drift || len(r.Drift) > 0
	}
	switch {
	case len(failed) > 0:
		return fmt.Errorf("status: %d of %d environments could not be read: %s", len(failed), len(rows), strings.Join(failed, ", "))
	case len(closed) > 0:
		return &exitStatus{code: exitFrontDoor, err: fmt.Errorf("status: the front door is down of %s", strings.Join(closed, ", "))}
	case drift:
		return &exitStatus{code: exitDrift}
	}
	return nil
}

// printStatusTable writes one line per environment, then each one's front
// door when down, its drift and errors in full.
func printStatusTable(w io.Writer, rows []deploy.Row, judged map[string]bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENVIRONMENT\tJOB\tRELEASE\tIMAGE\tCOMMIT\tCONFIG\tHEALTH\tDRIFT\tSAME BUILD AS PREVIOUS\tURL")
	for _, r := range rows {
		url := orDash(r.URL)
		if down(r.FrontDoor) {
			url += " (front door down)"
		}
		fmt.Fprintln(tw, strings.Join(append(statusCells(r, judged[r.Environment]), url), "\t"))
	}
	tw.Flush()
	for _, r := range rows {
		if down(r.FrontDoor) {
			fmt.Fprintf(w, "\n%s: the front door at %s is %s\n", r.Environment, r.URL, r.FrontDoor)
		}
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "\n%s: could not be read:\n  %s\n", r.Environment, strings.ReplaceAll(r.Error, "\n", "\n  "))
		case len(r.Drift) > 0:
			fmt.Fprintf(w, "\n%s: drift:\n", r.Environment)
			for _, d := range r.Drift {
				fmt.Fprintf(w, "  - %s\n", d)
			}
		}
		if r.Deployment != nil && r.Deployment.AwaitingPromotion != "" {
			fmt.Fprintf(w, "\n%s: %s\n", r.Environment, awaitsVerdict(r.Environment, r.Deployment, judged[r.Environment]))
		}
	}
}

// awaitsVerdict says that dep's canaries wait for promotion, and which
// command gives the verdict: for an environment with an analysis block
// (judged), the judge's.
func awaitsVerdict(env string, dep *deploy.DeploymentStatus, judged bool) string {
	if judged {
		since := "their healthy time is unknown"
		if dep.CanariesHealthySince != nil {
			since = dep.CanariesHealthySince.UTC().Format(time.RFC3339)
		}
		return fmt.Sprintf("canary awaiting analysis since %s (deployment %s of job version %d; %s): the deployer that judges it holds the deploy lock; "+
			"if none does (it was killed), deployer analyze -env %s resumes the judging, and deployer deployment -env %s promote|fail decides by hand",
			since, short(dep.ID, 8), dep.Version, dep.AwaitingPromotion, env, env)
	}
	return fmt.Sprintf("deployment %s of job version %d waits for a verdict (%s): deployer deployment -env %s promote rolls it out, deployer deployment -env %s fail ends it",
		short(dep.ID, 8), dep.Version, dep.AwaitingPromotion, env, env)
}

// statusCells are a row's cells, short enough for one line.
func statusCells(r deploy.Row, judged bool) []string {
	cells := []string{r.Environment, orDash(r.Job), "", "-", "-", "-", "-", "-", "-"}
	switch {
	case r.Error != "":
		cells[2] = "(error, below)"
	case !r.Registered:
		cells[2] = "(not registered)"
	default:
		cells[2] = r.Release
		cells[3] = orDash(shortBuild(deploy.BuildOf(r)))
		cells[4] = orDash(short(r.GitCommit, 7))
		cells[5] = orDash(r.ConfigHash)
		cells[6] = fmt.Sprintf("%d/%d healthy", r.Healthy, r.Count)
		if dep := r.Deployment; dep != nil && dep.AwaitingPromotion != "" && judged {
			cells[6] += ", canary awaiting analysis"
		} else if dep != nil && dep.AwaitingPromotion != "" {
			cells[6] += ", canaries await promotion"
		} else if dep != nil && dep.Version == r.Version && dep.Status != "successful" {
			cells[6] += ", deployment " + dep.Status
		} else if !r.Stable {
			// Its deployment never succeeded, or Nomad has reaped it.
			cells[6] += ", not stable"
		}
		cells[7] = "none"
		if len(r.Drift) > 0 {
			cells[7] = "yes, below"
		}
	}
	if r.SameBuild != nil {
		cells[8] = map[bool]string{true: "yes", false: "no"}[*r.SameBuild] + " (" + r.Previous + ")"
	}
	return cells
}

// shortBuild shortens an image digest to its first 12 hex digits, as
// docker shows IDs; a reference without a digest stays whole.
func shortBuild(build string) string {
	if hex, ok := strings.CutPrefix(build, "sha256:"); ok {
		return short(hex, 12)
	}
	return build
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// allocSummary says how many allocations are in each client status, and
// how many of them are healthy.
func allocSummary(allocs map[string]int, healthy int) string {
	var parts []string
	for _, k := range []string{"pending", "running", "complete", "failed", "lost", "unknown"} {
		if n := allocs[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return fmt.Sprintf("%s; %d healthy", strings.Join(parts, ", "), healthy)
}

func printStatus(w io.Writer, st *deploy.Status, env string, judged bool) {
	fmt.Fprintf(w, "Job:          %s (namespace %s), %s\n", st.Job, st.Namespace, st.Status)
	stable := map[bool]string{true: "stable", false: "not stable: its deployment never succeeded"}[st.Stable]
	if st.MadeOutside {
		fmt.Fprintf(w, "Release:      %s (job version %d, made outside the deployer from version %d; %s)\n", st.Release, st.Version, st.ReleaseVersion, stable)
	} else {
		fmt.Fprintf(w, "Release:      %s (job version %d, %s)\n", st.Release, st.Version, stable)
	}
	fmt.Fprintf(w, "Image:        %s\n", st.Image)
	if st.ConfigPath != "" {
		fmt.Fprintf(w, "Config:       %s at %s %v\n", st.ConfigHash, st.ConfigPath, st.Config)
	}
	if dep := st.Deployment; dep != nil {
		fmt.Fprintf(w, "Deployment:   %s %s (job version %d): %s\n", dep.ID[:8], dep.Status, dep.Version, dep.Description)
		if dep.AwaitingPromotion != "" {
			fmt.Fprintf(w, "Promotion:    %s\n", awaitsVerdict(env, dep, judged))
		}
		if dep.Revert != "" {
			fmt.Fprintf(w, "Revert:       %s\n", dep.Revert)
		}
	}
	fmt.Fprintf(w, "Allocations:  %s\n", allocSummary(st.Allocs, st.Healthy))
	// On one node this would say the line above again.
	if len(st.Nodes) > 1 {
		for _, n := range st.Nodes {
			fmt.Fprintf(w, "  on %-10s %s\n", n.Node+":", allocSummary(n.Allocs, n.Healthy))
		}
	}
	if len(st.Drift) == 0 {
		fmt.Fprintln(w, "Drift:        none")
	} else {
		fmt.Fprintln(w, "Drift:")
		for _, d := range st.Drift {
			fmt.Fprintf(w, "  - %s\n", d)
		}
	}
	if st.URL != "" {
		fmt.Fprintf(w, "URL:          %s (front door %s)\n", st.URL, st.FrontDoor)
	}
	for _, u := range st.URLs {
		fmt.Fprintf(w, "  %s\n", u)
	}
	if st.UI != "" {
		fmt.Fprintf(w, "Nomad UI: %s\n", st.UI)
	}
}
