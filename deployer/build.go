package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

const buildHelp = `Usage: deployer build [options] [CONTEXT]

Builds the app image from CONTEXT (default ".") with docker, tags it
REGISTRY/REPO:COMMIT (the git commit, 12 digits), labels it with the commit,
pushes it, and prints REGISTRY/REPO:COMMIT@sha256:... for submit -image.

Options:
  -registry HOST:PORT  registry to push to (default $COUNTER_REGISTRY, else
                       127.0.0.1:5000)
  -repo NAME           repository (default "counter")
  -build-arg K=V       passed to docker build; repeatable
  -network MODE        docker build --network (e.g. host)
  -allow-dirty         build from a work tree with uncommitted changes; the
                       tag gets a "-dirty" suffix
  -no-push             build and tag only

Exit codes: 0 ok, 1 error, 2 usage
`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runBuild(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deployer build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, buildHelp) }
	registry := getenv("COUNTER_REGISTRY")
	if registry == "" {
		registry = "127.0.0.1:5000"
	}
	fs.StringVar(&registry, "registry", registry, "")
	repo := fs.String("repo", "counter", "")
	network := fs.String("network", "", "")
	allowDirty := fs.Bool("allow-dirty", false, "")
	noPush := fs.Bool("no-push", false, "")
	var buildArgs multiFlag
	fs.Var(&buildArgs, "build-arg", "")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &exitStatus{code: exitUsage}
	}
	dir := "."
	switch fs.NArg() {
	case 0:
	case 1:
		dir = fs.Arg(0)
	default:
		return usageError("build: want at most one CONTEXT, got %q", fs.Args())
	}
	for _, a := range buildArgs {
		if !strings.Contains(a, "=") {
			return usageError("build: -build-arg %q is not K=V", a)
		}
	}

	commit, err := output(ctx, dir, "git", "rev-parse", "--short=12", "HEAD")
	if err != nil {
		return fmt.Errorf("the image tag is the git commit, and %s has none: %w", dir, err)
	}
	tag := commit
	if status, err := output(ctx, dir, "git", "status", "--porcelain", "--untracked-files=no"); err != nil {
		return err
	} else if status != "" {
		if !*allowDirty {
			return fmt.Errorf("%s has uncommitted changes, so commit %s does not describe the build: commit them, or pass -allow-dirty", dir, commit)
		}
		tag += "-dirty"
	}
	ref := *repo + ":" + tag
	if registry != "" {
		ref = registry + "/" + ref
	}

	dargs := []string{"build", "-t", ref, "--label", "org.opencontainers.image.revision=" + commit}
	if *network != "" {
		dargs = append(dargs, "--network", *network)
	}
	for _, a := range buildArgs {
		dargs = append(dargs, "--build-arg", a)
	}
	dargs = append(dargs, dir)
	fmt.Fprintf(stderr, "==> docker %s\n", strings.Join(dargs, " "))
	if err := stream(ctx, stderr, "docker", dargs...); err != nil {
		return fmt.Errorf("docker build: %w", err)
	}
	if *noPush {
		fmt.Fprintln(stdout, ref)
		return nil
	}
	fmt.Fprintf(stderr, "==> docker push %s\n", ref)
	if err := stream(ctx, stderr, "docker", "push", ref); err != nil {
		return fmt.Errorf("docker push %s: %w", ref, err)
	}
	digests, err := output(ctx, dir, "docker", "image", "inspect", "-f", `{{join .RepoDigests "\n"}}`, ref)
	if err != nil {
		return err
	}
	name := ref[:strings.LastIndex(ref, ":")]
	for _, d := range strings.Split(digests, "\n") {
		if n, digest, ok := strings.Cut(d, "@"); ok && n == name {
			fmt.Fprintf(stdout, "%s@%s\n", ref, digest)
			return nil
		}
	}
	return fmt.Errorf("pushed %s but docker reports no digest for it (RepoDigests: %q)", ref, digests)
}

func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func stream(ctx context.Context, w io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = w, w
	return cmd.Run()
}
