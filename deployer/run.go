package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
)

const usage = `Usage: deployer <command> [options]

Build, release and run the counter service on Nomad and Consul. A release
is one pinned image bundled with one environment's config; each release is a
new version of the environment's Nomad job, named vN.

Commands:
  build     Build and push the app image, tagged with the git commit
  render    Print the Nomad job a submit would register
  plan      Show what a submit would change
  submit    Release an image to an environment and watch the deployment
  history   List an environment's releases and what each changed
  rollback  Go back to an earlier release: its image and its config
  status    Show the running release, its health, and drift
  gc        Delete config snapshots no retained release uses

Run "deployer <command> -help" for a command's options.

Nomad and Consul are reached as their own CLIs do: NOMAD_ADDR, NOMAD_TOKEN,
NOMAD_REGION, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN...
`

// env is the process environment as run was given it.
type env func(string) string

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return &exitStatus{code: exitUsage}
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "build":
		return runBuild(ctx, rest, env(getenv), stdout, stderr)
	case "render", "plan", "submit":
		return runRelease(ctx, cmd, rest, env(getenv), stdout, stderr)
	case "history", "rollback", "status", "gc":
		return runOps(ctx, cmd, rest, env(getenv), stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError("unknown command %q", cmd)
}

// releaseFlags are the options shared by render, plan and submit.
type releaseFlags struct {
	env, image, envDir, jobFile, kvPrefix, commit string
	json, detach                                  bool
	checkIndex                                    string
}

const releaseHelp = `Usage: deployer %[1]s -env NAME -image REF [options]

%[2]s

Options:
  -env NAME            environment: environments/NAME.hcl (required)
  -image REF           image to release, REPO:TAG or REPO@sha256:...; a tag is
                       pinned to its digest where the registry answers; "latest"
                       and untagged images are refused (required)
  -environments DIR    folder of environment files (default "environments")
  -job FILE            Nomad job spec (default "jobs/counter.nomad.hcl")
  -kv-prefix PATH      Consul KV folder of config snapshots (default "counter/releases")
  -commit SHA          git commit of the build (default: the image's
                       org.opencontainers.image.revision label)
  -json                print the result as JSON
%[3]s
Exit codes: %[4]s
`

var releaseDoc = map[string][3]string{
	"render": {"Prints the job, as JSON that `nomad job run -json` accepts, exactly as\nsubmit would register it. Nothing is written.",
		"", "0 ok, 1 error, 2 usage"},
	"plan": {"Shows Nomad's plan diff and the config diff against the running release.\nNothing is written.",
		"", "0 no change, 1 change, 255 error (as nomad job plan)"},
	"submit": {"Writes the release's config snapshot to Consul (write-once), registers the\njob as a new version named vN, and watches the deployment.",
		"  -detach              return after registering, without watching\n" +
			"  -check-index N       register only if the job's modify index is still N\n" +
			"                       (0: only if the job does not exist)\n",
		"0 succeeded or no change, 1 error, 2 usage, 3 deployment failed,\n" +
			"            4 deployment failed and Nomad auto-reverted, 5 conflict"},
}

func runRelease(ctx context.Context, cmd string, args []string, getenv env, stdout, stderr io.Writer) error {
	var f releaseFlags
	fs := flag.NewFlagSet("deployer "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	doc := releaseDoc[cmd]
	fs.Usage = func() { fmt.Fprintf(stderr, releaseHelp, cmd, doc[0], doc[1], doc[2]) }
	fs.StringVar(&f.env, "env", "", "")
	fs.StringVar(&f.image, "image", "", "")
	fs.StringVar(&f.envDir, "environments", "environments", "")
	fs.StringVar(&f.jobFile, "job", "jobs/counter.nomad.hcl", "")
	fs.StringVar(&f.kvPrefix, "kv-prefix", configstore.DefaultPrefix, "")
	fs.StringVar(&f.commit, "commit", "", "")
	fs.BoolVar(&f.json, "json", false, "")
	if cmd == "submit" {
		fs.BoolVar(&f.detach, "detach", false, "")
		fs.StringVar(&f.checkIndex, "check-index", "", "")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &exitStatus{code: exitUsage}
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected arguments %q", cmd, fs.Args())
	}
	if f.env == "" || f.image == "" {
		fs.Usage()
		return usageError("%s: -env and -image are required", cmd)
	}
	var checkIndex *uint64
	if f.checkIndex != "" {
		n, err := strconv.ParseUint(f.checkIndex, 10, 64)
		if err != nil {
			return usageError("submit: -check-index %q is not a number", f.checkIndex)
		}
		checkIndex = &n
	}

	d, rel, closeClients, err := prepare(ctx, f, getenv, stderr)
	if err != nil {
		if cmd == "plan" {
			return &exitStatus{code: 255, err: err}
		}
		return err
	}
	defer closeClients()
	switch cmd {
	case "render":
		job, err := d.Render(ctx, rel)
		if err != nil {
			return err
		}
		return writeJSON(stdout, map[string]any{"Job": job})
	case "plan":
		return runPlan(ctx, d, rel, f.json, stdout)
	}
	rec, err := d.Submit(ctx, rel, deploy.SubmitOptions{Detach: f.detach, CheckIndex: checkIndex})
	return finishRecord(stdout, rec, err, f.json)
}

// runPlan prints the plan; like nomad job plan it exits 0 for no change, 1
// for a change and 255 for an error.
func runPlan(ctx context.Context, d *deploy.Deployer, rel *release.Release, asJSON bool, stdout io.Writer) error {
	p, err := d.Plan(ctx, rel)
	if err != nil {
		return &exitStatus{code: 255, err: err}
	}
	if asJSON {
		if err := writeJSON(stdout, planJSON(p)); err != nil {
			return &exitStatus{code: 255, err: err}
		}
	} else {
		printPlan(stdout, p)
	}
	if p.Changed {
		return &exitStatus{code: 1}
	}
	return nil
}

// finishRecord prints what submit or rollback did and turns its outcome into
// the exit status.
func finishRecord(stdout io.Writer, rec *deploy.Record, err error, asJSON bool) error {
	if rec != nil {
		if asJSON {
			if jerr := writeJSON(stdout, rec); jerr != nil {
				return jerr
			}
		} else {
			printRecord(stdout, rec)
		}
	}
	if err != nil {
		return err
	}
	switch rec.Outcome {
	case deploy.Failed:
		return &exitStatus{code: exitFailed, err: fmt.Errorf("deployment of %s %s failed: %s", rec.Job, rec.Release, rec.Detail)}
	case deploy.AutoReverted:
		return &exitStatus{code: exitAutoReverted, err: fmt.Errorf("deployment of %s %s failed and Nomad reverted the job to version %d: %s",
			rec.Job, rec.Release, *rec.RevertedTo, rec.Detail)}
	}
	return nil
}

// prepare loads everything a release needs and checks it before anything is
// written: the environment file, the job spec, the image, the clients. The
// returned func closes the clients' idle connections.
func prepare(ctx context.Context, f releaseFlags, getenv env, stderr io.Writer) (*deploy.Deployer, *release.Release, func(), error) {
	e, err := environment.Load(f.envDir, f.env)
	if err != nil {
		return nil, nil, nil, err
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
		fmt.Fprintf(stderr, "warning: registry of %s did not answer; the job pins the tag, not a digest\n", ref)
	}
	d, closeClients, err := newDeployer(getenv, f.kvPrefix, string(spec), stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	store := d.Store
	values := e.Config.Values()
	hash := configstore.Hash(values)
	commit := f.commit
	if commit == "" {
		commit = img.Revision
	}
	rel := &release.Release{
		Env:         e,
		Image:       img,
		Config:      values,
		ConfigHash:  hash,
		ConfigPath:  store.Path(e.Namespace, e.Job, hash),
		GitCommit:   commit,
		SubmittedBy: submitter(getenv),
	}
	return d, rel, closeClients, nil
}

// newDeployer returns a Deployer and a func that closes its clients' idle
// connections: a process that runs many commands (the tests) would otherwise
// keep one per command, and Nomad refuses a client's 101st connection.
func newDeployer(getenv env, kvPrefix, spec string, stderr io.Writer) (*deploy.Deployer, func(), error) {
	nc, cc, closeIdle, err := clients(getenv)
	if err != nil {
		return nil, nil, err
	}
	return &deploy.Deployer{Nomad: nc, Consul: cc, Store: configstore.New(cc, kvPrefix), JobSpec: spec, Progress: stderr}, closeIdle, nil
}

// clients starts from each API's DefaultConfig (which reads the process
// environment) and applies the variables run was given, so that tests and
// embedders can point one run at one stack.
func clients(getenv env) (*nomad.Client, *consul.Client, func(), error) {
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

// submitter names who submits, for the release record.
func submitter(getenv env) string {
	for _, k := range []string{"DEPLOYER_USER", "USER", "LOGNAME"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	return "unknown"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
