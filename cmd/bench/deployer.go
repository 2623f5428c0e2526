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
	"syscall"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/resp"
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
	code      int
}

// bench holds what the deployer benchmark runs against.
type bench struct {
	stack    *localstack.Stack
	deployer string // binary
	nomad    string // binary
	envDir   string
	jobFile  string
	env      []string
	progress io.Writer
}

func (b *bench) exec(ctx context.Context, name string, args ...string) (timing, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), b.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	t := timing{wall: time.Since(start), stdout: out.String()}
	if cmd.ProcessState != nil {
		t.code = cmd.ProcessState.ExitCode()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			t.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			t.rssMiB = float64(ru.Maxrss) / 1024
		}
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return t, err
	}
	return t, nil
}

// must runs a command that has to exit 0 (or one of ok).
func (b *bench) must(ctx context.Context, ok []int, name string, args ...string) (timing, error) {
	t, err := b.exec(ctx, name, args...)
	if err == nil && !slices.Contains(append(ok, 0), t.code) {
		err = fmt.Errorf("%s %s: exit %d\n%s", filepath.Base(name), strings.Join(args, " "), t.code, t.stdout)
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
	b := &bench{progress: progress, envDir: filepath.Join(work, "environments"), jobFile: filepath.Join(root, "jobs", "counter.nomad.hcl")}
	bin, err := binaries(ctx, root)
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
		if err := waitFor(10*time.Second, func() error { return resp.Ping(fmt.Sprintf("127.0.0.1:%d", port)) }); err != nil {
			return nil, err
		}
		redisPorts = append(redisPorts, port)
	}
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr})
	if err != nil {
		return nil, err
	}
	store := configstore.New(cc, "")
	rep := &deployerReport{Rounds: rounds, Versions: versions}

	// Submit to healthy vs nomad job run of the same rendered job to healthy.
	var sub, run []timing
	for i := range rounds {
		port := redisPorts[i]
		if err := writeEnv(b.envDir, "a", "bench-a", []string{"dc1"}, port); err != nil {
			return nil, err
		}
		if err := writeEnv(b.envDir, "b", "bench-b", []string{"dc1"}, port); err != nil {
			return nil, err
		}
		// The plain-Nomad path gets the same job and the same config in
		// Consul, written the way a user without the deployer would.
		rendered, err := b.must(ctx, nil, b.deployer, b.dep("render", "-env", "b", "-image", image)...)
		if err != nil {
			return nil, err
		}
		jobFile := filepath.Join(work, fmt.Sprintf("b-%d.json", i))
		if err := os.WriteFile(jobFile, []byte(rendered.stdout), 0o644); err != nil {
			return nil, err
		}
		values := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(port)}
		if _, err := store.Put(ctx, store.Path("default", "bench-b", configstore.Hash(values)), values); err != nil {
			return nil, err
		}
		steps := []func() error{
			func() error {
				fmt.Fprintf(progress, "deployer: round %d: deployer submit to healthy\n", i+1)
				t, err := b.must(ctx, nil, b.deployer, b.dep("submit", "-env", "a", "-image", image)...)
				sub = append(sub, t)
				return err
			},
			func() error {
				fmt.Fprintf(progress, "deployer: round %d: nomad job run to healthy\n", i+1)
				t, err := b.must(ctx, nil, b.nomad, "job", "run", "-json", jobFile)
				run = append(run, t)
				return err
			},
		}
		if i%2 == 1 {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
		}
	}
	rep.Comparisons = append(rep.Comparisons, compare("submit to healthy", sub, run, "nomad job run"))

	// Rollback vs nomad job revert, each to healthy, alternating targets.
	var rb, rv []timing
	for i := range rounds {
		target := strconv.Itoa(i % 2)
		steps := []func() error{
			func() error {
				fmt.Fprintf(progress, "deployer: round %d: deployer rollback -to-version %s\n", i+1, target)
				t, err := b.must(ctx, nil, b.deployer, b.dep("rollback", "-env", "a", "-to-version", target)...)
				rb = append(rb, t)
				return err
			},
			func() error {
				fmt.Fprintf(progress, "deployer: round %d: nomad job revert bench-b %s\n", i+1, target)
				t, err := b.must(ctx, nil, b.nomad, "job", "revert", "bench-b", target)
				rv = append(rv, t)
				return err
			},
		}
		if i%2 == 1 {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
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
		if _, err := b.must(ctx, nil, b.deployer, b.dep("submit", "-env", "c", "-image", image, "-detach")...); err != nil {
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

func median(ts []timing, f func(timing) float64) float64 {
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

// binaries finds nomad and consul through scripts/hashitools, and Redis and
// the registry on PATH.
func binaries(ctx context.Context, root string) (localstack.Binaries, error) {
	var bin localstack.Binaries
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "hashitools"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return bin, fmt.Errorf("scripts/hashitools: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, path, _ := strings.Cut(line, "=")
		switch name {
		case "nomad":
			bin.Nomad = path
		case "consul":
			bin.Consul = path
		}
	}
	if bin.Redis, err = exec.LookPath("redis-server"); err != nil {
		return bin, err
	}
	if bin.Registry, err = exec.LookPath("docker-registry"); err != nil {
		return bin, err
	}
	return bin, nil
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
