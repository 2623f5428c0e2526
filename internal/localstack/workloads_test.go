package localstack

import (
	"slices"
	"testing"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

func TestWaitingForNamesWhatHasNotComeBack(t *testing.T) {
	const a1, a2 = "11111111-aaaa", "22222222-bbbb"
	alloc := func(id, desired, client string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{ID: id, JobID: "counter-dev", NodeName: "node", DesiredStatus: desired, ClientStatus: client,
			TaskStates: map[string]*nomad.TaskState{"app": {Events: []*nomad.TaskEvent{
				{Type: "Received", Time: 1},
				{Type: "Restore Failed", DisplayMessage: "failed to restore task; will not run until server is contacted", Time: 2},
			}}}}
	}
	check := func(alloc, status string) *consul.HealthCheck {
		return &consul.HealthCheck{Name: "ready", ServiceName: "counter-dev", ServiceID: "_nomad-task-" + alloc + "-group-web-counter-dev-http", Status: status}
	}
	tests := []struct {
		name   string
		allocs []*nomad.AllocationListStub
		checks consul.HealthChecks
		want   []string
	}{
		{"nothing to wait for/no allocation", nil, nil, nil},
		{"nothing to wait for/running and passing", []*nomad.AllocationListStub{alloc(a1, "run", "running")},
			consul.HealthChecks{check(a1, "passing")}, nil},
		{"nothing to wait for/stopped, failed and lost allocations",
			[]*nomad.AllocationListStub{alloc(a1, "stop", "running"), alloc(a2, "run", "failed"), alloc("3", "run", "lost"), alloc("4", "run", "complete")},
			consul.HealthChecks{check(a1, "critical"), check(a2, "critical")}, nil},
		{"waits for/a pending allocation, with its newest event", []*nomad.AllocationListStub{alloc(a1, "run", "pending")}, nil,
			[]string{"allocation 11111111 of job counter-dev (node) is pending (task app: failed to restore task; will not run until server is contacted)"}},
		{"waits for/a running allocation's failing check, not another's",
			[]*nomad.AllocationListStub{alloc(a1, "run", "running"), alloc(a2, "run", "running")},
			consul.HealthChecks{check(a1, "critical"), check(a2, "passing"), {Name: "Serf Health Status", Status: "critical"}},
			[]string{`allocation 11111111 of job counter-dev (node): check "ready" of service counter-dev is critical`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := waitingFor(tt.allocs, tt.checks); !slices.Equal(got, tt.want) {
				t.Errorf("waitingFor:\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
