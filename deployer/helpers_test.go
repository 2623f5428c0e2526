package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

type testMain struct{ m *testing.M }

func (t testMain) Run() int { return stacktest.Run(t.m) }

// TestMain lets script tests run this test binary as the real deployer, and
// stops the package's stack after the tests.
func TestMain(m *testing.M) {
	testscript.Main(testMain{m}, map[string]func(){"deployer": main})
}

// fixture is one test's private piece of the shared stack: its own job name,
// environment folder and Redis.
type fixture struct {
	t     *testing.T
	stack *localstack.Stack
	job   string
	dir   string // holds environments/ and jobs/
	env   map[string]string
	nomad *nomad.Client
	kv    *consul.Client
	// nomadAddr is the Nomad server the nomad CLI talks to; "" for the
	// stack's first.
	nomadAddr string
	// url is the environments' url, which writeEnv gives them; "" for none.
	url string
	// redis is dev's Redis, for a test that writes dev's file again.
	redis *redistest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return fixtureOn(t, stacktest.Start(t))
}

// fixtureOn is newFixture on stack s.
func fixtureOn(t *testing.T, s *localstack.Stack) *fixture {
	t.Helper()
	f := fixtureOf(t, s, stacktest.Name(t, "counter"))
	stacktest.GrantJob(t, s, f.job)
	return f
}

// checkout is a second working copy of the fixture's repository, as a
// second operator of the same job has: environments/ and jobs/ of its own,
// the same job, servers and tokens. The deployer refuses two files of one
// checkout that name one job, so a test of two operators releasing at once
// gives the second one a checkout.
func (f *fixture) checkout() *fixture {
	f.t.Helper()
	c := *f
	c.dir = f.t.TempDir()
	for _, d := range []string{"environments", "jobs"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	spec, err := os.ReadFile(filepath.Join(f.dir, "jobs", "counter.nomad.hcl"))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "jobs", "counter.nomad.hcl"), spec, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return &c
}

// fixtureOf is fixtureOn for the job named, whose tasks get no policy:
// the test gives them one, or none.
func fixtureOf(t *testing.T, s *localstack.Stack, job string) *fixture {
	t.Helper()
	nc, cc := stacktest.Clients(t, s)
	f := &fixture{
		t: t, stack: s, job: job, dir: t.TempDir(), nomad: nc, kv: cc,
		env: map[string]string{
			"NOMAD_ADDR": s.NomadAddr, "CONSUL_HTTP_ADDR": s.ConsulAddr, "DEPLOYER_USER": "tester",
			"NOMAD_TOKEN": s.DeployerNomadToken, "CONSUL_HTTP_TOKEN": s.DeployerConsulToken,
		},
	}
	spec, err := os.ReadFile(filepath.Join(imagetest.RepoRoot(t), "jobs", "counter.nomad.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"environments", "jobs"} {
		if err := os.MkdirAll(filepath.Join(f.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.dir, "jobs", "counter.nomad.hcl"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.noSecretKept(nc, f.job)
		_, _, _ = nc.Jobs().Deregister(f.job, true, nil)
	})
	return f
}

// noSecretKept fails the test if what Nomad keeps of the job, each version
// (its meta, tasks, templates) and the submission it came from (source and
// variables), holds a secret of the stack's. A job never registered is no
// failure.
func (f *fixture) noSecretKept(nc *nomad.Client, job string) {
	f.t.Helper()
	versions, _, _, err := nc.Jobs().Versions(job, false, nil)
	if isNotFound(err) {
		return
	}
	if err != nil {
		f.t.Errorf("versions of %s, to check them for secrets: %v", job, err)
		return
	}
	for _, v := range versions {
		b, err := json.Marshal(v)
		if err != nil {
			f.t.Fatal(err)
		}
		stacktest.NoSecret(f.t, fmt.Sprintf("version %d of job %s", *v.Version, job), string(b))
		sub, _, err := nc.Jobs().Submission(job, int(*v.Version), nil)
		if isNotFound(err) {
			continue // registered through the API, without a source
		}
		if err != nil {
			f.t.Errorf("submission of version %d of %s, to check it for secrets: %v", *v.Version, job, err)
			continue
		}
		stacktest.NoSecret(f.t, fmt.Sprintf("the submission of version %d of job %s", *v.Version, job), sub.Source+fmt.Sprint(sub.Variables, sub.VariableFlags))
	}
}

// isNotFound reports whether err is Nomad's 404.
func isNotFound(err error) bool {
	var uerr nomad.UnexpectedResponseError
	return errors.As(err, &uerr) && uerr.StatusCode() == http.StatusNotFound
}

// otherJob names one more job for the test, whose tasks may read their
// config as the fixture's own job's may, and which goes with the test.
func (f *fixture) otherJob(prefix string) string {
	f.t.Helper()
	job := stacktest.Name(f.t, prefix)
	stacktest.GrantJob(f.t, f.stack, job)
	f.t.Cleanup(func() {
		f.noSecretKept(f.nomad, job)
		_, _, _ = f.nomad.Jobs().Deregister(job, true, nil)
	})
	return job
}

// nomadCLI runs the nomad CLI against the fixture's Nomad server with the
// operator's token, as a person would, and returns its output and exit
// code.
func (f *fixture) nomadCLI(args ...string) (string, int) {
	f.t.Helper()
	return stacktest.Nomad(f.t, f.stack, f.nomadAddr, args...)
}

// writeEnv writes environments/NAME.hcl for this test's job, pointing the app
// at rdb; update is the update block's body ("" for quick health checks).
func (f *fixture) writeEnv(name string, rdb *redistest.Server, count int, update string) {
	f.t.Helper()
	f.writeEnvJob(name, f.job, rdb, count, update)
}

// writeEnvJob is writeEnv for another job of the test's, one of
// f.otherJob's.
func (f *fixture) writeEnvJob(name, job string, rdb *redistest.Server, count int, update string) {
	f.t.Helper()
	if update == "" {
		update = "min_healthy_time = \"1s\"\nhealthy_deadline = \"30s\""
	}
	src := ""
	if f.url != "" {
		src = fmt.Sprintf("url = %q\n", f.url)
	}
	src += fmt.Sprintf(`job         = %q
datacenters = ["dc1"]
count       = %d

config {
  HOST = %q
  PORT = %d
}

resources {
  cpu    = 50
  memory = 32
}

update {
%s
}
`, job, count, rdb.Host, rdb.Port, update)
	if err := os.WriteFile(filepath.Join(f.dir, "environments", name+".hcl"), []byte(src), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// deployer runs the CLI in this process from the fixture's folder and returns
// its output and exit code.
func (f *fixture) deployer(args ...string) (stdout, stderr string, code int) {
	f.t.Helper()
	return runCLI(f.t, f.dir, f.env, args...)
}

func runCLI(t *testing.T, dir string, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"deployer"}, args...)
	if len(args) > 0 && args[0] != "build" && !strings.HasPrefix(args[0], "-") {
		// Paths in the fixture's folder, as they would be in a checkout.
		extra := []string{"-environments", filepath.Join(dir, "environments")}
		if args[0] == "render" || args[0] == "plan" || args[0] == "submit" || args[0] == "promote" {
			extra = append(extra, "-job", filepath.Join(dir, "jobs", "counter.nomad.hcl"))
		}
		full = append(append([]string{"deployer", args[0]}, extra...), args[1:]...)
	}
	// A build without cache compiles the app and its modules: minutes on a
	// busy 2-core machine (3 were once too few, and the build was killed).
	limit := 3 * time.Minute
	if len(args) > 0 && args[0] == "build" {
		limit = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := run(ctx, full, func(k string) string { return env[k] }, &out, &errb)
	code := exitCode(err, &errb)
	t.Logf("deployer %s: exit %d\n%s", strings.Join(args, " "), code, stacktest.Redact(errb.String()))
	// A token never shows in what the deployer prints, not even in an
	// error: neither its own (which may be one no server knows) nor any
	// other of the stack's.
	for _, k := range []string{"NOMAD_TOKEN", "CONSUL_HTTP_TOKEN"} {
		if secret := env[k]; secret != "" && strings.Contains(out.String()+errb.String(), secret) {
			t.Errorf("deployer %s printed the secret of %s", strings.Join(args, " "), k)
		}
	}
	stacktest.NoSecret(t, "the output of deployer "+strings.Join(args, " "), out.String()+errb.String())
	return out.String(), errb.String(), code
}

var images struct {
	once sync.Once
	base string // local tag of the app image

	mu     sync.Mutex
	pushed map[*localstack.Stack][2]string // by stack: the good and bad references pushed to its registry
}

// appImage returns the local tag of the app image, built again when it is
// gone: a local tag can vanish during a run (Nomad's docker driver
// garbage-collects images no task uses), and Docker's layer cache makes
// the build take seconds. Call it with images.mu held.
func appImage(t *testing.T) string {
	t.Helper()
	images.once.Do(func() { images.base = "counter:" + stacktest.Name(t, "deployer") })
	if _, err := imagetest.Docker("image", "inspect", "--format", "{{.Id}}", images.base); err != nil {
		imagetest.Build(t, images.base)
	}
	return images.base
}

// releaseImages builds the app image and a broken variant of it (exits at
// start, so never ready), pushes both to the stack's registry once per
// stack and returns their tag references. Per stack, not per address: a
// test with a stack of its own has a registry of its own, gone when that
// test ends, and its port may be the next stack's.
func releaseImages(t *testing.T, s *localstack.Stack) (good, bad string) {
	t.Helper()
	images.mu.Lock()
	defer images.mu.Unlock()
	if p, ok := images.pushed[s]; ok {
		return p[0], p[1]
	}
	base := appImage(t)
	name := strings.TrimPrefix(base, "counter:")
	good = s.RegistryAddr + "/counter:" + name
	bad = s.RegistryAddr + "/counter:broken-" + name
	brokenDir := t.TempDir()
	dockerfile := fmt.Sprintf("FROM %s\nENTRYPOINT [\"/app\", \"not-an-argument\"]\n", base)
	if err := os.WriteFile(filepath.Join(brokenDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, step := range [][]string{
		{"tag", base, good},
		{"push", good},
		{"build", "-q", "-t", bad, brokenDir},
		{"push", bad},
	} {
		if _, err := imagetest.Docker(step...); err != nil {
			t.Fatalf("push release images to %s: %v", s.RegistryAddr, err)
		}
	}
	if images.pushed == nil {
		images.pushed = map[*localstack.Stack][2]string{}
	}
	images.pushed[s] = [2]string{good, bad}
	return good, bad
}

// imageVariant pushes the app image with one more label, so it has its own
// digest: a different build of the same code. It returns the tag reference.
func imageVariant(t *testing.T, s *localstack.Stack, n int) string {
	t.Helper()
	releaseImages(t, s)
	base := func() string {
		images.mu.Lock()
		defer images.mu.Unlock()
		return appImage(t)
	}()
	dir := t.TempDir()
	src := fmt.Sprintf("FROM %s\nLABEL counter.test.variant=\"%s-%d\"\n", base, t.Name(), n)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s/counter:%s-%d", s.RegistryAddr, stacktest.Name(t, "variant"), n)
	for _, step := range [][]string{{"build", "-q", "-t", ref, dir}, {"push", ref}} {
		if _, err := imagetest.Docker(step...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", ref) })
	return ref
}

// get fetches url and returns its body, failing the test on any error.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// appURL returns the URL of a passing instance of the job's service that
// runs the release with configHash, waiting for Consul to see one.
func (f *fixture) appURL(configHash string) string {
	f.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		entries, _, err := f.kv.Health().Service(f.job, "release-"+configHash, true, nil)
		if err == nil && len(entries) > 0 {
			e := entries[0]
			return fmt.Sprintf("http://%s:%d", e.Service.Address, e.Service.Port)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no passing instance of %s with release-%s in Consul after 60s (err %v)", f.job, configHash, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// versions returns the job's versions, newest first.
func (f *fixture) versions() []*nomad.Job {
	f.t.Helper()
	vs, _, _, err := f.nomad.Jobs().Versions(f.job, false, nil)
	if err != nil {
		f.t.Fatalf("versions of %s: %v", f.job, err)
	}
	return vs
}

// snapshots returns the config snapshot hashes stored for the job.
func (f *fixture) snapshots() []string {
	f.t.Helper()
	keys, _, err := f.kv.KV().Keys("counter/releases/default/"+f.job+"/", "/", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return keys
}
