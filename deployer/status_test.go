package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

func TestStatusTableCells(t *testing.T) {
	yes, no := true, false
	running := deploy.Row{
		Environment: "test", Job: "counter-test", Registered: true, Release: "v7", Version: 7, Stable: true,
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
		{"canaries that wait for a verdict",
			with(func(r *deploy.Row) {
				r.Deployment = &deploy.DeploymentStatus{Version: 8, Status: "running", AwaitingPromotion: "web: 1/1 canaries healthy"}
			}),
			"test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy, canaries await promotion none yes (dev)"},
		{"a canary that waits for its analysis",
			with(func(r *deploy.Row) {
				r.Environment, r.Deployment = "judged", &deploy.DeploymentStatus{Version: 8, Status: "running", AwaitingPromotion: "web: 1/1 canaries healthy"}
			}),
			"judged counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy, canary awaiting analysis none yes (dev)"},
		{"a tag pinned without digest shows the reference",
			with(func(r *deploy.Row) { r.Image, r.ImageDigest, r.GitCommit = "reg:5000/counter:abc", "", "" }),
			"test counter-test v7 reg:5000/counter:abc - 9c8b7a6f5e4d3c2b 3/3 healthy none yes (dev)"},
		{"a version whose deployment never succeeded",
			with(func(r *deploy.Row) { r.Stable, r.Deployment = false, nil }),
			"test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy, not stable none yes (dev)"},
		{"drift",
			with(func(r *deploy.Row) { r.Drift = []string{"the job is stopped"} }), "test counter-test v7 3f2a9c1b7d4e a1b2c3d 9c8b7a6f5e4d3c2b 3/3 healthy yes, below yes (dev)"},
		{"a job not registered",
			deploy.Row{Environment: "prod", Job: "counter-prod", Drift: []string{}, Previous: "test"}, "prod counter-prod (not registered) - - - - - -"},
		{"an environment that could not be read",
			deploy.Row{Environment: "prod", Error: "bad file", Previous: "test"}, "prod - (error, below) - - - - - -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(statusCells(tt.row, tt.row.Environment == "judged"), " "); got != tt.want {
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
	}, nil)
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

// statusAllJSON runs status of every environment with -json.
func statusAllJSON(t *testing.T, f *fixture) ([]deploy.Row, int) {
	t.Helper()
	out, _, code := f.deployer("status", "-json")
	var rows []deploy.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("status -json printed %q: %v", out, err)
	}
	return rows, code
}

// Status without -env shows every environment in pipeline order, whether
// each runs the build of the one before it, a job not yet registered as a
// row of its own, drift as exit 6, and an unreadable environment as exit 1
// without hiding the others.
func TestStatusOfEveryEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	other := imageVariant(t, f.stack, 1)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	f.writeEnvJob("test", f.otherJob("counter-test"), rdb, 1, "")
	f.writeEnvJob("prod", f.otherJob("counter-prod"), rdb, 1, "")
	f.writeEnvJob("qa", f.otherJob("counter-qa"), rdb, 1, "")
	recs := map[string]deploy.Record{}
	for env, image := range map[string]string{"dev": other, "test": good, "prod": good} {
		rec, code, stderr := submitJSON(t, f, "-env", env, "-image", image)
		if code != exitOK {
			t.Fatalf("submit %s: exit %d\n%s", env, code, stderr)
		}
		recs[env] = rec
	}

	rows, code := statusAllJSON(t, f)
	if code != exitOK {
		t.Fatalf("status of every environment: exit %d, want %d: no drift, and qa's job not registered is no error", code, exitOK)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Environment)
	}
	if strings.Join(names, " ") != "dev test prod qa" {
		t.Fatalf("rows %q, want dev test prod qa", names)
	}
	same := func(r deploy.Row) string {
		if r.SameBuild == nil {
			return "-"
		}
		return map[bool]string{true: "same", false: "other"}[*r.SameBuild]
	}
	for i, want := range []string{"-", "other", "same", "-"} {
		if got := same(rows[i]); got != want {
			t.Errorf("%s: %s build as the one before, want %s", rows[i].Environment, got, want)
		}
	}
	for _, r := range rows[:3] {
		rec := recs[r.Environment]
		if !r.Registered || r.Release != rec.Release || r.ImageDigest != rec.ImageDigest || r.ConfigHash != rec.ConfigHash ||
			r.Healthy != 1 || r.Count != 1 || len(r.Drift) != 0 || r.Error != "" {
			t.Errorf("%s: %+v; want release %s, digest %s, config %s, 1/1 healthy, no drift", r.Environment, r, rec.Release, rec.ImageDigest, rec.ConfigHash)
		}
	}
	if qa := rows[3]; qa.Registered || qa.Error != "" || qa.Release != "" {
		t.Errorf("qa: %+v, want a row that says its job is not registered", qa)
	}
	out, _, _ := f.deployer("status")
	if !strings.Contains(out, "(not registered)") || !strings.Contains(out, "1/1 healthy") ||
		!strings.Contains(out, "no (dev)") || !strings.Contains(out, "yes (test)") {
		t.Errorf("status table:\n%s", out)
	}

	// A hand edit of prod's snapshot is drift: exit 6, in prod's row only.
	if _, err := f.kv.KV().Put(&consul.KVPair{Key: recs["prod"].ConfigPath + "/PORT", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	rows, code = statusAllJSON(t, f)
	if code != exitDrift {
		t.Errorf("status with prod's snapshot edited: exit %d, want %d", code, exitDrift)
	}
	for _, r := range rows {
		if drifted := len(r.Drift) > 0; drifted != (r.Environment == "prod") {
			t.Errorf("%s: drift %q", r.Environment, r.Drift)
		}
	}

	// An environment that cannot be read is a row with its error (broken
	// comes before qa: the others go alphabetically after prod), the others
	// are still read, and status fails at the end.
	if err := os.WriteFile(filepath.Join(f.dir, "environments", "broken.hcl"), []byte("job = \"!\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, code = statusAllJSON(t, f)
	if code != exitError {
		t.Errorf("status with an unreadable environment: exit %d, want %d", code, exitError)
	}
	if len(rows) != 5 || rows[3].Environment != "broken" || rows[3].Error == "" || !rows[0].Registered || len(rows[2].Drift) == 0 ||
		rows[4].Environment != "qa" {
		t.Errorf("rows %+v; want the four as before, with broken's error before qa", rows)
	}
}

// An instance whose health check fails now is not healthy, though its
// deployment found it so: Nomad never takes that verdict back. Its Redis
// stopped, the app's /readyz fails, and status says so, exit 0 (the job
// runs what was released: no drift).
func TestStatusCountsOnlyInstancesThatPassNow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("submit: exit %d", code)
	}
	if st, _ := f.statusJSON(); st.Healthy != 1 || st.Allocs["running"] != 1 {
		t.Fatalf("before: %d healthy of %v, want 1 of 1 running", st.Healthy, st.Allocs)
	}
	rdb.Stop()
	f.waitNoPassing(f.job, rec.ConfigHash)
	st, code := f.statusJSON()
	if st.Healthy != 0 || st.Allocs["running"] != 1 || code != exitOK {
		t.Errorf("with its check failing: %d healthy of %v, exit %d; want 0 healthy of 1 running, exit 0", st.Healthy, st.Allocs, code)
	}
	rows, _ := statusAllJSON(t, f)
	if rows[0].Healthy != 0 {
		t.Errorf("status of every environment: %d healthy, want 0", rows[0].Healthy)
	}
}
