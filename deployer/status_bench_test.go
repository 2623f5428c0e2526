package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// BenchmarkStatusAll times status of three environments of 50 releases
// each, and, to compare, status of one of them. The releases are registered
// straight through Nomad's API, as submit registers them (rendered by the
// deployer, snapshot in Consul, version tagged), in a datacenter with no
// nodes so that nothing is placed.
func BenchmarkStatusAll(b *testing.B) {
	const versions = 50
	s := stacktest.Start(b)
	nc, cc := stacktest.Clients(b, s)
	ctx := context.Background()
	dir := b.TempDir()
	envDir := filepath.Join(dir, "environments")
	if err := os.MkdirAll(envDir, 0o755); err != nil {
		b.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(imagetest.RepoRoot(b), "jobs", "counter.nomad.hcl"))
	if err != nil {
		b.Fatal(err)
	}
	store := configstore.New(cc, "")
	d := deploy.New(nc, cc, store, string(spec), io.Discard)
	for i, name := range []string{"dev", "test", "prod"} {
		job := stacktest.Name(b, "bench-"+name)
		b.Cleanup(func() { _, _, _ = nc.Jobs().Deregister(job, true, nil) })
		img := imageref.Image{Ref: imageref.Ref{Registry: "registry.test:5000", Repo: "counter", Tag: fmt.Sprint("build", i),
			Digest: "sha256:" + strings.Repeat(fmt.Sprint(i), 64)}}
		for v := range versions {
			src := fmt.Sprintf("job = %q\ndatacenters = [\"nowhere\"]\nconfig {\n  HOST = \"127.0.0.1\"\n  PORT = %d\n}\n", job, 20000+v)
			if err := os.WriteFile(filepath.Join(envDir, name+".hcl"), []byte(src), 0o644); err != nil {
				b.Fatal(err)
			}
			e, err := environment.Load(envDir, name)
			if err != nil {
				b.Fatal(err)
			}
			r := release.New(e, img, "0123456789abcdef", "bench", store)
			if _, err := store.Put(ctx, r.ConfigPath(), r.Config()); err != nil {
				b.Fatal(err)
			}
			j, err := d.Render(ctx, r)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := nc.Jobs().Register(j, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := nc.Jobs().TagVersion(job, uint64(v), release.Name(uint64(v)), r.Description(), nil); err != nil {
				b.Fatal(err)
			}
		}
		if vs, _, _, err := nc.Jobs().Versions(job, false, (&nomad.QueryOptions{})); err != nil || len(vs) != versions {
			b.Fatalf("%s has %d versions (%v), want %d", job, len(vs), err, versions)
		}
	}
	env := map[string]string{
		"NOMAD_ADDR": s.NomadAddr, "CONSUL_HTTP_ADDR": s.ConsulAddr,
		"NOMAD_TOKEN": s.DeployerNomadToken, "CONSUL_HTTP_TOKEN": s.DeployerConsulToken,
	}
	for _, bb := range []struct {
		name string
		args []string
	}{
		{"all three environments", nil},
		{"one environment", []string{"-env", "prod"}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			args := append([]string{"deployer", "status", "-environments", envDir}, bb.args...)
			var out strings.Builder
			for b.Loop() {
				out.Reset()
				if err := run(ctx, args, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
					b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
				}
			}
			b.Logf("%s", out.String())
		})
	}
}
