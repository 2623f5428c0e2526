package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/helptext"
	"github.com/kodekloud/counter/internal/localstack"
)

// commandsHelp is the part of the help that the flags do not say.
const commandsHelp = `Usage: stack <up|down|env|backup|restore> [options]

  up     Start Consul, Nomad, a Docker registry and a Redis for each of
         dev, test and prod (redis_db_test and redis_db_prod on 127.0.0.2
         and 127.0.0.3, names that env hands the deployer) on loopback, a
         front door (HAProxy) at the url of each environment file that
         has one, and Prometheus scraping every allocation and the front
         door, with state under -dir, and wait until each is healthy. Harmless when the
         stack is already up; on a stopped or partly broken one it keeps
         what runs and starts the rest with its data, then waits (up to 2
         minutes) until Nomad's allocations run again and pass their Consul
         checks, or names those that do not.
  down   Stop what "up" started (by recorded pids) and nothing else, and
         remove the containers of Nomad's tasks. It deletes nothing: the
         jobs and their versions, the config snapshots and the counter stay
         under -dir, and the next "up" runs the same releases again.
  env    Print the export lines for the running stack.
  backup Save the running stack's Nomad and Consul snapshots into the new
         folder -out, with the stack's tokens (DIR/secrets) kept beside
         them (deployer backup, plus the tokens).
  restore
         Restore the backup in -from onto the running stack (deployer
         restore), check it with the backup's tokens, and put those in
         DIR/secrets: the restored ACLs are the backup's. The agents take
         them when they start again (make restore runs make down and up).
`

// options are the flags of every command; up reads them all.
type options struct {
	dir, nomadBin, consulBin, promBin, envDir, policyDir string
	out, from                                            string
	open, cluster                                        bool
}

// flagSet registers the options on a flag set for command cmd.
func flagSet(cmd string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *options) {
	var o options
	fs := flag.NewFlagSet("stack "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dir, "dir", ".stack", "state folder `DIR`")
	fs.StringVar(&o.nomadBin, "nomad", getenv("NOMAD_BIN"), "nomad binary `PATH`; the default is $NOMAD_BIN")
	fs.StringVar(&o.consulBin, "consul", getenv("CONSUL_BIN"), "consul binary `PATH`; the default is $CONSUL_BIN")
	fs.StringVar(&o.promBin, "prometheus", getenv("PROMETHEUS_BIN"), "up: prometheus binary `PATH`, built with "+
		"consul_sd_configs (scripts/hashitools prometheus); the default is $PROMETHEUS_BIN")
	fs.BoolVar(&o.open, "open", false, "up: Consul and Nomad with ACLs off (default: on, default deny, bootstrapped; "+
		"management tokens in DIR/secrets)")
	fs.BoolVar(&o.cluster, "cluster", false, "up: three Consul servers, three Nomad servers and two client nodes "+
		"(each with a Consul agent of its own), every node on its own loopback address, 127.0.1.1-3 and "+
		"127.0.1.11-12, instead of one agent of each")
	fs.StringVar(&o.envDir, "environments", environment.DefaultDir, "up: the environment files in `DIR`: "+
		"a front door (HAProxy) for each that has a url, listening there; with ACLs, let each environment's job "+
		"read its own config snapshots; backup: the jobs its manifest lists")
	fs.StringVar(&o.policyDir, "policies", filepath.Join("deployer", "policies"), "up, with ACLs: the deployer's "+
		"policies in `DIR`, nomad.hcl and consul.hcl, for the tokens env hands out")
	fs.StringVar(&o.out, "out", "", "backup: the new folder `DIR` to write the backup into")
	fs.StringVar(&o.from, "from", "", "restore: the backup folder `DIR`")
	fs.Usage = func() { fmt.Fprint(stderr, usage(fs)) }
	return fs, &o
}

// usage is the help text: the commands, then the options as fs registers
// them, so that it cannot drift from what run parses.
func usage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(commandsHelp + "\nOptions:\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		head := "  -" + f.Name
		if name != "" {
			head += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			text += " (default " + f.DefValue + ")"
		}
		helptext.Wrap(&b, 17, head, text)
	})
	b.WriteString("\nExit codes: 0 ok, 1 failed, 2 usage.\n")
	return b.String()
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		// -h has printed what was asked for.
		return 0
	}
	fmt.Fprintf(stderr, "stack: %v\n", err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fs, _ := flagSet("", getenv, stderr)
		fmt.Fprint(stderr, usage(fs))
		return usageError{"missing command"}
	}
	fs, o := flagSet(args[1], getenv, stderr)
	if err := fs.Parse(args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		// The flag package has printed the usage already.
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	switch args[1] {
	case "up":
		return up(ctx, upOptions{dir: o.dir, bin: localstack.Binaries{Nomad: o.nomadBin, Consul: o.consulBin, Prometheus: o.promBin},
			open: o.open, cluster: o.cluster, envDir: o.envDir, policyDir: o.policyDir}, stdout, stderr)
	case "down":
		if err := localstack.Down(ctx, o.dir, stderr); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "stack stopped")
		return nil
	case "env":
		s, err := localstack.Load(o.dir)
		if err != nil {
			return fmt.Errorf("no stack recorded in %s (run make up): %w", o.dir, err)
		}
		printEnv(stdout, s)
		return nil
	case "backup":
		return stackBackup(ctx, o.dir, o.out, o.envDir, stdout, stderr)
	case "restore":
		return stackRestore(ctx, o.dir, o.from, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage(fs))
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q (want up, down, env, backup or restore)", args[1])}
}

type upOptions struct {
	dir               string
	bin               localstack.Binaries
	open, cluster     bool
	envDir, policyDir string
}

func up(ctx context.Context, o upOptions, stdout, stderr io.Writer) error {
	dir, bin := o.dir, o.bin
	// Before "already up": a running stack of the other kind is no answer.
	if err := localstack.CheckKind(dir, o.open); err != nil {
		return err
	}
	s, err := localstack.Load(dir)
	if err == nil && (len(s.Nodes) > 0) != o.cluster {
		kinds := map[bool]string{false: "a single-agent stack", true: "a cluster stack"}
		return fmt.Errorf("%s holds %s, and %s was asked for: make down first (the data stays in %s)",
			dir, kinds[len(s.Nodes) > 0], kinds[o.cluster], dir)
	}
	// A stack from before the front door or Prometheus, or one whose
	// environments gained a url, starts them: the rest keeps running.
	doors, err2 := localstack.FrontDoors(o.envDir)
	if err2 != nil {
		return err2
	}
	if err == nil && s.Healthy(ctx) == nil && (len(s.FrontDoors) > 0 || len(doors) == 0) && (s.PrometheusAddr != "" || bin.Prometheus == "") {
		fmt.Fprintf(stderr, "stack already up (state in %s)\n", dir)
		if err := grant(ctx, s, o); err != nil {
			return err
		}
		printAddrs(stdout, s)
		return nil
	}
	// Everything the new stack needs is checked before anything of the old
	// one is stopped: a typo in -nomad must not take a stack down.
	if bin.Nomad == "" || bin.Consul == "" || bin.Prometheus == "" {
		return usageError{"-nomad, -consul and -prometheus (or NOMAD_BIN, CONSUL_BIN and PROMETHEUS_BIN) are required: " +
			"make up finds them with scripts/hashitools"}
	}
	for flag, path := range map[string]string{"-nomad": bin.Nomad, "-consul": bin.Consul, "-prometheus": bin.Prometheus} {
		if _, err := exec.LookPath(path); err != nil {
			return usageError{fmt.Sprintf("%s %s: not an executable program: %v", flag, path, err)}
		}
	}
	if err := bin.FindServers(); err != nil {
		return err
	}
	// A stack that is recorded but not healthy keeps what still runs; the
	// rest starts again with its data (the release snapshots, the job
	// history, the counter): only make clean deletes them.
	start := time.Now()
	s, err = localstack.Start(ctx, localstack.Config{
		Dir: dir, Bin: bin, Detach: true, Progress: stderr, Resume: true, Open: o.open, EnvRedis: true, Cluster: o.cluster,
		Environments: o.envDir,
		Ports: localstack.Ports{
			NomadHTTP: 4646, NomadRPC: 4647, NomadSerf: 4648,
			ConsulHTTP: 8500, ConsulServer: 8300, ConsulSerfLAN: 8301, ConsulSerfWAN: 8302,
			Redis: 6379, Registry: 5000,
			// Consul's, HAProxy's and Prometheus's usual ports.
			ConsulDNS: 8600, FrontDoorStats: 8404, Prometheus: 9090,
			MinDynamic: 20000, MaxDynamic: 20999,
		},
	})
	if err != nil {
		return err
	}
	if err := grant(ctx, s, o); err != nil {
		return err
	}
	// Nomad's clients run their allocations again (after make down, or a
	// client that died), and the apps' checks pass once what they call
	// answers again: wait for both, so that what comes next (make up's call
	// of dev) finds a passing instance, or learn what did not come back.
	if err := s.WaitWorkloads(ctx, 2*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "stack up in %.1fs (state and logs in %s)\n", time.Since(start).Seconds(), s.Dir)
	printAddrs(stdout, s)
	return nil
}

// grant sets up, on a stack with ACLs, what an operator sets up on a
// secured cluster: the deployer's tokens from its policy files, and for each
// environment's job the policy that lets its tasks read their own config.
func grant(ctx context.Context, s *localstack.Stack, o upOptions) error {
	if !s.ACL {
		return nil
	}
	var rules [2]string
	for i, name := range []string{"nomad.hcl", "consul.hcl"} {
		b, err := os.ReadFile(filepath.Join(o.policyDir, name))
		if err != nil {
			return fmt.Errorf("the deployer's policy: %w", err)
		}
		rules[i] = string(b)
	}
	if err := s.DeployerTokens(ctx, rules[0], rules[1]); err != nil {
		return err
	}
	operator, err := os.ReadFile(filepath.Join(o.policyDir, "nomad-operator.hcl"))
	if err != nil {
		return fmt.Errorf("the operator's policy: %w", err)
	}
	if _, err := s.OperatorToken(ctx, string(operator)); err != nil {
		return err
	}
	_, cc, err := s.Clients()
	if err != nil {
		return err
	}
	store := configstore.New(nil, configstore.DefaultPrefix)
	for _, name := range environment.List(o.envDir) {
		e, err := environment.Load(o.envDir, name)
		if err != nil {
			return err
		}
		if err := access.GrantJobConfig(ctx, cc, e.Namespace, e.Job, store.Folder(e.Namespace, e.Job)); err != nil {
			return err
		}
	}
	return nil
}

func printAddrs(w io.Writer, s *localstack.Stack) {
	fmt.Fprintf(w, "Nomad API:   %s  (UI: %s/ui/)\n", s.NomadAddr, s.NomadAddr)
	for _, n := range s.Nodes {
		fmt.Fprintf(w, "  node %-9s %-10s Nomad %s, Consul %s\n", n.Name, n.IP, n.NomadAddr, n.ConsulAddr)
	}
	fmt.Fprintf(w, "Consul UI:   http://%s/ui/\n", s.ConsulAddr)
	fmt.Fprintf(w, "Redis:       %s (dev)", s.RedisAddr)
	for _, h := range slices.Sorted(maps.Keys(s.Hosts)) {
		fmt.Fprintf(w, ", %s:%d (%s)", s.Hosts[h], s.Ports.Redis, h)
	}
	fmt.Fprintln(w)
	if s.RegistryAddr != "" {
		fmt.Fprintf(w, "Registry:    %s\n", s.RegistryAddr)
	}
	for _, d := range s.FrontDoors {
		fmt.Fprintf(w, "Front door:  %s (%s, Consul service %s)\n", d.URL, d.Env, d.Service)
	}
	if s.FrontDoorStats != "" {
		fmt.Fprintf(w, "  stats:     http://%s/ (Prometheus: /metrics)\n", s.FrontDoorStats)
	}
	if s.PrometheusAddr != "" {
		fmt.Fprintf(w, "Prometheus:  %s/ (every allocation, labels alloc, service, canary; the front door)\n", s.PrometheusAddr)
	}
	fmt.Fprintf(w, "Logs:        %s\n", filepath.Join(s.Dir, "*.log"))
	if s.ACL {
		nf, cf := localstack.TokenFiles(s.Dir)
		fmt.Fprintf(w, "\nACLs are on. The deployer's tokens (its policies only): eval \"$(bin/stack env)\"\n")
		fmt.Fprintf(w, "For the nomad and consul CLIs, the management tokens:\n")
		fmt.Fprintf(w, "  export NOMAD_ADDR=%s NOMAD_TOKEN=$(cat %s)\n", s.NomadAddr, nf)
		fmt.Fprintf(w, "  export CONSUL_HTTP_ADDR=%s CONSUL_HTTP_TOKEN=$(cat %s)\n", s.ConsulAddr, cf)
		fmt.Fprintf(w, "For the Nomad UI, and the nomad CLI as a person (read the jobs, revert them: deployer/policies/nomad-operator.hcl),\n")
		fmt.Fprintf(w, "  the operator token (cat %s): paste it at %s/ui/settings/tokens\n", localstack.OperatorTokenFile(s.Dir), s.NomadAddr)
		return
	}
	fmt.Fprintf(w, "\nTo use it from this shell:\n")
	printEnv(w, s)
}

func printEnv(w io.Writer, s *localstack.Stack) {
	for _, e := range s.Env() {
		fmt.Fprintf(w, "export %s\n", e)
	}
}
