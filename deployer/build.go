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

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func buildCommand() *command {
	return &command{
		name:     "build",
		args:     "[options] [CONTEXT]",
		synopsis: "Build and push the app image, tagged with the git commit",
		doc: `Builds the app image from CONTEXT (default ".") with docker, tags it
REGISTRY/REPO:COMMIT (the git commit, 12 digits), labels it with the commit,
pushes it, and prints REGISTRY/REPO:COMMIT@sha256:... for submit -image.`,
		maxArgs: 1,
		exits:   codes(exitOK, exitError, exitUsage),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var o buildOptions
			o.registry = sh.getenv("COUNTER_REGISTRY")
			if o.registry == "" {
				o.registry = "127.0.0.1:5000"
			}
			fs.StringVar(&o.registry, "registry", o.registry, "registry `HOST:PORT` to push to; COUNTER_REGISTRY sets the default")
			fs.StringVar(&o.repo, "repo", "counter", "repository `NAME`")
			fs.Var(&o.buildArgs, "build-arg", "`K=V` passed to docker build; repeatable")
			fs.StringVar(&o.network, "network", "", "docker build --network `MODE` (e.g. host)")
			fs.BoolVar(&o.allowDirty, "allow-dirty", false, `build from a work tree with uncommitted changes; the tag gets a "-dirty" suffix`)
			fs.BoolVar(&o.noPush, "no-push", false, "build and tag only")
			return func(ctx context.Context, args []string) error { return o.build(ctx, sh, args) }
		},
	}
}

type buildOptions struct {
	registry, repo, network string
	buildArgs               multiFlag
	allowDirty, noPush      bool
}

func (o *buildOptions) build(ctx context.Context, sh *shell, args []string) error {
	stdout, stderr := sh.stdout, sh.stderr
	dir := "."
	if len(args) == 1 {
		dir = args[0]
	}
	for _, a := range o.buildArgs {
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
		if !o.allowDirty {
			return fmt.Errorf("%s has uncommitted changes, so commit %s does not describe the build: commit them, or pass -allow-dirty", dir, commit)
		}
		tag += "-dirty"
	}
	ref := o.repo + ":" + tag
	if o.registry != "" {
		ref = o.registry + "/" + ref
	}

	dargs := []string{"build", "-t", ref, "--label", "org.opencontainers.image.revision=" + commit}
	if o.network != "" {
		dargs = append(dargs, "--network", o.network)
	}
	for _, a := range o.buildArgs {
		dargs = append(dargs, "--build-arg", a)
	}
	dargs = append(dargs, dir)
	fmt.Fprintf(stderr, "==> docker %s\n", strings.Join(dargs, " "))
	if err := stream(ctx, stderr, "docker", dargs...); err != nil {
		return fmt.Errorf("docker build: %w", err)
	}
	if o.noPush {
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
