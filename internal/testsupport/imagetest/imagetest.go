// Package imagetest builds the project's real Dockerfile on the local Docker
// engine for tests, through the same scripts/image a developer runs.
package imagetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

// RepoRoot returns the directory holding the project's go.mod.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.HasPrefix(b, []byte("module github.com/kodekloud/counter\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("repository root (go.mod of github.com/kodekloud/counter) not found above the test's directory")
		}
		dir = parent
	}
}

// RequireDocker stops the test unless a Docker engine answers (Fatal in CI).
// Under go test -short it skips the test without asking the engine.
func RequireDocker(tb testing.TB) {
	tb.Helper()
	envtest.NeedsServers(tb, "a Docker engine")
	envtest.LookPath(tb, "docker", "docker.io")
	if out, err := exec.Command("docker", "info", "-f", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		envtest.Unavailable(tb, "no Docker engine answers (run scripts/dockerd-up): %v: %s", err, bytes.TrimSpace(out))
	}
}

// Build builds the app image as tag and returns its image ID. Docker's layer
// cache makes every build after the first take seconds.
func Build(tb testing.TB, tag string) string {
	tb.Helper()
	RequireDocker(tb)
	root := RepoRoot(tb)
	cmd := exec.Command(filepath.Join(root, "scripts", "image"), tag)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("scripts/image %s: %v\n%s", tag, err, stderr.String())
	}
	id := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(id, "sha256:") {
		tb.Fatalf("scripts/image %s printed %q, want an image ID", tag, id)
	}
	return id
}

// Docker runs a docker command and returns its trimmed stdout.
func Docker(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
