package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
)

// exitDrift is status's exit code when the job is not what was released.
const exitDrift = 3

const opsHelp = `Usage: deployer %[1]s -env NAME [options]

%[2]s

Options:
  -env NAME            environment: environments/NAME.hcl names the job (required)
  -environments DIR    folder of environment files (default "environments")
  -kv-prefix PATH      Consul KV folder of config snapshots (default "counter/releases")
  -json                print the result as JSON
%[3]s
Exit codes: %[4]s
`

var opsDoc = map[string][3]string{
	"history": {"Lists the job's retained versions, newest first: release, image, config,\nwhat changed since the version before, submit time, who, stability, and\nthe current one (*).",
		"", "0 ok, 1 error, 2 usage"},
	"rollback": {"Reverts the job to an earlier version through Nomad's job history, which\nbrings back that release's image and config snapshot. Checks first that\nthe snapshot is intact and the image still pullable; then watches the\ndeployment. Default target: the newest stable version older than the\ncurrent one that runs a different release.",
		"  -to NAME             version tag to go back to, e.g. v7\n" +
			"  -to-version N        job version number to go back to\n" +
			"  -detach              return after reverting, without watching\n",
		"0 succeeded or already running, 1 error, 2 usage, 3 deployment failed,\n" +
			"            4 deployment failed and Nomad auto-reverted, 5 conflict"},
	"status": {"Shows the running release, its deployment and allocation health, and drift:\na version not made by the deployer (nomad job run by hand), or its config\nsnapshot missing or edited in Consul.",
		"", "0 no drift, 1 error, 2 usage, 3 drift"},
	"gc": {"Deletes the config snapshots that no retained or tagged job version uses.\nNomad keeps every tagged version; -keep N untags all but the newest N\nreleases so that Nomad's version limit applies to the rest.",
		"  -keep N              keep the release tags of the newest N versions only\n" +
			"  -dry-run             print what would be untagged and deleted\n",
		"0 ok, 1 error, 2 usage, 5 conflict (a deploy is in progress)"},
}

func runOps(ctx context.Context, cmd string, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deployer "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	doc := opsDoc[cmd]
	fs.Usage = func() { fmt.Fprintf(stderr, opsHelp, cmd, doc[0], doc[1], doc[2]) }
	envName := fs.String("env", "", "")
	envDir := fs.String("environments", "environments", "")
	kvPrefix := fs.String("kv-prefix", configstore.DefaultPrefix, "")
	asJSON := fs.Bool("json", false, "")
	var to, toVersion string
	var detach, dryRun bool
	var keep int
	switch cmd {
	case "rollback":
		fs.StringVar(&to, "to", "", "")
		fs.StringVar(&toVersion, "to-version", "", "")
		fs.BoolVar(&detach, "detach", false, "")
	case "gc":
		fs.IntVar(&keep, "keep", 0, "")
		fs.BoolVar(&dryRun, "dry-run", false, "")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &exitStatus{code: exitUsage}
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected arguments %q", cmd, fs.Args())
	}
	if *envName == "" {
		fs.Usage()
		return usageError("%s: -env is required", cmd)
	}
	var target deploy.Target
	if to != "" && toVersion != "" {
		return usageError("rollback: give -to or -to-version, not both")
	}
	if to != "" {
		target.Tag = to
	}
	if toVersion != "" {
		n, err := strconv.ParseUint(toVersion, 10, 64)
		if err != nil {
			return usageError("rollback: -to-version %q is not a version number", toVersion)
		}
		target.Version = &n
	}
	if keep < 0 {
		return usageError("gc: -keep %d: want 0 (keep all tags) or more", keep)
	}

	e, err := environment.Load(*envDir, *envName)
	if err != nil {
		return err
	}
	d, closeClients, err := newDeployer(getenv, *kvPrefix, "", stderr)
	if err != nil {
		return err
	}
	defer closeClients()
	ns, job := e.Namespace, e.Job
	who := submitter(getenv)

	switch cmd {
	case "history":
		entries, err := d.History(ctx, ns, job)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, entries)
		}
		printHistory(stdout, entries)
		return nil
	case "status":
		st, err := d.Status(ctx, ns, job)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := writeJSON(stdout, st); err != nil {
				return err
			}
		} else {
			printStatus(stdout, st)
		}
		if len(st.Drift) > 0 {
			return &exitStatus{code: exitDrift}
		}
		return nil
	case "gc":
		res, err := d.GC(ctx, ns, job, keep, dryRun, who)
		if res != nil {
			if *asJSON {
				if jerr := writeJSON(stdout, res); jerr != nil {
					return jerr
				}
			} else {
				printGC(stdout, res)
			}
		}
		return err
	}
	rec, err := d.Rollback(ctx, ns, job, target, deploy.RollbackOptions{Detach: detach, Who: who})
	return finishRecord(stdout, rec, err, *asJSON)
}

// printHistory writes one aligned row per version, each followed by the
// changes it made, indented under it.
func printHistory(w io.Writer, entries []deploy.Entry) {
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tRELEASE\tVERSION\tIMAGE\tCONFIG\tSUBMITTED\tBY\tSTABLE")
	for _, e := range entries {
		mark := ""
		if e.Current {
			mark = "*"
		}
		stable := "no"
		if e.Stable {
			stable = "yes"
		}
		by := e.SubmittedBy
		if !e.ByDeployer {
			by = "(by hand)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", mark, e.Release, e.Version, shortImage(e.Image),
			e.ConfigHash, e.SubmitTime.Format("2006-01-02 15:04:05"), by, stable)
	}
	tw.Flush()
	rows := strings.Split(strings.TrimRight(table.String(), "\n"), "\n")
	fmt.Fprintln(w, rows[0])
	for i, e := range entries {
		fmt.Fprintln(w, rows[i+1])
		if e.SameAs != "" {
			fmt.Fprintf(w, "      same release as %s\n", e.SameAs)
		}
		for _, c := range e.Changes {
			fmt.Fprintf(w, "      %s\n", c)
		}
	}
}

// shortImage keeps a digest readable: repo@sha256:12 hex digits.
func shortImage(img string) string {
	if i := strings.Index(img, "@sha256:"); i >= 0 && len(img) > i+8+12 {
		return img[:i+8+12]
	}
	return img
}

func printStatus(w io.Writer, st *deploy.Status) {
	fmt.Fprintf(w, "Job:          %s (namespace %s), %s\n", st.Job, st.Namespace, st.Status)
	fmt.Fprintf(w, "Release:      %s (job version %d)\n", st.Release, st.Version)
	fmt.Fprintf(w, "Image:        %s\n", st.Image)
	if st.ConfigPath != "" {
		fmt.Fprintf(w, "Config:       %s at %s %v\n", st.ConfigHash, st.ConfigPath, st.Config)
	}
	if dep := st.Deployment; dep != nil {
		fmt.Fprintf(w, "Deployment:   %s %s (job version %d): %s\n", dep.ID[:8], dep.Status, dep.Version, dep.Description)
	}
	var parts []string
	for _, k := range []string{"pending", "running", "complete", "failed", "lost"} {
		if n := st.Allocs[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	fmt.Fprintf(w, "Allocations:  %s; %d healthy\n", strings.Join(parts, ", "), st.Healthy)
	if len(st.Drift) == 0 {
		fmt.Fprintln(w, "Drift:        none")
		return
	}
	fmt.Fprintln(w, "Drift:")
	for _, d := range st.Drift {
		fmt.Fprintf(w, "  - %s\n", d)
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
