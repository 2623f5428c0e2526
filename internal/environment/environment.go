// Package environment reads the per-environment files in environments/: the
// values that, bundled with one image, make a release for that environment.
package environment

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/kodekloud/counter/internal/access"
)

// DefaultDir is the folder of environment files, relative to the checkout's
// root, that the commands read unless told another.
const DefaultDir = "environments"

// Environment is one decoded environments/NAME.hcl.
type Environment struct {
	Name string // from the file name: dev.hcl is "dev"
	File string // path it was read from

	Job         string   `hcl:"job,optional"`
	Namespace   string   `hcl:"namespace,optional"`
	Datacenters []string `hcl:"datacenters"`
	Count       int      `hcl:"count,optional"`
	// URL is where users reach the environment: its front door (HAProxy
	// fed from Consul), which stays the same across releases while each
	// instance's dynamic port does not. "" for an environment without one.
	URL string `hcl:"url,optional"`

	Config    Config     `hcl:"config,block"`
	Resources *Resources `hcl:"resources,block"`
	Update    *Update    `hcl:"update,block"`
	// Analysis is how a canary is judged by what it serves before the
	// deployer promotes or fails it (docs/analysis.md); nil without an
	// analysis block. With one, Update.AutoPromote is false.
	Analysis *Analysis `hcl:"analysis,block"`

	// file is the parsed source, kept for Refuse; nil for an Environment
	// made in code.
	file *hcl.File
}

// Set reports whether the file sets attribute name of block ("" for the
// top level). Every value of an Environment made in code counts as set.
func (e *Environment) Set(block, name string) bool {
	if e.file == nil {
		return true
	}
	b := e.file.Body.(*hclsyntax.Body)
	if block != "" {
		b = blockBody(b, block)
	}
	_, ok := b.Attributes[name]
	return ok
}

// Refuse returns an *Error, as Parse does, for a value that only a later
// step can find at fault (against the job spec, say): it points at
// attribute name of block ("" for the top level), or at the block, or the
// file, when the file leaves that attribute unset.
func (e *Environment) Refuse(block, name, summary, detail string) error {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
	if e.file == nil {
		// Made from a release's recorded variables (a rollback), not read
		// from a file.
		where := e.File
		if where == "" {
			where = fmt.Sprintf("environment %s as its release recorded it", e.Name)
		}
		d.Summary = where + ": " + summary
		return &Error{Diags: hcl.Diagnostics{d}}
	}
	d.Subject = attrRange(e.file.Body.(*hclsyntax.Body), block, name).Ptr()
	return &Error{Diags: hcl.Diagnostics{d}, files: map[string]*hcl.File{e.File: e.file}}
}

// Config is the configuration the app reads from its environment. Its values
// go into the release's Consul KV snapshot, from which Nomad renders them.
type Config struct {
	Host string `hcl:"HOST"`
	Port int    `hcl:"PORT"`
}

// Resources are the task's Nomad resources.
type Resources struct {
	CPU    int `hcl:"cpu,optional"`    // MHz
	Memory int `hcl:"memory,optional"` // MiB
}

// Update is the job's Nomad update strategy. Parse fills in every field the
// file leaves out from the defaults below, so that render, plan and the job
// version all show the values Nomad runs with.
type Update struct {
	MaxParallel      *int    `hcl:"max_parallel,optional"`
	Canary           *int    `hcl:"canary,optional"`
	AutoRevert       *bool   `hcl:"auto_revert,optional"`
	AutoPromote      *bool   `hcl:"auto_promote,optional"`
	MinHealthyTime   *string `hcl:"min_healthy_time,optional"`
	HealthyDeadline  *string `hcl:"healthy_deadline,optional"`
	ProgressDeadline *string `hcl:"progress_deadline,optional"`
}

// Values returns the config as the environment variables the app reads.
func (c Config) Values() map[string]string {
	return map[string]string{"HOST": c.Host, "PORT": strconv.Itoa(c.Port)}
}

// Error is an invalid environment file. Each diagnostic reads
// "FILE:LINE,COL: summary: detail", then the source line with carets under the
// value at fault.
type Error struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, d := range e.Diags {
		if i > 0 {
			b.WriteString("\n")
		}
		if d.Subject == nil {
			fmt.Fprintf(&b, "%s: %s", d.Summary, d.Detail)
			continue
		}
		r := *d.Subject
		fmt.Fprintf(&b, "%s:%d,%d: %s: %s", r.Filename, r.Start.Line, r.Start.Column, d.Summary, d.Detail)
		if f := e.files[r.Filename]; f != nil {
			b.WriteString(caret(f.Bytes, r))
		}
	}
	return b.String()
}

// caret returns the range's first source line, numbered, with ^ under the
// range.
func caret(src []byte, r hcl.Range) string {
	lines := bytes.Split(src, []byte("\n"))
	if r.Start.Line < 1 || r.Start.Line > len(lines) {
		return ""
	}
	line := string(bytes.TrimRight(lines[r.Start.Line-1], "\r"))
	width := r.End.Column - r.Start.Column
	if r.End.Line != r.Start.Line || width < 1 {
		width = 1
	}
	num := strconv.Itoa(r.Start.Line)
	return fmt.Sprintf("\n  %s | %s\n  %s | %s%s", num, line,
		strings.Repeat(" ", len(num)), strings.Repeat(" ", max(r.Start.Column-1, 0)), strings.Repeat("^", width))
}

// Load reads environments/NAME.hcl from dir.
func Load(dir, name string) (*Environment, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("environment name %q: want lower-case letters, digits and dashes", name)
	}
	path := filepath.Join(dir, name+".hcl")
	src, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("environment %q: %s does not exist (known: %s)", name, path, strings.Join(List(dir), ", "))
		}
		return nil, err
	}
	return Parse(path, name, src)
}

// SharedJob refuses e when another readable environment file in dir names
// the same job in the same namespace: a release to one would replace the
// other's job, its history and its rollbacks. Files that cannot be read
// are left to their own commands.
func SharedJob(dir string, e *Environment) error {
	for _, name := range List(dir) {
		if name == e.Name {
			continue
		}
		o, err := Load(dir, name)
		if err != nil || o.Job != e.Job || o.Namespace != e.Namespace {
			continue
		}
		return fmt.Errorf("%s and %s both name job %q in namespace %q: a release to one would replace the other's; give each environment a job of its own (job = \"...\")",
			e.File, o.File, e.Job, e.Namespace)
	}
	return nil
}

// List returns the environment names defined in dir.
func List(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".hcl"))
	}
	sort.Strings(names)
	return names
}

// Pipeline orders environment names as releases travel through them: dev,
// test and prod first, those that exist, then the others alphabetically.
func Pipeline(names []string) []string {
	stage := func(name string) int {
		switch name {
		case "dev":
			return 0
		case "test":
			return 1
		case "prod":
			return 2
		}
		return 3
	}
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int {
		if c := stage(a) - stage(b); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

var (
	validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// validJob is Nomad's job ID alphabet, less what would need escaping
	// in a Consul KV path.
	validJob = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	// validService is Nomad's rule for service names (RFC 1123 labels), which
	// the job spec takes from the job ID.
	validService = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// validNamespace is Nomad's rule for namespace names. Nomad refuses the
	// others too, and access.JobPolicy's names stay apart only with these.
	validNamespace = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)
	// validHost is a DNS name or an IPv4 address; IPv6 is accepted too.
	validHost = regexp.MustCompile(`^([a-zA-Z0-9_]([a-zA-Z0-9_-]*[a-zA-Z0-9_])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]*[a-zA-Z0-9_])?)*$|^[0-9a-fA-F:]+$`)
)

// Parse decodes and validates an environment file's source.
func Parse(path, name string, src []byte) (*Environment, error) {
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	files := map[string]*hcl.File{path: file}
	if diags.HasErrors() {
		return nil, &Error{Diags: diags, files: files}
	}
	env := &Environment{Name: name, File: path, file: file}
	if diags := gohcl.DecodeBody(file.Body, nil, env); diags.HasErrors() {
		return nil, &Error{Diags: diags, files: files}
	}
	body := file.Body.(*hclsyntax.Body)
	if diags := env.validate(body); diags.HasErrors() {
		return nil, &Error{Diags: diags, files: files}
	}
	return env, nil
}

// validate checks the values gohcl cannot, pointing each diagnostic at the
// attribute that holds the bad value.
func (e *Environment) validate(body *hclsyntax.Body) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(rng hcl.Range, summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: rng.Ptr()})
	}
	// With ACLs on, a task reads its config with a token of its job's
	// Consul policy (access.JobPolicy), which must be the job's alone and
	// one Consul's login takes.
	namespaceOK := false
	switch ns := e.Namespace; {
	case ns == "":
		e.Namespace, namespaceOK = "default", true
	case !validNamespace.MatchString(ns):
		bad(attrRange(body, "", "namespace"), "Invalid namespace",
			fmt.Sprintf("%q is not a valid Nomad namespace: use lower-case letters, digits and '-', at most 128.", ns))
	case strings.ToLower(ns) != ns:
		bad(attrRange(body, "", "namespace"), "Invalid namespace",
			fmt.Sprintf("%q has upper case: Consul's policy names ignore it, so its jobs would share their policies with those of namespace %q; use lower case.", ns, strings.ToLower(ns)))
	default:
		namespaceOK = true
	}
	if e.Job == "" {
		e.Job = "counter-" + e.Name
	}
	switch {
	case !validJob.MatchString(e.Job):
		bad(attrRange(body, "", "job"), "Invalid job name",
			fmt.Sprintf("%q is not a job ID the deployer takes: use lower-case letters, digits and '-'.", e.Job))
	case namespaceOK && access.CheckJobPolicy(e.Namespace, e.Job) != nil:
		bad(attrRange(body, "", "job"), "Job name without a Consul policy of its own",
			fmt.Sprintf("job %q: with ACLs on, its tasks could not read their config with a token of their own: %v.", e.Job, access.CheckJobPolicy(e.Namespace, e.Job)))
	case !validService.MatchString(e.Job):
		bad(attrRange(body, "", "job"), "Job name that cannot name its service",
			fmt.Sprintf("job %q: the job spec registers its Consul service under the job's name, and Nomad takes only lower-case letters, digits and '-' (not first or last), at most 63, for a service name.", e.Job))
	}
	if len(e.Datacenters) == 0 {
		bad(attrRange(body, "", "datacenters"), "No datacenters", `List at least one Nomad datacenter, for example ["dc1"].`)
	}
	for _, dc := range e.Datacenters {
		if strings.TrimSpace(dc) == "" {
			bad(attrRange(body, "", "datacenters"), "Empty datacenter name", "Every datacenter must be named.")
		}
	}
	if _, set := body.Attributes["count"]; !set {
		e.Count = 1
	} else if e.Count < 1 {
		bad(attrRange(body, "", "count"), "Invalid count",
			fmt.Sprintf("count = %d: a release runs at least 1 instance.", e.Count))
	}

	if e.URL != "" {
		if msg := checkURL(e.URL); msg != "" {
			bad(attrRange(body, "", "url"), "Invalid url", fmt.Sprintf("url = %q: %s", e.URL, msg))
		}
	}

	switch host := e.Config.Host; {
	case strings.TrimSpace(host) == "":
		bad(attrRange(body, "config", "HOST"), "Empty HOST", "HOST is the Redis host name or address the app connects to; it cannot be empty.")
	case !validHost.MatchString(host):
		bad(attrRange(body, "config", "HOST"), "Invalid HOST",
			fmt.Sprintf("%q is not a host name or IP address.", host))
	}
	if p := e.Config.Port; p < 1 || p > 65535 {
		bad(attrRange(body, "config", "PORT"), "PORT out of range",
			fmt.Sprintf("PORT = %d: a TCP port is between 1 and 65535.", p))
	}

	if e.Resources == nil {
		e.Resources = &Resources{}
	}
	if _, set := blockBody(body, "resources").Attributes["cpu"]; !set {
		e.Resources.CPU = 100
	} else if e.Resources.CPU < 1 {
		bad(attrRange(body, "resources", "cpu"), "Invalid cpu", fmt.Sprintf("cpu = %d MHz: must be at least 1.", e.Resources.CPU))
	}
	if _, set := blockBody(body, "resources").Attributes["memory"]; !set {
		e.Resources.Memory = 64
	} else if e.Resources.Memory < 10 {
		bad(attrRange(body, "resources", "memory"), "Invalid memory", fmt.Sprintf("memory = %d MiB: Nomad's minimum is 10.", e.Resources.Memory))
	}

	if e.Update == nil {
		e.Update = &Update{}
	}
	u := e.Update
	durations := map[string]time.Duration{}
	for _, d := range []struct {
		name string
		v    *string
	}{{"min_healthy_time", u.MinHealthyTime}, {"healthy_deadline", u.HealthyDeadline}, {"progress_deadline", u.ProgressDeadline}} {
		if d.v == nil {
			continue
		}
		dur, err := time.ParseDuration(*d.v)
		if err != nil || dur < 0 {
			bad(attrRange(body, "update", d.name), "Invalid duration",
				fmt.Sprintf("%s = %q: want a duration such as \"10s\" or \"5m\".", d.name, *d.v))
			continue
		}
		durations[d.name] = dur
	}
	diags = append(diags, u.checkDeadlines(body, durations)...)
	u.fillDefaults(durations)
	for _, n := range []struct {
		name string
		v    *int
		min  int
	}{{"max_parallel", u.MaxParallel, 1}, {"canary", u.Canary, 0}} {
		if n.v != nil && *n.v < n.min {
			bad(attrRange(body, "update", n.name), "Invalid "+n.name, fmt.Sprintf("%s = %d: must be at least %d.", n.name, *n.v, n.min))
		}
	}
	// Without a canary Nomad's rolling update stops max_parallel old
	// instances before it places their replacements: when that is every
	// instance, nothing serves until the new ones are up, or ever if they
	// never turn healthy.
	if *u.Canary == 0 && *u.MaxParallel >= e.Count && e.Count >= 1 {
		bad(attrRange(body, "update", "canary"), "No instance left serving",
			fmt.Sprintf("canary = 0 with count = %d and max_parallel = %d: Nomad would stop every running instance before its replacement is healthy, an outage on each release; set canary to 1 or more, or max_parallel below count.",
				e.Count, *u.MaxParallel))
	}
	if *u.AutoPromote && *u.Canary == 0 {
		bad(attrRange(body, "update", "auto_promote"), "Invalid auto_promote",
			"auto_promote = true with canary = 0: there is no canary to promote (Nomad refuses it); set canary to 1 or more, or drop auto_promote.")
	}
	if e.Analysis != nil {
		diags = append(diags, e.Analysis.validate(body, *u.Canary)...)
		// The deployer promotes a judged canary itself: Nomad must not
		// promote it first, the moment it turns healthy.
		if _, set := blockBody(body, "update").Attributes["auto_promote"]; set && *u.AutoPromote {
			bad(attrRange(body, "update", "auto_promote"), "auto_promote with an analysis block",
				"auto_promote = true with an analysis block: Nomad would promote the canary as soon as it is healthy, before the deployer judges it; drop auto_promote (an analysis block turns it off) or the analysis block.")
		}
		*u.AutoPromote = false
	}
	return diags
}

// checkURL says what is wrong with an environment's url, "" if nothing:
// the deployer calls the app through it, and a local stack's front door
// listens at its host and port, so it must name both plainly.
func checkURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "want an http:// or https:// URL, such as \"http://127.0.0.1:8081/\"."
	case u.Host == "" || u.Hostname() == "":
		return "it names no host."
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "want scheme, host, port and path only: no user, query or fragment."
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %s: a TCP port is between 1 and 65535.", p)
		}
	}
	return ""
}

// ListenAddr is the host:port a front door for the environment listens at,
// from its url (the scheme's port when the url names none); "" without a
// url.
func (e *Environment) ListenAddr() string {
	u, err := url.Parse(e.URL)
	if e.URL == "" || err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// The defaults of the update block live here, and only here: the
// environment file is where a user sets them, so its reader is where the
// unset ones are filled in. The job spec's variables have no defaults, since
// the deployer always sets them all.
//
// One canary, promoted automatically once healthy, keeps the running
// instances serving until their replacement passes its checks, even with
// one instance; a failed one is reverted by Nomad.
const (
	defaultMaxParallel     = 1
	defaultCanary          = 1
	defaultAutoRevert      = true
	defaultAutoPromote     = true
	defaultMinHealthyTime  = "10s"
	defaultHealthyDeadline = "5m"
	// progressSlack is how long after healthy_deadline an unset
	// progress_deadline ends a deployment that makes no progress. Nomad's
	// own default, 10 minutes whatever healthy_deadline says, is how a
	// release with a 45 s healthy_deadline kept its submitter waiting 10
	// minutes.
	progressSlack = 30 * time.Second
)

func (u *Update) fillDefaults(durations map[string]time.Duration) {
	orDefault(&u.MaxParallel, defaultMaxParallel)
	orDefault(&u.Canary, defaultCanary)
	orDefault(&u.AutoRevert, defaultAutoRevert)
	// Nomad promotes canaries, and refuses auto_promote without one: with
	// canary = 0 it defaults to off.
	orDefault(&u.AutoPromote, defaultAutoPromote && *u.Canary > 0)
	orDefault(&u.MinHealthyTime, defaultMinHealthyTime)
	orDefault(&u.HealthyDeadline, defaultHealthyDeadline)
	healthy, ok := durations["healthy_deadline"]
	if !ok {
		healthy, _ = time.ParseDuration(defaultHealthyDeadline)
	}
	orDefault(&u.ProgressDeadline, (healthy + progressSlack).String())
}

// checkDeadlines refuses deadlines with which a deployment could wait longer
// than its settings say, or that Nomad would refuse with a less clear word.
func (u *Update) checkDeadlines(body *hclsyntax.Body, d map[string]time.Duration) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(name, summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail,
			Subject: attrRange(body, "update", name).Ptr()})
	}
	healthy, setHealthy := d["healthy_deadline"]
	progress, setProgress := d["progress_deadline"]
	minHealthy, setMin := d["min_healthy_time"]
	if setHealthy && healthy == 0 {
		bad("healthy_deadline", "Invalid healthy_deadline", "healthy_deadline = 0: an instance needs some time to turn healthy.")
	}
	if setProgress && progress == 0 {
		bad("progress_deadline", "No progress deadline",
			"progress_deadline = 0 turns Nomad's deadline off, so a release that never turns healthy is never failed or reverted: set one, e.g. healthy_deadline plus 30s.")
	}
	if !setHealthy {
		healthy, _ = time.ParseDuration(defaultHealthyDeadline)
	}
	if setProgress && progress != 0 && progress <= healthy {
		bad("progress_deadline", "progress_deadline too short",
			fmt.Sprintf("progress_deadline = %s must be longer than healthy_deadline = %s: Nomad refuses a job otherwise.", progress, healthy))
	}
	if !setMin {
		minHealthy, _ = time.ParseDuration(defaultMinHealthyTime)
	}
	if minHealthy >= healthy {
		bad("min_healthy_time", "min_healthy_time too long",
			fmt.Sprintf("min_healthy_time = %s must be shorter than healthy_deadline = %s, or no instance can ever turn healthy in time.", minHealthy, healthy))
	}
	return diags
}

// orDefault points *p at v when the file left it unset.
func orDefault[T any](p **T, v T) {
	if *p == nil {
		*p = &v
	}
}

// blockBody returns the body of the first block of type typ, or an empty one.
func blockBody(body *hclsyntax.Body, typ string) *hclsyntax.Body {
	for _, b := range body.Blocks {
		if b.Type == typ {
			return b.Body
		}
	}
	return &hclsyntax.Body{}
}

// attrRange returns the source range of an attribute's value, in the named
// block or at the top level, or of the block or file when it is absent.
func attrRange(body *hclsyntax.Body, block, name string) hcl.Range {
	b := body
	if block != "" {
		found := false
		for _, blk := range body.Blocks {
			if blk.Type == block {
				b, found = blk.Body, true
				break
			}
		}
		if !found {
			return body.SrcRange
		}
	}
	if a, ok := b.Attributes[name]; ok {
		return a.Expr.Range()
	}
	return b.SrcRange
}
