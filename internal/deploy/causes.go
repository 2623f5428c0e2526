package deploy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// Cause is what one failing instance of a deployment says about itself:
// Nomad's task events, the exit code, and the last lines of its stderr.
type Cause struct {
	AllocID  string   `json:"alloc_id"`
	Node     string   `json:"node,omitempty"`
	Version  uint64   `json:"job_version"`
	Status   string   `json:"client_status"`
	Task     string   `json:"task"`
	Events   []string `json:"events"`              // "Type: message", oldest first, the last few
	ExitCode *int     `json:"exit_code,omitempty"` // of the last time the task ended
	Stderr   []string `json:"stderr,omitempty"`    // its last lines
	// StderrUnread says why Stderr is missing when its read failed: a
	// token without read-logs, say.
	StderrUnread string `json:"stderr_unread,omitempty"`
	// StderrEmpty says the log was read and held nothing.
	StderrEmpty bool `json:"stderr_empty,omitempty"`
}

// LogTailer reads the end of a task's log; nomadLogs is the real one.
type LogTailer interface {
	Tail(ctx context.Context, ns, allocID, task, stream string, bytes int) (string, error)
}

// nomadLogs reads task logs through Nomad's client filesystem API, which the
// server forwards to the node running the allocation.
type nomadLogs struct{ c *nomad.Client }

func (l nomadLogs) Tail(ctx context.Context, ns, allocID, task, stream string, bytes int) (string, error) {
	q := (&nomad.QueryOptions{Namespace: ns, Params: map[string]string{
		"task": task, "type": stream, "origin": "end", "offset": fmt.Sprint(bytes), "plain": "true",
	}}).WithContext(ctx)
	body, err := l.c.Raw().Response("/v1/client/fs/logs/"+url.PathEscape(allocID), q)
	if err != nil {
		return "", nomadACL{l.c}.denied(err, "read-logs", ns, "read the logs of allocation "+short(allocID))
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, int64(bytes)+1024))
	return string(b), err
}

const (
	maxCauses     = 3 // failing instances described
	maxEvents     = 6 // task events per instance
	maxStderrLine = 8 // log lines per instance
	tailBytes     = 4096
)

// causes describes the deployment's instances that did not turn healthy.
func (d *Deployer) causes(ctx context.Context, ns, deploymentID string) []Cause {
	allocs, _, err := d.Deploys.Allocations(deploymentID, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		fmt.Fprintf(d.Progress, "warning: read the allocations of deployment %s: %v\n", short(deploymentID), err)
		return nil
	}
	var out []Cause
	for _, a := range failing(allocs) {
		for _, task := range slices.Sorted(maps.Keys(a.TaskStates)) {
			c := describe(a, task, a.TaskStates[task])
			if d.Logs != nil {
				tail, err := d.Logs.Tail(ctx, ns, a.ID, task, "stderr", tailBytes)
				if err != nil {
					c.StderrUnread = err.Error()
				} else {
					c.Stderr = lastLines(tail, maxStderrLine, len(tail) >= tailBytes)
					c.StderrEmpty = len(c.Stderr) == 0
				}
			}
			out = append(out, c)
		}
		if len(out) >= maxCauses {
			break
		}
	}
	return out
}

// failing returns the allocations that did not turn healthy, those that
// Nomad marked unhealthy first.
func failing(allocs []*nomad.AllocationListStub) []*nomad.AllocationListStub {
	var unhealthy, unknown []*nomad.AllocationListStub
	for _, a := range allocs {
		ds := a.DeploymentStatus
		switch {
		case ds != nil && ds.Healthy != nil && *ds.Healthy:
		case ds != nil && ds.Healthy != nil:
			unhealthy = append(unhealthy, a)
		default:
			unknown = append(unknown, a)
		}
	}
	return append(unhealthy, unknown...)
}

// describe turns one task's state into a Cause.
func describe(a *nomad.AllocationListStub, task string, st *nomad.TaskState) Cause {
	c := Cause{AllocID: a.ID, Node: a.NodeName, Version: a.JobVersion, Status: a.ClientStatus, Task: task}
	if st == nil {
		return c
	}
	events := st.Events
	if len(events) > maxEvents {
		events = events[len(events)-maxEvents:]
	}
	for _, e := range events {
		line := e.Type
		if e.DisplayMessage != "" {
			line += ": " + e.DisplayMessage
		}
		c.Events = append(c.Events, line)
	}
	for i := len(st.Events) - 1; i >= 0; i-- {
		if e := st.Events[i]; e.Type == nomad.TaskTerminated {
			code := e.ExitCode
			c.ExitCode = &code
			break
		}
	}
	return c
}

// lastLines returns the last n non-empty lines of s. A tail cut from a
// longer log may start mid-line; that first piece is dropped.
func lastLines(s string, n int, cut bool) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if cut && len(lines) > 1 {
		lines = lines[1:]
	}
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func (c Cause) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "instance %s (job version %d", short(c.AllocID), c.Version)
	if c.Node != "" {
		fmt.Fprintf(&b, ", node %s", c.Node)
	}
	fmt.Fprintf(&b, ") task %q is %s", c.Task, c.Status)
	if c.ExitCode != nil {
		fmt.Fprintf(&b, ", last exit code %d", *c.ExitCode)
	}
	b.WriteString("\n    events:")
	for _, e := range c.Events {
		b.WriteString("\n      " + e)
	}
	if len(c.Stderr) > 0 {
		b.WriteString("\n    last lines of stderr:")
		for _, l := range c.Stderr {
			b.WriteString("\n      " + l)
		}
	}
	switch {
	case c.StderrUnread != "":
		b.WriteString("\n    stderr not read: " + c.StderrUnread)
	case c.StderrEmpty:
		// Said, so that an empty log is not taken for a silent app.
		b.WriteString("\n    stderr: empty (Nomad kept no output; its docker driver can lose that of a container that exits at once: hashicorp/nomad#6931)")
	}
	return b.String()
}
