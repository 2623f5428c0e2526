package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
)

func planCommand() *command {
	return &command{
		name:     "plan",
		args:     "-env NAME -image REF [options]",
		synopsis: "Show what a submit would change",
		doc: `Shows Nomad's plan diff and the config diff against the running release,
and the job modify index to pass to submit -check-index. Nothing is written.
Exit codes follow nomad job plan, usage errors included.`,
		required: releaseRequired(),
		exits: []exitDoc{
			{exitOK, "no allocation would be created or destroyed (no change, or only in-place updates)"},
			{exitPlanChanged, "allocations would be created or destroyed"},
			{exitPlanError, "error, usage errors included"},
		},
		errorCode: exitPlanError,
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f releaseFlags
			f.register(fs)
			return func(ctx context.Context, _ []string) error {
				d, rel, closeClients, err := f.prepare(ctx, sh, nil)
				if err != nil {
					return err
				}
				defer closeClients()
				p, err := d.Plan(ctx, rel)
				if err != nil {
					return err
				}
				if f.json {
					if err := writeJSON(sh.stdout, planJSON(p)); err != nil {
						return err
					}
				} else {
					printPlan(sh.stdout, p)
				}
				if planExit(p.Response) == exitPlanChanged {
					return planChanged{}
				}
				return nil
			}
		},
	}
}

// planExit is plan's exit code for Nomad's answer, by the rule of nomad job
// plan (getExitCode in Nomad 1.11's command/job_plan.go), so that scripts
// written for it read the deployer's the same way: 1 when the scheduler would
// create or destroy allocations (place, stop, migrate, replace or add a
// canary) in any task group, otherwise 0. An in-place update (a changed
// update block, say) is a change that submit registers as a new version, yet
// plan exits 0 for it, as nomad job plan does.
func planExit(resp *nomad.JobPlanResponse) int {
	if resp == nil || resp.Annotations == nil || (resp.Diff != nil && resp.Diff.Type == "None") {
		return exitOK
	}
	for _, u := range resp.Annotations.DesiredTGUpdates {
		if u != nil && u.Stop+u.Place+u.Migrate+u.DestructiveUpdate+u.Canary > 0 {
			return exitPlanChanged
		}
	}
	return exitOK
}

// printPlan writes the plan as `nomad job plan` users expect: the job diff
// with +/-/~ markers, then the config diff against the running release.
func printPlan(w io.Writer, p *deploy.Plan) {
	if !p.Changed {
		fmt.Fprintf(w, "No change: job %q already runs this release.\n", *p.Job.ID)
		return
	}
	if p.Repair != "" {
		fmt.Fprintf(w, "Drift: %s.\n\n", p.Repair)
	}
	if p.Diff != nil {
		printJobDiff(w, p.Diff)
	}
	fmt.Fprintln(w)
	printConfigDiff(w, p.OldConfig, p.NewConfig)
	if len(p.Unplaceable) > 0 {
		fmt.Fprintln(w, "\nScheduler dry-run: WARNING: Nomad cannot place this release; submit refuses it:")
		for _, r := range p.Unplaceable {
			fmt.Fprintf(w, "  * %s\n", r)
		}
	}
	if p.Current != nil {
		fmt.Fprintf(w, "\nJob modify index: %d (deployer submit -check-index %d submits only if the job is unchanged)\n",
			p.ModifyBase, p.ModifyBase)
	}
}

func printConfigDiff(w io.Writer, old, new map[string]string) {
	fmt.Fprintln(w, "Config:")
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range new {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		o, inOld := old[k]
		n, inNew := new[k]
		switch {
		case !inOld:
			fmt.Fprintf(w, "+ %s = %q\n", k, n)
		case !inNew:
			fmt.Fprintf(w, "- %s = %q\n", k, o)
		case o != n:
			fmt.Fprintf(w, "~ %s = %q => %q\n", k, o, n)
		default:
			fmt.Fprintf(w, "  %s = %q\n", k, n)
		}
	}
}

func marker(typ string) string {
	switch typ {
	case "Added":
		return "+"
	case "Deleted":
		return "-"
	case "Edited":
		return "~"
	}
	return " "
}

func printJobDiff(w io.Writer, d *nomad.JobDiff) {
	fmt.Fprintf(w, "%s Job: %q\n", marker(d.Type), d.ID)
	printFields(w, "  ", d.Fields)
	printObjects(w, "  ", d.Objects)
	for _, tg := range d.TaskGroups {
		if tg.Type == "None" {
			continue
		}
		fmt.Fprintf(w, "%s Task Group: %q", marker(tg.Type), tg.Name)
		if len(tg.Updates) > 0 {
			var ups []string
			for _, k := range slices.Sorted(maps.Keys(tg.Updates)) {
				ups = append(ups, fmt.Sprintf("%d %s", tg.Updates[k], k))
			}
			fmt.Fprintf(w, " (%s)", strings.Join(ups, ", "))
		}
		fmt.Fprintln(w)
		printFields(w, "    ", tg.Fields)
		printObjects(w, "    ", tg.Objects)
		for _, t := range tg.Tasks {
			if t.Type == "None" {
				continue
			}
			fmt.Fprintf(w, "  %s Task: %q", marker(t.Type), t.Name)
			if len(t.Annotations) > 0 {
				fmt.Fprintf(w, " (%s)", strings.Join(t.Annotations, ", "))
			}
			fmt.Fprintln(w)
			printFields(w, "      ", t.Fields)
			printObjects(w, "      ", t.Objects)
		}
	}
}

func printFields(w io.Writer, indent string, fields []*nomad.FieldDiff) {
	for _, f := range fields {
		switch f.Type {
		case "None":
			continue
		case "Added":
			fmt.Fprintf(w, "%s+ %s: %q\n", indent, f.Name, f.New)
		case "Deleted":
			fmt.Fprintf(w, "%s- %s: %q\n", indent, f.Name, f.Old)
		default:
			fmt.Fprintf(w, "%s~ %s: %q => %q\n", indent, f.Name, f.Old, f.New)
		}
	}
}

func printObjects(w io.Writer, indent string, objs []*nomad.ObjectDiff) {
	for _, o := range objs {
		if o.Type == "None" {
			continue
		}
		fmt.Fprintf(w, "%s%s %s {\n", indent, marker(o.Type), o.Name)
		printFields(w, indent+"  ", o.Fields)
		printObjects(w, indent+"  ", o.Objects)
		fmt.Fprintf(w, "%s  }\n", indent)
	}
}

func planJSON(p *deploy.Plan) map[string]any {
	out := map[string]any{
		"changed":     p.Changed,
		"job":         *p.Job.ID,
		"diff":        p.Diff,
		"config":      map[string]any{"old": p.OldConfig, "new": p.NewConfig},
		"check_index": p.ModifyBase,
		"unplaceable": p.Unplaceable,
		"repair":      p.Repair,
	}
	if p.Response != nil {
		out["annotations"] = p.Response.Annotations
		out["warnings"] = p.Response.Warnings
	}
	return out
}
