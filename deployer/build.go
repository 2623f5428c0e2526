package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kodekloud/counter/internal/reproimage"
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
pushes it, and prints REGISTRY/REPO:COMMIT@sha256:... for submit -image.

The build is reproducible: before the push, the image is rewritten with every
time in its config, history and files set to SOURCE_DATE_EPOCH (default: the
commit's committer time) and without the fields that name the build's
containers, and loaded back into docker under the same tag. Two builds of one
commit and Dockerfile are one image ID and one digest, so a rebuild never
moves a tag.`,
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
			fs.BoolVar(&o.noPush, "no-push", false, "build, normalize and tag only; print REGISTRY/REPO:COMMIT")
			fs.BoolVar(&o.noCache, "no-cache", false, "docker build --no-cache: rebuild every step, e.g. to check that a rebuild has the same digest")
			return func(ctx context.Context, args []string) error { return o.build(ctx, sh, args) }
		},
	}
}

type buildOptions struct {
	registry, repo, network string
	buildArgs               multiFlag
	allowDirty, noPush      bool
	noCache                 bool
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

	epoch, err := sourceDateEpoch(ctx, sh.getenv, dir)
	if err != nil {
		return err
	}

	dargs := []string{"build", "-t", ref, "--label", "org.opencontainers.image.revision=" + commit}
	if o.noCache {
		dargs = append(dargs, "--no-cache")
	}
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
	built, err := output(ctx, dir, "docker", "image", "inspect", "-f", "{{.Id}}", ref)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "==> normalize %s (times at %s)\n", ref, epoch.Format(time.RFC3339))
	id, err := normalizeImage(ctx, stderr, ref, epoch)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "==> normalized %s: docker built %s, normalized %s\n", ref, built, id)
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

// sourceDateEpoch is the time every timestamp in the image gets:
// SOURCE_DATE_EPOCH when set (the reproducible-builds.org convention), else
// the commit's committer time, which a rebuild of the commit shares.
func sourceDateEpoch(ctx context.Context, getenv func(string) string, dir string) (time.Time, error) {
	s := getenv("SOURCE_DATE_EPOCH")
	from := "SOURCE_DATE_EPOCH"
	if s == "" {
		var err error
		if s, err = output(ctx, dir, "git", "log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, err
		}
		from = "the commit's time"
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("%s %q is not seconds since 1970", from, s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// normalizeImage replaces the image ref in docker by its normalized copy
// (reproimage) and returns the copy's ID. Docker's own push then sends the
// same bytes for the same content, with docker's credentials and TLS. The
// build's own image is left untagged, as the build cache of the next build.
func normalizeImage(ctx context.Context, stderr io.Writer, ref string, epoch time.Time) (string, error) {
	save := exec.CommandContext(ctx, "docker", "save", ref)
	var saved, errb bytes.Buffer
	save.Stdout, save.Stderr = &saved, &errb
	if err := save.Run(); err != nil {
		return "", fmt.Errorf("docker save %s: %v: %s", ref, err, strings.TrimSpace(errb.String()))
	}
	var normalized bytes.Buffer
	id, err := reproimage.Normalize(&saved, &normalized, epoch, ref)
	if err != nil {
		return "", fmt.Errorf("normalize %s: %w", ref, err)
	}
	load := exec.CommandContext(ctx, "docker", "load")
	load.Stdin, load.Stdout, load.Stderr = &normalized, stderr, stderr
	if err := load.Run(); err != nil {
		return "", fmt.Errorf("docker load %s: %w", ref, err)
	}
	// Docker names an image by its config's digest, as Normalize does: a
	// different ID means docker changed the config on the way in.
	if loaded, err := output(ctx, ".", "docker", "image", "inspect", "-f", "{{.Id}}", ref); err != nil {
		return "", err
	} else if loaded != id {
		return "", fmt.Errorf("docker loaded the normalized %s as image %s, want %s", ref, loaded, id)
	}
	return id, nil
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
