// Package deploy turns a release into a Nomad job version: it renders the job
// spec through the Nomad server's own HCL2 parser, writes the release's config
// snapshot to Consul, registers the job against the index it planned from,
// names the version, and watches the deployment.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/release"
)

// Outcome is how a submit ended.
type Outcome string

const (
	Succeeded    Outcome = "succeeded"     // the deployment turned healthy
	NoChange     Outcome = "no-change"     // the release already runs; nothing registered
	Detached     Outcome = "registered"    // -detach: registered, not watched
	Failed       Outcome = "failed"        // the deployment failed
	AutoReverted Outcome = "auto-reverted" // it failed and Nomad went back to an earlier version
	// Unknown: the release is (or may be) registered, but how its
	// deployment ends was not seen: the deployer lost contact while
	// watching it, or Nomad gave no clear answer to the register.
	Unknown Outcome = "unknown"
	// AwaitingPromotion: the deployment's canaries are healthy and wait for
	// a verdict (auto_promote = false): deployer deployment promote or fail.
	AwaitingPromotion Outcome = "awaiting-promotion"
)

// ConflictError means the job changed between planning and registering (or
// another deployer holds its lock): nothing of this submit is visible.
type ConflictError struct {
	Job string
	Err error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("conflict on job %s, so nothing was changed: %v", e.Job, e.Err)
}

func (e *ConflictError) Unwrap() error { return e.Err }

// Deployer runs the pipeline against one Nomad and one Consul.
type Deployer struct {
	Jobs      Jobs
	Evals     Evaluations
	Deploys   Deployments
	Logs      LogTailer // failing tasks' stderr; may be nil
	NomadAddr string    // for messages: which Nomad answered
	Instances Instances // the service's passing instances, for their addresses; may be nil
	Store     *configstore.Store
	// Metrics reads what canaries serve, for an environment with an
	// analysis block; nil where none is judged.
	Metrics  Metrics
	JobSpec  string    // source of jobs/counter.nomad.hcl
	Progress io.Writer // stderr: what the deployer waits for
	// Patience is how long Watch keeps asking a Nomad that does not answer
	// (no leader while the servers elect one, a server restarting) before
	// it gives up and says the outcome is unknown; 0 means 90 s.
	Patience time.Duration
	// Retry is how long Watch waits between two asks of a Nomad that does
	// not answer; 0 means 500 ms. Tests of the waiting logic set it small
	// so that they run in milliseconds.
	Retry time.Duration
}

// Record describes a release as a submit made it; -json prints it.
type Record struct {
	Job          string            `json:"job"`
	Namespace    string            `json:"namespace"`
	Environment  string            `json:"environment"`
	Release      string            `json:"release,omitempty"`
	Version      *uint64           `json:"version,omitempty"`
	Image        string            `json:"image"`
	ImageDigest  string            `json:"image_digest,omitempty"`
	ConfigHash   string            `json:"config_hash"`
	ConfigPath   string            `json:"config_path"`
	Config       map[string]string `json:"config"`
	GitCommit    string            `json:"git_commit,omitempty"`
	SubmittedBy  string            `json:"submitted_by,omitempty"`
	PromotedFrom string            `json:"promoted_from,omitempty"` // "test v7"
	EvalID       string            `json:"eval_id,omitempty"`
	DeploymentID string            `json:"deployment_id,omitempty"`
	Outcome      Outcome           `json:"outcome"`
	RevertedTo   *uint64           `json:"reverted_to_version,omitempty"`
	// RevertedToRelease names the version Nomad went back to by its tag.
	RevertedToRelease string  `json:"reverted_to_release,omitempty"`
	Detail            string  `json:"detail,omitempty"`
	Causes            []Cause `json:"causes,omitempty"` // why the deployment failed, per failing instance
	// Repair says how this release repaired drift of the running one's config.
	Repair string `json:"repair,omitempty"`
	// URLs are the release's instances that pass their health check.
	URLs []string `json:"urls,omitempty"`
	// URL is the environment's own, its front door's (environment file),
	// and URLCheck how it answered right after the release.
	URL      string `json:"url,omitempty"`
	URLCheck string `json:"url_check,omitempty"`
	// UI is the job's page in the Nomad UI.
	UI string `json:"ui,omitempty"`
	// Warnings are what Nomad warned of when it registered the release.
	Warnings []string `json:"warnings,omitempty"`
	// Analysis is the judging of the canary, every look with its numbers,
	// for an environment with an analysis block.
	Analysis *AnalysisReport `json:"analysis,omitempty"`
	// JudgedCopy names the version that registers the release again with
	// auto_promote on once analysis passed it, so that a revert to it
	// (nomad job revert, the Nomad UI, Nomad's auto_revert) needs no
	// promotion.
	JudgedCopy        string  `json:"judged_copy,omitempty"`
	JudgedCopyVersion *uint64 `json:"judged_copy_version,omitempty"`

	// judging, when set, is how the watch judges the canary.
	judging *judging
}

func (d *Deployer) newRecord(r *release.Release) *Record {
	var j *judging
	if r.Env.Analysis != nil {
		j = &judging{env: r.Env.Name, analysis: r.Env.Analysis}
	}
	return &Record{UI: d.uiURL(r.Env.Namespace, r.Env.Job), judging: j,
		Job: r.Env.Job, Namespace: r.Env.Namespace, Environment: r.Env.Name,
		Image: r.Image.Pinned(), ImageDigest: r.Image.Digest,
		ConfigHash: r.ConfigHash(), ConfigPath: r.ConfigPath(), Config: r.Config(),
		GitCommit: r.GitCommit, SubmittedBy: r.SubmittedBy, PromotedFrom: r.PromotedFrom,
	}
}

// Render returns the job exactly as submit would register it, parsed by the
// Nomad server from the job spec and the release's variables.
func (d *Deployer) Render(ctx context.Context, r *release.Release) (*nomad.Job, error) {
	job, err := d.Jobs.ParseHCLOpts(&nomad.JobsParseRequest{
		JobHCL:       d.JobSpec,
		Variables:    r.Variables(),
		Canonicalize: true,
	})
	if err != nil {
		return nil, fmt.Errorf("render the job spec with Nomad at %s: %w", d.NomadAddr, err)
	}
	if err := stopsWithinDeadline(job, r.Env); err != nil {
		return nil, err
	}
	return job, nil
}

// stopsWithinDeadline refuses a job whose task may take longer to stop (the
// job spec's kill_timeout) than the environment lets a deployment go without
// progress. Nomad refuses it too, but only when asked to plan or register
// it, with a 500 that names neither file.
func stopsWithinDeadline(job *nomad.Job, env *environment.Environment) error {
	for _, tg := range job.TaskGroups {
		if tg.Update == nil || tg.Update.ProgressDeadline == nil || *tg.Update.ProgressDeadline <= 0 {
			continue
		}
		deadline := *tg.Update.ProgressDeadline
		for _, t := range tg.Tasks {
			if t.KillTimeout == nil || *t.KillTimeout <= deadline {
				continue
			}
			return env.Refuse("update", "progress_deadline", "progress_deadline shorter than kill_timeout",
				fmt.Sprintf("progress_deadline = %s%s, but the job spec gives task %q a kill_timeout of %s: Nomad refuses a job whose instance may take longer to stop than its deployment may go without progress; set progress_deadline to at least %s.",
					deadline, defaulted(env), t.Name, *t.KillTimeout, *t.KillTimeout))
		}
	}
	return nil
}

// defaulted says where a progress_deadline the file leaves unset comes from.
func defaulted(env *environment.Environment) string {
	if env.Set("update", "progress_deadline") {
		return ""
	}
	return " (the default, healthy_deadline + 30s)"
}

// current returns the registered job, nil when there is none.
func (d *Deployer) current(ctx context.Context, ns, id string) (*nomad.Job, error) {
	job, _, err := d.Jobs.Info(id, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read job %s from Nomad at %s: %w", id, d.NomadAddr, err)
	}
	return job, nil
}

func isNotFound(err error) bool {
	var uerr nomad.UnexpectedResponseError
	if errors.As(err, &uerr) {
		return uerr.StatusCode() == http.StatusNotFound
	}
	return strings.Contains(err.Error(), "job not found")
}

// Plan is the difference between a release and what runs.
type Plan struct {
	Job        *nomad.Job
	Current    *nomad.Job // nil for a new job
	Diff       *nomad.JobDiff
	Response   *nomad.JobPlanResponse
	OldConfig  map[string]string // the running release's snapshot; nil if none
	NewConfig  map[string]string
	Changed    bool
	ModifyBase uint64 // the job modify index the plan was made against
	// Unplaceable says why Nomad could not place the release; empty when it can.
	Unplaceable []string
	// Release is the release to submit: the one planned, reading its config
	// from the snapshot Plan picked.
	Release *release.Release
	// Repair says how the release repairs drift of the running release's
	// config snapshot; empty when there is none.
	Repair string
}

// Plan asks Nomad for the diff between the release and the registered job.
// Volatile identity (who submits) is carried over from the running version
// so that resubmitting the same release is no change.
func (d *Deployer) Plan(ctx context.Context, r *release.Release) (*Plan, error) {
	return d.plan(ctx, r, false)
}

// plan is Plan. For a promotion (promoted), the source it names is volatile
// too while the running version has the release's build and config: the
// same build promoted again, from another release of the source or after a
// plain submit, is no change, but a real one (count, resources, update)
// registers the release naming its own source.
func (d *Deployer) plan(ctx context.Context, r *release.Release, promoted bool) (*Plan, error) {
	cur, err := d.current(ctx, r.Env.Namespace, r.Env.Job)
	if err != nil {
		return nil, err
	}
	p := &Plan{Current: cur, NewConfig: r.Config(), Changed: true}
	if cur != nil {
		p.ModifyBase = *cur.JobModifyIndex
		if path := cur.Meta[release.MetaConfigPath]; path != "" && d.Store != nil {
			old, found, err := d.Store.Get(ctx, path)
			if err != nil {
				return nil, err
			}
			if found {
				p.OldConfig = old
			}
		}
	}
	if d.Store != nil {
		if r, p.Repair, err = d.snapshotFor(ctx, r, cur, p.OldConfig); err != nil {
			return nil, err
		}
	}
	p.Release = r
	job, err := d.Render(ctx, r)
	if err != nil {
		return nil, err
	}
	p.Job = job
	planned := job
	carried := false
	if cur != nil {
		planned = withSubmitter(job, cur.Meta[release.MetaSubmittedBy])
		from := cur.Meta[release.MetaPromotedFrom]
		if promoted && from != r.PromotedFrom && cur.Meta[release.MetaImageDigest] == r.Image.Digest && cur.Meta[release.MetaConfigHash] == r.ConfigHash() {
			// The source is in the job's meta and in its description, so
			// the job is rendered again as the running version names it.
			same := *r
			same.PromotedFrom = from
			sameJob, err := d.Render(ctx, &same)
			if err != nil {
				return nil, err
			}
			planned, carried = withSubmitter(sameJob, cur.Meta[release.MetaSubmittedBy]), true
		}
	}
	// What runs may be the release's judged copy (judged.go): the same
	// release with auto_promote on, so the same release submitted again is
	// no change. The same meta is the same release identity; Nomad's diff
	// of the plan says whether anything else changed.
	judged := cur != nil && waitsForPromotion(planned) && !waitsForPromotion(cur) && maps.Equal(planned.Meta, cur.Meta)
	if judged {
		if planned, err = autoPromoted(planned); err != nil {
			return nil, err
		}
	}
	resp, err := d.planJob(ctx, r, planned)
	if err != nil {
		return nil, err
	}
	p.Changed = cur == nil || (resp.Diff != nil && resp.Diff.Type != "None")
	if p.Changed && (carried || judged) {
		// Something besides the source (or auto_promote) changed: the plan
		// shown is that of the job registered, which names this
		// promotion's source and has auto_promote off.
		planned = withSubmitter(job, cur.Meta[release.MetaSubmittedBy])
		if resp, err = d.planJob(ctx, r, planned); err != nil {
			return nil, err
		}
	}
	p.Response, p.Diff = resp, resp.Diff
	p.Unplaceable = placementFailures(resp.FailedTGAllocs, job.Datacenters)
	if !p.Changed {
		// The same release, resubmitted: register nothing, not even a new
		// submitter.
		p.Job = planned
	}
	return p, nil
}

// planJob asks Nomad to plan job, with its diff against the registered one.
func (d *Deployer) planJob(ctx context.Context, r *release.Release, job *nomad.Job) (*nomad.JobPlanResponse, error) {
	resp, _, err := d.Jobs.Plan(job, true, (&nomad.WriteOptions{Namespace: r.Env.Namespace}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("plan job %s with Nomad at %s: %w", r.Env.Job, d.NomadAddr, err)
	}
	return resp, nil
}

// snapshotFor picks the snapshot the release's config is read from. The
// running version's, when it holds the same config intact, so that
// resubmitting a release changes nothing. When that one was edited or
// deleted by hand (drift), a fresh one, so that the release repairs it as a
// new version; repair says so. Otherwise the config's first snapshot, or, if
// someone edited that one, a fresh one too.
func (d *Deployer) snapshotFor(ctx context.Context, r *release.Release, cur *nomad.Job, curConfig map[string]string) (*release.Release, string, error) {
	curPath := ""
	if cur != nil && cur.Meta[release.MetaConfigHash] == r.ConfigHash() {
		curPath = cur.Meta[release.MetaConfigPath]
		if curConfig != nil && configstore.Hash(curConfig) == r.ConfigHash() {
			same, err := r.WithSnapshot(path.Base(curPath), d.Store)
			if err == nil && same.ConfigPath() == curPath {
				return same, "", nil
			}
		}
	}
	const tries = 100
	for n := 1; n <= tries; n++ {
		name := r.ConfigHash()
		if n > 1 {
			name = configstore.RepairName(name, n)
		}
		cand, err := r.WithSnapshot(name, d.Store)
		if err != nil {
			return nil, "", err
		}
		if cand.ConfigPath() == curPath {
			continue
		}
		values, found, err := d.Store.Get(ctx, cand.ConfigPath())
		if err != nil {
			return nil, "", err
		}
		if found && configstore.Hash(values) != r.ConfigHash() {
			continue // edited by hand: snapshots are never rewritten
		}
		repair := ""
		if curPath != "" {
			what := "deleted"
			if curConfig != nil {
				what = fmt.Sprintf("edited by hand (content hash %s)", configstore.Hash(curConfig))
			}
			repair = fmt.Sprintf("the running release's config snapshot %s was %s: this release restores its config at %s as a new version",
				curPath, what, cand.ConfigPath())
		}
		return cand, repair, nil
	}
	return nil, "", fmt.Errorf("no free snapshot for config %s after %d tries under %s", r.ConfigHash(), tries, d.Store.Folder(r.Env.Namespace, r.Env.Job))
}

// withSubmitter returns a copy of job whose meta names who as submitter.
func withSubmitter(job *nomad.Job, who string) *nomad.Job {
	cp := *job
	cp.Meta = make(map[string]string, len(job.Meta))
	for k, v := range job.Meta {
		cp.Meta[k] = v
	}
	cp.Meta[release.MetaSubmittedBy] = who
	return &cp
}

// SubmitOptions tune Submit.
type SubmitOptions struct {
	Detach bool // return after registering
	// Wait is how long to wait for another deploy of the job (the deploy
	// lock, or Nomad's active deployment) to end, instead of answering a
	// conflict at once.
	Wait time.Duration
	// AllowUnplaceable registers a release that Nomad cannot place now, for
	// clusters that add capacity when asked.
	AllowUnplaceable bool
	// CheckIndex, when set, is the job modify index the caller planned
	// against (like nomad job run -check-index); 0 means the job must not exist.
	CheckIndex *uint64
	// OnPlan, when set, is shown each plan before anything is written:
	// the first, and the one made again after waiting for another deploy.
	OnPlan func(*Plan)

	// promoted is set by Promote: the release's source is volatile (see plan).
	promoted bool
}

// Submit registers the release as a new job version. Order matters: the
// config snapshot is written (create-only) before the job that reads it is
// registered, the registration is enforced against the index the plan saw,
// and a snapshot this submit created is removed again if nothing registered
// it. It then names the version vN and, unless detached, watches the
// deployment.
func (d *Deployer) Submit(ctx context.Context, r0 *release.Release, opts SubmitOptions) (*Record, error) {
	p, rec, err := d.planSubmit(ctx, r0, opts)
	if err != nil {
		return rec, err
	}
	// The lock is held until the deployment ends, so that no other release
	// of this job cancels it halfway; a detached submit hands over to
	// Nomad's active deployment, which the next release respects. A
	// release that is already registered takes it too: until its own
	// deployment ends, "it already runs" would be a guess.
	what := fmt.Sprintf("%s, submit of %s", r0.SubmittedBy, r0.Image.Pinned())
	if opts.promoted {
		what = fmt.Sprintf("%s, promote of %s from %s", r0.SubmittedBy, r0.Image.Pinned(), r0.PromotedFrom)
	}
	lease, waited, err := d.acquire(ctx, r0.Env.Namespace, r0.Env.Job, what, opts.Wait)
	if err != nil {
		return nil, err
	}
	defer lease.unlock()
	// What was planned before the lock is stale once another release ended
	// (waited) or the job moved meanwhile: plan again against what runs now,
	// a "no change" too.
	if !waited {
		if waited, err = d.moved(ctx, p); err != nil {
			return nil, err
		}
	}
	if waited {
		if p, rec, err = d.planSubmit(ctx, r0, opts); err != nil {
			return rec, err
		}
	}
	if rec.Outcome == NoChange {
		return d.settled(ctx, rec, p.Current), nil
	}
	r, base := p.Release, p.ModifyBase

	if err := lease.check(r.Env.Job); err != nil {
		return nil, err
	}
	created, err := d.Store.Put(ctx, r.ConfigPath(), r.Config())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(d.Progress, "==> config snapshot %s (%s)\n", r.ConfigPath(), map[bool]string{true: "written", false: "already stored"}[created])
	if err := lease.check(r.Env.Job); err != nil {
		// Nothing was sent to Nomad: the snapshot is this submit's alone.
		return nil, d.unwrite(r, created, err)
	}

	resp, _, err := d.Jobs.RegisterOpts(p.Job, &nomad.RegisterOptions{
		EnforceIndex: true,
		ModifyIndex:  base,
		Submission: &nomad.JobSubmission{
			Source:    d.JobSpec,
			Format:    "hcl2",
			Variables: r.Variables(),
		},
	}, (&nomad.WriteOptions{Namespace: r.Env.Namespace}).WithContext(ctx))
	if err != nil {
		return d.unanswered(ctx, rec, p, created, err, opts.Detach, lease.lost)
	}
	rec.EvalID = resp.EvalID
	rec.Warnings = warnings(resp.Warnings)
	if err := d.nameVersion(ctx, rec, resp.JobModifyIndex, r.Description()); err != nil {
		// Registered all the same: never "nothing was changed".
		rec.Outcome = Unknown
		rec.Detail = fmt.Sprintf("Nomad registered the release (job modify index %d, evaluation %s), but its version could not be read (%v): "+
			"it is neither tagged %s nor watched; deployer history -env %s names it, deployer status tells how it runs",
			resp.JobModifyIndex, short(resp.EvalID), err, "vN", rec.Environment)
		return rec, nil
	}
	fmt.Fprintf(d.Progress, "==> registered %s as job %s version %d (eval %s)\n", rec.Release, r.Env.Job, *rec.Version, short(resp.EvalID))
	d.sayWarnings(rec)
	return d.followLocked(ctx, rec, opts.Detach, lease.lost)
}

// unwrite deletes the snapshot this submit wrote (created) for a release
// that Nomad surely never registered, and returns err with what went wrong
// deleting it.
func (d *Deployer) unwrite(r *release.Release, created bool, err error) error {
	if !created {
		return err
	}
	// A fresh context: the snapshot must go even if the command's ended.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if derr := d.Store.Delete(ctx, r.ConfigPath()); derr != nil {
		return errors.Join(err, fmt.Errorf("and the snapshot this submit wrote could not be removed: %w", derr))
	}
	return err
}

// refused reports whether Nomad answered a write with a definite refusal
// that proves nothing was written: a 4xx, or a failed modify-index check.
// Anything else (a 5xx, a gateway's 502, a timeout, a reset connection, a
// cancelled command) may come after the write was applied: Nomad's HTTP
// handler runs the register RPC without the request's context, so a
// cancelled or cut-off request can still register the job.
func refused(err error) bool {
	if isConflict(err) {
		return true
	}
	var uerr nomad.UnexpectedResponseError
	if errors.As(err, &uerr) {
		return uerr.StatusCode() >= 400 && uerr.StatusCode() < 500
	}
	return false
}

// readBack is how long a submit whose register got no clear answer asks
// Nomad whether the version exists.
const readBack = 30 * time.Second

// unanswered handles a register that failed. A definite refusal deletes the
// snapshot this submit wrote. Otherwise Nomad is asked, with a context of
// its own, whether the version exists: if it does, the submit goes on as if
// the register had answered (or, when the command was cancelled, reports
// the version as unknown, exit 7); if it cannot be seen, the snapshot is
// kept, since a version registered late would read it, and the outcome is
// unknown, naming what to check.
func (d *Deployer) unanswered(ctx context.Context, rec *Record, p *Plan, created bool, regErr error, detach bool, lost <-chan struct{}) (*Record, error) {
	r := p.Release
	if refused(regErr) {
		err := d.unwrite(r, created, regErr)
		if isConflict(regErr) {
			return nil, &ConflictError{Job: r.Env.Job, Err: fmt.Errorf("it changed since this command read it (%w); look again (plan, history) and retry", err)}
		}
		return nil, fmt.Errorf("register job %s with Nomad at %s: %w", r.Env.Job, d.NomadAddr, err)
	}
	found, why := d.readBackVersion(rec, "register", regErr, p.ModifyBase, p.Job.Meta, r.Description())
	if !found {
		rec.Outcome = Unknown
		rec.Detail = fmt.Sprintf("the register of %s got no clear answer from Nomad at %s (%v), and %s: it may still land. "+
			"The config snapshot %s is kept, as such a version would read it. Check deployer history -env %s: "+
			"if a new version runs image %s with config %s, it is this release; if none came, deployer gc -env %s deletes the snapshot",
			rec.Job, d.NomadAddr, regErr, why, r.ConfigPath(), rec.Environment, r.Image.Pinned(), r.ConfigHash(), rec.Environment)
		return rec, nil
	}
	fmt.Fprintf(d.Progress, "==> registered %s as job %s version %d (read back)\n", rec.Release, rec.Job, *rec.Version)
	if unwatched(ctx, rec, "registered "+rec.Release) {
		return rec, nil
	}
	return d.followLocked(ctx, rec, detach, lost)
}

// readBackVersion asks Nomad, with a context of its own, whether a write
// that got no clear answer (what: "register", "revert") made its version:
// the one registered after modify index base whose meta is meta. Found, the
// version is recorded in rec and tagged vN with desc; not found, why says
// what Nomad showed.
func (d *Deployer) readBackVersion(rec *Record, what string, wErr error, base uint64, meta map[string]string, desc string) (found bool, why string) {
	fmt.Fprintf(d.Progress, "==> Nomad at %s gave no clear answer to the %s (%v); reading back whether job %s has the new version\n", d.NomadAddr, what, wErr, rec.Job)
	rctx, cancel := context.WithTimeout(context.Background(), readBack)
	defer cancel()
	v, found, err := d.registeredSince(rctx, rec.Namespace, rec.Job, base, meta)
	switch {
	case err != nil:
		return false, fmt.Sprintf("Nomad could not be asked (%v)", err)
	case !found:
		return false, "Nomad does not show it"
	}
	d.tagVersion(rctx, rec, v, desc)
	return true, ""
}

// unwatched makes rec unknown when the command ended (ctx) while Nomad
// made its version (done: what Nomad did), which is then not watched.
func unwatched(ctx context.Context, rec *Record, done string) bool {
	if ctx.Err() == nil {
		return false
	}
	rec.Outcome = Unknown
	rec.Detail = fmt.Sprintf("the command ended (%v) while Nomad %s as job version %d: its deployment is not watched; deployer status -env %s tells how it ends",
		ctx.Err(), done, *rec.Version, rec.Environment)
	return true
}

// registeredSince finds the version registered after modify index base
// whose meta is meta (the release's identity, submitter included).
func (d *Deployer) registeredSince(ctx context.Context, ns, job string, base uint64, meta map[string]string) (uint64, bool, error) {
	var versions []*nomad.Job
	err := d.patient(ctx)(func() (err error) {
		versions, _, _, err = d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
		if err != nil && isNotFound(err) {
			versions, err = nil, nil
		}
		return err
	})
	if err != nil {
		return 0, false, err
	}
	for _, v := range versions { // newest first
		if v.JobModifyIndex != nil && *v.JobModifyIndex > base && maps.Equal(v.Meta, meta) {
			return *v.Version, true, nil
		}
	}
	return 0, false, nil
}

// sayWarnings prints what Nomad warned of when it registered the release
// (rec.Warnings). Nomad registers a job whose source and variables are over
// its job_max_source_size, dropping the submission with only a warning.
func (d *Deployer) sayWarnings(rec *Record) {
	for _, w := range rec.Warnings {
		fmt.Fprintf(d.Progress, "==> Nomad warns: %s\n", w)
		if strings.Contains(w, "will be discarded") {
			fmt.Fprintf(d.Progress, "    Nomad keeps no submission of %s (its job_max_source_size): a rollback cannot restore its config from Nomad if its snapshot is edited or deleted\n", rec.Release)
		}
	}
}

// moved reports whether the job's modify index is no longer the one p was
// planned from.
func (d *Deployer) moved(ctx context.Context, p *Plan) (bool, error) {
	cur, err := d.current(ctx, p.Release.Env.Namespace, p.Release.Env.Job)
	if err != nil {
		return false, err
	}
	if cur == nil {
		return p.Current != nil, nil
	}
	return p.Current == nil || *cur.JobModifyIndex != p.ModifyBase, nil
}

// warnings splits Nomad's multierror text ("1 warning:\n\n* ...") into its
// items.
func warnings(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line != "" && !strings.HasSuffix(line, "warning:") && !strings.HasSuffix(line, "warnings:") {
			out = append(out, line)
		}
	}
	return out
}

// planSubmit plans the release and checks what must hold before anything
// is written. A release that already runs gets its record, as no change.
func (d *Deployer) planSubmit(ctx context.Context, r *release.Release, opts SubmitOptions) (*Plan, *Record, error) {
	p, err := d.plan(ctx, r, opts.promoted)
	if err != nil {
		return nil, nil, err
	}
	if opts.OnPlan != nil {
		opts.OnPlan(p)
	}
	r = p.Release
	rec := d.newRecord(r)
	rec.Repair = p.Repair
	if p.Repair != "" {
		fmt.Fprintf(d.Progress, "==> drift: %s\n", p.Repair)
	}
	if opts.CheckIndex != nil && *opts.CheckIndex != p.ModifyBase {
		return nil, nil, &ConflictError{Job: r.Env.Job, Err: fmt.Errorf("it changed since it was planned: -check-index %d, but its modify index is %d; plan again", *opts.CheckIndex, p.ModifyBase)}
	}
	if p.Changed && len(p.Unplaceable) > 0 && !opts.AllowUnplaceable {
		return nil, nil, &UnplaceableError{Job: r.Env.Job, Reasons: p.Unplaceable}
	}
	if p.Changed && p.Current != nil {
		if err := d.seesInstances(ctx, r.Env.Job); err != nil {
			return nil, nil, err
		}
	}
	if !p.Changed {
		v := *p.Current.Version
		rec.Version, rec.Release, rec.Outcome = &v, release.Name(v), NoChange
		rec.Detail = fmt.Sprintf("job %s version %d already runs this release", r.Env.Job, v)
		// Where it runs, as after a submit that changed something: a script
		// that calls the service should not care which of the two it got.
		rec.URLs = d.urls(ctx, rec.Job, rec.ConfigHash)
	}
	return p, rec, nil
}

// settled checks a no-change record against the cluster: registered is
// not running. Nomad marks a version Stable once its deployment succeeds;
// one that is not was never seen healthy, whether its deployment failed
// (and Nomad had no stable version to revert to) or is gone (Nomad reaps
// terminal deployments after deployment_gc_threshold, 1 h by default). It is
// reported as failed, with the causes that can still be read, not as a
// release that runs. cur is the job as read under the lock.
func (d *Deployer) settled(ctx context.Context, rec *Record, cur *nomad.Job) *Record {
	if cur != nil && cur.Stable != nil && *cur.Stable {
		return rec
	}
	dep, _, err := d.Jobs.LatestDeployment(rec.Job, (&nomad.QueryOptions{Namespace: rec.Namespace}).WithContext(ctx))
	if err == nil && dep != nil && dep.JobVersion == *rec.Version && dep.Status == "successful" {
		return rec // it turned stable since cur was read
	}
	rec.Outcome, rec.URLs = Failed, nil
	if err == nil && dep != nil && dep.JobVersion == *rec.Version {
		rec.DeploymentID = dep.ID
		rec.Detail = fmt.Sprintf("job %s version %d has this release, but its deployment %s is %s: %s; fix the cause and release again",
			rec.Job, *rec.Version, short(dep.ID), dep.Status, dep.StatusDescription)
		rec.Causes = d.causes(ctx, rec.Namespace, dep.ID)
		return rec
	}
	rec.Detail = fmt.Sprintf("job %s version %d has this release, but Nomad never marked it stable: no deployment of it succeeded "+
		"(Nomad keeps a finished deployment for deployment_gc_threshold, 1 h by default, so how it ended is gone); "+
		"deployer status -env %s shows its instances; fix the cause and release again, or roll back",
		rec.Job, *rec.Version, rec.Environment)
	return rec
}

// lease is a held deploy lock: unlock releases it; lost is closed if
// Consul ends its session first (a TTL that ran out while Consul was
// unreachable, an operator's consul lock -release).
type lease struct {
	unlock func()
	lost   <-chan struct{}
}

// check returns a conflict if the lock was lost: another deployer may hold
// it now.
func (l *lease) check(job string) error {
	select {
	case <-l.lost:
		return &ConflictError{Job: job, Err: errors.New("this deployer lost the job's deploy lock (its Consul session ended) before registering anything, and another deploy may hold it now; retry")}
	default:
		return nil
	}
}

// lock takes the job's deploy lock; another holder is a conflict. what
// says who takes it for what; the lock records it with the time, for the
// message a second deployer gets.
func (d *Deployer) lock(ctx context.Context, ns, job, what string) (*lease, error) {
	holder := fmt.Sprintf("%s, since %s", what, time.Now().UTC().Format(time.RFC3339))
	unlock, lost, err := d.Store.Lock(ctx, ns, job, holder)
	if errors.Is(err, configstore.ErrLocked) {
		return nil, &ConflictError{Job: job, Err: err}
	}
	if err != nil {
		return nil, err
	}
	return &lease{unlock: unlock, lost: lost}, nil
}

// acquire takes the job's deploy lock once no deployment of the job is
// under way, waiting up to wait for both. It returns the lease and
// whether it waited.
func (d *Deployer) acquire(ctx context.Context, ns, job, what string, wait time.Duration) (*lease, bool, error) {
	deadline := time.Now().Add(wait)
	said := ""
	for {
		l, err := d.lock(ctx, ns, job, what)
		if err == nil {
			if err = d.idle(ctx, ns, job); err == nil {
				return l, said != "", nil
			}
			l.unlock()
		}
		var conflict *ConflictError
		if !errors.As(err, &conflict) || time.Now().After(deadline) {
			return nil, false, err
		}
		if msg := conflict.Err.Error(); msg != said {
			fmt.Fprintf(d.Progress, "==> waiting (up to %s) for another deploy of %s: %s\n", time.Until(deadline).Round(time.Second), job, msg)
			said = msg
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// idle makes sure no deployment of the job is under way or about to start:
// a new version would make Nomad cancel it. One may be running after a
// detached release, or one made with the nomad CLI or UI; one is about to
// start while the evaluation of a version just registered waits for the
// scheduler, before which Nomad shows no deployment of it.
func (d *Deployer) idle(ctx context.Context, ns, job string) error {
	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	dep, _, err := d.Jobs.LatestDeployment(job, q)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("read the latest deployment of %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	if dep != nil && activeDeployment(dep.Status) {
		if placedNothing(dep) {
			// Registered with -allow-unplaceable (or by hand), it waits for
			// capacity, and its progress deadline never ends it (a 20 s one
			// still ran after two minutes, on Nomad 1.11): waiting on it
			// would block every release, a rollback too, until capacity
			// came. Replacing it cancels nothing that runs.
			fmt.Fprintf(d.Progress, "==> deployment %s of job version %d has placed nothing (Nomad cannot place it); a new version replaces it\n",
				short(dep.ID), dep.JobVersion)
			return nil
		}
		if awaitingPromotion(dep) {
			return &ConflictError{Job: job, Err: fmt.Errorf("deployment %s of job version %d waits for a verdict: %s, and a new version would cancel it: "+
				"promote it (deployer deployment -env NAME promote) or fail it (deployer deployment -env NAME fail); where the environment has an analysis block, "+
				"deployer analyze -env NAME judges it (unless the deployer that judges it holds the lock)", short(dep.ID), dep.JobVersion, canaryState(dep))}
		}
		return &ConflictError{Job: job, Err: fmt.Errorf("deployment %s of job version %d is %s (%s), and a new version would cancel it: "+
			"retry once it ends (deployer status), or with -wait", short(dep.ID), dep.JobVersion, dep.Status, dep.StatusDescription)}
	}
	evals, _, err := d.Jobs.Evaluations(job, q)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("read the evaluations of %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	for _, ev := range evals {
		if ev.Status == "pending" && (ev.TriggeredBy == "job-register" || ev.TriggeredBy == "job-scaling") {
			return &ConflictError{Job: job, Err: fmt.Errorf("evaluation %s of job %s (%s at modify index %d) waits for Nomad's scheduler, which starts its deployment, "+
				"and a new version would cancel it: retry once it ends (deployer status), or with -wait", short(ev.ID), job, ev.TriggeredBy, ev.JobModifyIndex)}
		}
	}
	return nil
}

// placedNothing reports whether a deployment has not placed a single
// allocation in any task group: Nomad places a deployment's first
// allocations in the plan that creates it, so one that has none could place
// none.
func placedNothing(dep *nomad.Deployment) bool {
	if len(dep.TaskGroups) == 0 {
		return false
	}
	for _, tg := range dep.TaskGroups {
		if tg == nil || tg.PlacedAllocs > 0 || len(tg.PlacedCanaries) > 0 {
			return false
		}
	}
	return true
}

// activeDeployment reports whether a deployment in this status may still
// place or stop allocations.
func activeDeployment(status string) bool {
	switch status {
	case "running", "paused", "pending", "blocked", "unblocking", "initializing":
		return true
	}
	return false
}

// nameVersion finds the version registered at modifyIndex, tags it vN with
// desc and records both in rec. A failed tag is a warning: the version is
// registered, and history names it vN all the same.
func (d *Deployer) nameVersion(ctx context.Context, rec *Record, modifyIndex uint64, desc string) error {
	version, err := d.versionAt(ctx, rec.Namespace, rec.Job, modifyIndex)
	if err != nil {
		return err
	}
	d.tagVersion(ctx, rec, version, desc)
	return nil
}

// tagVersion records version in rec and tags it vN with desc; a failed tag
// is a warning, as in nameVersion.
func (d *Deployer) tagVersion(ctx context.Context, rec *Record, version uint64, desc string) {
	rec.Version, rec.Release = &version, release.Name(version)
	if _, err := d.Jobs.TagVersion(rec.Job, version, rec.Release, desc,
		(&nomad.WriteOptions{Namespace: rec.Namespace}).WithContext(ctx)); err != nil {
		fmt.Fprintf(d.Progress, "warning: version %d registered but not tagged %s: %v\n", version, rec.Release, err)
	}
}

// followLocked watches the deployment of rec's version, unless detached,
// and records how it ended and, on success, the release's URLs; under a
// deploy lock that is lost when lost is closed (nil: never), which the
// watch then says. A release that succeeded and passed gets its judged
// copy here (judged.go), whichever command made it: submit, rollback,
// analyze, or their read-back paths.
func (d *Deployer) followLocked(ctx context.Context, rec *Record, detach bool, lost <-chan struct{}) (*Record, error) {
	if detach {
		rec.Outcome = Detached
		return rec, nil
	}
	w, err := d.watch(ctx, rec.Namespace, rec.Job, *rec.Version, rec.EvalID, lost, rec.judging)
	if w != nil {
		rec.DeploymentID, rec.Outcome, rec.RevertedTo, rec.Detail = w.DeploymentID, w.Outcome, w.RevertedTo, w.Detail
		rec.Analysis = w.Analysis
		if a := w.Analysis; a != nil && a.Reason != "" {
			what := "canary judged by analysis"
			switch {
			case a.Verdict == Promote && a.Outcome == "":
				what = "canary promoted without analysis"
			case a.Verdict == Promote:
				what = "canary promoted by analysis"
			case a.Verdict == Fail:
				what = "canary failed by analysis"
			}
			if a.Outcome == "inconclusive" {
				what += " (inconclusive)"
			}
			rec.Detail = fmt.Sprintf("%s: %s; %s", what, a.Reason, rec.Detail)
		}
		if w.Outcome == AwaitingPromotion {
			rec.Detail = fmt.Sprintf("%s; deployer deployment -env %s promote rolls it out, deployer deployment -env %s fail ends it (Nomad reverts it where auto_revert is set)",
				w.Detail, rec.Environment, rec.Environment)
		}
	}
	if err != nil && rec.Outcome == "" {
		// Registered, but how it ends is not known here: never report a
		// success or a failure that was not seen.
		rec.Outcome = Unknown
		rec.Detail = fmt.Sprintf("lost contact while watching the deployment (%v): %s is registered as job version %d; "+
			"deployer status tells how it ends", err, rec.Release, *rec.Version)
		return rec, nil
	}
	if err == nil && (rec.Outcome == Failed || rec.Outcome == AutoReverted) {
		if rec.DeploymentID != "" {
			rec.Causes = d.causes(ctx, rec.Namespace, rec.DeploymentID)
		}
		if rec.RevertedTo != nil {
			rec.RevertedToRelease = d.releaseName(ctx, rec.Namespace, rec.Job, *rec.RevertedTo)
		}
	}
	if err == nil && rec.Outcome == Succeeded {
		rec.URLs = d.urls(ctx, rec.Job, rec.ConfigHash)
		d.judgedCopy(ctx, rec, lost)
	}
	return rec, err
}

// uiURL is the job's page in the Nomad UI of the Nomad the deployer talks to.
func (d *Deployer) uiURL(ns, job string) string {
	if d.NomadAddr == "" {
		return ""
	}
	return strings.TrimSuffix(d.NomadAddr, "/") + "/ui/jobs/" + url.PathEscape(job) + "@" + url.PathEscape(ns)
}

// releaseName is the release name of a job version: its tag, or vN.
func (d *Deployer) releaseName(ctx context.Context, ns, job string, version uint64) string {
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err == nil {
		for _, v := range versions {
			if *v.Version == version && v.VersionTag != nil && v.VersionTag.Name != "" {
				return v.VersionTag.Name
			}
		}
	}
	return release.Name(version)
}

// urls lists the addresses of the passing instances of the job's service
// that run the release with configHash (the service is tagged
// release-HASH). It reports what it could not see on Progress: the release
// is made by then, and only its addresses are missing.
func (d *Deployer) urls(ctx context.Context, service, configHash string) []string {
	urls, err := d.passing(ctx, service, configHash)
	if err != nil {
		fmt.Fprintf(d.Progress, "warning: %v\n", err)
	}
	return urls
}

// passing is urls with its error.
func (d *Deployer) passing(ctx context.Context, service, configHash string) ([]string, error) {
	entries, err := d.instances(ctx, service, "release-"+configHash, true)
	var urls []string
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		urls = append(urls, "http://"+net.JoinHostPort(addr, strconv.Itoa(e.Service.Port))+"/")
	}
	return urls, err
}

// seesInstances checks, before anything is written, that Consul shows the
// token the instances of the job's service that run now, whose addresses a
// command reports at its end. A token that cannot see them is refused then,
// not after the release. Other errors are left to the report.
func (d *Deployer) seesInstances(ctx context.Context, service string) error {
	_, err := d.instances(ctx, service, "", false)
	var denied *DeniedError
	if errors.As(err, &denied) {
		return err
	}
	return nil
}

// instances lists the service's instances with tag (passing ones only, or
// all). Consul does not refuse a token that may not read a service or its
// nodes: it leaves them out of the answer and says so in a header. That is
// a DeniedError here, so that "no instance" is never a guess.
func (d *Deployer) instances(ctx context.Context, service, tag string, passingOnly bool) ([]*consul.ServiceEntry, error) {
	if d.Instances == nil {
		return nil, nil
	}
	entries, meta, err := d.Instances.Service(service, tag, passingOnly, (&consul.QueryOptions{}).WithContext(ctx))
	doing := "list the instances of service " + service
	if err != nil {
		return nil, Denied(&configstore.ConsulError{Doing: doing, Err: err})
	}
	if meta != nil && meta.ResultsFilteredByACLs {
		// Consul leaves out an instance whose service or node the token
		// may not read: either rule may be the missing one.
		return entries, &DeniedError{System: "Consul", Doing: doing,
			Capability: fmt.Sprintf("service:read on %q or node:read on one of its nodes", service),
			Err:        errors.New("Consul left instances out of its answer (X-Consul-Results-Filtered-By-ACLs)")}
	}
	return entries, nil
}

// versionAt finds the job version registered at modifyIndex.
func (d *Deployer) versionAt(ctx context.Context, ns, id string, modifyIndex uint64) (uint64, error) {
	// Asked patiently: the job is registered by now, and a leader lost
	// right after the register must not make it look unregistered.
	var versions []*nomad.Job
	err := d.patient(ctx)(func() (err error) {
		versions, _, _, err = d.Jobs.Versions(id, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read versions of job %s: %w", id, err)
	}
	for _, v := range versions {
		if v.JobModifyIndex != nil && *v.JobModifyIndex == modifyIndex {
			return *v.Version, nil
		}
	}
	return 0, fmt.Errorf("job %s: no version at modify index %d", id, modifyIndex)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
