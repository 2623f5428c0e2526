package deploy

import (
	"context"
	"fmt"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// Verdict is what a deployment that waits for one can be given, as Nomad's
// API offers it: promote its canaries, or fail it.
type Verdict string

const (
	Promote Verdict = "promote" // promote every canary, rolling the version out
	Fail    Verdict = "fail"    // fail the deployment; Nomad reverts it where auto_revert is set
)

// VerdictOptions tune Decide.
type VerdictOptions struct {
	Env    string // the environment's name, for the record
	Who    string // who gives the verdict, for the lock's holder
	Detach bool   // return once Nomad took the verdict, without watching
}

// Decide gives the job's deployment under way the verdict v and, unless
// detached, watches it end. It holds the job's deploy lock meanwhile, as
// submit does, so that no release cancels the deployment it decides. A job
// with no deployment under way is an error: there is nothing to decide.
func (d *Deployer) Decide(ctx context.Context, ns, job string, v Verdict, opts VerdictOptions) (*Record, error) {
	if v != Promote && v != Fail {
		return nil, fmt.Errorf("no verdict %q: promote or fail", v)
	}
	l, err := d.lock(ctx, ns, job, fmt.Sprintf("%s, deployment %s", opts.Who, v))
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	dep, _, err := d.Jobs.LatestDeployment(job, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("read the latest deployment of %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	if dep == nil || !activeDeployment(dep.Status) {
		latest := "none"
		if dep != nil {
			latest = fmt.Sprintf("%s of job version %d, %s", short(dep.ID), dep.JobVersion, dep.Status)
		}
		return nil, fmt.Errorf("job %s has no deployment under way to %s (latest: %s); nothing was changed", job, v, latest)
	}
	rec, err := d.recordOf(ctx, ns, job, dep.JobVersion)
	if err != nil {
		return nil, err
	}
	rec.Environment, rec.DeploymentID = opts.Env, dep.ID
	wo := (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx)
	var resp *nomad.DeploymentUpdateResponse
	if v == Promote {
		resp, _, err = d.Deploys.PromoteAll(dep.ID, wo)
	} else {
		resp, _, err = d.Deploys.Fail(dep.ID, wo)
	}
	if err != nil {
		return nil, fmt.Errorf("%s deployment %s of job %s version %d with Nomad at %s: %w", v, short(dep.ID), job, dep.JobVersion, d.NomadAddr, err)
	}
	rec.EvalID = resp.EvalID
	fmt.Fprintf(d.Progress, "==> %s: Nomad took the verdict on deployment %s of %s (job %s version %d)\n", v, short(dep.ID), rec.Release, job, dep.JobVersion)
	return d.followLocked(ctx, rec, opts.Detach, l.lost)
}

// recordOf is the record of job version version as the deployer made it,
// from the version's meta.
func (d *Deployer) recordOf(ctx context.Context, ns, job string, version uint64) (*Record, error) {
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	for _, j := range versions {
		if *j.Version != version {
			continue
		}
		name := release.Name(version)
		if j.VersionTag != nil && j.VersionTag.Name != "" {
			name = j.VersionTag.Name
		}
		v := version
		return &Record{Job: job, Namespace: ns, Release: name, Version: &v, UI: d.uiURL(ns, job),
			Image: taskImage(j), ImageDigest: j.Meta[release.MetaImageDigest],
			ConfigHash: j.Meta[release.MetaConfigHash], ConfigPath: j.Meta[release.MetaConfigPath],
			GitCommit: j.Meta[release.MetaGitCommit], SubmittedBy: j.Meta[release.MetaSubmittedBy],
			PromotedFrom: j.Meta[release.MetaPromotedFrom]}, nil
	}
	return nil, fmt.Errorf("job %s has no version %d", job, version)
}
