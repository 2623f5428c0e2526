package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/backup"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
	"github.com/kodekloud/counter/internal/welcome"
)

// TestBackupRestoreBringsBackEveryRelease: releases v0..v3 on a stack of
// their own, a backup, that stack stopped and never used again (make
// clean), a fresh stack bootstrapped with the management tokens kept beside
// the backup, a restore: history reads the same, with the deployer's
// tokens of the old stack (the ACLs came back), and rollback -to v1 runs
// v1's image, count and config, the app counting in v1's Redis (issue 22).
func TestBackupRestoreBringsBackEveryRelease(t *testing.T) {
	// Images live in the package stack's registry, which outlives both
	// stacks of this test, as a real registry outlives a cluster.
	shared := stacktest.Start(t)
	old := stacktest.StartOwn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nomadRules, consulRules := stacktest.DeployerPolicies(t)
	if err := old.DeployerTokens(ctx, nomadRules, consulRules); err != nil {
		t.Fatal(err)
	}
	stacktest.Secret(t, old, "old stack's deployer Nomad token", old.DeployerNomadToken)
	stacktest.Secret(t, old, "old stack's deployer Consul token", old.DeployerConsulToken)
	f := ownFixture(t, old, stacktest.Name(t, "counter"))
	stacktest.GrantJob(t, old, f.job)

	counts := []int{1, 2, 1, 1}
	var rs []released
	for i, count := range counts {
		img := imageVariant(t, shared, i)
		rdb := redistest.Start(t)
		if err := rdb.Set("visitorCount", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		f.writeEnv("dev", rdb, count, "")
		rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", img)
		if code != exitOK || rec.Release != "v"+strconv.Itoa(i) {
			t.Fatalf("release %d: exit %d, %+v", i, code, rec)
		}
		rs = append(rs, released{rec, rdb})
	}
	before := f.historyJSON()

	// Management tokens back up; the deployer's may not.
	out := filepath.Join(t.TempDir(), "backup")
	mgmt := map[string]string{"NOMAD_ADDR": old.NomadAddr, "CONSUL_HTTP_ADDR": old.ConsulAddr,
		"NOMAD_TOKEN": old.NomadToken, "CONSUL_HTTP_TOKEN": old.ConsulToken}
	if _, stderr, code := runCLI(t, f.dir, f.env, "backup", "-out", out); code != exitError {
		t.Errorf("backup with the deployer's tokens: exit %d, want %d and the refusal\n%s", code, exitError, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("a refused backup left %s behind", out)
	}
	stdout, _, code := runCLI(t, f.dir, mgmt, "backup", "-out", out, "-json")
	if code != exitOK {
		t.Fatalf("backup: exit %d", code)
	}
	var m backup.Manifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Environments) != 1 || len(m.Environments[0].Versions) != 4 || m.Environments[0].Current != 3 {
		t.Fatalf("the manifest lists %+v, want dev's 4 versions, v3 current", m.Environments)
	}
	// A backup is never overwritten.
	if _, stderr, code := runCLI(t, f.dir, mgmt, "backup", "-out", out); code != exitError || !strings.Contains(stderr, "already exists") {
		t.Errorf("a second backup into %s: exit %d, want %d, refused\n%s", out, code, exitError, stderr)
	}
	if again, err := backup.Load(out); err != nil || again.Nomad.SHA256 != m.Nomad.SHA256 {
		t.Errorf("the refused second backup changed the first: %v", err)
	}

	// make clean: the old stack stops, its containers go, and nothing of
	// it is used again.
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := stacktest.StartOwnWithTokens(t, old.NomadToken, old.ConsulToken)
	freshMgmt := map[string]string{"NOMAD_ADDR": fresh.NomadAddr, "CONSUL_HTTP_ADDR": fresh.ConsulAddr,
		"NOMAD_TOKEN": fresh.NomadToken, "CONSUL_HTTP_TOKEN": fresh.ConsulToken}
	g := ownFixture(t, fresh, f.job)
	g.dir = f.dir // the same environment files and job spec
	t.Cleanup(func() { g.noSecretKept(g.nomad, g.job) })

	// A damaged backup is refused before anything changes.
	{
		bad := filepath.Join(t.TempDir(), "bad")
		copyDir(t, out, bad)
		file := filepath.Join(bad, backup.ConsulFile)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := restoreCLI(t, freshMgmt, "-from", bad); code != exitError || !strings.Contains(stderr, "the file changed since the backup") {
			t.Errorf("restore of a damaged backup: exit %d, want %d naming the changed file\n%s", code, exitError, stderr)
		}
		if _, _, _, err := g.nomad.Jobs().Versions(g.job, false, nil); !isNotFound(err) {
			t.Errorf("after a refused restore the fresh stack has job %s (err %v): something was restored", g.job, err)
		}
	}

	stdout, stderr, code := restoreCLI(t, freshMgmt, "-from", out)
	if code != exitOK {
		t.Fatalf("restore: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "dev: job "+f.job+" at version 3, 4 versions (releases v0 v1 v2 v3)") {
		t.Errorf("restore did not say what it restored:\n%s", stdout)
	}
	// The old stack's node is in the restored state, and gone: Nomad would
	// count it ready for minutes and place allocations there.
	if !strings.Contains(stdout, "purged Nomad node "+old.NodeID) {
		t.Errorf("restore did not purge the old stack's Nomad node %s:\n%s", old.NodeID, stdout)
	}
	// Tasks log in to Consul with identities the restored keyring signs,
	// checked against the keys of the Nomad the restored auth method names:
	// the old one's address. Point it at the fresh Nomad, as an operator
	// whose Nomad moved does (docs/deployer.md#backup-and-restore).
	if err := access.SetUpWorkloadIdentity(ctx, g.kv, fresh.NomadAddr+"/.well-known/jwks.json"); err != nil {
		t.Fatal(err)
	}

	// The old stack's deployer tokens work on the fresh one: the ACLs came
	// back with the snapshots.
	g.env = map[string]string{"NOMAD_ADDR": fresh.NomadAddr, "CONSUL_HTTP_ADDR": fresh.ConsulAddr, "DEPLOYER_USER": "tester",
		"NOMAD_TOKEN": old.DeployerNomadToken, "CONSUL_HTTP_TOKEN": old.DeployerConsulToken}
	if after := g.historyJSON(); !reflect.DeepEqual(after, before) {
		b1, _ := json.MarshalIndent(before, "", "  ")
		b2, _ := json.MarshalIndent(after, "", "  ")
		t.Fatalf("history after the restore differs:\nbefore:\n%s\nafter:\n%s", b1, b2)
	}

	// The release that ran comes back: v3, on the fresh node, counting in
	// v3's Redis. Consul's restored catalog lists the old stack's instance
	// as passing until the fresh agent's anti-entropy removes it (a minute
	// or so), so this waits for one that answers.
	g.answers(rs[3], 2*time.Minute)

	// Going back to v1 brings back its image, count and config. The
	// restored v3 is placed again on the fresh node (the old one is gone):
	// the rollback waits for that deployment rather than conflict.
	rec, code, stderr := g.rollbackJSON("-to", "v1", "-wait", "3m")
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to v1 after the restore: exit %d outcome %q\n%s", code, rec.Outcome, stderr)
	}
	if rec.ConfigHash != rs[1].rec.ConfigHash {
		t.Errorf("rollback -to v1 runs config %s, want v1's %s", rec.ConfigHash, rs[1].rec.ConfigHash)
	}
	if c := *g.versions()[0].TaskGroups[0].Count; c != counts[1] {
		t.Errorf("after rollback -to v1 the job's count is %d, want v1's %d", c, counts[1])
	}
	g.wantRunning(rs[1], "after the restore and rollback -to v1")
}

// answers waits until an instance of r's release that Consul lists as
// passing answers GET / with the count of r's Redis plus one.
func (f *fixture) answers(r released, limit time.Duration) {
	f.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	last := "no passing instance in Consul"
	for time.Now().Before(deadline) {
		entries, _, err := f.kv.Health().Service(f.job, "release-"+r.rec.ConfigHash, true, nil)
		if err != nil {
			last = err.Error()
		}
		for _, e := range entries {
			before, _ := r.redis.Get("visitorCount")
			n, _ := strconv.Atoi(before)
			res, err := client.Get(fmt.Sprintf("http://%s:%d/", e.Service.Address, e.Service.Port))
			if err != nil {
				last = err.Error()
				continue
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if want := welcome.Prefix + strconv.Itoa(n+1); string(body) == want {
				return
			}
			last = fmt.Sprintf("%s:%d answered %q", e.Service.Address, e.Service.Port, body)
		}
		time.Sleep(time.Second)
	}
	f.t.Fatalf("no instance of %s %s answered from its Redis within %s: %s", f.job, r.rec.Release, limit, last)
}

// ownFixture is a fixture for the job named on a stack of the test's own,
// with the stack's deployer tokens, and no clean-up: the test decides
// when the stack goes.
func ownFixture(t *testing.T, s *localstack.Stack, job string) *fixture {
	t.Helper()
	f := &fixture{t: t, stack: s, job: job, dir: t.TempDir(), env: map[string]string{"DEPLOYER_USER": "tester"}}
	f.nomad, f.kv = stacktest.Clients(t, s)
	// What bin/stack env hands the deployer: addresses, its tokens.
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		f.env[k] = v
	}
	// The checkout's job spec, and a folder for the environment files.
	copyDir(t, filepath.Join("..", "jobs"), filepath.Join(f.dir, "jobs"))
	if err := os.Mkdir(filepath.Join(f.dir, "environments"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// restoreCLI runs deployer restore as runCLI runs the other commands:
// restore reads no environment files, so it is given no folder of them.
func restoreCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := exitCode(run(ctx, append([]string{"deployer", "restore"}, args...), func(k string) string { return env[k] }, &out, &errb), &errb)
	t.Logf("deployer restore %s: exit %d\n%s", strings.Join(args, " "), code, stacktest.Redact(errb.String()))
	stacktest.NoSecret(t, "the output of deployer restore", out.String()+errb.String())
	return out.String(), errb.String(), code
}

// copyDir copies the files of folder src into a new folder dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
