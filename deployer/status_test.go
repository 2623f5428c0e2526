package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/deploy"
)

func TestStatusTableCells(t *testing.T) {
	yes, no := true, false
	running := deploy.Row{
		Environment: "test", Job: "counter-test", Registered: true, Release: "v7", Version: 7,
		Image: "reg:5000/counter@sha256:3f2a9c1b7d4e5f60718293a4b5c6d7e8f9", ImageDigest: "sha256:3f2a9c1b7d4e5f60718293a4b5c6d7e8f9",
		GitCommit: "a1b2c3d4e5f6a7b8c9d0", ConfigHash: "9c8b7a6f5e4d3c2b", Count: 3, Healthy: 3,
		Deployment: &deploy.DeploymentStatus{Version: 7, Status: "successful"}, Drift: []string{},
		Previous: "dev", SameBuild: &yes,
	}
	with := func(change func(r *deploy.Row)) deploy.Row {
		r := running
		change(&r)
		return r
	}
	tests := []struct {
		name string
		row  deploy.Row
		want string
	}{
		{"a healthy release, the same build as the one before",
			running, "test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy none yes (dev)"},
		{"another build than the one before",
			with(func(r *deploy.Row) { r.SameBuild = &no }), "test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy none no (dev)"},
		{"the first environment has none before it",
			with(func(r *deploy.Row) { r.SameBuild, r.Previous = nil, "" }), "test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy none -"},
		{"a deployment under way",
			with(func(r *deploy.Row) {
				r.Healthy, r.Deployment = 1, &deploy.DeploymentStatus{Version: 7, Status: "running"}
			}),
			"test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 1/3 healthy, deployment running none yes (dev)"},
		{"a tag pinned without digest shows the reference",
			with(func(r *deploy.Row) { r.Image, r.ImageDigest, r.GitCommit = "reg:5000/counter:abc", "", "" }),
			"test counter-test v7 reg:5000/counter:abc - 9c8b7a6f5e4d3c2b 3/3 healthy none yes (dev)"},
		{"drift",
			with(func(r *deploy.Row) { r.Drift = []string{"the job is stopped"} }), "test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy yes, below yes (dev)"},
		{"a job not registered",
			deploy.Row{Environment: "prod", Job: "counter-prod", Drift: []string{}, Previous: "test"}, "prod counter-prod (not registered) - - - - - -"},
		{"an environment that could not be read",
			deploy.Row{Environment: "prod", Error: "bad file", Previous: "test"}, "prod - (error, below) - - - - - -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(statusCells(tt.row), " "); got != tt.want {
				t.Errorf("cells\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestStatusTableShowsDriftAndErrorsInFull(t *testing.T) {
	var b bytes.Buffer
	printStatusTable(&b, []deploy.Row{
		{Environment: "dev", Job: "counter-dev", Registered: true, Release: "v2", Drift: []string{"config snapshot x was edited by hand"}},
		{Environment: "test", Error: "test.hcl:1,1: Invalid job name\n  1 | job = \"!\""},
		{Environment: "prod", Job: "counter-prod", Drift: []string{}},
	})
	out := b.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "ENVIRONMENT") || !strings.HasPrefix(lines[1], "dev ") ||
		!strings.HasPrefix(lines[2], "test ") || !strings.HasPrefix(lines[3], "prod ") {
		t.Errorf("want a header and a row per environment in their order:\n%s", out)
	}
	for _, want := range []string{
		"\ndev: drift:\n  - config snapshot x was edited by hand\n",
		"\ntest: could not be read:\n  test.hcl:1,1: Invalid job name\n    1 | job = \"!\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
