package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// builtApp is an app binary and where its source came from.
type builtApp struct {
	bin      string
	revision string // what git names it: a short commit, "-dirty" for a working tree with changes
	from     string // "working tree" or "git archive <rev>"
}

// buildApp builds the app as the Dockerfile builds it, so its RSS is the
// shipped binary's, into work/name. With rev empty it builds the working
// tree; otherwise the tree of commit rev, which git archive extracts into a
// folder of work that is removed once the binary is built (no worktree is
// registered in the repository, nothing else in it changes).
func buildApp(ctx context.Context, root, work, name, rev string, progress io.Writer) (*builtApp, error) {
	b := &builtApp{bin: filepath.Join(work, name), revision: gitRevision(root), from: "working tree"}
	src := root
	if rev != "" {
		short, err := resolveRev(ctx, root, rev)
		if err != nil {
			return nil, err
		}
		b.revision, b.from = short, "git archive "+rev
		src = filepath.Join(work, name+"-src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		defer os.RemoveAll(src)
		fmt.Fprintf(progress, "app: %s: git archive %s | tar -x -C %s\n", name, b.revision, src)
		if err := extract(ctx, root, b.revision, src); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(progress, "app: %s: go build ./app (%s, %s)\n", name, b.revision, b.from)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", b.bin, "./app")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./app at %s (%s): %v\n%s", b.revision, b.from, err, out)
	}
	return b, nil
}

// resolveRev returns the short name of commit rev.
func resolveRev(ctx context.Context, root, rev string) (string, error) {
	out, err := gitOutput(ctx, root, "rev-parse", "--short", rev+"^{commit}")
	return strings.TrimSpace(out), err
}

// extract writes the tree of rev into dir: git archive piped into tar.
func extract(ctx context.Context, root, rev, dir string) error {
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", rev)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	var archiveErr, untarErr bytes.Buffer
	archive.Stderr, untar.Stderr = &archiveErr, &untarErr
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	if err := archive.Start(); err != nil {
		return fmt.Errorf("git archive %s: %w", rev, err)
	}
	if err := untar.Run(); err != nil {
		pipe.Close() // git, blocked on a pipe nobody reads, fails instead
		_ = archive.Wait()
		return fmt.Errorf("tar -x -C %s: %v: %s", dir, err, untarErr.Bytes())
	}
	if err := archive.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %v: %s", rev, err, archiveErr.Bytes())
	}
	return nil
}

// gitOutput runs git in root and returns its stdout, or an error with its
// stderr.
func gitOutput(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}
