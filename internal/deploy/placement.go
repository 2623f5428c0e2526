package deploy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// UnplaceableError means Nomad's scheduler cannot place the release's
// instances (no node in its datacenters, resources exhausted, constraints
// filtering every node). It is found by planning, before anything is written.
type UnplaceableError struct {
	Job     string
	Reasons []string // one line per task group and cause, in Nomad's words
}

func (e *UnplaceableError) Error() string {
	return fmt.Sprintf("Nomad cannot place job %s, so nothing was written:\n  %s", e.Job, strings.Join(e.Reasons, "\n  "))
}

// placementFailures explains a plan's failed task group allocations the way
// `nomad job plan` does, one line per cause, in a stable order. Nomad leaves
// a datacenter it has never seen out of its counts, so the job's
// datacenters are checked against them too.
func placementFailures(failed map[string]*nomad.AllocationMetric, datacenters []string) []string {
	var out []string
	for _, tg := range slices.Sorted(maps.Keys(failed)) {
		m := failed[tg]
		if m == nil {
			continue
		}
		var why []string
		if m.NodesEvaluated == 0 {
			why = append(why, "no nodes were eligible for evaluation")
		}
		empty := map[string]bool{}
		for dc, n := range m.NodesAvailable {
			if n == 0 {
				empty[dc] = true
			}
		}
		for _, dc := range datacenters {
			if _, counted := m.NodesAvailable[dc]; !counted && !strings.ContainsAny(dc, "*?") {
				empty[dc] = true
			}
		}
		for _, dc := range slices.Sorted(maps.Keys(empty)) {
			why = append(why, fmt.Sprintf("no nodes are available in datacenter %q", dc))
		}
		for _, c := range slices.Sorted(maps.Keys(m.ClassFiltered)) {
			why = append(why, fmt.Sprintf("class %q: %d nodes excluded by filter", c, m.ClassFiltered[c]))
		}
		for _, c := range slices.Sorted(maps.Keys(m.ConstraintFiltered)) {
			why = append(why, fmt.Sprintf("constraint %q: %d nodes excluded by filter", c, m.ConstraintFiltered[c]))
		}
		if m.NodesExhausted > 0 {
			why = append(why, fmt.Sprintf("resources exhausted on %d nodes", m.NodesExhausted))
		}
		for _, d := range slices.Sorted(maps.Keys(m.DimensionExhausted)) {
			why = append(why, fmt.Sprintf("dimension %q exhausted on %d nodes", d, m.DimensionExhausted[d]))
		}
		for _, q := range m.QuotaExhausted {
			why = append(why, fmt.Sprintf("quota limit hit %q", q))
		}
		if len(why) == 0 {
			why = append(why, "the scheduler gave no reason")
		}
		for _, w := range why {
			out = append(out, fmt.Sprintf("task group %q: %s", tg, w))
		}
	}
	return out
}
