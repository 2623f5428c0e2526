package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Dockerfile compiles the app's dependencies in a layer of their own,
// from a list of the app's imports from outside the project: an import the
// list lacks would compile on every build, and one it keeps after the app
// dropped it would be compiled for nothing.
func TestDockerfileCompilesTheAppsDependencies(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var listed, copied []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "COPY internal/"):
			copied = append(copied, "github.com/kodekloud/counter/"+strings.TrimSuffix(strings.Fields(line)[1], "/"))
		case line == `RUN go build -trimpath \`:
			in = true
		case in:
			listed = append(listed, strings.TrimSpace(strings.TrimSuffix(line, `\`)))
			in = strings.HasSuffix(line, `\`)
		}
	}
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var imports, own []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/kodekloud/counter/") {
			own = append(own, p)
		}
		// Outside the standard library (a dot in the first element) and
		// outside the project.
		if strings.Contains(strings.Split(p, "/")[0], ".") && !strings.HasPrefix(p, "github.com/kodekloud/counter/") {
			imports = append(imports, p)
		}
	}
	slices.Sort(listed)
	slices.Sort(imports)
	if !slices.Equal(listed, imports) {
		t.Errorf("the Dockerfile compiles %q ahead of the app, but the app imports %q from outside the project", listed, imports)
	}
	// The build sees only what the Dockerfile copies: each of the
	// project's packages the app imports must be copied, and let through
	// .dockerignore.
	slices.Sort(copied)
	slices.Sort(own)
	if !slices.Equal(copied, own) {
		t.Errorf("the Dockerfile copies %q of the project's packages, but the app imports %q", copied, own)
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range own {
		if dir := "!" + strings.TrimPrefix(p, "github.com/kodekloud/counter/") + "/"; !slices.Contains(strings.Fields(string(ignore)), dir) {
			t.Errorf(".dockerignore lacks %s: the image build would not see the package the app imports", dir)
		}
	}
}
