package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kodekloud/counter/internal/deploy"
)

func statusCommand() *command {
	return &command{
		name:     "status",
		args:     "-env NAME [options]",
		synopsis: "Show the running release, its health, and drift",
		doc: `Shows the running release, its deployment and allocation health, and drift:
a version not made by the deployer (nomad job run by hand), or its config
snapshot missing or edited in Consul.`,
		required: []string{"env"},
		exits:    append([]exitDoc{{exitOK, "no drift"}}, codes(exitError, exitUsage, exitDrift)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			return func(ctx context.Context, _ []string) error {
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				st, err := d.Status(ctx, e.Namespace, e.Job)
				if err != nil {
					return err
				}
				if f.json {
					if err := writeJSON(sh.stdout, st); err != nil {
						return err
					}
				} else {
					printStatus(sh.stdout, st)
				}
				if len(st.Drift) > 0 {
					return &exitStatus{code: exitDrift}
				}
				return nil
			}
		},
	}
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
	} else {
		fmt.Fprintln(w, "Drift:")
		for _, d := range st.Drift {
			fmt.Fprintf(w, "  - %s\n", d)
		}
	}
	for _, u := range st.URLs {
		fmt.Fprintf(w, "  %s\n", u)
	}
	if st.UI != "" {
		fmt.Fprintf(w, "Nomad UI: %s\n", st.UI)
	}
}
