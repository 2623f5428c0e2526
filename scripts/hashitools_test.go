package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeNomad is a Go program that answers `nomad version` as a recent Nomad
// does, and nothing else.
const fakeNomad = `package main

import "fmt"

func main() { fmt.Println("Nomad v1.11.2") }
`

// goNomad builds fakeNomad into dir/nomad with the build tags given.
func goNomad(t *testing.T, dir, tags string) {
	t.Helper()
	src := t.TempDir()
	for name, text := range map[string]string{"go.mod": "module fakenomad\n\ngo 1.21\n", "main.go": fakeNomad} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-tags", tags, "-o", filepath.Join(dir, "nomad"), ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", tags, err, out)
	}
}

// pinnedNomad is the Nomad version tools/nomad/go.mod requires.
func pinnedNomad(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tools", "nomad", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require github\.com/hashicorp/nomad (v\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("tools/nomad/go.mod requires no github.com/hashicorp/nomad version")
	}
	return string(m[1])
}

// TestHashitoolsTakesOnlyANomadWithTheUI puts a nomad that reports a recent
// version first on PATH and a build in the cache where the pinned version
// with the "ui" tag goes: the one on PATH is used only when Go's build
// settings in it show the tag.
func TestHashitoolsTakesOnlyANomadWithTheUI(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go on PATH to build stand-ins with")
	}
	tests := []struct {
		name    string
		install func(t *testing.T, dir string)
		onPath  bool
	}{
		{"refuses/a shell script that says it is Nomad", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "nomad"), []byte("#!/bin/sh\necho 'Nomad v1.11.2'\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"refuses/a Go build without the ui tag", func(t *testing.T, dir string) { goNomad(t, dir, "") }, false},
		{"refuses/a Go build with other tags", func(t *testing.T, dir string) { goNomad(t, dir, "uix,foo") }, false},
		{"takes/a Go build with the ui tag", func(t *testing.T, dir string) { goNomad(t, dir, "foo,ui") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			tt.install(t, bin)
			cache := t.TempDir()
			cached := filepath.Join(cache, "nomad-"+pinnedNomad(t)+"-ui", "nomad")
			if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cached, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("bash", "hashitools", "nomad")
			cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
				"COUNTER_TOOLS_CACHE="+cache, "HASHITOOLS_BUILD=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("hashitools nomad: %v\n%s", err, stderr.String())
			}
			want := "nomad=" + cached
			if tt.onPath {
				want = "nomad=" + filepath.Join(bin, "nomad")
			}
			if got := strings.TrimSpace(stdout.String()); got != want {
				t.Errorf("printed %q, want %q; stderr:\n%s", got, want, stderr.String())
			}
			if !tt.onPath && !strings.Contains(stderr.String(), `not built with tags "ui"`) {
				t.Errorf("stderr does not say why the nomad on PATH was passed over:\n%s", stderr.String())
			}
		})
	}
}

// TestHashitoolsPrometheusIsAlwaysThePinnedBuild: with a prometheus on
// PATH (Debian's is built without consul_sd_configs) and the pinned
// version in the cache, hashitools prometheus prints the cached one and
// builds nothing.
func TestHashitoolsPrometheusIsAlwaysThePinnedBuild(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "tools", "prometheus", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/prometheus/prometheus (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("tools/prometheus/go.mod requires no github.com/prometheus/prometheus version")
	}
	bin, cache := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "prometheus"), []byte("#!/bin/sh\necho 'prometheus, version 2.42.0'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(cache, "prometheus-"+string(m[1]), "prometheus")
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "hashitools", "prometheus")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"COUNTER_TOOLS_CACHE="+cache, "HASHITOOLS_BUILD=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hashitools prometheus: %v\n%s", err, stderr.String())
	}
	if got, want := strings.TrimSpace(stdout.String()), "prometheus="+cached; got != want {
		t.Errorf("printed %q, want %q; stderr:\n%s", got, want, stderr.String())
	}
	if strings.Contains(stderr.String(), "building") {
		t.Errorf("hashitools built Prometheus with the pinned build in its cache:\n%s", stderr.String())
	}
}
