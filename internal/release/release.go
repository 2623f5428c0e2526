// Package release defines a release: one pinned image bundled with one
// environment's config, and how it is written into a Nomad job's variables
// and meta.
package release

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
)

// Meta keys the deployer writes into every job version it registers. A
// version without MetaConfigPath was not made by the deployer.
const (
	MetaEnvironment = "release_environment"
	MetaImage       = "release_image"        // the reference as given
	MetaImageDigest = "release_image_digest" // sha256:..., "" when unknown
	MetaConfigHash  = "release_config_hash"
	MetaConfigPath  = "release_config_path"
	MetaGitCommit   = "release_git_commit"
	MetaSubmittedBy = "release_submitted_by"
	// MetaPromotedFrom names the release a promotion took its build from
	// ("test v7"); only promoted releases have it.
	MetaPromotedFrom = "release_promoted_from"
)

// Release is what a submit registers as one Nomad job version. Make one with
// New, which derives the config, its hash and its snapshot path from the
// environment, so that they cannot disagree.
type Release struct {
	Env         *environment.Environment
	Image       imageref.Image
	GitCommit   string
	SubmittedBy string
	// PromotedFrom is the release whose build this one carries to another
	// environment ("test v7"); empty for a release submitted directly.
	PromotedFrom string
	// Hosts are /etc/hosts entries for the task, "NAME:IP": the host names
	// an environment file uses that only a local stack resolves (on a real
	// cluster, DNS does, and Hosts is empty).
	Hosts []string

	config map[string]string
	hash   string
	path   string
}

// Paths names the Consul KV folder of a config snapshot from its name;
// *configstore.Store is one.
type Paths interface {
	Path(namespace, job, name string) string
}

// New bundles an image with an environment's config into a release whose
// config snapshot lives where paths says.
func New(env *environment.Environment, img imageref.Image, gitCommit, submittedBy string, paths Paths) *Release {
	values := env.Config.Values()
	hash := configstore.Hash(values)
	return &Release{
		Env: env, Image: img, GitCommit: gitCommit, SubmittedBy: submittedBy,
		config: values, hash: hash, path: paths.Path(env.Namespace, env.Job, hash),
	}
}

// WithSnapshot returns the release with its config at the snapshot called
// name, which must be one of its config's (its hash, or a repair of it).
func (r *Release) WithSnapshot(name string, paths Paths) (*Release, error) {
	if configstore.HashOf(name) != r.hash {
		return nil, fmt.Errorf("snapshot %q does not hold config %s", name, r.hash)
	}
	cp := *r
	cp.path = paths.Path(r.Env.Namespace, r.Env.Job, name)
	return &cp, nil
}

// Config is what the app reads from its environment, as written to the
// release's snapshot.
func (r *Release) Config() map[string]string { return maps.Clone(r.config) }

// ConfigHash is the content hash of Config.
func (r *Release) ConfigHash() string { return r.hash }

// ConfigPath is the Consul KV folder of the release's config snapshot.
func (r *Release) ConfigPath() string { return r.path }

// Meta is the job meta that identifies the release.
func (r *Release) Meta() map[string]string {
	m := map[string]string{
		MetaEnvironment: r.Env.Name,
		MetaImage:       r.Image.String(),
		MetaImageDigest: r.Image.Digest,
		MetaConfigHash:  r.hash,
		MetaConfigPath:  r.path,
		MetaGitCommit:   r.GitCommit,
		MetaSubmittedBy: r.SubmittedBy,
	}
	if r.PromotedFrom != "" {
		m[MetaPromotedFrom] = r.PromotedFrom
	}
	return m
}

// Description says what the release is, in plain text: the Nomad UI shows it
// on the job page and, as the version tag's description, on the Versions
// page, which does not render Markdown.
func (r *Release) Description() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s release of %s", r.Env.Name, r.Image.Pinned())
	if r.GitCommit != "" {
		fmt.Fprintf(&b, " (commit %s)", r.GitCommit)
	}
	if r.PromotedFrom != "" {
		fmt.Fprintf(&b, ", promoted from %s", r.PromotedFrom)
	}
	// Who submitted stays in meta only: the description must not change when
	// someone else resubmits the same release.
	fmt.Fprintf(&b, ", config %s from Consul KV %s", r.hash, r.path)
	b.WriteString(". Revert to an earlier version to bring back its image and its config.")
	return b.String()
}

// Variables renders the jobspec's HCL variables for this release.
func (r *Release) Variables() string {
	e := r.Env
	u := e.Update
	var b strings.Builder
	str := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, quote(v)) }
	num := func(k string, v int) { fmt.Fprintf(&b, "%s = %d\n", k, v) }
	str("job_name", e.Job)
	str("namespace", e.Namespace)
	quoted := make([]string, len(e.Datacenters))
	for i, dc := range e.Datacenters {
		quoted[i] = quote(dc)
	}
	fmt.Fprintf(&b, "datacenters = [%s]\n", strings.Join(quoted, ", "))
	num("count", e.Count)
	str("image", r.Image.Pinned())
	str("config_path", r.path)
	num("cpu", e.Resources.CPU)
	num("memory", e.Resources.Memory)
	fmt.Fprintf(&b, "update = {\n  max_parallel = %d\n  canary = %d\n  auto_revert = %t\n  auto_promote = %t\n"+
		"  min_healthy_time = %s\n  healthy_deadline = %s\n  progress_deadline = %s\n}\n",
		*u.MaxParallel, *u.Canary, *u.AutoRevert, *u.AutoPromote,
		quote(*u.MinHealthyTime), quote(*u.HealthyDeadline), quote(*u.ProgressDeadline))
	b.WriteString("release = {\n")
	meta := r.Meta()
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		fmt.Fprintf(&b, "  %s = %s\n", k, quote(meta[k]))
	}
	b.WriteString("}\n")
	str("description", r.Description())
	// Written only when set, so that a release without them has the
	// variables it had before the job spec knew them.
	if len(r.Hosts) > 0 {
		quoted := make([]string, len(r.Hosts))
		for i, h := range r.Hosts {
			quoted[i] = quote(h)
		}
		fmt.Fprintf(&b, "extra_hosts = [%s]\n", strings.Join(quoted, ", "))
	}
	// The config itself goes with the job version's submission, which Nomad
	// keeps: a snapshot edited or deleted in Consul can be restored from it
	// (see FromVariables).
	b.WriteString("config = {\n")
	for _, k := range slices.Sorted(maps.Keys(r.config)) {
		fmt.Fprintf(&b, "  %s = %s\n", quote(k), quote(r.config[k]))
	}
	b.WriteString("}\n")
	return b.String()
}

// quote makes an HCL string literal of s. Go's quoting covers the escapes;
// HCL also reads "${" and "%{" as templates, which doubling turns off.
func quote(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

// Name is the release name of a job version: its Nomad version tag.
func Name(version uint64) string { return "v" + strconv.FormatUint(version, 10) }
