package deploy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

func TestSameBuilds(t *testing.T) {
	digest := func(env, d string) Row { return Row{Environment: env, Image: "reg/counter@" + d, ImageDigest: d} }
	tests := []struct {
		name string
		rows []Row
		want []string // per row: "-" for none, "true" or "false"
	}{
		{"the first has none before it", []Row{digest("dev", "sha256:a")}, []string{"-"}},
		{"same digest, same build", []Row{digest("dev", "sha256:a"), digest("test", "sha256:a")}, []string{"-", "true"}},
		{"compares with the environment just before, not the first",
			[]Row{digest("dev", "sha256:b"), digest("test", "sha256:a"), digest("prod", "sha256:a")}, []string{"-", "false", "true"}},
		{"another digest, another build", []Row{digest("dev", "sha256:a"), digest("test", "sha256:b")}, []string{"-", "false"}},
		{"a tag with the same digest in meta is the same build",
			[]Row{digest("dev", "sha256:a"), {Environment: "test", Image: "reg/counter:abc", ImageDigest: "sha256:a"}}, []string{"-", "true"}},
		{"without digest meta, the pinned reference's digest",
			[]Row{digest("dev", "sha256:a"), {Environment: "test", Image: "other/counter@sha256:a"}}, []string{"-", "true"}},
		{"without any digest, the reference",
			[]Row{{Environment: "dev", Image: "reg/counter:abc"}, {Environment: "test", Image: "reg/counter:abc"}, {Environment: "prod", Image: "reg/counter:def"}},
			[]string{"-", "true", "false"}},
		{"an unregistered environment has nothing to compare",
			[]Row{digest("dev", "sha256:a"), {Environment: "test"}, digest("prod", "sha256:a")}, []string{"-", "-", "-"}},
		{"nor has one that could not be read",
			[]Row{{Environment: "dev", Error: "boom"}, digest("test", "sha256:a")}, []string{"-", "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			SameBuilds(tt.rows)
			for i, r := range tt.rows {
				got := "-"
				if r.SameBuild != nil {
					got = map[bool]string{true: "true", false: "false"}[*r.SameBuild]
				}
				if got != tt.want[i] {
					t.Errorf("row %s: same build %s, want %s", r.Environment, got, tt.want[i])
				}
				if i > 0 && r.Previous != tt.rows[i-1].Environment {
					t.Errorf("row %s: previous %q, want %q", r.Environment, r.Previous, tt.rows[i-1].Environment)
				}
			}
		})
	}
}

// readsJobs answers Info with the jobs it holds and counts how many reads
// are under way at once. The first reads wait until four are under way and
// no more arrive for a while (or none remain): reading one environment
// after the other never gets past the first, and reading them all at once
// shows all of them under way.
type readsJobs struct {
	Jobs
	jobs    map[string]*nomad.Job
	errs    map[string]error
	mu      sync.Mutex
	now     int
	most    int
	left    int // reads still to come
	release sync.Once
	crowded chan struct{}
}

func (r *readsJobs) Info(id string, q *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	open := func() { r.release.Do(func() { close(r.crowded) }) }
	r.mu.Lock()
	r.now++
	r.most = max(r.most, r.now)
	r.left--
	switch {
	case r.left == 0:
		open()
	case r.now == statusReaders:
		time.AfterFunc(200*time.Millisecond, open)
	}
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.now--; r.mu.Unlock() }()
	select {
	case <-r.crowded:
	case <-time.After(5 * time.Second):
		return nil, nil, errors.New("no other environment was read meanwhile")
	}
	if err := r.errs[id]; err != nil {
		return nil, nil, err
	}
	if j := r.jobs[id]; j != nil {
		return j, nil, nil
	}
	return nil, nil, errors.New("Unexpected response code: 404 (job not found)")
}

func (r *readsJobs) LatestDeployment(string, *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	return nil, nil, nil
}

func (r *readsJobs) Allocations(string, bool, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	healthy := true
	return []*nomad.AllocationListStub{
		{JobVersion: 3, ClientStatus: "running", DesiredStatus: "run", DeploymentStatus: &nomad.AllocDeploymentStatus{Healthy: &healthy}},
		{JobVersion: 2, ClientStatus: "complete"},
	}, nil, nil
}

// One environment's error, or its missing job, does not hide the others,
// and the environments are read together, a few at a time.
func TestStatusAllReadsEachEnvironmentOnItsOwn(t *testing.T) {
	byHand := version(3, "reg/counter@sha256:a", "", true, "")
	byHand.Meta[release.MetaImageDigest] = "sha256:a"
	byHand.TaskGroups[0].Count = ptr(2)
	byHand.Status = ptr("running")
	jobs := &readsJobs{
		jobs: map[string]*nomad.Job{},
		errs: map[string]error{"counter-test": errors.New("Unexpected response code: 500 (rpc error: no leader)")},
	}
	var targets []EnvJob
	for _, name := range []string{"dev", "test", "prod", "a", "b", "c", "d", "e", "f", "g"} {
		targets = append(targets, EnvJob{Environment: name, Namespace: "default", Job: "counter-" + name})
		if name != "prod" && name != "test" {
			jobs.jobs["counter-"+name] = byHand
		}
	}
	targets = append(targets, EnvJob{Environment: "broken", Err: errors.New("broken.hcl:1,1: Invalid job name")})
	jobs.left = len(targets) - 1
	jobs.crowded = make(chan struct{})
	d := &Deployer{Jobs: jobs, NomadAddr: "http://nomad.test:4646"}

	rows := d.StatusAll(context.Background(), targets)

	if len(rows) != len(targets) {
		t.Fatalf("%d rows for %d environments", len(rows), len(targets))
	}
	for i, r := range rows {
		if r.Environment != targets[i].Environment {
			t.Errorf("row %d is %s, want %s: rows keep the environments' order", i, r.Environment, targets[i].Environment)
		}
	}
	dev, test, prod, broken := rows[0], rows[1], rows[2], rows[len(rows)-1]
	if !dev.Registered || dev.Release != "v3" || dev.Count != 2 || dev.Healthy != 1 || dev.ImageDigest != "sha256:a" ||
		len(dev.Drift) != 1 || !strings.Contains(dev.Drift[0], "not made by the deployer") || dev.Error != "" {
		t.Errorf("dev: %+v; want v3, 1 of 2 healthy, drift by hand", dev)
	}
	if test.Registered || !strings.Contains(test.Error, "no leader") {
		t.Errorf("test: registered %v, error %q; want Nomad's error", test.Registered, test.Error)
	}
	if prod.Registered || prod.Error != "" || len(prod.Drift) != 0 {
		t.Errorf("prod: %+v; want a row that says it is not registered, no error", prod)
	}
	if !strings.Contains(broken.Error, "Invalid job name") {
		t.Errorf("broken: error %q, want its file's", broken.Error)
	}
	if a, b := rows[3], rows[4]; a.SameBuild != nil || b.SameBuild == nil || !*b.SameBuild {
		t.Errorf("same build: a %v after unregistered prod, b %v after a; want unknown, then true", a.SameBuild, b.SameBuild)
	}
	if jobs.most != statusReaders {
		t.Errorf("%d environments read at once, want %d", jobs.most, statusReaders)
	}
}
