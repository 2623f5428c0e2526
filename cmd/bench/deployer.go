package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/localstack"
)

type comparison struct {
	What       string  `json:"what"`
	DeployerMS float64 `json:"deployer_ms"`
	BaselineMS float64 `json:"nomad_cli_ms,omitempty"`
	Baseline   string  `json:"nomad_cli,omitempty"`
	CPUMS      float64 `json:"deployer_cpu_ms"`
	RSSMiB     float64 `json:"deployer_peak_rss_mib"`
}

type deployerReport struct {
	Rounds      int          `json:"rounds"`
	Versions    int          `json:"history_versions"`
	Comparisons []comparison `json:"comparisons"`
}

// timing is one command's wall time and resource use.
type timing struct {
	wall, cpu time.Duration
	rssMiB    float64
	stdout    string
	stderr    string
	code      int
}

// bench holds what the deployer benchmark runs against.
type bench struct {
	work     string
	time     string // GNU time
	stack    *localstack.Stack
	deployer string // binary
	nomad    string // binary
	envDir   string
	jobFile  string
	env      []string
	progress io.Writer
}

// exec runs a command and measures it. CPU time and peak RSS come from GNU
// time, not from this process's wait4: a child forked from a Go process
// inherits the Go process's RSS high-water mark across exec, so its own
// figure would read as this benchmark's size.
func (b *bench) exec(ctx context.Context, name string, args ...string) (timing, error) {
	usage := filepath.Join(b.work, "usage")
	cmd := exec.CommandContext(ctx, b.time, append([]string{"-f", "%U %S %M", "-o", usage, name}, args...)...)
	cmd.Env = append(os.Environ(), b.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	t := timing{wall: time.Since(start), stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return t, err
	}
	t.code = cmd.ProcessState.ExitCode()
	raw, rerr := os.ReadFile(usage)
	if rerr != nil {
		return t, rerr
	}
	// GNU time writes "Command exited with non-zero status N" first when
	// the command fails; the figures are on the last line.
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var user, sys, rssKB float64
	if _, err := fmt.Sscanf(lines[len(lines)-1], "%f %f %f", &user, &sys, &rssKB); err != nil {
		return t, fmt.Errorf("GNU time wrote %q: %w", raw, err)
	}
	t.cpu = time.Duration((user + sys) * float64(time.Second))
	t.rssMiB = rssKB / 1024
	return t, nil
}

// must runs a command that has to exit 0 (or one of ok).
func (b *bench) must(ctx context.Context, ok []int, name string, args ...string) (timing, error) {
	t, err := b.exec(ctx, name, args...)
	if err == nil && !slices.Contains(append(ok, 0), t.code) {
		err = fmt.Errorf("%s %s: exit %d\n%s%s", filepath.Base(name), strings.Join(args, " "), t.code, t.stdout, t.stderr)
	}
	return t, err
}

func (b *bench) dep(args ...string) []string {
	cmd := args[0]
	out := []string{cmd, "-environments", b.envDir}
	if cmd == "render" || cmd == "plan" || cmd == "submit" {
		out = append(out, "-job", b.jobFile)
	}
	return append(out, args[1:]...)
}

func benchDeployer(ctx context.Context, root, work string, versions, rounds int, progress io.Writer) (*deployerReport, error) {
	gnuTime, err := exec.LookPath("time")
	if err != nil {
		return nil, fmt.Errorf("GNU time not found (it measures each command's CPU and peak RSS): install Debian's time package")
	}
	b := &bench{work: work, time: gnuTime, progress: progress, envDir: filepath.Join(work, "environments"), jobFile: filepath.Join(root, "jobs", "counter.nomad.hcl")}
	bin, err := localstack.FindBinaries(ctx, root, progress)
	if err != nil {
		return nil, err
	}
	b.nomad = bin.Nomad
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		return nil, err
	}
	defer release()
	fmt.Fprintln(progress, "deployer: starting a private local stack")
	s, err := localstack.Start(ctx, localstack.Config{
		Dir: filepath.Join(work, "stack"), Bin: bin, Progress: progress,
		Ports: localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
	})
	if err != nil {
		return nil, err
	}
	defer s.Stop(context.Background())
	b.stack = s
	b.env = append(s.Env(), "DEPLOYER_USER=bench")

	b.deployer = filepath.Join(work, "deployer")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", b.deployer, filepath.Join(root, "deployer")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./deployer: %v\n%s", err, out)
	}
	image, err := pushImage(ctx, root, s.RegistryAddr, progress)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.envDir, 0o755); err != nil {
		return nil, err
	}
	var redisPorts []int
	for i := range rounds + 1 {
		port := freePort()
		p, err := startProc(ctx, filepath.Join(work, fmt.Sprintf("redis-%d.log", i)), nil, "redis-server",
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
		if err != nil {
			return nil, err
		}
		defer p.stop()
		if err := waitFor(10*time.Second, func() error { return pingRedis(ctx, fmt.Sprintf("127.0.0.1:%d", port)) }); err != nil {
			return nil, err
		}
		redisPorts = append(redisPorts, port)
	}
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		return nil, err
	}
	store := configstore.New(cc, "")
	// The stack enforces ACLs: each job's tasks may read their own
	// snapshots, as on a secured cluster.
	for _, job := range []string{"bench-a", "bench-b", "bench-c"} {
		if err := access.GrantJobConfig(ctx, cc, "default", job, store.Folder("default", job)); err != nil {
			return nil, err
		}
	}
	rep := &deployerReport{Rounds: rounds, Versions: versions}
	nc, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	if err != nil {
		return nil, err
	}

	// Submit vs nomad job run of the same rendered job: to healthy, and
	// detached (the tool's own cost up to registration).
	var sub, run, subD, runD []timing
	for i := range 2 * rounds {
		detach := i >= rounds
		port := redisPorts[i%len(redisPorts)]
		jobFile, err := b.prepareRound(ctx, store, image, port, filepath.Join(work, fmt.Sprintf("b-%d.json", i)))
		if err != nil {
			return nil, err
		}
		// A detached round leaves deployments running; the deployer refuses
		// to cancel one (nomad job run would), so each round starts once the
		// last ones have ended, outside the timings.
		for _, job := range []string{"bench-a", "bench-b"} {
			if err := waitIdle(ctx, nc, job); err != nil {
				return nil, err
			}
		}
		sa, sb, what := &sub, &run, "to healthy"
		dargs := b.dep("submit", "-env", "a", "-image", image)
		nargs := []string{"job", "run", "-json", jobFile}
		if detach {
			sa, sb, what = &subD, &runD, "detached"
			dargs = append(dargs, "-detach")
			nargs = []string{"job", "run", "-detach", "-json", jobFile}
		}
		err = alternate(i,
			b.step(ctx, sa, fmt.Sprintf("round %d: deployer submit %s", i%rounds+1, what), b.deployer, dargs...),
			b.step(ctx, sb, fmt.Sprintf("round %d: nomad job run %s", i%rounds+1, what), b.nomad, nargs...))
		if err != nil {
			return nil, err
		}
	}
	rep.Comparisons = append(rep.Comparisons, compare("submit to healthy", sub, run, "nomad job run"))
	rep.Comparisons = append(rep.Comparisons, compare("submit -detach (to registered)", subD, runD, "nomad job run -detach"))

	// Rollback vs nomad job revert, each to healthy, each to the version
	// before the current one (always another release here, and one Nomad
	// still keeps: it drops the oldest untagged versions).
	previous := func(job string) (string, error) {
		j, _, err := nc.Jobs().Info(job, nil)
		if err != nil {
			return "", err
		}
		return strconv.FormatUint(*j.Version-1, 10), nil
	}
	var rb, rv []timing
	for i := range rounds {
		for _, job := range []string{"bench-a", "bench-b"} {
			if err := waitIdle(ctx, nc, job); err != nil {
				return nil, err
			}
		}
		ta, err := previous("bench-a")
		if err != nil {
			return nil, err
		}
		tb, err := previous("bench-b")
		if err != nil {
			return nil, err
		}
		err = alternate(i,
			b.step(ctx, &rb, fmt.Sprintf("round %d: deployer rollback -to-version %s", i+1, ta), b.deployer, b.dep("rollback", "-env", "a", "-to-version", ta)...),
			b.step(ctx, &rv, fmt.Sprintf("round %d: nomad job revert bench-b %s", i+1, tb), b.nomad, "job", "revert", "bench-b", tb))
		if err != nil {
			return nil, err
		}
	}
	rep.Comparisons = append(rep.Comparisons, compare("rollback to healthy", rb, rv, "nomad job revert"))

	// History over many versions: a job in a datacenter with no nodes, so
	// versions register without anything being placed.
	fmt.Fprintf(progress, "deployer: registering %d versions for history\n", versions)
	for i := range versions {
		if err := writeEnv(b.envDir, "c", "bench-c", []string{"nowhere"}, 20000+i); err != nil {
			return nil, err
		}
		if _, err := b.must(ctx, nil, b.deployer, b.dep("submit", "-env", "c", "-image", image, "-detach", "-allow-unplaceable")...); err != nil {
			return nil, err
		}
		// Nothing can be placed, so the version's deployment would run until
		// its progress deadline, and the deployer would not cancel it for the
		// next version: end it here.
		if err := failDeployment(ctx, nc, "bench-c"); err != nil {
			return nil, err
		}
	}
	var hist, nhist, render, plan []timing
	for range 10 {
		t, err := b.must(ctx, nil, b.deployer, b.dep("history", "-env", "c")...)
		if err != nil {
			return nil, err
		}
		hist = append(hist, t)
		if t, err = b.must(ctx, nil, b.nomad, "job", "history", "-p", "bench-c"); err != nil {
			return nil, err
		}
		nhist = append(nhist, t)
		if t, err = b.must(ctx, nil, b.deployer, b.dep("render", "-env", "a", "-image", image)...); err != nil {
			return nil, err
		}
		render = append(render, t)
		if t, err = b.must(ctx, []int{1}, b.deployer, b.dep("plan", "-env", "a", "-image", image)...); err != nil {
			return nil, err
		}
		plan = append(plan, t)
	}
	if n := strings.Count(hist[0].stdout, "\n") - 1; n < versions {
		fmt.Fprintf(progress, "deployer: note: history listed %d versions\n", n)
	}
	rep.Comparisons = append(rep.Comparisons,
		compare(fmt.Sprintf("history, %d versions", versions), hist, nhist, "nomad job history -p"),
		compare("render", render, nil, ""),
		compare("plan", plan, nil, ""))
	return rep, nil
}

// prepareRound points environments a and b at the Redis on port, renders b's
// job to file for the nomad CLI and writes b's config snapshot to Consul, as
// a user of plain Nomad would with consul kv put.
// failDeployment marks the job's running deployment failed.
func failDeployment(ctx context.Context, nc *nomad.Client, job string) error {
	dep, _, err := nc.Jobs().LatestDeployment(job, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil || dep == nil || dep.Status != "running" {
		return err
	}
	if _, _, err := nc.Deployments().Fail(dep.ID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("end deployment %s of %s: %w", dep.ID, job, err)
	}
	return nil
}

// waitIdle waits until no deployment of job is running.
func waitIdle(ctx context.Context, nc *nomad.Client, job string) error {
	return waitFor(3*time.Minute, func() error {
		dep, _, err := nc.Jobs().LatestDeployment(job, (&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil || dep == nil {
			return nil // no job yet, or no deployment
		}
		switch dep.Status {
		case "successful", "failed", "cancelled":
			return nil
		}
		return fmt.Errorf("deployment %s of %s is %s", dep.ID, job, dep.Status)
	})
}

func (b *bench) prepareRound(ctx context.Context, store *configstore.Store, image string, port int, file string) (string, error) {
	if err := writeEnv(b.envDir, "a", "bench-a", []string{"dc1"}, port); err != nil {
		return "", err
	}
	if err := writeEnv(b.envDir, "b", "bench-b", []string{"dc1"}, port); err != nil {
		return "", err
	}
	rendered, err := b.must(ctx, nil, b.deployer, b.dep("render", "-env", "b", "-image", image)...)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(file, []byte(rendered.stdout), 0o644); err != nil {
		return "", err
	}
	values := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(port)}
	_, err = store.Put(ctx, store.Path("default", "bench-b", configstore.Hash(values)), values)
	return file, err
}

// step returns a run of one timed command whose timing goes into into.
func (b *bench) step(ctx context.Context, into *[]timing, what, name string, args ...string) func() error {
	return func() error {
		fmt.Fprintf(b.progress, "deployer: %s\n", what)
		t, err := b.must(ctx, nil, name, args...)
		*into = append(*into, t)
		return err
	}
}

// alternate runs first then second in even rounds and the other way round
// in odd ones, so neither side always runs on a warmer stack.
func alternate(round int, first, second func() error) error {
	if round%2 == 1 {
		first, second = second, first
	}
	if err := first(); err != nil {
		return err
	}
	return second()
}

func compare(what string, deployer, baseline []timing, name string) comparison {
	c := comparison{What: what, Baseline: name}
	c.DeployerMS = median(deployer, func(t timing) float64 { return ms(t.wall) })
	c.CPUMS = median(deployer, func(t timing) float64 { return ms(t.cpu) })
	c.RSSMiB = median(deployer, func(t timing) float64 { return t.rssMiB })
	if len(baseline) > 0 {
		c.BaselineMS = median(baseline, func(t timing) float64 { return ms(t.wall) })
	}
	return c
}

// median is the middle value of f over ts (the upper one of an even count).
func median[T any](ts []T, f func(T) float64) float64 {
	vs := make([]float64, len(ts))
	for i, t := range ts {
		vs[i] = f(t)
	}
	slices.Sort(vs)
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)/2]
}

func writeEnv(dir, name, job string, dcs []string, port int) error {
	quoted, _ := json.Marshal(dcs)
	src := fmt.Sprintf(`job = %q
datacenters = %s
count = 1
config {
  HOST = "127.0.0.1"
  PORT = %d
}
resources {
  cpu    = 50
  memory = 32
}
update {
  min_healthy_time = "1s"
  healthy_deadline = "30s"
}
`, job, quoted, port)
	return os.WriteFile(filepath.Join(dir, name+".hcl"), []byte(src), 0o644)
}

// pushImage builds the app image and pushes it to the registry, returning
// REGISTRY/counter:bench@sha256:...
func pushImage(ctx context.Context, root, registry string, progress io.Writer) (string, error) {
	fmt.Fprintln(progress, "deployer: building and pushing the app image")
	tag := "counter:bench"
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "image"), tag)
	cmd.Stderr = io.Discard
	if out, err := cmd.Output(); err != nil {
		return "", fmt.Errorf("scripts/image: %v %s", err, out)
	}
	ref := registry + "/" + tag
	for _, args := range [][]string{{"tag", tag, ref}, {"push", ref}} {
		if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", `{{join .RepoDigests "\n"}}`, ref).Output()
	if err != nil {
		return "", err
	}
	for _, d := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if n, digest, ok := strings.Cut(d, "@"); ok && n == registry+"/counter" {
			return ref + "@" + digest, nil
		}
	}
	return "", fmt.Errorf("no digest for %s after push", ref)
}
