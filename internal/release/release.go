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
)

// Release is what a submit registers as one Nomad job version.
type Release struct {
	Env         *environment.Environment
	Image       imageref.Image
	Config      map[string]string // what the app reads from its environment
	ConfigHash  string
	ConfigPath  string // Consul KV folder of the config snapshot
	GitCommit   string
	SubmittedBy string
}

// Meta is the job meta that identifies the release.
func (r *Release) Meta() map[string]string {
	return map[string]string{
		MetaEnvironment: r.Env.Name,
		MetaImage:       r.Image.String(),
		MetaImageDigest: r.Image.Digest,
		MetaConfigHash:  r.ConfigHash,
		MetaConfigPath:  r.ConfigPath,
		MetaGitCommit:   r.GitCommit,
		MetaSubmittedBy: r.SubmittedBy,
	}
}

// Description is the Markdown the Nomad UI shows on the job page.
func (r *Release) Description() string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s** release of `%s`", r.Env.Name, r.Image.Pinned())
	if r.GitCommit != "" {
		fmt.Fprintf(&b, " (commit `%s`)", r.GitCommit)
	}
	// Who submitted stays in meta only: the description must not change when
	// someone else resubmits the same release.
	fmt.Fprintf(&b, ", config `%s` from Consul KV `%s`", r.ConfigHash, r.ConfigPath)
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
	str("config_path", r.ConfigPath)
	num("cpu", e.Resources.CPU)
	num("memory", e.Resources.Memory)
	fmt.Fprintf(&b, "update = {\n  max_parallel = %d\n  canary = %d\n  auto_revert = %t\n  auto_promote = %t\n"+
		"  min_healthy_time = %s\n  healthy_deadline = %s\n  progress_deadline = %s\n}\n",
		intOr(u.MaxParallel, 1), intOr(u.Canary, 0), boolOr(u.AutoRevert, true), boolOr(u.AutoPromote, false),
		quote(strOr(u.MinHealthyTime, "10s")), quote(strOr(u.HealthyDeadline, "5m")), quote(strOr(u.ProgressDeadline, "10m")))
	b.WriteString("release = {\n")
	meta := r.Meta()
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		fmt.Fprintf(&b, "  %s = %s\n", k, quote(meta[k]))
	}
	b.WriteString("}\n")
	str("description", r.Description())
	return b.String()
}

// quote makes an HCL string literal of s. Go's quoting covers the escapes;
// HCL also reads "${" and "%{" as templates, which doubling turns off.
func quote(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func boolOr(p *bool, d bool) bool {
	if p == nil {
		return d
	}
	return *p
}

func strOr(p *string, d string) string {
	if p == nil {
		return d
	}
	return *p
}

// Name is the release name of a job version: its Nomad version tag.
func Name(version uint64) string { return "v" + strconv.FormatUint(version, 10) }
