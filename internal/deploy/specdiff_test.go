package deploy

import (
	"slices"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// job builds a job version as Nomad returns it after canonicalizing: one
// group "web" with one task "app", the group's update filled in.
func job(edit ...func(*nomad.Job)) *nomad.Job {
	j := &nomad.Job{
		ID: ptr("counter-dev"), Version: ptr[uint64](0), Datacenters: []string{"dc1"},
		Meta: map[string]string{release.MetaConfigHash: "h1", release.MetaConfigPath: "counter/releases/default/counter-dev/h1"},
		Update: &nomad.UpdateStrategy{MaxParallel: ptr(1), Canary: ptr(0), AutoRevert: ptr(true), AutoPromote: ptr(false),
			MinHealthyTime: ptr(3 * time.Second), HealthyDeadline: ptr(30 * time.Second), ProgressDeadline: ptr(45 * time.Second),
			HealthCheck: ptr("checks"), Stagger: ptr(30 * time.Second)},
		TaskGroups: []*nomad.TaskGroup{{
			Name: ptr("web"), Count: ptr(1),
			Tasks: []*nomad.Task{{Name: "app", Config: map[string]any{"image": "app@sha256:a"},
				Resources: &nomad.Resources{CPU: ptr(100), MemoryMB: ptr(64)}}},
		}},
	}
	u := *j.Update
	j.TaskGroups[0].Update = &u
	for _, e := range edit {
		e(j)
	}
	return j
}

func TestReleaseDiff(t *testing.T) {
	web := func(j *nomad.Job) *nomad.TaskGroup { return j.TaskGroups[0] }
	app := func(j *nomad.Job) *nomad.Task { return j.TaskGroups[0].Tasks[0] }
	tests := []struct {
		name     string
		from, to *nomad.Job
		want     []string
	}{
		{"same/nothing differs", job(), job(), nil},
		{"same/whatever the version, tag and stability",
			job(), job(func(j *nomad.Job) {
				j.Version, j.Stable, j.VersionTag = ptr[uint64](7), ptr(true), &nomad.JobVersionTag{Name: "v7"}
			}), nil},
		{"count", job(func(j *nomad.Job) { web(j).Count = ptr(2) }), job(), []string{"count 2 -> 1"}},
		{"memory and cpu, with units",
			job(func(j *nomad.Job) { app(j).Resources.MemoryMB, app(j).Resources.CPU = ptr(16), ptr(50) }), job(),
			[]string{"cpu 50 -> 100 MHz", "memory 16 -> 64 MiB"}},
		{"memory_max set where it was not",
			job(), job(func(j *nomad.Job) { app(j).Resources.MemoryMaxMB = ptr(128) }), []string{"memory_max (unset) -> 128 MiB"}},
		{"update of the group",
			job(func(j *nomad.Job) { web(j).Update.Canary, web(j).Update.MinHealthyTime = ptr(1), ptr(10*time.Second) }), job(),
			[]string{"update.canary 1 -> 0", "update.min_healthy_time 10s -> 3s"}},
		{"update of the job where the group has none",
			job(func(j *nomad.Job) { web(j).Update, j.Update.AutoRevert = nil, ptr(false) }),
			job(func(j *nomad.Job) { web(j).Update = nil }),
			[]string{"update.auto_revert false -> true"}},
		{"datacenters", job(func(j *nomad.Job) { j.Datacenters = []string{"dc1", "dc2"} }), job(), []string{"datacenters [dc1 dc2] -> [dc1]"}},
		{"image and config",
			job(func(j *nomad.Job) {
				app(j).Config["image"] = "app@sha256:b"
				j.Meta = map[string]string{release.MetaConfigHash: "h2"}
			}), job(),
			[]string{"config h2 -> h1", "image app@sha256:b -> app@sha256:a"}},
		{"a version made by hand has no config",
			job(func(j *nomad.Job) { j.Meta = nil }), job(), []string{"config (none) -> h1"}},
		{"several groups are named",
			job(func(j *nomad.Job) {
				g := *web(j)
				g.Name, g.Count = ptr("worker"), ptr(3)
				j.TaskGroups = append(j.TaskGroups, &g)
			}),
			job(), []string{"worker.group present -> absent"}},
		{"several groups: a count of each",
			job(func(j *nomad.Job) {
				g := *web(j)
				g.Name, g.Count = ptr("worker"), ptr(3)
				j.TaskGroups = append(j.TaskGroups, &g)
			}),
			job(func(j *nomad.Job) {
				g := *web(j)
				g.Name, g.Count = ptr("worker"), ptr(1)
				j.TaskGroups = append(j.TaskGroups, &g)
			}),
			[]string{"worker.count 3 -> 1"}},
		{"all of an environment file at once",
			job(func(j *nomad.Job) {
				web(j).Count, app(j).Resources.MemoryMB, web(j).Update.Canary, j.Datacenters = ptr(2), ptr(16), ptr(1), []string{"dc2"}
			}), job(),
			[]string{"datacenters [dc2] -> [dc1]", "count 2 -> 1", "update.canary 1 -> 0", "memory 16 -> 64 MiB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range releaseDiff(tt.from, tt.to) {
				got = append(got, d.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("releaseDiff =\n  %q\nwant\n  %q", got, tt.want)
			}
			if same := sameRelease(tt.from, tt.to); same != (len(tt.want) == 0) {
				t.Errorf("sameRelease = %t with differences %q", same, got)
			}
		})
	}
}

func TestPickCountsTheEnvironmentsValues(t *testing.T) {
	// v2 went back to v0's count after v1 doubled it: same image, same
	// config, all three stable.
	v0 := job(func(j *nomad.Job) { j.Version, j.Stable = ptr[uint64](0), ptr(true) })
	v1 := job(func(j *nomad.Job) { j.Version, j.Stable, j.TaskGroups[0].Count = ptr[uint64](1), ptr(true), ptr(2) })
	v2 := job(func(j *nomad.Job) { j.Version, j.Stable = ptr[uint64](2), ptr(true) })
	got, err := pick([]*nomad.Job{v2, v1, v0}, Target{})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Version != 1 {
		t.Errorf("pick = version %d, want 1, the one with another count", *got.Version)
	}
	if _, err := pick([]*nomad.Job{v2, v0}, Target{}); err == nil {
		t.Errorf("pick found a release to go back to where v0 runs what v2 runs")
	}
}
