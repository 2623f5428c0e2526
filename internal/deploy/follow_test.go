package deploy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// lostDeploys answers the deployment as running once, then fails with err
// for failures calls (for ever, if negative), then answers it successful: a
// Nomad that loses contact, or its leader, mid-watch. A real server's loss
// is the cluster tests' case; this is the deployer's answer to each.
type lostDeploys struct {
	Deployments
	err      error
	failures int
	calls    int
}

func (l *lostDeploys) Info(id string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	l.calls++
	switch {
	case l.calls == 1:
		return &nomad.Deployment{ID: id, Status: "running"}, &nomad.QueryMeta{LastIndex: 1}, nil
	case l.failures < 0 || l.calls <= 1+l.failures:
		return nil, nil, l.err
	}
	return &nomad.Deployment{ID: id, Status: "successful"}, &nomad.QueryMeta{LastIndex: 2}, nil
}

func (l *lostDeploys) Allocations(string, *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	return nil, nil, errors.New("not reached")
}

// deploymentsOf lists one deployment of version 3.
type deploymentsOf struct{ Jobs }

func (deploymentsOf) Deployments(string, bool, *nomad.QueryOptions) ([]*nomad.Deployment, *nomad.QueryMeta, error) {
	return []*nomad.Deployment{{ID: "dep-1", JobVersion: 3, Status: "running"}}, &nomad.QueryMeta{}, nil
}

func TestLostContactWhileWatchingIsNeitherSuccessNorFailure(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:4646: connect: connection refused")
	d := &Deployer{Jobs: deploymentsOf{}, Deploys: &lostDeploys{err: refused, failures: -1}, Progress: io.Discard, Patience: 30 * time.Millisecond, Retry: time.Millisecond}
	v := uint64(3)
	rec, err := d.followLocked(context.Background(), &Record{Job: "counter-dev", Release: "v3", Version: &v}, false, nil)
	if err != nil {
		t.Fatalf("follow: %v; want the record to carry the outcome", err)
	}
	if rec.Outcome != Unknown || !strings.Contains(rec.Detail, "v3 is registered as job version 3") ||
		!strings.Contains(rec.Detail, "connection refused") {
		t.Errorf("outcome %q, detail %q; want unknown, naming the registered version and what was lost", rec.Outcome, rec.Detail)
	}
}

// nomadAnswer returns the error Nomad's API client makes of an HTTP answer
// with this code and body: its type has no exported constructor.
func nomadAnswer(t *testing.T, code int, body string) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, body, code)
	}))
	defer srv.Close()
	c, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Deployments().Info("dep-1", nil)
	if err == nil {
		t.Fatal("no error from an HTTP error answer")
	}
	return err
}

func TestWatchWaitsOutALostLeaderButNotARefusal(t *testing.T) {
	// What every server answers while the servers elect a new leader.
	noLeader := nomadAnswer(t, http.StatusInternalServerError, "No cluster leader")
	denied := nomadAnswer(t, http.StatusForbidden, "Permission denied")
	tests := []struct {
		name      string
		err       error
		failures  int
		patience  time.Duration
		want      Outcome
		wantCalls int  // 0: any
		waits     bool // says on Progress that it waits for Nomad
	}{
		{"a leader election of three answers", noLeader, 3, time.Minute, Succeeded, 5, true},
		{"a server that comes back", errors.New("connect: connection refused"), 2, time.Minute, Succeeded, 4, true},
		{"no leader for longer than the patience", noLeader, -1, 30 * time.Millisecond, Unknown, 0, true},
		{"a refusal is not waited out", denied, -1, time.Minute, Unknown, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deploys := &lostDeploys{err: tt.err, failures: tt.failures}
			var progress strings.Builder
			d := &Deployer{Jobs: deploymentsOf{}, Deploys: deploys, Progress: &progress, Patience: tt.patience, Retry: time.Millisecond}
			v := uint64(3)
			rec, err := d.followLocked(context.Background(), &Record{Job: "counter-dev", Release: "v3", Version: &v}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Outcome != tt.want || (tt.wantCalls > 0 && deploys.calls != tt.wantCalls) {
				t.Errorf("outcome %q after %d reads (%s); want %q after %d", rec.Outcome, deploys.calls, rec.Detail, tt.want, tt.wantCalls)
			}
			if waits := strings.Contains(progress.String(), "does not answer"); waits != tt.waits {
				t.Errorf("progress %q: says it waits for Nomad %v, want %v", progress.String(), waits, tt.waits)
			}
		})
	}
}

// notDeployedJobs is a Nomad where version 3 was registered and no
// deployment of it exists yet: the job reads version current.
type notDeployedJobs struct {
	Jobs
	current uint64
}

func (notDeployedJobs) Deployments(string, bool, *nomad.QueryOptions) ([]*nomad.Deployment, *nomad.QueryMeta, error) {
	return nil, &nomad.QueryMeta{}, nil
}

func (j notDeployedJobs) Info(string, *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	return &nomad.Job{Version: ptr(j.current), Meta: map[string]string{"release_submitted_by": "someone else"}}, &nomad.QueryMeta{}, nil
}

// pendingEvals answers every evaluation as pending: the scheduler has not
// run it yet (a broker paused, no worker free).
type pendingEvals struct{}

func (pendingEvals) Info(id string, _ *nomad.QueryOptions) (*nomad.Evaluation, *nomad.QueryMeta, error) {
	return &nomad.Evaluation{ID: id, Status: "pending"}, &nomad.QueryMeta{}, nil
}

// TestTheWaitForADeploymentEnds: before, the watch asked for version 3's
// deployment for ever when none came.
func TestTheWaitForADeploymentEnds(t *testing.T) {
	tests := []struct {
		name    string
		current uint64 // the job's version now
		want    Outcome
		detail  string
	}{
		{"a version replaced before its deployment started has failed", 4, Failed, "job version 4 replaced version 3 before Nomad started its deployment"},
		{"an evaluation that never runs is unknown after the patience", 3, Unknown, "Nomad made no deployment of version 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Deployer{Jobs: notDeployedJobs{current: tt.current}, Evals: pendingEvals{}, Progress: io.Discard, Patience: 300 * time.Millisecond, Retry: time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v := uint64(3)
			rec, err := d.followLocked(ctx, &Record{Job: "counter-dev", Release: "v3", Version: &v, EvalID: "eval-3"}, false, nil)
			if err != nil || rec.Outcome != tt.want || !strings.Contains(rec.Detail, tt.detail) {
				t.Errorf("follow: %v, outcome %q, detail %q; want %q, %q", err, rec.Outcome, rec.Detail, tt.want, tt.detail)
			}
		})
	}
}
