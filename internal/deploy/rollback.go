package deploy

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
)

// Target names the version to roll back to: By tag name (or vN), by version
// number, or, with neither, the newest stable version older than the
// current one that runs a different release.
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
// enforced against the version that was current when checked.
func (d *Deployer) Rollback(ctx context.Context, ns, job string, to Target, opts RollbackOptions) (*Record, error) {
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("job %s has no releases in namespace %s", job, ns)
		}
		return nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	cur := versions[0]
	target, err := pick(versions, to)
	if err != nil {
		return nil, err
	}
	curE, tgtE := entry(cur, nil), entry(target, nil)
	rec := &Record{
		UI:  d.uiURL(ns, job),
		Job: job, Namespace: ns, Environment: target.Meta[release.MetaEnvironment],
		Image: tgtE.Image, ImageDigest: tgtE.ImageDigest, ConfigHash: tgtE.ConfigHash, ConfigPath: tgtE.ConfigPath,
		GitCommit: tgtE.GitCommit, SubmittedBy: opts.Who,
	}
	if *target.Version == *cur.Version || sameRelease(&curE, &tgtE) {
		v := *cur.Version
		rec.Version, rec.Release, rec.Outcome = &v, curE.Release, NoChange
		rec.Detail = fmt.Sprintf("job %s already runs %s (version %d is the same release)", job, tgtE.Release, *target.Version)
		rec.URLs = d.urls(ctx, job, rec.ConfigHash)
		return rec, nil
	}
	if !tgtE.ByDeployer {
		return nil, fmt.Errorf("version %d of %s was not made by the deployer (no %s in its meta): its config cannot be checked; use nomad job revert if you mean it",
			*target.Version, job, release.MetaConfigPath)
	}

	// The version's config must still be there, as written.
	values, found, err := d.Store.Get(ctx, tgtE.ConfigPath)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("cannot roll back %s to %s: its config snapshot %s is gone from Consul, so the app would wait for it forever; nothing was changed",
			job, tgtE.Release, tgtE.ConfigPath)
	}
	if h := configstore.Hash(values); h != tgtE.ConfigHash {
		return nil, fmt.Errorf("cannot roll back %s to %s: its config snapshot %s was edited (content hash %s, want %s); nothing was changed",
			job, tgtE.Release, tgtE.ConfigPath, h, tgtE.ConfigHash)
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

	// A wait here is bounded by EnforcePriorVersion below: a release that
	// landed meanwhile makes the revert a conflict, not a surprise.
	unlock, _, err := d.acquire(ctx, ns, job, fmt.Sprintf("%s, rollback to %s", opts.Who, tgtE.Release), opts.Wait)
	if err != nil {
		return nil, err
	}
	defer unlock()
	prior := *cur.Version
	resp, _, err := d.Jobs.Revert(job, *target.Version, &prior, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx), "", "")
	if err != nil {
		if isConflict(err) {
			return nil, &ConflictError{Job: job, Err: fmt.Errorf("it changed since this command read it (%w); look again (history) and retry", err)}
		}
		return nil, fmt.Errorf("revert job %s to version %d with Nomad at %s: %w", job, *target.Version, d.NomadAddr, err)
	}
	rec.EvalID = resp.EvalID
	if err := d.nameVersion(ctx, rec, resp.JobModifyIndex, fmt.Sprintf("rollback to %s by %s", tgtE.Release, opts.Who)); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.Progress, "==> reverted %s to %s (version %d) as version %d (eval %s)\n", job, tgtE.Release, *target.Version, *rec.Version, short(resp.EvalID))
	return d.follow(ctx, rec, opts.Detach)
}

// pick finds the target version among versions (newest first).
func pick(versions []*nomad.Job, to Target) (*nomad.Job, error) {
	cur := versions[0]
	switch {
	case to.Tag != "":
		for _, v := range versions {
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
		return nil, fmt.Errorf("job %s has no version %d (Nomad keeps %d versions: %d to %d, and tagged ones)",
			*cur.ID, *to.Version, len(versions), *versions[len(versions)-1].Version, *cur.Version)
	}
	curE := entry(cur, nil)
	for _, v := range versions[1:] {
		e := entry(v, nil)
		if e.Stable && e.ByDeployer && !sameRelease(&curE, &e) {
			return v, nil
		}
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
