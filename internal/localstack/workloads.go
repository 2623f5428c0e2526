package localstack

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// WaitWorkloads waits up to timeout until every allocation Nomad means to
// run (desired status run, not yet terminal) runs on its client and every
// Consul check of the services Nomad registered for it passes. A stack
// started again on its data (after make down, or after one of its parts
// died) has its Nomad clients run their allocations again, and the apps'
// checks, which PING Redis, pass only once Redis and the app answer: until
// then the deployer names no passing instance. It says on the stack's
// progress writer what it waits for, every few seconds, and on time out
// returns an error naming each allocation and check that is not there yet.
func (s *Stack) WaitWorkloads(ctx context.Context, timeout time.Duration) error {
	nc, cc, err := s.Clients()
	if err != nil {
		return err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	said := time.Time{}
	for {
		waiting, err := notReady(ctx, nc, cc)
		if err == nil && len(waiting) == 0 {
			if !said.IsZero() {
				s.say("  the allocations run and pass their checks after %.1fs", time.Since(start).Seconds())
			}
			return nil
		}
		if err != nil {
			waiting = []string{err.Error()}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("after %s, Nomad's allocations do not all run and pass their checks:\n  %s",
				time.Since(start).Round(time.Second), strings.Join(waiting, "\n  "))
		}
		if said.IsZero() {
			s.say("waiting up to %s for Nomad's allocations to run again and pass their Consul checks", timeout)
		}
		if time.Since(said) >= 5*time.Second {
			s.say("  %.0fs: %s", time.Since(start).Seconds(), strings.Join(waiting, "; "))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// notReady lists what WaitWorkloads still waits for: each allocation meant
// to run that does not run, and each failing check of a running one's
// services.
func notReady(ctx context.Context, nc *nomad.Client, cc *consul.Client) ([]string, error) {
	allocs, _, err := nc.Allocations().List((&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list Nomad's allocations: %w", err)
	}
	checks, _, err := cc.Health().State(consul.HealthAny, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list Consul's checks: %w", err)
	}
	return waitingFor(allocs, checks), nil
}

// waitingFor is notReady's pure half. Nomad names the Consul service of an
// allocation _nomad-task-ALLOCID-..., which ties each check to its
// allocation.
func waitingFor(allocs []*nomad.AllocationListStub, checks consul.HealthChecks) []string {
	var out []string
	for _, a := range allocs {
		if a.DesiredStatus != nomad.AllocDesiredStatusRun ||
			(a.ClientStatus != nomad.AllocClientStatusPending && a.ClientStatus != nomad.AllocClientStatusRunning) {
			continue
		}
		what := fmt.Sprintf("allocation %s of job %s (%s)", short(a.ID), a.JobID, a.NodeName)
		if a.ClientStatus != nomad.AllocClientStatusRunning {
			out = append(out, what+" is "+a.ClientStatus+lastEvent(a))
			continue
		}
		for _, c := range checks {
			if c.Status == consul.HealthPassing || !strings.HasPrefix(c.ServiceID, "_nomad-task-"+a.ID) {
				continue
			}
			out = append(out, fmt.Sprintf("%s: check %q of service %s is %s", what, c.Name, c.ServiceName, c.Status))
		}
	}
	slices.Sort(out)
	return out
}

// lastEvent is ", TASK: MESSAGE" for the newest event of an allocation's
// tasks, or "".
func lastEvent(a *nomad.AllocationListStub) string {
	var last *nomad.TaskEvent
	var task string
	for name, ts := range a.TaskStates {
		for _, e := range ts.Events {
			if last == nil || e.Time > last.Time {
				last, task = e, name
			}
		}
	}
	if last == nil {
		return ""
	}
	msg := last.DisplayMessage
	if msg == "" {
		msg = last.Type
	}
	return fmt.Sprintf(" (task %s: %s)", task, msg)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
