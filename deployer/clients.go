package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/promquery"
	"github.com/kodekloud/counter/internal/release"
)

// defaultJobFile is the Nomad job spec, relative to the checkout's root, that
// the commands render unless -job names another.
const defaultJobFile = "jobs/counter.nomad.hcl"

// envFlags are the options of every command that works on one environment.
type envFlags struct {
	env, dir, kvPrefix string
	json               bool
}

func (f *envFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.env, "env", "", "environment `NAME`: its file is "+environment.DefaultDir+"/NAME.hcl")
	fs.StringVar(&f.dir, "environments", environment.DefaultDir, "folder `DIR` of environment files")
	fs.StringVar(&f.kvPrefix, "kv-prefix", configstore.DefaultPrefix, "Consul KV folder `PATH` of config snapshots")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
}

// watchFlags are the options of the commands that make a job version and
// watch its deployment: submit, rollback and promote.
type watchFlags struct {
	detach bool
	wait   time.Duration
	prometheusFlag
}

// register adds -detach and -wait; made says what returns before the
// deployment is watched ("registering", "reverting"). Submit and promote,
// which make releases of an environment file, add -prometheus-addr.
func (w *watchFlags) register(fs *flag.FlagSet, made string) {
	fs.BoolVar(&w.detach, "detach", false, "return after "+made+", without watching the deployment")
	fs.DurationVar(&w.wait, "wait", 0, fmt.Sprintf("wait up to `DURATION` for another deploy of the job to end, instead of a conflict (exit %d)", exitConflict))
}

// prometheusFlag is -prometheus-addr, for the commands that judge a
// canary.
type prometheusFlag struct{ addr string }

func (p *prometheusFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&p.addr, "prometheus-addr", "", "`URL` of the Prometheus that judges canaries of an environment with an analysis block (default: $PROMETHEUS_ADDR)")
}

// judgeWith gives d the Prometheus that judges e's canaries, when e has an
// analysis block: the flag's, else PROMETHEUS_ADDR. Without either, a
// release to such an environment is refused before anything is written:
// its canary would wait for a judge that never comes. With d nil it only
// checks, so that a command can refuse before it asks anything of anyone.
func (p *prometheusFlag) judgeWith(sh *shell, d *deploy.Deployer, e *environment.Environment) error {
	if e.Analysis == nil {
		return nil
	}
	addr := p.addr
	if addr == "" {
		addr = sh.getenv("PROMETHEUS_ADDR")
	}
	if addr == "" {
		return usageError("environment %s has an analysis block, and no Prometheus is given to judge its canary: set PROMETHEUS_ADDR (bin/stack env prints it) or -prometheus-addr; nothing was changed", e.Name)
	}
	src, err := promquery.New(addr)
	if err != nil {
		return usageError("-prometheus-addr: %v", err)
	}
	if d != nil {
		d.Metrics = src
	}
	return nil
}

// load reads the environment file.
func (f *envFlags) load() (*environment.Environment, error) {
	e, err := environment.Load(f.dir, f.env)
	if err != nil {
		return nil, err
	}
	if err := environment.SharedJob(f.dir, e); err != nil {
		return nil, err
	}
	return e, nil
}

// open loads the environment and connects to its job's Nomad and Consul,
// for the commands that work on a job already released. The returned func
// closes the clients' idle connections.
func (f *envFlags) open(sh *shell) (*deploy.Deployer, *environment.Environment, func(), error) {
	e, err := f.load()
	if err != nil {
		return nil, nil, nil, err
	}
	d, closeClients, err := newDeployer(sh, f.kvPrefix, "")
	if err != nil {
		return nil, nil, nil, err
	}
	return d, e, closeClients, nil
}

// releaseFlags are the options of the commands that make a release: render,
// plan and submit.
type releaseFlags struct {
	envFlags
	image, jobFile, commit string
}

func (f *releaseFlags) register(fs *flag.FlagSet) {
	f.envFlags.register(fs)
	fs.StringVar(&f.image, "image", "", "image `REF` to release, REPO:TAG or REPO@sha256:...; a tag is pinned to its digest "+
		`where the registry answers; "latest" and untagged images are refused`)
	fs.StringVar(&f.jobFile, "job", defaultJobFile, "Nomad job spec `FILE`")
	fs.StringVar(&f.commit, "commit", "", "git commit `SHA` of the build (default: the image's org.opencontainers.image.revision label)")
}

// releaseRequired are the flags releaseFlags needs set.
func releaseRequired() []string { return []string{"env", "image"} }

// prepare loads everything a release needs and checks it before anything is
// written: the environment file, the job spec, the image, the clients.
// check, if not nil, sees the environment first, before the registry or
// a server is asked: what it refuses is refused whatever runs. The
// returned func closes the clients' idle connections.
func (f *releaseFlags) prepare(ctx context.Context, sh *shell, check func(*environment.Environment) error) (*deploy.Deployer, *release.Release, func(), error) {
	e, err := f.load()
	if err != nil {
		return nil, nil, nil, err
	}
	if check != nil {
		if err := check(e); err != nil {
			return nil, nil, nil, err
		}
	}
	spec, err := os.ReadFile(f.jobFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read job spec: %w", err)
	}
	ref, err := imageref.Parse(f.image)
	if err != nil {
		return nil, nil, nil, err
	}
	img, err := imageref.Resolver{}.Resolve(ctx, ref)
	if err != nil {
		return nil, nil, nil, err
	}
	if !img.Resolved || img.Digest == "" {
		fmt.Fprintf(sh.stderr, "warning: registry of %s did not answer; the job pins the tag, not a digest\n", ref)
	}
	d, closeClients, err := newDeployer(sh, f.kvPrefix, string(spec))
	if err != nil {
		return nil, nil, nil, err
	}
	commit := f.commit
	if commit == "" {
		commit = img.Revision
	}
	r, err := newRelease(ctx, sh, e, img, commit, d)
	if err != nil {
		closeClients()
		return nil, nil, nil, err
	}
	return d, r, closeClients, nil
}

// newRelease bundles img with e's config as the person at sh releases it,
// with the host names this machine resolves for it (extraHosts), its
// snapshot where d keeps them.
func newRelease(ctx context.Context, sh *shell, e *environment.Environment, img imageref.Image, commit string, d *deploy.Deployer) (*release.Release, error) {
	hosts, err := extraHosts(sh.getenv)
	if err != nil {
		return nil, err
	}
	r := release.New(e, img, commit, submitter(ctx, sh.getenv), d.Store)
	r.Hosts = hosts
	return r, nil
}

// extraHosts reads COUNTER_EXTRA_HOSTS, the NAME:IP entries (comma
// separated) that a local stack gives for the host names only it resolves
// (bin/stack env sets it; on a real cluster DNS resolves them). They go into
// the task's /etc/hosts.
func extraHosts(getenv func(string) string) ([]string, error) {
	v := getenv("COUNTER_EXTRA_HOSTS")
	if v == "" {
		return nil, nil
	}
	hosts := strings.Split(v, ",")
	for _, h := range hosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || net.ParseIP(ip) == nil {
			return nil, usageError("COUNTER_EXTRA_HOSTS: %q is not NAME:IP", h)
		}
	}
	return hosts, nil
}

// newDeployer returns a Deployer and a func that closes its clients' idle
// connections: a process that runs many commands (the tests) would otherwise
// keep one per command, and Nomad refuses a client's 101st connection.
func newDeployer(sh *shell, kvPrefix, spec string) (*deploy.Deployer, func(), error) {
	if err := configstore.CheckPrefix(kvPrefix); err != nil {
		return nil, nil, usageError("-kv-prefix: %v", err)
	}
	if spec != "" && strings.Trim(kvPrefix, "/") != configstore.DefaultPrefix {
		// The tasks read their snapshot with their own token where ACLs
		// are on, whose policy (access.GrantJobConfig) names the folder.
		fmt.Fprintf(sh.stderr, "warning: -kv-prefix %s is not the default %s: where Consul has ACLs, each job's policy (nomad-job-NAMESPACE_JOB) must grant key_prefix \"%s/NAMESPACE/JOB/\" read, or its tasks wait forever for their config (docs/secured-cluster.md)\n",
			kvPrefix, configstore.DefaultPrefix, strings.Trim(kvPrefix, "/"))
	}
	nc, cc, closeIdle, err := clients(sh.getenv)
	if err != nil {
		return nil, nil, err
	}
	store := configstore.New(cc, kvPrefix)
	store.Progress = sh.stderr
	return deploy.New(nc, cc, store, spec, sh.stderr), closeIdle, nil
}

// clients starts from each API's DefaultConfig (which reads the process
// environment) and applies the variables run was given, so that tests and
// embedders can point one run at one stack.
func clients(getenv func(string) string) (*nomad.Client, *consul.Client, func(), error) {
	nc := nomad.DefaultConfig()
	for k, set := range map[string]func(string){
		"NOMAD_ADDR":   func(v string) { nc.Address = v },
		"NOMAD_TOKEN":  func(v string) { nc.SecretID = v },
		"NOMAD_REGION": func(v string) { nc.Region = v },
	} {
		if v := getenv(k); v != "" {
			set(v)
		}
	}
	n, err := nomad.NewClient(nc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nomad client: %w", err)
	}
	cc := consul.DefaultConfig()
	for k, set := range map[string]func(string){
		"CONSUL_HTTP_ADDR":  func(v string) { cc.Address = v },
		"CONSUL_HTTP_TOKEN": func(v string) { cc.Token = v },
	} {
		if v := getenv(k); v != "" {
			set(v)
		}
	}
	if strings.HasPrefix(cc.Address, "https://") {
		cc.Scheme, cc.Address = "https", strings.TrimPrefix(cc.Address, "https://")
	} else {
		cc.Address = strings.TrimPrefix(cc.Address, "http://")
	}
	c, err := consul.NewClient(cc)
	if err != nil {
		n.Close()
		return nil, nil, nil, fmt.Errorf("consul client: %w", err)
	}
	// DefaultConfig gave cc a transport of its own, which NewClient uses.
	return n, c, func() { n.Close(); cc.Transport.CloseIdleConnections() }, nil
}

// submitter names who releases, for the job's meta and the history: never
// "unknown", since a release nobody can trace is what the meta is there to
// prevent. DEPLOYER_USER wins; then git's user.email, which names a person
// even under a shared login; then the OS user; then the uid.
func submitter(ctx context.Context, getenv func(string) string) string {
	gitEmail := func() string {
		out, err := exec.CommandContext(ctx, "git", "config", "user.email").Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	osUser := func() string {
		if u, err := user.Current(); err == nil {
			return u.Username
		}
		return ""
	}
	return who(getenv, gitEmail, osUser, os.Getuid())
}

// who picks the first name it has, in submitter's order.
func who(getenv func(string) string, gitEmail, osUser func() string, uid int) string {
	for _, name := range []func() string{
		func() string { return getenv("DEPLOYER_USER") },
		gitEmail,
		func() string { return getenv("USER") },
		func() string { return getenv("LOGNAME") },
		osUser,
	} {
		if v := name(); v != "" {
			return v
		}
	}
	return "uid " + strconv.Itoa(uid)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
