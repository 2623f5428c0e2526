package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/release"
)

// Status is the running release and whether it still is what was released.
type Status struct {
	Job       string `json:"job"`
	Namespace string `json:"namespace"`
	// Release is the release the running version runs: the one its meta
	// names. Version is the running job version; ReleaseVersion, the
	// version the deployer registered for the release, which differs when
	// the running one was made outside the deployer (MadeOutside).
	Release        string `json:"release"`
	Version        uint64 `json:"version"`
	ReleaseVersion uint64 `json:"release_version"`
	MadeOutside    bool   `json:"made_outside_deployer"`
	// Stable says whether the running version's deployment ever succeeded.
	Stable     bool              `json:"stable"`
	Status     string            `json:"status"` // Nomad's job status
	Image      string            `json:"image"`
	ConfigHash string            `json:"config_hash,omitempty"`
	ConfigPath string            `json:"config_path,omitempty"`
	Config     map[string]string `json:"config,omitempty"`
	Deployment *DeploymentStatus `json:"deployment,omitempty"`
	Allocs     map[string]int    `json:"allocations"` // client status -> count, current version only
	// Healthy counts the running version's allocations that run now and
	// pass their health checks now (in Consul, else by their deployment's
	// verdict): not failed or lost ones, whose deployment verdict stays.
	Healthy int `json:"healthy_allocations"`
	// Nodes are the same allocations by client node, by node name.
	Nodes []NodeAllocs `json:"nodes"`
	Drift []string     `json:"drift"` // empty when the job runs what was released
	// URLs are the running release's instances that pass their checks.
	URLs []string `json:"urls,omitempty"`
	// URL is the environment's own, its front door's (environment file).
	URL string `json:"url,omitempty"`
	// FrontDoor is "up" or "down: WHY" once the URL was called; "" without one.
	FrontDoor string `json:"front_door,omitempty"`
	UI        string `json:"ui,omitempty"`
}

// NodeAllocs are the current version's allocations on one client node.
type NodeAllocs struct {
	Node    string         `json:"node"`
	Allocs  map[string]int `json:"allocations"` // client status -> count
	Healthy int            `json:"healthy_allocations"`
}

// DeploymentStatus is the latest deployment's state.
type DeploymentStatus struct {
	ID          string `json:"id"`
	Version     uint64 `json:"job_version"`
	Status      string `json:"status"`
	Description string `json:"description"`
	// AwaitingPromotion, when set, says which task groups' canaries are
	// healthy and wait for a verdict (auto_promote = false): Nomad neither
	// promotes nor fails them by itself.
	AwaitingPromotion string `json:"awaiting_promotion,omitempty"`
	// CanariesHealthySince is when the last waiting canary turned healthy:
	// where an analysis of it starts (deployer analyze).
	CanariesHealthySince *time.Time `json:"canaries_healthy_since,omitempty"`
	// Revert, when set, says that the waiting version was made outside the
	// deployer (nomad job revert, a Nomad UI revert) from a release whose
	// auto_promote is off, and which version to revert to instead.
	Revert string `json:"revert,omitempty"`
}

// Status reads the job's current version, its deployment and allocations,
// and checks for drift: a version the deployer did not make, and a config
// snapshot that is gone or was edited in Consul.
func (d *Deployer) Status(ctx context.Context, ns, job string) (*Status, error) {
	st, j, err := d.readStatus(ctx, ns, job)
	if err != nil {
		return nil, err
	}
	if j == nil {
		return nil, fmt.Errorf("job %s is not registered in namespace %s (Nomad at %s)", job, ns, d.NomadAddr)
	}
	if st.ConfigHash != "" {
		st.URLs = d.urls(ctx, job, st.ConfigHash)
	}
	st.UI = d.uiURL(ns, job)
	return st, nil
}

// readStatus makes Status's reads of Nomad and Consul but the instances':
// the job, its snapshot, its latest deployment and its allocations. It
// returns the job as read, and a nil job when none is registered.
func (d *Deployer) readStatus(ctx context.Context, ns, job string) (*Status, *nomad.Job, error) {
	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	j, _, err := d.Jobs.Info(job, q)
	if err != nil {
		if isNotFound(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("read job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	e := entry(j, nil)
	st := &Status{
		Job: job, Namespace: ns, Release: e.Release, Version: e.Version, ReleaseVersion: e.Version, Stable: e.Stable, Status: *j.Status,
		Image: e.Image, ConfigHash: e.ConfigHash, ConfigPath: e.ConfigPath,
		Allocs: map[string]int{}, Drift: []string{},
	}
	if j.Stop != nil && *j.Stop {
		st.Drift = append(st.Drift, "the job is stopped")
	}

	var copyOf *nomad.Job // the release a version made outside the deployer copies
	if !e.ByDeployer {
		st.Drift = append(st.Drift, fmt.Sprintf("version %d was not made by the deployer (no %s in its meta): registered by hand, e.g. nomad job run",
			e.Version, release.MetaConfigPath))
	} else {
		lin, err := d.lineageOf(ctx, ns, j)
		if err != nil {
			return nil, nil, err
		}
		st.Drift = append(st.Drift, lin.Drift...)
		if lin.Copy {
			copyOf = lin.Own
			st.Release, st.ReleaseVersion, st.MadeOutside = releaseName(lin.Own), *lin.Own.Version, true
		}
		values, found, err := d.Store.Get(ctx, e.ConfigPath)
		switch {
		case err != nil:
			return nil, nil, err
		case !found:
			st.Drift = append(st.Drift, fmt.Sprintf("config snapshot %s is missing from Consul: the app cannot render its config on restart", e.ConfigPath))
		default:
			st.Config = values
			if h := configstore.Hash(values); h != e.ConfigHash {
				st.Drift = append(st.Drift, fmt.Sprintf("config snapshot %s was edited by hand: content hash %s, released as %s", e.ConfigPath, h, e.ConfigHash))
			}
		}
	}

	if dep, _, err := d.Jobs.LatestDeployment(job, q); err == nil && dep != nil {
		st.Deployment = &DeploymentStatus{ID: dep.ID, Version: dep.JobVersion, Status: dep.Status, Description: dep.StatusDescription}
		if dep.Status == "running" && awaitingPromotion(dep) {
			st.Deployment.AwaitingPromotion = canaryState(dep)
			if copyOf != nil && dep.JobVersion == e.Version {
				st.Deployment.Revert = d.revertNote(ctx, ns, job, e.Version, copyOf)
			}
			if d.Deploys != nil {
				if since, err := d.healthySince(ctx, ns, dep, waitingCanaries(dep)); err == nil {
					st.Deployment.CanariesHealthySince = &since
				}
			}
		}
	}
	allocs, _, err := d.Jobs.Allocations(job, false, q)
	if err != nil {
		return nil, nil, fmt.Errorf("read allocations of %s: %w", job, err)
	}
	passing, checked := d.passingAllocs(ctx, job)
	st.Nodes = []NodeAllocs{}
	for _, a := range allocs {
		if a.JobVersion != e.Version {
			continue
		}
		i := slices.IndexFunc(st.Nodes, func(n NodeAllocs) bool { return n.Node == a.NodeName })
		if i < 0 {
			i = len(st.Nodes)
			st.Nodes = append(st.Nodes, NodeAllocs{Node: a.NodeName, Allocs: map[string]int{}})
		}
		st.Allocs[a.ClientStatus]++
		st.Nodes[i].Allocs[a.ClientStatus]++
		if healthyNow(a, passing, checked) {
			st.Healthy++
			st.Nodes[i].Healthy++
		}
	}
	slices.SortFunc(st.Nodes, func(a, b NodeAllocs) int { return strings.Compare(a.Node, b.Node) })
	slices.Sort(st.Drift)
	return st, j, nil
}

// lineageOf finds what the registered job j runs. A version tagged with
// its own number is one the deployer registered, and is judged alone; any
// other takes the version history to find the release's own version.
func (d *Deployer) lineageOf(ctx context.Context, ns string, j *nomad.Job) (Lineage, error) {
	if isOwnRelease(j) {
		return Lineage{Own: j, Drift: selfDrift(j, true)}, nil
	}
	versions, _, _, err := d.Jobs.Versions(*j.ID, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return Lineage{}, fmt.Errorf("read versions of job %s from Nomad at %s: %w", *j.ID, d.NomadAddr, err)
	}
	i := slices.IndexFunc(versions, func(v *nomad.Job) bool { return *v.Version == *j.Version })
	if i < 0 {
		versions, i = append([]*nomad.Job{j}, versions...), 0
	}
	return lineage(versions, i), nil
}

// passingAllocs lists the allocations whose instance of the job's service
// passes its checks in Consul now, by allocation ID; checked is false when
// Consul could not say (no Consul, or a token that may not read it).
func (d *Deployer) passingAllocs(ctx context.Context, service string) (passing map[string]bool, checked bool) {
	if d.Instances == nil {
		return nil, false
	}
	entries, err := d.instances(ctx, service, "", true)
	if err != nil {
		return nil, false
	}
	passing = map[string]bool{}
	for _, e := range entries {
		// Nomad names a service instance _nomad-task-ALLOCID-...
		// (client/serviceregistration/id.go).
		if id, ok := strings.CutPrefix(e.Service.ID, "_nomad-task-"); ok && len(id) >= 36 {
			passing[id[:36]] = true
		}
	}
	return passing, true
}

// healthyNow says whether allocation a serves now: it runs, is meant to,
// and passes its checks; where Consul could not be asked, its deployment
// found it healthy. A deployment's verdict alone is not enough: Nomad never
// takes it back from an allocation that failed or was lost afterwards.
func healthyNow(a *nomad.AllocationListStub, passing map[string]bool, checked bool) bool {
	if a.ClientStatus != nomad.AllocClientStatusRunning || a.DesiredStatus != nomad.AllocDesiredStatusRun {
		return false
	}
	if checked {
		return passing[a.ID]
	}
	return a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil && *a.DeploymentStatus.Healthy
}

// revertNote explains a deployment of version, made outside the deployer
// from the release own, that waits for promotion: own has auto_promote off,
// and the release's judged copy, when it has one, would not have waited.
func (d *Deployer) revertNote(ctx context.Context, ns, job string, version uint64, own *nomad.Job) string {
	note := fmt.Sprintf("job version %d was made outside the deployer from %s (nomad job revert or a Nomad UI revert), and %s has auto_promote off, so its canary waits for a promotion nobody gives",
		version, releaseName(own), releaseName(own))
	versions, _, _, err := d.Jobs.Versions(job, false, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		return note
	}
	if c := judgedCopyOf(versions, own); c != nil {
		return fmt.Sprintf("%s; %s is its judged copy (auto_promote on): revert to %s instead, it promotes itself", note, releaseName(c), releaseName(c))
	}
	return note
}
