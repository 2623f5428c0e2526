package deploy

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
)

// Target names the version to roll back to: By tag name (or vN), by version
// number, or, with neither, the newest stable version older than the
// current one that runs a different release: another image or config, or
// another value of the environment file (count, resources, update,
// datacenters).
type Target struct {
	Tag     string
	Version *uint64
}

// RollbackOptions tune Rollback.
type RollbackOptions struct {
	Detach   bool
	Wait     time.Duration // as SubmitOptions.Wait
	Resolver imageref.Resolver
	Who      string
}

var vN = regexp.MustCompile(`^v(\d+)$`)

// Rollback reverts the job to an earlier version through Nomad's job
// history, after checking that the version's config snapshot is intact and
// its image still pullable where the registry answers. The revert is
// enforced against the version that was current when checked. It returns
// what the rollback undoes: how the current version differs from the one
// it goes back to (image, config, and the environment's values: count,
// resources, update, datacenters); none when that version already runs.
func (d *Deployer) Rollback(ctx context.Context, ns, job string, to Target, opts RollbackOptions) (*Record, []Difference, error) {
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		if isNotFound(err) {
			return nil, nil, fmt.Errorf("job %s has no releases in namespace %s", job, ns)
		}
		return nil, nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	cur := versions[0]
	target, err := pick(versions, to)
	if err != nil {
		return nil, nil, err
	}
	if c := judgedCopyOf(versions, target); c != nil {
		// The same release, whose canary Nomad promotes by itself.
		fmt.Fprintf(d.Progress, "==> %s has a judged copy, %s (auto_promote on): going back to that one\n", releaseName(target), releaseName(c))
		target = c
	}
	// Same image and config is not enough: a version that differs only in
	// a value of the environment file (a count, a memory limit) is another
	// release, and going back to it must bring that value back.
	var undoes []Difference
	same := *target.Version == *cur.Version || sameRelease(cur, target)
	if !same {
		undoes = releaseDiff(cur, target)
	}
	rec, err := d.rollback(ctx, ns, job, cur, target, same, undoes, opts)
	return rec, undoes, err
}

// rollback goes back from version cur to target, undoing undoes; same says
// target runs what cur runs (or is cur).
func (d *Deployer) rollback(ctx context.Context, ns, job string, cur, target *nomad.Job, same bool, undoes []Difference, opts RollbackOptions) (*Record, error) {
	curE, tgtE := entry(cur, nil), entry(target, nil)
	asked := *target.Version
	announce := func() {
		fmt.Fprintf(d.Progress, "==> going back from %s to %s (version %d) undoes: %s\n", curE.Release, tgtE.Release, asked, differences(undoes))
	}
	if same {
		// What runs is what was asked for, unless its snapshot drifted.
		target, tgtE = cur, curE
	}
	rec := &Record{
		UI:  d.uiURL(ns, job),
		Job: job, Namespace: ns, Environment: target.Meta[release.MetaEnvironment],
		Image: tgtE.Image, ImageDigest: tgtE.ImageDigest, ConfigHash: tgtE.ConfigHash, ConfigPath: tgtE.ConfigPath,
		GitCommit: tgtE.GitCommit, SubmittedBy: opts.Who,
	}
	noChange := func() (*Record, error) {
		v := *cur.Version
		rec.Version, rec.Release, rec.Outcome = &v, curE.Release, NoChange
		rec.Detail = fmt.Sprintf("job %s already runs %s (version %d is the same release)", job, curE.Release, asked)
		rec.URLs = d.urls(ctx, job, rec.ConfigHash)
		return rec, nil
	}
	if !tgtE.ByDeployer {
		if same {
			return noChange()
		}
		return nil, fmt.Errorf("version %d of %s was not made by the deployer (no %s in its meta): its config cannot be checked; use nomad job revert if you mean it",
			*target.Version, job, release.MetaConfigPath)
	}

	// The version's config must still be there, as written; if it is not,
	// the config recorded with the version is written back as a new one.
	values, found, err := d.Store.Get(ctx, tgtE.ConfigPath)
	if err != nil {
		return nil, err
	}
	if !found || configstore.Hash(values) != tgtE.ConfigHash {
		drift := "deleted"
		if found {
			drift = fmt.Sprintf("edited by hand (content hash %s, want %s)", configstore.Hash(values), tgtE.ConfigHash)
		}
		if !same {
			announce()
		}
		return d.restore(ctx, ns, job, target, fmt.Sprintf("config snapshot %s of %s was %s", tgtE.ConfigPath, tgtE.Release, drift), same, opts)
	}
	if same {
		return noChange()
	}
	rec.Config = maps.Clone(values)
	if err := checkImage(ctx, opts.Resolver, tgtE.Image); err != nil {
		return nil, fmt.Errorf("cannot roll back %s to %s: %w; nothing was changed", job, tgtE.Release, err)
	}

	// The target must still fit the cluster: its datacenters and resources
	// are those of its day.
	plan, _, err := d.Jobs.Plan(target, false, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("plan the revert of %s to %s with Nomad at %s: %w", job, tgtE.Release, d.NomadAddr, err)
	}
	if why := placementFailures(plan.FailedTGAllocs, target.Datacenters); len(why) > 0 {
		return nil, &UnplaceableError{Job: job, Reasons: why}
	}
	if err := d.seesInstances(ctx, job); err != nil {
		return nil, err
	}

	announce()
	// A wait here is bounded by EnforcePriorVersion below: a release that
	// landed meanwhile makes the revert a conflict, not a surprise.
	l, _, err := d.acquire(ctx, ns, job, fmt.Sprintf("%s, rollback to %s", opts.Who, tgtE.Release), opts.Wait)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	prior := *cur.Version
	desc := fmt.Sprintf("rollback to %s by %s", tgtE.Release, opts.Who)
	resp, _, err := d.Jobs.Revert(job, *target.Version, &prior, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx), "", "")
	if err != nil {
		if isConflict(err) {
			return nil, &ConflictError{Job: job, Err: fmt.Errorf("it changed since this command read it (%w); look again (history) and retry", err)}
		}
		if refused(err) {
			return nil, fmt.Errorf("revert job %s to version %d with Nomad at %s: %w; nothing was changed", job, *target.Version, d.NomadAddr, err)
		}
		return d.unclearRevert(ctx, rec, cur, target, tgtE.Release, desc, err, opts.Detach, l.lost)
	}
	rec.EvalID = resp.EvalID
	if err := d.nameVersion(ctx, rec, resp.JobModifyIndex, desc); err != nil {
		// Reverted all the same: never "nothing was changed".
		rec.Outcome = Unknown
		rec.Detail = fmt.Sprintf("Nomad reverted %s to %s (version %d) at job modify index %d (evaluation %s), but the new version could not be read (%v): "+
			"it is neither tagged vN nor watched; deployer history -env %s names it, deployer status -env %s tells how it runs",
			job, tgtE.Release, *target.Version, resp.JobModifyIndex, short(resp.EvalID), err, rec.Environment, rec.Environment)
		return rec, nil
	}
	fmt.Fprintf(d.Progress, "==> reverted %s to %s (version %d) as version %d (eval %s)\n", job, tgtE.Release, *target.Version, *rec.Version, short(resp.EvalID))
	rec.judging = judgedBefore(target, tgtE.Release, rec.Environment)
	return d.followLocked(ctx, rec, opts.Detach, l.lost)
}

// unclearRevert handles a revert of the job from cur to target (named
// name) that got no clear answer, by submit's rule (unanswered): Nomad may
// have applied it, so it is asked, with a context of its own, whether the
// job has a version after cur with target's meta. If so, the rollback goes
// on as if the revert had answered (or, when the command was cancelled,
// reports that version as unknown); if not, the outcome is unknown, naming
// what to check, never "nothing was changed".
func (d *Deployer) unclearRevert(ctx context.Context, rec *Record, cur, target *nomad.Job, name, desc string, revErr error, detach bool, lost <-chan struct{}) (*Record, error) {
	found, why := d.readBackVersion(rec, "revert", revErr, *cur.JobModifyIndex, target.Meta, desc)
	if !found {
		rec.Outcome = Unknown
		rec.Detail = fmt.Sprintf("the revert of %s to %s (version %d) got no clear answer from Nomad at %s (%v), and %s: it may still land. "+
			"Check deployer history -env %s: if a version newer than %d runs %s, the rollback took and deployer status -env %s tells how it runs; "+
			"if none came, nothing changed",
			rec.Job, name, *target.Version, d.NomadAddr, revErr, why, rec.Environment, *cur.Version, name, rec.Environment)
		return rec, nil
	}
	fmt.Fprintf(d.Progress, "==> reverted %s to %s (version %d) as version %d (read back)\n", rec.Job, name, *target.Version, *rec.Version)
	rec.judging = judgedBefore(target, name, rec.Environment)
	if unwatched(ctx, rec, fmt.Sprintf("reverted %s to %s", rec.Job, name)) {
		return rec, nil
	}
	return d.followLocked(ctx, rec, detach, lost)
}

// restore releases again the version v whose config snapshot drifted: the
// config recorded with v's submission goes to a fresh snapshot, and the job
// spec and variables recorded with it make a new version, through Submit (so
// the lock, the plan's placement check and the watch are the same). running
// says v is what runs now.
func (d *Deployer) restore(ctx context.Context, ns, job string, v *nomad.Job, drift string, running bool, opts RollbackOptions) (*Record, error) {
	name := release.Name(*v.Version)
	if v.VersionTag != nil && v.VersionTag.Name != "" {
		name = v.VersionTag.Name
	}
	sub, _, err := d.Jobs.Submission(job, int(*v.Version), (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("read the submission of %s version %d from Nomad at %s: %w", job, *v.Version, d.NomadAddr, err)
	}
	if err != nil || sub == nil || sub.Variables == "" {
		return nil, noSubmission(job, name, drift, v)
	}
	r, err := release.FromVariables(sub.Variables, d.Store)
	if err != nil {
		return nil, fmt.Errorf("cannot roll back %s to %s: its %s, and its config cannot be restored from Nomad's record of version %d: %w; nothing was changed",
			job, name, drift, *v.Version, err)
	}
	if r.ConfigHash() != v.Meta[release.MetaConfigHash] {
		return nil, fmt.Errorf("cannot roll back %s to %s: its %s, and Nomad's record of version %d holds config %s, not the %s of its meta; nothing was changed",
			job, name, drift, *v.Version, r.ConfigHash(), v.Meta[release.MetaConfigHash])
	}
	if err := checkImage(ctx, opts.Resolver, r.Image.String()); err != nil {
		return nil, fmt.Errorf("cannot roll back %s to %s: %w; nothing was changed", job, name, err)
	}
	if !running {
		// Submit says so itself when it repairs what runs.
		fmt.Fprintf(d.Progress, "==> drift: the %s: restoring the config recorded with version %d as a new version\n", drift, *v.Version)
	}
	r.SubmittedBy = opts.Who
	// The job spec of v's day, not today's: a rollback brings back all of it.
	then := *d
	then.JobSpec = sub.Source
	rec, err := then.Submit(ctx, r, SubmitOptions{Detach: opts.Detach, Wait: opts.Wait})
	if rec != nil && rec.Repair == "" {
		rec.Repair = fmt.Sprintf("the %s: this rollback restored the config recorded with version %d at %s as version %s",
			drift, *v.Version, rec.ConfigPath, rec.Release)
	}
	return rec, err
}

// noSubmission is the refusal of a rollback to version v, whose snapshot
// drifted, when Nomad no longer keeps v's submission: the one record of v's
// config besides the snapshot. Nomad prunes submissions to the newest
// job_tracked_versions whatever their tags, while it keeps tagged versions
// for ever, so an old release can be listed and reverted to but not
// restored. It names the limit and what can still be done.
func noSubmission(job, name, drift string, v *nomad.Job) error {
	e := entry(v, nil)
	env := v.Meta[release.MetaEnvironment]
	return fmt.Errorf("cannot roll back %s to %s: its %s, and Nomad no longer keeps the submission (job source and variables) of version %d to restore it from: "+
		"Nomad keeps those of the job's newest job_tracked_versions versions only (a setting of its servers, 6 unless set), whatever their tags, "+
		"and none whose source is over job_max_source_size. Instead, roll back to a release whose snapshot is intact (deployer history -env %s), "+
		"or release %s's image again with the environment file as it is now (deployer submit -env %s -image %s); nothing was changed",
		job, name, drift, *v.Version, env, name, env, e.Image)
}

// pick finds the target version among versions (newest first).
func pick(versions []*nomad.Job, to Target) (*nomad.Job, error) {
	cur := versions[0]
	switch {
	case to.Tag != "":
		// The oldest with the tag: Job.Scale copies a version's tag into
		// the version it makes, so a newer one may carry it too.
		for _, v := range slices.Backward(versions) {
			if v.VersionTag != nil && v.VersionTag.Name == to.Tag {
				return v, nil
			}
		}
		if m := vN.FindStringSubmatch(to.Tag); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return pick(versions, Target{Version: &n})
		}
		return nil, fmt.Errorf("job %s has no version tagged %q", *cur.ID, to.Tag)
	case to.Version != nil:
		for _, v := range versions {
			if *v.Version == *to.Version {
				return v, nil
			}
		}
		return nil, fmt.Errorf("job %s has no version %d: Nomad keeps every tagged version and the newest job_tracked_versions untagged ones, and now has %d, %d to %d (deployer history lists them)",
			*cur.ID, *to.Version, len(versions), *versions[len(versions)-1].Version, *cur.Version)
	}
	// Before the release that runs: when the current version brought back
	// an older release (a rollback, nomad job revert), the versions between
	// were gone back from, and going back to them would undo the rollback.
	first := origin(versions, 0)
	for i, v := range versions[1:] {
		e := entry(v, nil)
		if *v.Version < *first.Version && e.Stable && e.ByDeployer && !sameRelease(cur, v) && !judgedPair(cur, v) {
			if _, copied := ownVersion(versions, i+1); !copied {
				return v, nil
			}
		}
	}
	if first != cur {
		return nil, fmt.Errorf("job %s has no stable release older than %s, which version %d brought back, to roll back to", *cur.ID, releaseName(first), *cur.Version)
	}
	return nil, fmt.Errorf("job %s has no earlier stable release to roll back to", *cur.ID)
}

// checkImage makes sure the registry still serves the pinned image. A
// registry that does not answer is not proof of absence; that passes.
func checkImage(ctx context.Context, res imageref.Resolver, image string) error {
	ref, err := imageref.Parse(image)
	if err != nil {
		return err
	}
	if ref.Digest == "" {
		return nil
	}
	if _, err := res.Resolve(ctx, ref); err != nil {
		return fmt.Errorf("image %s is no longer pullable: %w", image, err)
	}
	return nil
}

// judgedBefore is how a rollback's watch treats canaries that wait for
// promotion (a release of an environment with an analysis block has
// auto_promote off): a target that is stable had its canary judged and
// promoted when it was released, so its canary is promoted once healthy,
// not judged again. An unstable target's canary waits for a verdict.
func judgedBefore(target *nomad.Job, name, env string) *judging {
	if target.Stable == nil || !*target.Stable {
		return nil
	}
	return &judging{env: env, judged: fmt.Sprintf("the rollback goes back to %s, which passed as a release before (stable); its canary is promoted once healthy, not judged again", name)}
}
