package deploy

import (
	"slices"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// Difference is one way two job versions differ in what a release is: its
// image, its config snapshot, or a value the environment file rendered into
// the job (count, resources, update, datacenters).
type Difference struct {
	// Field is named as in the environment file: count, cpu, memory,
	// memory_max, update.canary, datacenters; and image, config. In a job
	// of several groups (or a group of several tasks) it starts with the
	// group's (and task's) name: "web.count", "web.app.memory".
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
	Unit  string `json:"unit,omitempty"` // MHz, MiB
}

func (d Difference) String() string {
	s := d.Field + " " + d.From + " -> " + d.To
	if d.Unit != "" {
		s += " " + d.Unit
	}
	return s
}

// releaseDiff lists what changes when job version to replaces version from:
// the image and config snapshot of each, and what the environment file
// sets. Two versions without differences run the same release.
func releaseDiff(from, to *nomad.Job) []Difference {
	var ds []Difference
	add := func(field, a, b, unit string) {
		if a != b {
			ds = append(ds, Difference{Field: field, From: a, To: b, Unit: unit})
		}
	}
	add("config", orNone(from.Meta[release.MetaConfigHash]), orNone(to.Meta[release.MetaConfigHash]), "")
	add("datacenters", "["+strings.Join(from.Datacenters, " ")+"]", "["+strings.Join(to.Datacenters, " ")+"]", "")

	several := len(from.TaskGroups) > 1 || len(to.TaskGroups) > 1
	for _, name := range groupNames(from, to) {
		a, b := group(from, name), group(to, name)
		p := ""
		if several {
			p = name + "."
		}
		if a == nil || b == nil {
			add(p+"group", present(a != nil), present(b != nil), "")
			continue
		}
		add(p+"count", intp(a.Count), intp(b.Count), "")
		ua, ub := effectiveUpdate(from, a), effectiveUpdate(to, b)
		add(p+"update.max_parallel", intp(ua.MaxParallel), intp(ub.MaxParallel), "")
		add(p+"update.canary", intp(ua.Canary), intp(ub.Canary), "")
		add(p+"update.auto_revert", boolp(ua.AutoRevert), boolp(ub.AutoRevert), "")
		add(p+"update.auto_promote", boolp(ua.AutoPromote), boolp(ub.AutoPromote), "")
		add(p+"update.min_healthy_time", durp(ua.MinHealthyTime), durp(ub.MinHealthyTime), "")
		add(p+"update.healthy_deadline", durp(ua.HealthyDeadline), durp(ub.HealthyDeadline), "")
		add(p+"update.progress_deadline", durp(ua.ProgressDeadline), durp(ub.ProgressDeadline), "")
		add(p+"update.health_check", strp(ua.HealthCheck), strp(ub.HealthCheck), "")
		add(p+"update.stagger", durp(ua.Stagger), durp(ub.Stagger), "")

		severalTasks := len(a.Tasks) > 1 || len(b.Tasks) > 1
		for _, tname := range taskNames(a, b) {
			ta, tb := task(a, tname), task(b, tname)
			tp := p
			if severalTasks {
				tp += tname + "."
			}
			if ta == nil || tb == nil {
				add(tp+"task", present(ta != nil), present(tb != nil), "")
				continue
			}
			add(tp+"image", orNone(imageOf(ta)), orNone(imageOf(tb)), "")
			ra, rb := resourcesOf(ta), resourcesOf(tb)
			add(tp+"cpu", intp(ra.CPU), intp(rb.CPU), "MHz")
			add(tp+"cores", intp(ra.Cores), intp(rb.Cores), "")
			add(tp+"memory", intp(ra.MemoryMB), intp(rb.MemoryMB), "MiB")
			add(tp+"memory_max", intp(ra.MemoryMaxMB), intp(rb.MemoryMaxMB), "MiB")
		}
	}
	return ds
}

// sameRelease reports whether versions a and b, both made by the deployer,
// run the same release: the same image, config and environment values.
func sameRelease(a, b *nomad.Job) bool {
	return a.Meta[release.MetaConfigHash] != "" && b.Meta[release.MetaConfigHash] != "" && len(releaseDiff(a, b)) == 0
}

// effectiveUpdate is the update strategy group g deploys with: its own,
// which a canonical job fills from the job's, or else the job's.
func effectiveUpdate(j *nomad.Job, g *nomad.TaskGroup) *nomad.UpdateStrategy {
	switch {
	case g.Update != nil:
		return g.Update
	case j.Update != nil:
		return j.Update
	}
	return &nomad.UpdateStrategy{}
}

func resourcesOf(t *nomad.Task) *nomad.Resources {
	if t.Resources == nil {
		return &nomad.Resources{}
	}
	return t.Resources
}

func imageOf(t *nomad.Task) string {
	img, _ := t.Config["image"].(string)
	return img
}

func groupNames(a, b *nomad.Job) []string {
	var names []string
	for _, j := range []*nomad.Job{a, b} {
		for _, g := range j.TaskGroups {
			if name := strp(g.Name); !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

func group(j *nomad.Job, name string) *nomad.TaskGroup {
	for _, g := range j.TaskGroups {
		if strp(g.Name) == name {
			return g
		}
	}
	return nil
}

func taskNames(a, b *nomad.TaskGroup) []string {
	var names []string
	for _, g := range []*nomad.TaskGroup{a, b} {
		for _, t := range g.Tasks {
			if !slices.Contains(names, t.Name) {
				names = append(names, t.Name)
			}
		}
	}
	return names
}

func task(g *nomad.TaskGroup, name string) *nomad.Task {
	for _, t := range g.Tasks {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func present(ok bool) string {
	if ok {
		return "present"
	}
	return "absent"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func intp(p *int) string {
	if p == nil {
		return "(unset)"
	}
	return strconv.Itoa(*p)
}

func boolp(p *bool) string {
	if p == nil {
		return "(unset)"
	}
	return strconv.FormatBool(*p)
}

func durp(p *time.Duration) string {
	if p == nil {
		return "(unset)"
	}
	return p.String()
}

func strp(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// differences joins ds for one line of text.
func differences(ds []Difference) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}
