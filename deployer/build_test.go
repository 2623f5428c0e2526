package main

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// normalizedRE is the line of build's progress that names the image docker
// built and the normalized image that replaced it.
var normalizedRE = regexp.MustCompile(`==> normalized \S+: docker built (sha256:[0-9a-f]{64}), normalized (sha256:[0-9a-f]{64})`)

// TestBuildIsReproducible builds one commit twice, the second time without
// docker's cache, on the real engine and registry: docker's own images differ
// (it stamps its clock into them), and build still prints one digest, the one
// the registry serves for the tag.
func TestBuildIsReproducible(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if f.stack.RegistryAddr == "" {
		envtest.Unavailable(t, "the local stack runs no registry")
	}
	src := cloneHEAD(t)
	commit, err := exec.Command("git", "-C", src, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	repo := stacktest.Name(t, "repro")
	tag := f.stack.RegistryAddr + "/" + repo + ":" + strings.TrimSpace(string(commit))
	args := []string{"build", "-registry", f.stack.RegistryAddr, "-repo", repo, "-network", "host"}
	buildArgs, err := exec.Command(imagetest.RepoRoot(t)+"/scripts/image", "--build-args").Output()
	if err != nil {
		t.Fatalf("scripts/image --build-args: %v", err)
	}
	for _, a := range strings.Fields(string(buildArgs)) {
		args = append(args, "-build-arg", a)
	}

	var refs, built []string
	for i, extra := range [][]string{nil, {"-no-cache"}} {
		stdout, stderr, code := runCLI(t, f.dir, f.env, slices.Concat(args, extra, []string{src})...)
		steps := stepImages(stderr)
		if extra == nil && len(steps) > 0 {
			// The build with cache may have used other builds' step
			// images; its last one, the commit's label, is this commit's.
			steps = steps[len(steps)-1:]
		}
		removeUntagged(t, steps...)
		// Cleanups run last first: the tag goes before the images under it.
		t.Cleanup(func() { _, _ = imagetest.Docker("rmi", "--no-prune", tag) })
		if code != 0 {
			t.Fatalf("build %d: exit %d", i+1, code)
		}
		m := normalizedRE.FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("build %d: stderr has no line matching %s", i+1, normalizedRE)
		}
		built = append(built, m[1])
		refs = append(refs, strings.TrimSpace(stdout))
	}
	if built[0] == built[1] {
		t.Fatalf("docker built image %s both times: the second build used docker's cache, so the test proves nothing", built[0])
	}
	if refs[0] != refs[1] {
		t.Fatalf("two builds of one commit printed two references:\n%s\n%s", refs[0], refs[1])
	}
	pinned, err := imageref.Parse(refs[0])
	if err != nil {
		t.Fatal(err)
	}
	if pinned.Digest == "" || pinned.String() != tag+"@"+pinned.Digest {
		t.Fatalf("build printed %q, want %s@sha256:...", refs[0], tag)
	}
	tagged := pinned
	tagged.Digest = ""
	served, err := imageref.Resolver{}.Resolve(context.Background(), tagged)
	if err != nil {
		t.Fatal(err)
	}
	if !served.Resolved || served.Digest != pinned.Digest {
		t.Fatalf("the registry serves %s as %q (resolved %v), want %s", tagged, served.Digest, served.Resolved, pinned.Digest)
	}
}

// cloneHEAD returns a clone of the project's HEAD: build wants a clean tree of
// one commit, which the developer's work tree need not be.
func cloneHEAD(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if out, err := exec.Command("git", "clone", "-q", imagetest.RepoRoot(tb), dir).CombinedOutput(); err != nil {
		tb.Fatalf("git clone: %v: %s", err, out)
	}
	return dir
}

// stepImageRE matches the images docker build reports for its steps.
var stepImageRE = regexp.MustCompile(`(?m)^ ---> ([0-9a-f]{12})$`)

// stepImages returns the images a docker build's output names, in order. A
// build without cache made them all (a few hundred MB), but for the tagged
// base images.
func stepImages(buildOutput string) []string {
	var ids []string
	for _, m := range stepImageRE.FindAllStringSubmatch(buildOutput, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// removeUntagged removes, when the test ends, those of the images that have
// no tag then, so base images stay. It removes only them: their untagged
// parents may be other builds' cache.
func removeUntagged(tb testing.TB, ids ...string) {
	tb.Helper()
	tb.Cleanup(func() {
		// Children first, so that each removal finds its image unused.
		for i := len(ids) - 1; i >= 0; i-- {
			if tags, err := imagetest.Docker("image", "inspect", "-f", "{{len .RepoTags}}", ids[i]); err != nil || tags != "0" {
				continue
			}
			_, _ = imagetest.Docker("rmi", "--no-prune", ids[i])
		}
	})
}
