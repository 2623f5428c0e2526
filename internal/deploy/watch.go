package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// WatchResult is how a deployment ended.
type WatchResult struct {
	DeploymentID string
	Outcome      Outcome
	RevertedTo   *uint64
	Detail       string
	// Analysis is the judging of the canaries, when the watch judged them.
	Analysis *AnalysisReport
}

var rollbackRE = regexp.MustCompile(`rolling back to job version (\d+)`)

// Watch follows the deployment of a job version until it succeeds or fails,
// printing progress. A version whose evaluation needs no deployment (nothing
// to replace) succeeds at once. Every wait ends: a version replaced before
// its deployment started has failed (Nomad will not deploy it); a
// deployment whose canaries are healthy and wait for promotion
// (auto_promote = false) ends the watch as awaiting-promotion, since Nomad
// never ends it by itself.
func (d *Deployer) Watch(ctx context.Context, ns, job string, version uint64, evalID string) (*WatchResult, error) {
	return d.watch(ctx, ns, job, version, evalID, nil, nil)
}

// watch is Watch under a deploy lock that is lost when lost is closed (nil:
// never). Losing it mid-watch stops nothing: Nomad's deployment keeps the
// next release off (idle), so the watch goes on, and says so. With j, a
// deployment whose canaries wait for promotion is judged (judge), and
// watched on to its end once it has its verdict.
func (d *Deployer) watch(ctx context.Context, ns, job string, version uint64, evalID string, lost <-chan struct{}, j *judging) (*WatchResult, error) {
	q := func(idx uint64) *nomad.QueryOptions {
		return (&nomad.QueryOptions{Namespace: ns, WaitIndex: idx, WaitTime: 5 * time.Second}).WithContext(ctx)
	}
	fmt.Fprintf(d.Progress, "==> waiting for the deployment of %s version %d\n", job, version)
	checkLock := func() {
		select {
		case <-lost:
			fmt.Fprintf(d.Progress, "warning: this deployer lost the deploy lock of %s (its Consul session ended); "+
				"watching on: while this deployment runs, Nomad's active deployment keeps other releases off\n", job)
			lost = nil
		default:
		}
	}

	var dep *nomad.Deployment
	patient := d.patient(ctx)
	// The scheduler makes the deployment within moments of the register;
	// an evaluation that waits longer (no scheduler worker, the eval
	// broker paused) is not waited on for ever.
	appear := time.Now().Add(d.patience())
	for dep == nil {
		checkLock()
		var deps []*nomad.Deployment
		err := patient(func() (err error) { deps, _, err = d.Jobs.Deployments(job, false, q(0)); return err })
		if err != nil {
			return nil, fmt.Errorf("read deployments of job %s: %w", job, err)
		}
		for _, dd := range deps {
			if dd.JobVersion == version {
				dep = dd
			}
		}
		if dep != nil {
			break
		}
		if evalID != "" {
			ev, _, err := d.Evals.Info(evalID, q(0))
			if err == nil && ev.Status == "complete" && ev.DeploymentID == "" && ev.BlockedEval == "" {
				// The scheduler had nothing to roll out.
				return &WatchResult{Outcome: Succeeded, Detail: "no deployment needed"}, nil
			}
			if err == nil && ev.Status == "failed" {
				return &WatchResult{Outcome: Failed, Detail: ev.StatusDescription}, fmt.Errorf("evaluation %s failed: %s", short(evalID), ev.StatusDescription)
			}
			if err == nil {
				if why := d.unplaced(ctx, ns, job, ev); why != "" {
					return &WatchResult{Outcome: Failed, Detail: why}, nil
				}
			}
		}
		// A newer version registered before the scheduler made this one's
		// deployment: Nomad schedules the newest, so this one never deploys.
		var cur *nomad.Job
		err = patient(func() (err error) { cur, _, err = d.Jobs.Info(job, q(0)); return err })
		if err != nil {
			return nil, fmt.Errorf("read job %s: %w", job, err)
		}
		if cur.Version != nil && *cur.Version > version {
			return &WatchResult{Outcome: Failed, Detail: fmt.Sprintf("job version %d replaced version %d before Nomad started its deployment, so Nomad never deploys it (%s)",
				*cur.Version, version, submitter(cur))}, nil
		}
		if time.Now().After(appear) {
			return nil, fmt.Errorf("Nomad made no deployment of version %d in %s (its evaluation %s has not run)", version, d.patience(), short(evalID))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}

	res := &WatchResult{DeploymentID: dep.ID}
	var idx uint64
	last := ""
	evalDone := evalID == ""
	for {
		// A placement that fails after registering (a node went away, the
		// plan raced another job) leaves a blocked evaluation and a
		// deployment that would wait for its progress deadline: say so now.
		if !evalDone {
			if ev, _, err := d.Evals.Info(evalID, q(0)); err == nil && ev.Status != "pending" {
				evalDone = true
				if why := d.unplaced(ctx, ns, job, ev); why != "" {
					res.Outcome, res.Detail = Failed, why
					return res, nil
				}
			}
		}
		var cur *nomad.Deployment
		var meta *nomad.QueryMeta
		err := patient(func() (err error) { cur, meta, err = d.Deploys.Info(dep.ID, q(idx)); return err })
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, fmt.Errorf("read deployment %s: %w", short(dep.ID), err)
		}
		idx = meta.LastIndex
		checkLock()
		if line := progressLine(cur); line != last {
			fmt.Fprintf(d.Progress, "    %s\n", line)
			last = line
		}
		if cur.Status == "running" && awaitingPromotion(cur) && j != nil && res.Analysis == nil {
			res.Analysis = &AnalysisReport{}
			if err := d.judge(ctx, ns, cur, j, res.Analysis, checkLock); err != nil {
				res.Outcome = AwaitingPromotion
				res.Detail = fmt.Sprintf("deployment %s of version %d waits for the analysis of its canary, which stopped: %v; "+
					"deployer analyze -env %s judges it again", short(cur.ID), version, err, j.env)
				return res, err
			}
			idx = 0
			continue
		}
		if cur.Status == "running" && awaitingPromotion(cur) && res.Analysis != nil && res.Analysis.Verdict != "" {
			continue // Nomad has not yet applied the verdict just given
		}
		if cur.Status == "running" && awaitingPromotion(cur) {
			res.Outcome = AwaitingPromotion
			res.Detail = fmt.Sprintf("deployment %s of version %d waits for a verdict: %s, and Nomad neither promotes them (auto_promote = false) nor fails the deployment while they wait",
				short(cur.ID), version, canaryState(cur))
			fmt.Fprintf(d.Progress, "==> %s\n", res.Detail)
			return res, nil
		}
		switch cur.Status {
		case "successful":
			res.Outcome, res.Detail = Succeeded, cur.StatusDescription
			return res, nil
		case "failed", "cancelled":
			res.Outcome, res.Detail = Failed, cur.StatusDescription
			if m := rollbackRE.FindStringSubmatch(cur.StatusDescription); m != nil && !strings.Contains(cur.StatusDescription, "not rolling back") {
				v, _ := strconv.ParseUint(m[1], 10, 64)
				res.Outcome, res.RevertedTo = AutoReverted, &v
			}
			return res, nil
		}
	}
}

// awaitingPromotion reports whether a deployment's canaries are all placed
// and healthy and wait to be promoted by hand: Nomad says a deployment
// "requires manual promotion" when it creates it with a canary and
// auto_promote off, and then waits, whatever its progress deadline.
func awaitingPromotion(dep *nomad.Deployment) bool {
	if !strings.Contains(dep.StatusDescription, "requires manual promotion") {
		return false
	}
	waits := false
	for _, tg := range dep.TaskGroups {
		if tg == nil || tg.DesiredCanaries == 0 || tg.Promoted {
			continue
		}
		if len(tg.PlacedCanaries) < tg.DesiredCanaries || tg.HealthyAllocs < tg.DesiredCanaries {
			return false // a canary is not healthy yet: Nomad's deadline still runs
		}
		waits = true
	}
	return waits
}

// canaryState says which task groups' canaries wait for promotion.
func canaryState(dep *nomad.Deployment) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		if tg := dep.TaskGroups[name]; tg != nil && tg.DesiredCanaries > 0 && !tg.Promoted {
			parts = append(parts, fmt.Sprintf("%s: %d/%d canaries healthy", name, tg.HealthyAllocs, tg.DesiredCanaries))
		}
	}
	return strings.Join(parts, "; ")
}

// submitter names who registered a job version, as its meta says.
func submitter(job *nomad.Job) string {
	if who := job.Meta[release.MetaSubmittedBy]; who != "" {
		return "submitted by " + who
	}
	return "registered outside the deployer"
}

// patient returns a func that calls read until it succeeds, fails for a
// reason that waiting does not mend, or Nomad has not answered for
// d.Patience in a row, asking every d.Retry. A lost leader makes every server answer 500 "No
// cluster leader" until the others elect one, a matter of seconds; a server
// that went away refuses connections. Either is said once on Progress, not
// taken for the deployment's end.
func (d *Deployer) patient(ctx context.Context) func(read func() error) error {
	patience := d.patience()
	retry := d.Retry
	if retry == 0 {
		retry = 500 * time.Millisecond
	}
	return func(read func() error) error {
		var since time.Time
		for {
			err := read()
			if err == nil || ctx.Err() != nil || !transient(err) {
				if err == nil && !since.IsZero() {
					fmt.Fprintf(d.Progress, "    Nomad answers again after %s\n", time.Since(since).Round(100*time.Millisecond))
				}
				return err
			}
			if since.IsZero() {
				since = time.Now()
				fmt.Fprintf(d.Progress, "    Nomad at %s does not answer (%v); asking again for up to %s\n", d.NomadAddr, err, patience)
			}
			if time.Since(since) > patience {
				return fmt.Errorf("no answer from Nomad for %s: %w", patience, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(retry):
			}
		}
	}
}

// patience is d.Patience, or its default.
func (d *Deployer) patience() time.Duration {
	if d.Patience == 0 {
		return 90 * time.Second
	}
	return d.Patience
}

// transient reports whether a failed read may succeed when asked again:
// Nomad answered 5xx (500 "No cluster leader", 503), or did not answer at
// all. A 4xx (denied, not found, bad request) stays what it is.
func transient(err error) bool {
	var uerr nomad.UnexpectedResponseError
	if errors.As(err, &uerr) {
		return uerr.StatusCode() >= http.StatusInternalServerError
	}
	return true
}

// unplaced explains an evaluation that could not place everything, or
// returns "" when it placed all it had to.
func (d *Deployer) unplaced(ctx context.Context, ns, job string, ev *nomad.Evaluation) string {
	if ev.Status != "complete" || len(ev.FailedTGAllocs) == 0 {
		return ""
	}
	var dcs []string
	if j, _, err := d.Jobs.Info(job, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)); err == nil {
		dcs = j.Datacenters
	}
	return fmt.Sprintf("Nomad cannot place it (%s); the job stays registered, and Nomad places it when capacity comes: "+
		"roll back, or release what fits", strings.Join(placementFailures(ev.FailedTGAllocs, dcs), "; "))
}

// progressLine summarises a deployment's state in one line.
func progressLine(dep *nomad.Deployment) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		s := dep.TaskGroups[name]
		part := fmt.Sprintf("%s: %d/%d healthy, %d unhealthy", name, s.HealthyAllocs, s.DesiredTotal, s.UnhealthyAllocs)
		if s.DesiredCanaries > 0 {
			part += fmt.Sprintf(", canaries %d/%d", len(s.PlacedCanaries), s.DesiredCanaries)
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("deployment %s %s: %s", short(dep.ID), dep.Status, strings.Join(parts, "; "))
}
