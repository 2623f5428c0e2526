package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/canary"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/promquery"
)

// judgedDeploys is a deployment of version 3 whose canary is healthy and
// waits for promotion, until the deployer (or someone else, after
// decideAt reads) gives it a verdict.
type judgedDeploys struct {
	mu       sync.Mutex
	verdict  Verdict // what the deployer gave
	other    Verdict // what someone else gives after decideAt reads
	decideAt int
	reads    int
	healthy  time.Time
}

func (f *judgedDeploys) Info(id string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	if q != nil && q.WaitIndex > 0 {
		// A blocking query: Nomad answers when something changed or
		// WaitTime passed; here, after a moment.
		time.Sleep(min(q.WaitTime, 2*time.Millisecond))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	v := f.verdict
	if f.other != "" && f.decideAt > 0 && f.reads >= f.decideAt {
		v = f.other
	}
	tg := &nomad.DeploymentState{DesiredCanaries: 1, DesiredTotal: 2, PlacedCanaries: []string{"canary-1"}, HealthyAllocs: 1}
	dep := &nomad.Deployment{ID: id, JobID: "counter-prod", JobVersion: 3, Status: "running",
		StatusDescription: "Deployment is running but requires manual promotion", TaskGroups: map[string]*nomad.DeploymentState{"web": tg}}
	switch v {
	case Promote:
		tg.Promoted, dep.StatusDescription = true, "Deployment is running"
		if f.reads > 2 {
			dep.Status, dep.StatusDescription = "successful", "Deployment completed successfully"
		}
	case Fail:
		dep.Status, dep.StatusDescription = "failed", "Deployment marked as failed - rolling back to job version 2"
	}
	return dep, &nomad.QueryMeta{LastIndex: uint64(f.reads)}, nil
}

func (f *judgedDeploys) Allocations(string, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	yes := true
	return []*nomad.AllocationListStub{{ID: "canary-1", JobVersion: 3, DeploymentStatus: &nomad.AllocDeploymentStatus{Healthy: &yes, Timestamp: f.healthy, Canary: true}}},
		&nomad.QueryMeta{}, nil
}

func (f *judgedDeploys) give(v Verdict) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.verdict != "" || (f.other != "" && f.reads >= f.decideAt) {
		return nil, nil, errors.New("Unexpected response code: 400 (deployment already decided)")
	}
	f.verdict = v
	return &nomad.DeploymentUpdateResponse{EvalID: "eval-v"}, &nomad.WriteMeta{}, nil
}

func (f *judgedDeploys) PromoteAll(string, *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error) {
	return f.give(Promote)
}

func (f *judgedDeploys) Fail(string, *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error) {
	return f.give(Fail)
}

// judgedJobs lists the deployment and the job's allocations: the canary
// and two stable instances of version 2.
type judgedJobs struct{ Jobs }

func (judgedJobs) Deployments(string, bool, *nomad.QueryOptions) ([]*nomad.Deployment, *nomad.QueryMeta, error) {
	return []*nomad.Deployment{{ID: "dep-3", JobVersion: 3, Status: "running"}}, &nomad.QueryMeta{}, nil
}

func (judgedJobs) Allocations(string, bool, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	return []*nomad.AllocationListStub{
		{ID: "canary-1", JobVersion: 3, ClientStatus: "running", DesiredStatus: "run"},
		{ID: "stable-1", JobVersion: 2, ClientStatus: "running", DesiredStatus: "run"},
		{ID: "stable-2", JobVersion: 2, ClientStatus: "running", DesiredStatus: "run"},
		{ID: "old-1", JobVersion: 1, ClientStatus: "complete", DesiredStatus: "stop"},
	}, &nomad.QueryMeta{}, nil
}

// looks answers each read with the next window (the last one again once
// they run out), or with err.
type looks struct {
	mu      sync.Mutex
	windows []canary.Window
	err     error
	reads   int
	allocs  promquery.Allocs
}

func (l *looks) Read(_ context.Context, allocs promquery.Allocs, _, _ time.Time, _ bool) (*promquery.Reading, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	l.allocs = allocs
	if l.err != nil {
		return nil, l.err
	}
	w := l.windows[min(l.reads, len(l.windows))-1]
	return &promquery.Reading{Window: w}, nil
}

func win(ce, cn, se, sn int64) canary.Window {
	return canary.Window{Canary: canary.Counts{Requests: cn, Errors: ce}, Stable: canary.Counts{Requests: sn, Errors: se}}
}

func analysisOf(t *testing.T, inconclusive string, every, longest time.Duration) *environment.Analysis {
	t.Helper()
	env, err := environment.Parse("prod.hcl", "prod", []byte(fmt.Sprintf("datacenters = [\"dc1\"]\ncount = 2\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\nanalysis {\n  min_sample = 100\n  inconclusive = %q\n}\n", inconclusive)))
	if err != nil {
		t.Fatal(err)
	}
	// Faster than a file may say (at least 1 s), so that the looks take
	// milliseconds.
	env.Analysis.Every, env.Analysis.Longest = every, longest
	return env.Analysis
}

// TestTheWatchJudgesTheCanary follows a deployment whose canary waits for
// promotion through the judging: the look that decides, the verdict given
// to Nomad, and what the record says. The counts are a stand-in's: the
// real Prometheus and Nomad are promquery's and the deployer's tests.
func TestTheWatchJudgesTheCanary(t *testing.T) {
	tests := []struct {
		name         string
		windows      []canary.Window
		readErr      error
		inconclusive string
		other        Verdict // given by someone else at the second read of the deployment after judging starts
		want         Outcome
		verdict      Verdict // given by the deployer
		looks        int
		detail       []string
	}{
		{"fails/a canary with many more errors, early", []canary.Window{win(0, 30, 0, 60), win(20, 60, 0, 120)}, nil, "fail", "",
			AutoReverted, Fail, 2, []string{"canary failed by analysis: errors: canary 33.3 % 5xx of 60 vs stable 0.0 % 5xx of 120, p=", "rolling back to job version 2"}},
		{"promotes/a clean canary at the minimum sample", []canary.Window{win(0, 40, 0, 80), win(0, 80, 0, 160), win(0, 120, 1, 240)}, nil, "fail", "",
			Succeeded, Promote, 3, []string{"canary promoted by analysis: errors: canary 0.0 % 5xx of 120 vs stable 0.4 % 5xx of 240"}},
		{"fails/no traffic: inconclusive, and inconclusive fails", []canary.Window{win(0, 0, 0, 0)}, nil, "fail", "",
			AutoReverted, Fail, 0, []string{"canary failed by analysis (inconclusive): deadline before the minimum sample of 100"}},
		{"promotes/no traffic, where inconclusive promotes", []canary.Window{win(0, 0, 0, 0)}, nil, "promote", "",
			Succeeded, Promote, 0, []string{"canary promoted by analysis (inconclusive)", `(inconclusive = "promote")`}},
		{"promotes/Prometheus never answers, where inconclusive promotes: inconclusive, not a pass", nil, errors.New("query Prometheus at http://127.0.0.1:9: connection refused"), "promote", "",
			Succeeded, Promote, 0, []string{"canary promoted by analysis (inconclusive): the counts could not be read: query Prometheus at http://127.0.0.1:9"}},
		{"fails/Prometheus never answers, where inconclusive fails", nil, errors.New("query Prometheus at http://127.0.0.1:9: connection refused"), "fail", "",
			AutoReverted, Fail, 0, []string{"canary failed by analysis (inconclusive): the counts could not be read"}},
		{"reports/a promotion given by hand meanwhile", []canary.Window{win(0, 10, 0, 20)}, nil, "fail", Promote,
			Succeeded, "", 0, []string{"promoted outside the deployer"}},
		{"reports/a fail given by hand meanwhile", []canary.Window{win(0, 10, 0, 20)}, nil, "fail", Fail,
			AutoReverted, "", 0, []string{"ended while the deployer judged its canary, not by the deployer's verdict: failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deploys := &judgedDeploys{healthy: time.Now(), other: tt.other}
			if tt.other != "" {
				deploys.decideAt = 3
			}
			metrics := &looks{windows: tt.windows, err: tt.readErr}
			var progress strings.Builder
			d := &Deployer{Jobs: judgedJobs{}, Deploys: deploys, Metrics: metrics, Progress: &progress, Retry: time.Millisecond}
			v := uint64(3)
			rec := &Record{Job: "counter-prod", Environment: "prod", Release: "v3", Version: &v,
				judging: &judging{env: "prod", analysis: analysisOf(t, tt.inconclusive, 20*time.Millisecond, 200*time.Millisecond)}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rec, err := d.followLocked(ctx, rec, false, nil)
			if err != nil {
				t.Fatalf("follow: %v\n%s", err, progress.String())
			}
			if rec.Outcome != tt.want || deploys.verdict != tt.verdict {
				t.Errorf("outcome %q, verdict given %q; want %q, %q\n%s", rec.Outcome, deploys.verdict, tt.want, tt.verdict, progress.String())
			}
			for _, want := range tt.detail {
				if !strings.Contains(rec.Detail, want) {
					t.Errorf("detail %q lacks %q", rec.Detail, want)
				}
			}
			// Whatever made the release, the watch copies one the analysis
			// promoted, and only that one.
			copied := slices.ContainsFunc(rec.Warnings, func(w string) bool { return strings.Contains(w, "its judged copy") })
			if want := deploys.verdict == Promote && rec.Outcome == Succeeded; copied != want {
				t.Errorf("judged copy tried: %v, want %v (warnings %q)", copied, want, rec.Warnings)
			}
			a := rec.Analysis
			if a == nil {
				t.Fatal("no analysis in the record")
			}
			if tt.looks > 0 && len(a.Looks) != tt.looks {
				t.Errorf("%d looks, want %d: %+v", len(a.Looks), tt.looks, a.Looks)
			}
			if fmt.Sprint(a.Canaries, a.Stable) != "[canary-1] [stable-1 stable-2]" || (metrics.reads > 0 && fmt.Sprint(metrics.allocs) != "{[canary-1] [stable-1 stable-2]}") {
				t.Errorf("judged canaries %v against %v, read %v; want canary-1 against stable-1 and stable-2", a.Canaries, a.Stable, metrics.allocs)
			}
			if n := strings.Count(progress.String(), "    look "); n != len(a.Looks) {
				t.Errorf("%d progress lines of looks for %d looks:\n%s", n, len(a.Looks), progress.String())
			}
		})
	}
}

// Info fails, so that a judged copy is tried (it reads the job first) and
// its warning tells that it was.
func (judgedJobs) Info(string, *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	return nil, nil, errors.New("no job to copy here")
}

func (judgedJobs) Versions(string, bool, *nomad.QueryOptions) ([]*nomad.Job, []*nomad.JobDiff, *nomad.QueryMeta, error) {
	return nil, nil, nil, errors.New("no versions here")
}
