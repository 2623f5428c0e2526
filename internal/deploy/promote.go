package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
)

// Build is what a promotion carries from one environment to another: the
// image, pinned by digest, and the commit it was built from.
type Build struct {
	Image     imageref.Ref
	GitCommit string
	// From names the source release: "test v7".
	From string
}

// PromotableBuild reads the build of a release of the source environment's
// job (the running one when to names none) and checks that it may go
// further: made by the deployer, pinned by digest, stable (its deployment
// succeeded), its config snapshot as released, and, for the running one,
// healthy instances and no drift. Nothing is written.
func (d *Deployer) PromotableBuild(ctx context.Context, env, ns, job string, to Target) (*Build, error) {
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("cannot promote from %s: job %s has no releases in namespace %s", env, job, ns)
		}
		return nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	v := versions[0]
	if to.Tag != "" || to.Version != nil {
		if v, err = pick(versions, to); err != nil {
			return nil, err
		}
	}
	e := entry(v, nil)
	name := env + " " + e.Release
	if r := judgedReleaseOf(versions, v); r != nil {
		// The build is the release's: its copy only turned auto_promote on
		// after the analysis passed it (judged.go).
		name = fmt.Sprintf("%s %s (judged copy %s)", env, releaseName(r), e.Release)
	}
	refuse := func(why string, args ...any) error {
		return fmt.Errorf("cannot promote %s: %s; nothing was changed", name, fmt.Sprintf(why, args...))
	}
	switch {
	case !e.ByDeployer:
		return nil, refuse("job version %d was not made by the deployer, so nothing says which build it is", e.Version)
	case e.ImageDigest == "":
		return nil, refuse("its image %s is not pinned by a digest, so the same build cannot be named elsewhere", e.Image)
	case !e.Stable:
		return nil, refuse("it is not stable: its deployment has not succeeded (deployer history -env %s)", env)
	}
	// What ran there, not what its meta says: a version made outside the
	// deployer (nomad job scale, a UI edit of its image) keeps the meta.
	if lin := lineage(versions, slices.Index(versions, v)); len(lin.Drift) > 0 {
		return nil, refuse("it has drifted: %s (deployer status -env %s)", strings.Join(lin.Drift, "; "), env)
	}
	values, found, err := d.Store.Get(ctx, e.ConfigPath)
	if err != nil {
		return nil, err
	}
	if !found || configstore.Hash(values) != e.ConfigHash {
		return nil, refuse("its config snapshot %s was edited or deleted in Consul, so what passed there is not what ran as released (deployer status -env %s)", e.ConfigPath, env)
	}
	if *v.Version == *versions[0].Version {
		// Of status's drift checks, the checks above make all but a
		// stopped job, which the version read says.
		if v.Stop != nil && *v.Stop {
			return nil, refuse("it has drifted: the job is stopped")
		}
		// Passing in Consul, not healthy in a deployment: an instance
		// that Nomad updated in place (an auto-revert to an identical
		// version) has no deployment health of its own.
		urls, err := d.passing(ctx, job, e.ConfigHash)
		if err != nil {
			return nil, err
		}
		if len(urls) == 0 {
			return nil, refuse("no instance of it passes its health check now")
		}
	}
	ref, err := imageref.Parse(v.Meta[release.MetaImage])
	if err != nil {
		return nil, refuse("its recorded image: %v", err)
	}
	ref.Digest = e.ImageDigest
	return &Build{Image: ref, GitCommit: e.GitCommit, From: name}, nil
}

// Promote releases r, which carries a Build of another environment, like
// Submit: its plan, lock and settled check decide whether the environment
// already runs that build with this environment's config (and so changes
// nothing), not a look at the running version's meta, which would miss a
// changed count, resources or update block, and a deployment of that build
// still running or failed. Which release of the source it names is not a
// change by itself; the record says where it came from either way.
func (d *Deployer) Promote(ctx context.Context, r *release.Release, opts SubmitOptions) (*Record, error) {
	opts.promoted = true
	rec, err := d.Submit(ctx, r, opts)
	if err == nil && rec.Outcome == NoChange {
		rec.Detail = fmt.Sprintf("job %s %s already runs the build of %s (%s) with this config", r.Env.Job, rec.Release, r.PromotedFrom, r.Image.Digest)
	}
	return rec, err
}
