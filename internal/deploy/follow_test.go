package deploy

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// lostDeploys answers the deployment once and then loses contact, as when
// the Nomad server the deployer talks to goes away mid-watch: a real
// server's loss is the cluster tests' case; this is the deployer's answer.
type lostDeploys struct{ calls int }

func (l *lostDeploys) Info(id string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	l.calls++
	if l.calls == 1 {
		return &nomad.Deployment{ID: id, Status: "running"}, &nomad.QueryMeta{LastIndex: 1}, nil
	}
	return nil, nil, errors.New("dial tcp 127.0.0.1:4646: connect: connection refused")
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
	d := &Deployer{Jobs: deploymentsOf{}, Deploys: &lostDeploys{}, Progress: io.Discard}
	v := uint64(3)
	rec, err := d.follow(context.Background(), &Record{Job: "counter-dev", Release: "v3", Version: &v}, false)
	if err != nil {
		t.Fatalf("follow: %v; want the record to carry the outcome", err)
	}
	if rec.Outcome != Unknown || !strings.Contains(rec.Detail, "v3 is registered as job version 3") ||
		!strings.Contains(rec.Detail, "connection refused") {
		t.Errorf("outcome %q, detail %q; want unknown, naming the registered version and what was lost", rec.Outcome, rec.Detail)
	}
}
