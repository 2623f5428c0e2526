package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/canary"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/promquery"
)

// Metrics reads what allocations served from a start time on: the
// canary's and the stable ones' GET / answers, apart; *promquery.Source is
// one.
type Metrics interface {
	Read(ctx context.Context, allocs promquery.Allocs, start, end time.Time, latency bool) (*promquery.Reading, error)
}

// AnalysisReport is the judging of one deployment's canaries, every look
// with its numbers; -json prints it in the record.
type AnalysisReport struct {
	DeploymentID string `json:"deployment_id"`
	// Since is when the last canary turned healthy: the window of every
	// look starts there, for both sides.
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"` // Since + max_duration
	Canaries []string  `json:"canary_allocations"`
	Stable   []string  `json:"stable_allocations"`
	Looks    []Look    `json:"looks"`
	// Outcome is the last look's (pass, fail, inconclusive), "" when the
	// judging ended without one (a verdict given outside the deployer).
	Outcome string `json:"outcome,omitempty"`
	// Verdict is what the deployer gave the deployment (promote, fail),
	// "" when it gave none.
	Verdict Verdict `json:"verdict,omitempty"`
	// Reason says why, with the numbers.
	Reason string `json:"reason"`
}

// Look is one look at the canary.
type Look struct {
	N       int           `json:"look"`
	At      time.Time     `json:"at"`
	Outcome string        `json:"outcome"` // continue, pass, fail, inconclusive; "error" when the counts could not be read
	Reason  string        `json:"reason"`
	Canary  canary.Counts `json:"canary"`
	Stable  canary.Counts `json:"stable"`
	P       float64       `json:"p"`
	Level   float64       `json:"level"` // the most P may be for a fail at this look
	// Latency is the latency rule's finding, at the look with the
	// minimum sample.
	Latency *canary.LatencyFinding `json:"latency,omitempty"`
	// PerAlloc are the counts of each allocation behind the sums.
	PerAlloc map[string]canary.Counts `json:"per_alloc,omitempty"`
}

// judging is what the watch needs to judge a deployment's canaries.
type judging struct {
	env      string
	analysis *environment.Analysis
	// judged, when set, says why the canaries need no judging: a
	// rollback's version goes back to a release whose canary passed
	// before. The watch promotes them once healthy.
	judged string
}

// errAnalysisUnset is the error of a deployer asked to judge a canary
// without a source of metrics.
var errAnalysisUnset = errors.New("no Prometheus to read the canary's counts from: set PROMETHEUS_ADDR (bin/stack env prints it) or -prometheus-addr")

// judge looks at the deployment's canaries every interval of the analysis
// until a look passes, fails or is inconclusive, and gives the deployment
// the verdict that follows; or until someone else gives it one (nomad
// deployment promote or fail, the UI), which rep then says. It returns
// once the deployment no longer waits for the deployer: the watch follows
// it to its end.
func (d *Deployer) judge(ctx context.Context, ns string, dep *nomad.Deployment, j *judging, rep *AnalysisReport, checkLock func()) error {
	if j.judged != "" {
		*rep = AnalysisReport{DeploymentID: dep.ID, Looks: []Look{}, Reason: j.judged}
		return d.give(ctx, ns, dep, Promote, rep)
	}
	a := j.analysis
	if d.Metrics == nil {
		return errAnalysisUnset
	}
	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	canaries := waitingCanaries(dep)
	since, err := d.healthySince(ctx, ns, dep, canaries)
	if err != nil {
		return err
	}
	jobAllocs, _, err := d.Jobs.Allocations(dep.JobID, false, q)
	if err != nil {
		return fmt.Errorf("read the allocations of job %s: %w", dep.JobID, err)
	}
	var stable []string
	for _, al := range jobAllocs {
		if al.ClientStatus == "running" && al.DesiredStatus == "run" && al.JobVersion != dep.JobVersion && !slices.Contains(canaries, al.ID) {
			stable = append(stable, al.ID)
		}
	}
	slices.Sort(stable)
	*rep = AnalysisReport{DeploymentID: dep.ID, Since: since, Deadline: since.Add(a.Longest), Canaries: canaries, Stable: stable, Looks: []Look{}}
	fmt.Fprintf(d.Progress, "==> judging canar%s %s against stable %s by what they served since %s: a look every %s, until %s\n",
		plural(len(canaries), "y", "ies"), shorts(canaries), shorts(stable), since.Format(time.TimeOnly), a.Every, rep.Deadline.Format(time.TimeOnly))
	judge, err := canary.NewJudge(a.Plan())
	if err != nil {
		return err
	}
	// The first look comes one interval after the canaries turned
	// healthy, or at once when that is past (a judging resumed by
	// deployer analyze); the next ones an interval apart, the last at the
	// deadline.
	at := since.Add(a.Every)
	for n := 1; ; n++ {
		if at.After(rep.Deadline) {
			at = rep.Deadline
		}
		if changed, err := d.waitUntil(ctx, ns, dep, at); err != nil || changed != "" {
			if changed != "" {
				rep.Reason = changed
				fmt.Fprintf(d.Progress, "==> %s\n", changed)
			}
			return err
		}
		checkLock()
		final := !time.Now().Before(rep.Deadline)
		at = time.Now().Add(a.Every)
		look := Look{N: n, At: time.Now().UTC()}
		var v canary.Verdict
		r, err := d.Metrics.Read(ctx, promquery.Allocs{Canary: canaries, Stable: stable}, since, time.Now(), a.Latency != nil)
		if err == nil {
			look.PerAlloc = r.PerAlloc
			v, err = judge.Look(r.Window, final)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Counts that cannot be read are no evidence either way: the
			// next look reads again, and the last one is inconclusive.
			look.Outcome, look.Reason = "error", err.Error()
			if final {
				v = canary.Verdict{Outcome: canary.Inconclusive, Reason: "the counts could not be read: " + err.Error()}
			}
		} else {
			look.Outcome, look.Reason, look.P, look.Level, look.Latency = v.Outcome.String(), v.Reason, v.P, v.Level, v.Latency
			look.Canary, look.Stable = v.Window.Canary, v.Window.Stable
		}
		rep.Looks = append(rep.Looks, look)
		fmt.Fprintf(d.Progress, "    look %d: %s: %s\n", n, look.Outcome, look.Reason)
		if look.Outcome == "error" && !final {
			continue
		}
		if v.Outcome == canary.Continue {
			continue
		}
		rep.Outcome, rep.Reason = v.Outcome.String(), v.Reason
		verdict := Fail
		switch {
		case v.Outcome == canary.Pass:
			verdict = Promote
		case v.Outcome == canary.Inconclusive && *a.Inconclusive == "promote":
			verdict = Promote
			rep.Reason += " (inconclusive = \"promote\")"
		}
		return d.give(ctx, ns, dep, verdict, rep)
	}
}

// healthySince is when the last of the deployment's canaries turned
// healthy, as Nomad recorded it: the start of the window both sides are
// judged over.
func (d *Deployer) healthySince(ctx context.Context, ns string, dep *nomad.Deployment, canaries []string) (time.Time, error) {
	depAllocs, _, err := d.Deploys.Allocations(dep.ID, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return time.Time{}, fmt.Errorf("read the allocations of deployment %s: %w", short(dep.ID), err)
	}
	var since time.Time
	for _, al := range depAllocs {
		if slices.Contains(canaries, al.ID) && al.DeploymentStatus != nil && al.DeploymentStatus.Timestamp.After(since) {
			since = al.DeploymentStatus.Timestamp
		}
	}
	if since.IsZero() {
		return since, fmt.Errorf("deployment %s: Nomad gives no time at which its canaries %s turned healthy", short(dep.ID), strings.Join(canaries, ", "))
	}
	return since, nil
}

// waitingCanaries are the deployment's canaries not yet promoted.
func waitingCanaries(dep *nomad.Deployment) []string {
	var canaries []string
	for _, name := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		if tg := dep.TaskGroups[name]; tg != nil && !tg.Promoted {
			canaries = append(canaries, tg.PlacedCanaries...)
		}
	}
	return canaries
}

// Analyze judges the canaries of the environment's deployment that wait
// for promotion, as the watch of the submit that made it would have: a
// deployer killed mid-analysis leaves the deployment waiting (Nomad never
// fails it by its progress deadline), and this resumes the judging, over
// the window from the canaries' healthy time. It holds the job's deploy
// lock, as submit does, and watches the deployment to its end; wait is
// how long to wait for the lock that another deployer holds (one killed
// mid-analysis holds it until Consul ends its session).
func (d *Deployer) Analyze(ctx context.Context, env *environment.Environment, who string, wait time.Duration) (*Record, error) {
	if env.Analysis == nil {
		return nil, fmt.Errorf("environment %s has no analysis block, so there is nothing to judge its canary by: deployer deployment -env %s promote or fail decides it; nothing was changed", env.Name, env.Name)
	}
	ns, job := env.Namespace, env.Job
	deadline := time.Now().Add(wait)
	said := ""
	var l *lease
	for {
		var err error
		l, err = d.lock(ctx, ns, job, who+", analyze")
		var conflict *ConflictError
		if err == nil {
			break
		}
		if !errors.As(err, &conflict) || time.Now().After(deadline) {
			return nil, err
		}
		if msg := conflict.Err.Error(); msg != said {
			fmt.Fprintf(d.Progress, "==> waiting (up to %s) for the deploy lock of %s: %s\n", time.Until(deadline).Round(time.Second), job, msg)
			said = msg
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	defer l.unlock()
	dep, _, err := d.Jobs.LatestDeployment(job, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("read the latest deployment of %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	if dep == nil || !activeDeployment(dep.Status) || len(waitingCanaries(dep)) == 0 {
		latest := "none"
		if dep != nil {
			latest = fmt.Sprintf("%s of job version %d, %s: %s", short(dep.ID), dep.JobVersion, dep.Status, dep.StatusDescription)
		}
		return nil, fmt.Errorf("job %s has no deployment whose canaries wait to be judged (latest: %s); nothing was changed", job, latest)
	}
	rec, err := d.recordOf(ctx, ns, job, dep.JobVersion)
	if err != nil {
		return nil, err
	}
	rec.Environment, rec.DeploymentID = env.Name, dep.ID
	rec.judging = &judging{env: env.Name, analysis: env.Analysis}
	fmt.Fprintf(d.Progress, "==> resuming the analysis of deployment %s of %s (job %s version %d)\n", short(dep.ID), rec.Release, job, dep.JobVersion)
	return d.followLocked(ctx, rec, false, l.lost)
}

// give gives the deployment the analysis's verdict. A deployment that
// someone else decided meanwhile is left as it is, and rep says so.
func (d *Deployer) give(ctx context.Context, ns string, dep *nomad.Deployment, v Verdict, rep *AnalysisReport) error {
	wo := (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx)
	var err error
	if v == Promote {
		_, _, err = d.Deploys.PromoteAll(dep.ID, wo)
	} else {
		_, _, err = d.Deploys.Fail(dep.ID, wo)
	}
	if err != nil {
		if changed, rerr := d.decidedElsewhere(ctx, ns, dep); rerr == nil && changed != "" {
			rep.Reason = changed + "; the analysis's own verdict was " + string(v) + ": " + rep.Reason
			fmt.Fprintf(d.Progress, "==> %s\n", changed)
			return nil
		}
		return fmt.Errorf("%s deployment %s with Nomad at %s after the analysis (%s): %w", v, short(dep.ID), d.NomadAddr, rep.Reason, err)
	}
	rep.Verdict = v
	if rep.Outcome == "" {
		// No look of this deployment: its release was judged before.
		fmt.Fprintf(d.Progress, "==> %s deployment %s: %s\n", v, short(dep.ID), rep.Reason)
	} else {
		fmt.Fprintf(d.Progress, "==> analysis %s: %s deployment %s\n", rep.Outcome, v, short(dep.ID))
	}
	return nil
}

// waitUntil waits until at, watching the deployment meanwhile: it returns
// what changed when someone else promoted or failed it, "" at at.
func (d *Deployer) waitUntil(ctx context.Context, ns string, dep *nomad.Deployment, at time.Time) (string, error) {
	var idx uint64
	for {
		left := time.Until(at)
		if left <= 0 {
			return "", nil
		}
		q := (&nomad.QueryOptions{Namespace: ns, WaitIndex: idx, WaitTime: left}).WithContext(ctx)
		cur, meta, err := d.Deploys.Info(dep.ID, q)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			// Nomad not answering does not stop the judging: the verdict
			// needs it, and the watch says so then.
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(min(left, time.Second)):
			}
			continue
		}
		idx = meta.LastIndex
		if why := elsewhere(cur); why != "" {
			return why, nil
		}
	}
}

// decidedElsewhere reads the deployment again and says whether someone
// else decided it.
func (d *Deployer) decidedElsewhere(ctx context.Context, ns string, dep *nomad.Deployment) (string, error) {
	cur, _, err := d.Deploys.Info(dep.ID, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	return elsewhere(cur), nil
}

// elsewhere says how a deployment the deployer judges was decided without
// it, "" while it still waits. A canary that turns unhealthy meanwhile
// does not end the judging: Nomad fails the deployment if it stays so.
func elsewhere(cur *nomad.Deployment) string {
	for _, tg := range cur.TaskGroups {
		if tg != nil && tg.DesiredCanaries > 0 && tg.Promoted {
			return fmt.Sprintf("deployment %s was promoted outside the deployer (nomad deployment promote, the Nomad UI) while the deployer judged its canary", short(cur.ID))
		}
	}
	if cur.Status == "running" {
		return ""
	}
	return fmt.Sprintf("deployment %s ended while the deployer judged its canary, not by the deployer's verdict: %s (%s)", short(cur.ID), cur.Status, cur.StatusDescription)
}

func shorts(ids []string) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = short(id)
	}
	return strings.Join(s, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
