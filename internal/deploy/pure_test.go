package deploy

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/release"
)

// version builds a job version as Nomad returns it: image in the task's
// config, the release identity in meta, the tag when there is one.
func version(n uint64, image, hash string, stable bool, tag string) *nomad.Job {
	meta := map[string]string{}
	if hash != "" {
		meta[release.MetaConfigHash] = hash
		meta[release.MetaConfigPath] = "counter/releases/default/counter-dev/" + hash
	}
	j := &nomad.Job{
		ID: ptr("counter-dev"), Version: ptr(n), Stable: ptr(stable), Meta: meta,
		TaskGroups: []*nomad.TaskGroup{{Tasks: []*nomad.Task{{Config: map[string]any{"image": image}}}}},
	}
	if tag != "" {
		j.VersionTag = &nomad.JobVersionTag{Name: tag}
	}
	return j
}

func TestPick(t *testing.T) {
	// Newest first, as Nomad lists them: v4 runs what v2 ran (a rollback),
	// v3 never turned stable, v1 was registered by hand.
	versions := []*nomad.Job{
		version(4, "app@sha256:b", "h2", true, "v4"),
		version(3, "app@sha256:c", "h3", false, "v3"),
		version(2, "app@sha256:b", "h2", true, "v2"),
		version(1, "app@sha256:x", "", true, ""),
		version(0, "app@sha256:a", "h1", true, "first"),
	}
	tests := []struct {
		name    string
		to      Target
		want    uint64
		wantErr string
	}{
		{"default/skips the same release, the unstable and the hand-made", Target{}, 0, ""},
		{"tag/by its name", Target{Tag: "first"}, 0, ""},
		{"tag/vN of a tagged version", Target{Tag: "v3"}, 3, ""},
		{"tag/vN of an untagged version is its number", Target{Tag: "v1"}, 1, ""},
		{"tag/unknown", Target{Tag: "v9"}, 0, `job counter-dev has no version 9`},
		{"tag/unknown name", Target{Tag: "gold"}, 0, `has no version tagged "gold"`},
		{"version/by number", Target{Version: ptr[uint64](2)}, 2, ""},
		{"version/dropped by Nomad", Target{Version: ptr[uint64](7)}, 0, "job_tracked_versions untagged ones, and now has 5, 0 to 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pick(versions, tt.to)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pick = %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got.Version != tt.want {
				t.Errorf("pick = version %d, want %d", *got.Version, tt.want)
			}
		})
	}
	t.Run("default/none when every earlier stable version runs the same release", func(t *testing.T) {
		_, err := pick(versions[:3], Target{})
		if err == nil || !strings.Contains(err.Error(), "no earlier stable release") {
			t.Errorf("pick = %v, want no earlier stable release", err)
		}
	})
}

func TestChanges(t *testing.T) {
	cfg := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name     string
		old, new Entry
		diff     *nomad.JobDiff
		want     []string
	}{
		{"nothing", Entry{Image: "a", ConfigHash: "h", Config: cfg("PORT", "1")}, Entry{Image: "a", ConfigHash: "h", Config: cfg("PORT", "1")}, nil, nil},
		{"image", Entry{Image: "a", ConfigHash: "h", Config: cfg()}, Entry{Image: "b", ConfigHash: "h", Config: cfg()}, nil,
			[]string{`image "a" -> "b"`}},
		{"config keys changed, added and removed",
			Entry{ConfigHash: "h1", Config: cfg("HOST", "r1", "PORT", "1", "OLD", "x")},
			Entry{ConfigHash: "h2", Config: cfg("HOST", "r1", "PORT", "2", "NEW", "y")}, nil,
			[]string{`config NEW = "y"`, `config OLD removed (was "x")`, `config PORT "1" -> "2"`}},
		{"a snapshot that is gone", Entry{ConfigHash: "h1"}, Entry{ConfigHash: "h2", Config: cfg("PORT", "2")}, nil,
			[]string{`config PORT = "2"`, `config snapshot "h1" -> "h2"`}},
		{"job fields, without what the release identity explains",
			Entry{ConfigHash: "h", Config: cfg()}, Entry{ConfigHash: "h", Config: cfg()},
			&nomad.JobDiff{
				Fields: []*nomad.FieldDiff{
					{Type: "Edited", Name: "Meta[release_image]", Old: "a", New: "b"},
					{Type: "None", Name: "Priority", Old: "50", New: "50"},
				},
				Objects: []*nomad.ObjectDiff{{Type: "Edited", Name: "UI", Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "Description", Old: "x", New: "y"}}}},
				TaskGroups: []*nomad.TaskGroupDiff{{
					Type: "Edited", Name: "web",
					Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "Count", Old: "1", New: "3"}},
					Tasks: []*nomad.TaskDiff{{
						Type: "Edited", Name: "app",
						Objects: []*nomad.ObjectDiff{
							{Type: "Edited", Name: "Config", Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "image", Old: "a", New: "b"}}},
							{Type: "Edited", Name: "Template", Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "EmbeddedTmpl", Old: "x", New: "y"}}},
							{Type: "Edited", Name: "Resources", Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "MemoryMB", Old: "64", New: "128"}}},
						},
					}},
				}},
			},
			[]string{`job group[web].Count "1" -> "3"`, `job group[web].task[app].Resources.MemoryMB "64" -> "128"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range changes(&tt.old, &tt.new, tt.diff) {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("changes =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		name string
		dep  *nomad.Deployment
		want string
	}{
		{"one group", &nomad.Deployment{ID: "7b985fef-1234", Status: "running", TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 3, HealthyAllocs: 1, UnhealthyAllocs: 0},
		}}, "deployment 7b985fef running: web: 1/3 healthy, 0 unhealthy"},
		{"canaries, groups in name order", &nomad.Deployment{ID: "abc", Status: "running", TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, DesiredCanaries: 1, PlacedCanaries: []string{"x"}},
			"api": {DesiredTotal: 1, UnhealthyAllocs: 1},
		}}, "deployment abc running: api: 0/1 healthy, 1 unhealthy; web: 0/2 healthy, 0 unhealthy, canaries 1/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := progressLine(tt.dep); got != tt.want {
				t.Errorf("progressLine =\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

func TestPlacementFailures(t *testing.T) {
	tests := []struct {
		name   string
		failed map[string]*nomad.AllocationMetric
		dcs    []string
		want   []string
	}{
		{"none", nil, nil, nil},
		{"no node in a datacenter Nomad counted", map[string]*nomad.AllocationMetric{
			"web": {NodesEvaluated: 0, NodesAvailable: map[string]int{"dc9": 0}},
		}, nil, []string{`task group "web": no nodes were eligible for evaluation`, `task group "web": no nodes are available in datacenter "dc9"`}},
		// What a real Nomad v1.11.2 answers for a datacenter it never saw.
		{"a datacenter Nomad never saw", map[string]*nomad.AllocationMetric{
			"web": {NodesEvaluated: 0, NodesAvailable: map[string]int{}},
		}, []string{"dc9", "dc*"}, []string{`task group "web": no nodes were eligible for evaluation`, `task group "web": no nodes are available in datacenter "dc9"`}},
		{"resources exhausted", map[string]*nomad.AllocationMetric{
			"web": {NodesEvaluated: 1, NodesExhausted: 1, DimensionExhausted: map[string]int{"memory": 1}, NodesAvailable: map[string]int{"dc1": 1}},
		}, []string{"dc1"}, []string{`task group "web": resources exhausted on 1 nodes`, `task group "web": dimension "memory" exhausted on 1 nodes`}},
		{"constraints, groups in name order", map[string]*nomad.AllocationMetric{
			"web": {NodesEvaluated: 2, ConstraintFiltered: map[string]int{`${attr.kernel.name} = windows`: 2}},
			"api": {NodesEvaluated: 2, QuotaExhausted: []string{"cpu"}},
		}, nil, []string{`task group "api": quota limit hit "cpu"`, `task group "web": constraint "${attr.kernel.name} = windows": 2 nodes excluded by filter`}},
		{"no reason given", map[string]*nomad.AllocationMetric{"web": {NodesEvaluated: 3}}, nil,
			[]string{`task group "web": the scheduler gave no reason`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := placementFailures(tt.failed, tt.dcs); !slices.Equal(got, tt.want) {
				t.Errorf("placementFailures =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

func TestPlacedNothing(t *testing.T) {
	tests := []struct {
		name string
		tgs  map[string]*nomad.DeploymentState
		want bool
	}{
		{"a canary that could not be placed", map[string]*nomad.DeploymentState{"web": {DesiredCanaries: 1, DesiredTotal: 1}}, true},
		{"no group placed anything", map[string]*nomad.DeploymentState{"web": {DesiredTotal: 2}, "api": {DesiredTotal: 1}}, true},
		{"a canary placed", map[string]*nomad.DeploymentState{"web": {DesiredCanaries: 1, PlacedCanaries: []string{"a1"}, PlacedAllocs: 1}}, false},
		{"an allocation placed, even an unhealthy one", map[string]*nomad.DeploymentState{"web": {PlacedAllocs: 1, UnhealthyAllocs: 1}}, false},
		{"one group placed, another not", map[string]*nomad.DeploymentState{"web": {PlacedAllocs: 1}, "api": {}}, false},
		{"no groups known", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := placedNothing(&nomad.Deployment{TaskGroups: tt.tgs}); got != tt.want {
				t.Errorf("placedNothing = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestFailingPutsUnhealthyFirstAndSkipsHealthy(t *testing.T) {
	stub := func(id string, healthy *bool) *nomad.AllocationListStub {
		a := &nomad.AllocationListStub{ID: id}
		if healthy != nil {
			a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: healthy}
		}
		return a
	}
	got := failing([]*nomad.AllocationListStub{stub("pending", nil), stub("ok", ptr(true)), stub("bad", ptr(false))})
	var ids []string
	for _, a := range got {
		ids = append(ids, a.ID)
	}
	if want := []string{"bad", "pending"}; !slices.Equal(ids, want) {
		t.Errorf("failing = %v, want %v", ids, want)
	}
}

func TestDescribeATaskThatExited(t *testing.T) {
	events := []*nomad.TaskEvent{
		{Type: "Received"}, {Type: "Task Setup", DisplayMessage: "Building Task Directory"},
		{Type: "Started", DisplayMessage: "Task started by client"},
		{Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 1", ExitCode: 1},
		{Type: "Restarting", DisplayMessage: "Task restarting in 15s"},
		{Type: "Started", DisplayMessage: "Task started by client"},
		{Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 2", ExitCode: 2},
		{Type: "Not Restarting", DisplayMessage: "Exceeded allowed attempts 2 in interval 30m0s"},
	}
	a := &nomad.AllocationListStub{ID: "0123456789abcdef", JobVersion: 4, ClientStatus: "failed", NodeName: "node-1"}
	c := describe(a, "app", &nomad.TaskState{Events: events})
	if c.ExitCode == nil || *c.ExitCode != 2 {
		t.Errorf("exit code %v, want the last one, 2", c.ExitCode)
	}
	if len(c.Events) != maxEvents || c.Events[len(c.Events)-1] != "Not Restarting: Exceeded allowed attempts 2 in interval 30m0s" {
		t.Errorf("events %q, want the last %d, newest last", c.Events, maxEvents)
	}
	c.Stderr = lastLines("ial line\nfirst\n\nsecond\nthird\n", 2, true)
	c.StderrUnread = "Nomad denied read-logs"
	s := c.String()
	for _, want := range []string{"instance 01234567 (job version 4, node node-1) task \"app\" is failed, last exit code 2", "      second\n      third",
		"\n    stderr not read: Nomad denied read-logs"} {
		if !strings.Contains(s, want) {
			t.Errorf("cause text lacks %q:\n%s", want, s)
		}
	}
	c.Stderr, c.StderrUnread = nil, ""
	if s := c.String(); strings.Contains(s, "stderr") {
		t.Errorf("the text of a cause whose stderr was not read speaks of it:\n%s", s)
	}
	c.StderrEmpty = true
	if s := c.String(); !strings.Contains(s, "\n    stderr: empty (") {
		t.Errorf("the text of a cause whose stderr was read empty does not say so:\n%s", s)
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		cut  bool
		want []string
	}{
		{"whole log", "a\nb\n", 8, false, []string{"a", "b"}},
		{"cut mid-line drops the piece", "tail of a\nb\nc\n", 8, true, []string{"b", "c"}},
		{"keeps the last n", "a\nb\nc\nd\n", 2, false, []string{"c", "d"}},
		{"skips blank lines", "a\n\n  \nb", 8, false, []string{"a", "b"}},
		{"empty", "", 8, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastLines(tt.in, tt.n, tt.cut); !slices.Equal(got, tt.want) {
				t.Errorf("lastLines = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStopsWithinDeadline(t *testing.T) {
	const src = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\nupdate {\n  min_healthy_time  = \"1s\"\n  healthy_deadline  = \"10s\"\n  progress_deadline = \"12s\"\n}\n"
	parse := func(src string) *environment.Environment {
		env, err := environment.Parse("environments/dev.hcl", "dev", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	set, unset := parse(src), parse(strings.Replace(src, "  progress_deadline = \"12s\"\n", "", 1))
	job := func(deadline, kill time.Duration) *nomad.Job {
		return &nomad.Job{TaskGroups: []*nomad.TaskGroup{{
			Update: &nomad.UpdateStrategy{ProgressDeadline: &deadline},
			Tasks:  []*nomad.Task{{Name: "app", KillTimeout: &kill}},
		}}}
	}
	tests := []struct {
		name string
		env  *environment.Environment
		job  *nomad.Job
		want string // "" for accepted
	}{
		{"kill_timeout below the deadline", set, job(12*time.Second, 5*time.Second), ""},
		{"kill_timeout equal to the deadline", set, job(12*time.Second, 12*time.Second), ""},
		{"no progress deadline", set, job(0, 15*time.Second), ""},
		{"kill_timeout above the deadline", set, job(12*time.Second, 15*time.Second),
			`environments/dev.hcl:9,23: progress_deadline shorter than kill_timeout: progress_deadline = 12s, but the job spec gives task "app" a kill_timeout of 15s`},
		{"kill_timeout above the default deadline", unset, job(40*time.Second, 2*time.Minute),
			`environments/dev.hcl:6,8: progress_deadline shorter than kill_timeout: progress_deadline = 40s (the default, healthy_deadline + 30s), but the job spec gives task "app" a kill_timeout of 2m0s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := stopsWithinDeadline(tt.job, tt.env)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// fakeDeploys lists a deployment's allocations; only that is called.
type fakeDeploys struct {
	Deployments
	allocs []*nomad.AllocationListStub
}

func (f fakeDeploys) Allocations(string, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	return f.allocs, nil, nil
}

// fakeLogs answers every log read with one text or one error.
type fakeLogs struct {
	text string
	err  error
}

func (f fakeLogs) Tail(context.Context, string, string, string, string, int) (string, error) {
	return f.text, f.err
}

// A cause tells a log it read empty from one it could not read, and from
// one it read lines of.
func TestCausesSayWhatTheStderrReadGave(t *testing.T) {
	unhealthy := false
	allocs := []*nomad.AllocationListStub{{
		ID: "741188f3-7245", ClientStatus: "pending", DeploymentStatus: &nomad.AllocDeploymentStatus{Healthy: &unhealthy},
		TaskStates: map[string]*nomad.TaskState{"app": {Events: []*nomad.TaskEvent{{Type: nomad.TaskTerminated, ExitCode: 1}}}},
	}}
	tests := []struct {
		name        string
		logs        LogTailer
		empty       bool
		unread      bool
		stderrLines int
	}{
		{"read, with lines", fakeLogs{text: "app: PORT is empty\n"}, false, false, 1},
		{"read, empty", fakeLogs{text: "\n"}, true, false, 0},
		{"not read", fakeLogs{err: errors.New("Nomad denied read-logs")}, false, true, 0},
		{"no log reader", nil, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Deployer{Deploys: fakeDeploys{allocs: allocs}, Logs: tt.logs, Progress: io.Discard}
			cs := d.causes(context.Background(), "default", "dep")
			if len(cs) != 1 {
				t.Fatalf("%d causes, want 1", len(cs))
			}
			c := cs[0]
			if c.StderrEmpty != tt.empty || (c.StderrUnread != "") != tt.unread || len(c.Stderr) != tt.stderrLines {
				t.Errorf("stderr_empty %t, unread %q, lines %q; want stderr_empty %t, unread %t, %d lines",
					c.StderrEmpty, c.StderrUnread, c.Stderr, tt.empty, tt.unread, tt.stderrLines)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"none", "", nil},
		{"one, as Nomad words it", "1 warning:\n\n* job source size of 1.1 MB exceeds maximum of 1.0 MB and will be discarded\n",
			[]string{"job source size of 1.1 MB exceeds maximum of 1.0 MB and will be discarded"}},
		{"two", "2 warnings:\n\n* a\n* b", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := warnings(tt.text); !slices.Equal(got, tt.want) {
				t.Errorf("warnings(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}
