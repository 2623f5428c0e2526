package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kodekloud/counter/internal/deploy"
)

func historyCommand() *command {
	return &command{
		name:     "history",
		args:     "-env NAME [options]",
		synopsis: "List an environment's releases and what each changed",
		doc: `Lists the job's retained versions, newest first: release, image, config,
what changed since the version before, submit time, who, stability, and
the current one (*). Who is the submitter, who rolled back for a rollback,
and "(by hand)" for a version made outside the deployer, even one that kept
its meta (nomad job scale, revert, a UI edit): that one names the release it
was made from and how it differs ("drift:"). A snapshot edited by hand since
its release is said to be, not shown as the release's config.`,
		required: []string{"env"},
		exits:    codes(exitOK, exitError, exitUsage),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			return func(ctx context.Context, _ []string) error {
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				entries, err := d.History(ctx, e.Namespace, e.Job)
				if err != nil {
					return err
				}
				if f.json {
					return writeJSON(sh.stdout, entries)
				}
				printHistory(sh.stdout, entries)
				return nil
			}
		},
	}
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
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", mark, e.Release, e.Version, shortImage(e.Image),
			e.ConfigHash, e.SubmitTime.Format("2006-01-02 15:04:05"), by, stable)
	}
	tw.Flush()
	rows := strings.Split(strings.TrimRight(table.String(), "\n"), "\n")
	fmt.Fprintln(w, rows[0])
	for i, e := range entries {
		fmt.Fprintln(w, rows[i+1])
		if e.PromotedFrom != "" {
			fmt.Fprintf(w, "      promoted from %s\n", e.PromotedFrom)
		}
		if e.CopyOf != "" {
			fmt.Fprintf(w, "      made outside the deployer from %s\n", e.CopyOf)
		}
		for _, d := range e.Drift {
			fmt.Fprintf(w, "      drift: %s\n", d)
		}
		if e.ConfigEdited != "" {
			fmt.Fprintf(w, "      drift: config snapshot %s was edited by hand: content hash %s, released as %s\n", e.ConfigPath, e.ConfigEdited, e.ConfigHash)
		}
		if e.SameAs != "" {
			fmt.Fprintf(w, "      same release as %s\n", e.SameAs)
		}
		if e.JudgedCopyOf != "" {
			fmt.Fprintf(w, "      judged copy of %s (auto_promote on): revert to this one, not %s, with nomad job revert or the Nomad UI\n", e.JudgedCopyOf, e.JudgedCopyOf)
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
