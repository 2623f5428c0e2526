package deploy

import (
	"context"
	"errors"
	"strings"
	"sync"
)

// EnvJob is one environment for StatusAll: where its job lives, or why its
// file could not be read.
type EnvJob struct {
	Environment string
	Namespace   string
	Job         string
	Err         error // the environment file is unreadable: no reads are made
}

// Row is one environment in the status of them all.
type Row struct {
	Environment string `json:"environment"`
	Job         string `json:"job,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Registered  bool   `json:"registered"`
	Release     string `json:"release,omitempty"`
	Version     uint64 `json:"version"`
	// Stable says whether the running version's deployment ever succeeded.
	Stable      bool   `json:"stable"`
	Status      string `json:"status,omitempty"` // Nomad's job status
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"` // from the release's meta; "" when unknown
	GitCommit   string `json:"git_commit,omitempty"`
	ConfigHash  string `json:"config_hash,omitempty"`
	// Count is the instances the job asks for; Healthy, those of the
	// running version that passed their deployment's health checks.
	Count      int               `json:"count"`
	Healthy    int               `json:"healthy_allocations"`
	Deployment *DeploymentStatus `json:"deployment,omitempty"`
	Drift      []string          `json:"drift"`
	// Previous is the environment before this one in the pipeline, and
	// SameBuild whether both run the same image: nil when there is none
	// before it, or either runs no image the deployer can tell.
	Previous  string `json:"previous,omitempty"`
	SameBuild *bool  `json:"same_build_as_previous"`
	Error     string `json:"error,omitempty"` // why this environment could not be read
	// URL is the environment's own, its front door's (environment file).
	URL string `json:"url,omitempty"`
	// FrontDoor is "up" or "down: WHY" once the URL was called; "" without one.
	FrontDoor string `json:"front_door,omitempty"`
}

// statusReaders is how many environments StatusAll reads at once: enough
// that the table costs about one environment's reads, few enough not to
// load Nomad with a burst.
const statusReaders = 4

// StatusAll reads each target as Status does, but for the instances'
// addresses, a few at a time, and returns one row per target in their
// order. An environment whose job is not registered is a row that says so;
// one that could not be read holds the error, and the others are still read.
func (d *Deployer) StatusAll(ctx context.Context, targets []EnvJob) []Row {
	rows := make([]Row, len(targets))
	sem := make(chan struct{}, statusReaders)
	var wg sync.WaitGroup
	for i, t := range targets {
		rows[i] = Row{Environment: t.Environment, Job: t.Job, Namespace: t.Namespace, Drift: []string{}}
		if t.Err != nil {
			rows[i].Error = message(t.Err)
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			d.readRow(ctx, &rows[i])
		})
	}
	wg.Wait()
	SameBuilds(rows)
	return rows
}

// readRow fills in row from its job's status.
func (d *Deployer) readRow(ctx context.Context, row *Row) {
	st, j, err := d.readStatus(ctx, row.Namespace, row.Job)
	if err != nil {
		row.Error = message(err)
		return
	}
	if j == nil {
		return
	}
	e := entry(j, nil)
	row.Registered = true
	row.Release, row.Version, row.Stable, row.Status = st.Release, st.Version, st.Stable, st.Status
	row.Image, row.ImageDigest, row.GitCommit, row.ConfigHash = e.Image, e.ImageDigest, e.GitCommit, e.ConfigHash
	row.Healthy, row.Deployment, row.Drift = st.Healthy, st.Deployment, st.Drift
	for _, tg := range j.TaskGroups {
		if tg.Count != nil {
			row.Count += *tg.Count
		}
	}
}

// message is err as the deployer says it: a refused token in one line.
func message(err error) string {
	var denied *DeniedError
	if errors.As(Denied(err), &denied) {
		return denied.Error()
	}
	return err.Error()
}

// SameBuilds says of each row after the first whether it runs the same
// build as the row before it.
func SameBuilds(rows []Row) {
	for i := range rows {
		rows[i].Previous, rows[i].SameBuild = "", nil
		if i == 0 {
			continue
		}
		rows[i].Previous = rows[i-1].Environment
		a, b := BuildOf(rows[i-1]), BuildOf(rows[i])
		if a != "" && b != "" {
			same := a == b
			rows[i].SameBuild = &same
		}
	}
}

// BuildOf identifies the build a row runs: its image digest, from the
// release's meta or else the pinned reference; the reference itself when it
// pins no digest; "" when the row runs nothing.
func BuildOf(r Row) string {
	if r.ImageDigest != "" {
		return r.ImageDigest
	}
	if _, digest, ok := strings.Cut(r.Image, "@"); ok {
		return digest
	}
	return r.Image
}
