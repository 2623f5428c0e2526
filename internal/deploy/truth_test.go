package deploy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// released is job() as the deployer registers it: its meta names its image,
// its template reads its snapshot, and it is tagged with its own number.
func released(n uint64, edit ...func(*nomad.Job)) *nomad.Job {
	return job(append([]func(*nomad.Job){func(j *nomad.Job) {
		j.Version = ptr(n)
		j.Meta[release.MetaImage] = "app@sha256:a"
		j.Meta[release.MetaImageDigest] = "sha256:a"
		j.TaskGroups[0].Tasks[0].Templates = []*nomad.Template{{EmbeddedTmpl: ptr(
			`HOST={{ key "counter/releases/default/counter-dev/h1/HOST" }}` + "\n" +
				`PORT={{ key "counter/releases/default/counter-dev/h1/PORT" }}`)}}
		j.VersionTag = &nomad.JobVersionTag{Name: release.Name(n)}
	}}, edit...)...)
}

// copyOf is what Nomad makes of v outside the deployer: the same job as
// version n, edited, with v's tag when keepTag (Job.Scale copies it) and
// none otherwise (nomad job run, revert, the UI).
func copyOf(v *nomad.Job, n uint64, keepTag bool, edit ...func(*nomad.Job)) *nomad.Job {
	c := released(*v.Version, func(j *nomad.Job) {
		j.TaskGroups[0].Count = ptr(*v.TaskGroups[0].Count)
		j.TaskGroups[0].Tasks[0].Config["image"] = v.TaskGroups[0].Tasks[0].Config["image"]
	})
	c.Version = ptr(n)
	if !keepTag {
		c.VersionTag = nil
	}
	for _, e := range edit {
		e(c)
	}
	return c
}

// Each way a job changes outside the deployer while keeping its meta, as
// Nomad stores the version it makes, is judged from the version itself.
func TestLineageJudgesTheRunningJobNotItsMeta(t *testing.T) {
	v0 := released(0)
	v1 := released(1, func(j *nomad.Job) { j.TaskGroups[0].Count = ptr(2) })
	tests := []struct {
		name     string
		versions []*nomad.Job // newest first
		own      uint64
		copied   bool
		drift    string // "" for none
	}{
		{"the deployer's release is itself", []*nomad.Job{v1, v0}, 1, false, ""},
		{"nomad job scale copies the job, its tag too",
			[]*nomad.Job{copyOf(v1, 2, true, func(j *nomad.Job) { j.TaskGroups[0].Count = ptr(3) }), v1, v0},
			1, true, "count 2 -> 3 since v1 (version 2, not made by the deployer)"},
		{"a UI edit of the image variable keeps the meta",
			[]*nomad.Job{copyOf(v1, 2, false, func(j *nomad.Job) { j.TaskGroups[0].Tasks[0].Config["image"] = "app@sha256:evil" }), v1, v0},
			1, true, "image app@sha256:a -> app@sha256:evil since v1 (version 2, not made by the deployer)"},
		{"nomad job run of a spec edited outside what the environment sets",
			[]*nomad.Job{copyOf(v1, 2, false, func(j *nomad.Job) { j.TaskGroups[0].Tasks[0].Env = map[string]string{"DEBUG": "1"} }), v1, v0},
			1, true, "the job spec differs from v1's (version 1) in TaskGroups[web].Tasks[app].Env (version 2"},
		{"a template edited to read another snapshot",
			[]*nomad.Job{copyOf(v1, 2, false, func(j *nomad.Job) {
				j.TaskGroups[0].Tasks[0].Templates[0].EmbeddedTmpl = ptr(`HOST={{ key "counter/releases/default/counter-dev/other/HOST" }}`)
			}), v1, v0},
			1, true, "its template reads config at counter/releases/default/counter-dev/other, not at its release's snapshot"},
		{"nomad job revert copies the version exactly: no drift",
			[]*nomad.Job{copyOf(v0, 2, false), v1, v0}, 0, true, ""},
		{"an untagged version no other version shares meta with is the deployer's (its tag failed)",
			[]*nomad.Job{copyOf(v0, 0, false)}, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lineage(tt.versions, 0)
			if l.Own == nil || *l.Own.Version != tt.own || l.Copy != tt.copied {
				t.Fatalf("own version %s copy %v, want version %d copy %v", versionOf(l.Own), l.Copy, tt.own, tt.copied)
			}
			got := strings.Join(l.Drift, "; ")
			if (tt.drift == "") != (got == "") || !strings.Contains(got, tt.drift) {
				t.Errorf("drift %q, want %q", got, tt.drift)
			}
		})
	}
}

// status counts as healthy only the allocations that run and pass now: a
// lost or failed one keeps its deployment's "healthy" for ever.
func TestStatusCountsOnlyWhatServesNow(t *testing.T) {
	yes := &nomad.AllocDeploymentStatus{Healthy: ptr(true)}
	allocs := []*nomad.AllocationListStub{
		{ID: "11111111-1111-1111-1111-111111111111", JobVersion: 0, ClientStatus: "running", DesiredStatus: "run", DeploymentStatus: yes},
		{ID: "22222222-2222-2222-2222-222222222222", JobVersion: 0, ClientStatus: "lost", DesiredStatus: "stop", DeploymentStatus: yes},
		{ID: "33333333-3333-3333-3333-333333333333", JobVersion: 0, ClientStatus: "failed", DesiredStatus: "run", DeploymentStatus: yes},
		{ID: "44444444-4444-4444-4444-444444444444", JobVersion: 0, ClientStatus: "running", DesiredStatus: "run", DeploymentStatus: yes},
	}
	tests := []struct {
		name      string
		instances Instances
		want      int
	}{
		{"without Consul, the running ones its deployment found healthy", nil, 2},
		{"with Consul, the running ones that pass now", passingOnly{"44444444-4444-4444-4444-444444444444"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A job by hand: status reads no snapshot for it.
			d := &Deployer{Jobs: &oneJob{job: version(0, "app@sha256:a", "", true, ""), allocs: allocs}, Instances: tt.instances}
			st, _, err := d.readStatus(context.Background(), "default", "counter-dev")
			if err != nil {
				t.Fatal(err)
			}
			if st.Healthy != tt.want || st.Allocs["running"] != 2 || st.Allocs["lost"] != 1 || st.Allocs["failed"] != 1 {
				t.Errorf("healthy %d of %v, want %d", st.Healthy, st.Allocs, tt.want)
			}
		})
	}
}

// oneJob answers status's reads of one job with no deployment.
type oneJob struct {
	Jobs
	job    *nomad.Job
	allocs []*nomad.AllocationListStub
}

func (o *oneJob) Info(string, *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	o.job.Status = ptr("running")
	return o.job, nil, nil
}

func (o *oneJob) LatestDeployment(string, *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	return nil, nil, nil
}

func (o *oneJob) Allocations(string, bool, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	return o.allocs, nil, nil
}

// passingOnly is Consul's answer for the passing instances of these
// allocations, IDs as Nomad names them.
type passingOnly []string

func (p passingOnly) Service(service, tag string, passing bool, q *consul.QueryOptions) ([]*consul.ServiceEntry, *consul.QueryMeta, error) {
	var es []*consul.ServiceEntry
	for _, id := range p {
		es = append(es, &consul.ServiceEntry{Service: &consul.AgentService{ID: "_nomad-task-" + id + "-group-web-" + service + "-http"}})
	}
	return es, &consul.QueryMeta{}, nil
}

// The default rollback goes to the release before the one that runs, not
// to the one a rollback just went back from: twice never brings it back.
func TestDefaultRollbackAfterARevert(t *testing.T) {
	bad := func(j *nomad.Job) { j.TaskGroups[0].Tasks[0].Config["image"] = "app@sha256:bad" }
	v0, v1 := released(0, func(j *nomad.Job) { j.Stable = ptr(true) }), released(1, bad, func(j *nomad.Job) { j.Stable = ptr(true) })
	byDeployer := copyOf(v0, 2, false, func(j *nomad.Job) {
		j.VersionTag, j.Stable = &nomad.JobVersionTag{Name: "v2", Description: "rollback to v0 by ann"}, ptr(true)
	})
	byHand := copyOf(v0, 2, false, func(j *nomad.Job) { j.Stable = ptr(true) })
	for _, tt := range []struct {
		name     string
		versions []*nomad.Job
	}{
		{"after deployer rollback", []*nomad.Job{byDeployer, v1, v0}},
		{"after nomad job revert", []*nomad.Job{byHand, v1, v0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := pick(tt.versions, Target{})
			if err == nil {
				t.Fatalf("picked version %d, the release just gone back from; want none older than v0", *v.Version)
			}
			if !strings.Contains(err.Error(), "no stable release older than v0") {
				t.Errorf("error %q", err)
			}
		})
	}
	// -to v0 by tag names the release, not a scaled copy carrying its tag.
	scaled := copyOf(v0, 2, true, func(j *nomad.Job) { j.TaskGroups[0].Count = ptr(3) })
	if v, err := pick([]*nomad.Job{scaled, v1, v0}, Target{Tag: "v0"}); err != nil || *v.Version != 0 {
		t.Errorf("-to v0 picked version %s (%v), want version 0", versionOf(v), err)
	}
}

// history credits a rollback to who rolled back, a copy made outside the
// deployer to nobody, and shows no edited snapshot as the release's config.
func TestHistorySaysWhoAndChecksSnapshots(t *testing.T) {
	v0 := released(0, func(j *nomad.Job) { j.Meta[release.MetaSubmittedBy] = "ann" })
	rb := copyOf(v0, 2, false, func(j *nomad.Job) {
		j.VersionTag = &nomad.JobVersionTag{Name: "v2", Description: "rollback to v0 by bob"}
	})
	scaled := copyOf(rb, 3, true, func(j *nomad.Job) { j.TaskGroups[0].Count = ptr(3) })
	versions := []*nomad.Job{scaled, rb, released(1), v0}
	for i, v := range versions {
		v.SubmitTime = ptr(int64(i))
	}
	entries := historyEntries(versions, nil, map[string]map[string]string{"h1": {"HOST": "edited"}})
	by := func(i int) string {
		return entries[i].SubmittedBy + "/" + map[bool]string{true: "deployer", false: "hand"}[entries[i].ByDeployer]
	}
	if got := by(0); got != "/hand" || entries[0].CopyOf != "v2" || entries[0].Release != "v3" || len(entries[0].Drift) != 1 {
		t.Errorf("scaled copy: by %s, copy of %q, release %q, drift %q; want by hand, copy of v2, v3, count drift", got, entries[0].CopyOf, entries[0].Release, entries[0].Drift)
	}
	if got := by(1); got != "bob/deployer" {
		t.Errorf("rollback: by %s, want bob", got)
	}
	if got := by(3); got != "ann/deployer" {
		t.Errorf("release: by %s, want ann", got)
	}
	if e := entries[3]; e.Config != nil || e.ConfigEdited == "" {
		t.Errorf("edited snapshot: config %v, edited %q; want none shown, and its hash", e.Config, e.ConfigEdited)
	}
}

// nomad job revert makes Nomad append its implied constraint again: the
// same spec all the same.
func TestSameSpecIgnoresARepeatedConstraint(t *testing.T) {
	nomadVersion := &nomad.Constraint{LTarget: "${attr.nomad.version}", RTarget: ">= 1.7.0-a", Operand: "semver"}
	a := released(0, func(j *nomad.Job) { j.TaskGroups[0].Constraints = []*nomad.Constraint{nomadVersion} })
	b := released(0, func(j *nomad.Job) { j.TaskGroups[0].Constraints = []*nomad.Constraint{nomadVersion, nomadVersion} })
	if !sameSpec(a, b) {
		t.Errorf("a repeated constraint makes another spec: %v", specDiff(a, b))
	}
	c := released(0, func(j *nomad.Job) {
		j.TaskGroups[0].Constraints = []*nomad.Constraint{nomadVersion, {LTarget: "${node.class}", RTarget: "gpu", Operand: "="}}
	})
	if got := specDiff(a, c); len(got) != 1 || got[0] != "TaskGroups[web].Constraints" {
		t.Errorf("another constraint: differences %v, want TaskGroups[web].Constraints", got)
	}
}

// versionOf names v's version for a message; "none" for no version.
func versionOf(v *nomad.Job) string {
	if v == nil || v.Version == nil {
		return "none"
	}
	return fmt.Sprint(*v.Version)
}
