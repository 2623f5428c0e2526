package deploy

import (
	"context"
	"fmt"
	"slices"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// GCResult says what gc kept and removed.
type GCResult struct {
	Job       string   `json:"job"`
	Kept      []string `json:"kept"`    // snapshot paths a retained version uses
	Deleted   []string `json:"deleted"` // snapshot paths no version uses
	Untagged  []string `json:"untagged,omitempty"`
	DryRun    bool     `json:"dry_run"`
	Retained  int      `json:"retained_versions"`
	Remaining int      `json:"tagged_versions"`
}

// GC deletes the job's config snapshots that no job version Nomad retains
// refers to, tagged or not. Afterwards every snapshot of the job is one a
// retained version names in its meta, and every retained version keeps the
// snapshot it names (GC deletes no other; one already deleted by hand stays
// missing, as status says). Nomad keeps every tagged version, so with
// keep > 0 it first removes the release tags of all but the newest keep
// versions, letting Nomad's own limit (job_tracked_versions untagged
// versions) apply to them. Nomad applies it as each tag is removed, as it
// does when a version is registered, dropping versions at once, so GC reads
// the versions again after untagging and deletes those versions' snapshots
// in the same run. GC reads the versions and deletes under the job's deploy
// lock, so a submit between writing a snapshot and registering its job
// cannot lose it; a version made meanwhile by hand (nomad job revert, the
// UI) can only name the snapshot of a version GC read, which it keeps.
func (d *Deployer) GC(ctx context.Context, ns, job string, keep int, dryRun bool, who string) (*GCResult, error) {
	l, err := d.lock(ctx, ns, job, who+", gc")
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	// A deployment under way, or about to start, may still need what gc
	// would untag or delete: its version's evaluation has not run yet.
	if err := d.idle(ctx, ns, job); err != nil {
		return nil, err
	}

	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	versions, _, _, err := d.Jobs.Versions(job, false, q)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("job %s is not registered in namespace %s: gc only removes snapshots of a job it can see", job, ns)
		}
		return nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	res := &GCResult{Job: job, DryRun: dryRun, Retained: len(versions), Kept: []string{}, Deleted: []string{}}

	if keep > 0 {
		for i, v := range versions {
			if i < keep || v.VersionTag == nil || !vN.MatchString(v.VersionTag.Name) {
				continue
			}
			res.Untagged = append(res.Untagged, v.VersionTag.Name)
			if dryRun {
				continue
			}
			if _, err := d.Jobs.UntagVersion(job, v.VersionTag.Name, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx)); err != nil {
				return res, fmt.Errorf("untag %s of %s: %w", v.VersionTag.Name, job, err)
			}
		}
	}
	if len(res.Untagged) > 0 && !dryRun {
		// Each untag let Nomad drop an untagged version over its limit.
		if versions, _, _, err = d.Jobs.Versions(job, false, q); err != nil {
			return res, fmt.Errorf("read versions of job %s from Nomad at %s after untagging: %w", job, d.NomadAddr, err)
		}
		res.Retained = len(versions)
	}
	for _, v := range versions {
		if v.VersionTag != nil {
			res.Remaining++
		}
	}

	used := map[string]bool{}
	for _, v := range versions {
		if p := v.Meta[release.MetaConfigPath]; p != "" {
			used[p] = true
		}
		// And what it reads: a version made outside the deployer may read
		// another snapshot than its meta names.
		for _, p := range readPaths(v) {
			used[p] = true
		}
	}
	names, err := d.Store.List(ctx, ns, job)
	if err != nil {
		return res, err
	}
	slices.Sort(names)
	for _, name := range names {
		path := d.Store.Path(ns, job, name)
		if used[path] {
			res.Kept = append(res.Kept, path)
			continue
		}
		res.Deleted = append(res.Deleted, path)
		if dryRun {
			continue
		}
		if err := d.Store.Delete(ctx, path); err != nil {
			return res, err
		}
	}
	return res, nil
}
