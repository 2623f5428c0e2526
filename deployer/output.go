package main

import (
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/deploy"
)

// printRecord is submit's one-paragraph summary on stdout.
func printRecord(w io.Writer, r *deploy.Record) {
	if r.Outcome == deploy.NoChange {
		fmt.Fprintf(w, "No change: %s %s already runs %s with config %s.\n", r.Job, r.Release, r.Image, r.ConfigHash)
	} else {
		fmt.Fprintf(w, "%s %s %s: image %s, config %s at %s\n", r.Job, r.Release, r.Outcome, r.Image, r.ConfigHash, r.ConfigPath)
	}
	if r.PromotedFrom != "" {
		fmt.Fprintf(w, "Promoted from %s%s.\n", r.PromotedFrom, commitNote(r.GitCommit))
	}
	if r.Repair != "" {
		fmt.Fprintf(w, "Repaired drift: %s.\n", r.Repair)
	}
	if r.RevertedTo != nil {
		fmt.Fprintf(w, "Nomad reverted %s to %s (job version %d).\n", r.Job, r.RevertedToRelease, *r.RevertedTo)
	}
	if len(r.Causes) > 0 {
		fmt.Fprintln(w, "Why it failed:")
		for _, c := range r.Causes {
			fmt.Fprintf(w, "  %s\n", c)
		}
	}
	if r.URL != "" {
		fmt.Fprintf(w, "URL: %s%s\n", r.URL, urlNote(r.URLCheck))
	}
	for _, u := range r.URLs {
		fmt.Fprintf(w, "  %s\n", u)
	}
	for _, warning := range r.Warnings {
		fmt.Fprintf(w, "Nomad warned: %s\n", warning)
	}
	if r.UI != "" {
		fmt.Fprintf(w, "Nomad UI: %s\n", r.UI)
	}
}

// finishRecord prints what submit, rollback or promote did and turns its outcome into
// an error that carries the exit code.
func finishRecord(sh *shell, rec *deploy.Record, err error, asJSON bool) error {
	if rec != nil {
		if asJSON {
			if jerr := writeJSON(sh.stdout, rec); jerr != nil {
				return jerr
			}
		} else {
			printRecord(sh.stdout, rec)
		}
	}
	if err != nil {
		return err
	}
	switch rec.Outcome {
	case deploy.Failed:
		return &exitStatus{code: exitFailed, err: fmt.Errorf("deployment of %s %s failed: %s", rec.Job, rec.Release, rec.Detail)}
	case deploy.Unknown, deploy.AwaitingPromotion:
		return &exitStatus{code: exitUnknown, err: fmt.Errorf("%s %s: %s", rec.Job, rec.Release, rec.Detail)}
	case deploy.AutoReverted:
		return &exitStatus{code: exitAutoReverted, err: fmt.Errorf("deployment of %s %s failed and Nomad reverted the job to %s (job version %d): %s",
			rec.Job, rec.Release, rec.RevertedToRelease, *rec.RevertedTo, rec.Detail)}
	}
	return nil
}

// commitNote is " (commit SHA)", or nothing when the build names none.
func commitNote(commit string) string {
	if commit == "" {
		return ""
	}
	return " (commit " + commit + ")"
}
