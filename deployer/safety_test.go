package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// editEnv replaces old with new in environments/NAME.hcl.
func (f *fixture) editEnv(name, old, new string) {
	f.t.Helper()
	path := filepath.Join(f.dir, "environments", name+".hcl")
	b, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		f.t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// lockKey is the deploy lock of the fixture's job.
func (f *fixture) lockKey() string {
	return configstore.New(f.kv, "").LockKey("default", f.job)
}

// lockHolder waits until someone holds job's deploy lock, and returns what
// the holder recorded in it.
func (f *fixture) lockHolder(job string, within time.Duration) string {
	f.t.Helper()
	key := configstore.New(f.kv, "").LockKey("default", job)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if p, _, err := f.kv.KV().Get(key, nil); err == nil && p != nil && p.Session != "" {
			return string(p.Value)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("nobody took the deploy lock %s within %s", key, within)
	return ""
}

// waitForLock waits until someone holds the job's deploy lock.
func (f *fixture) waitForLock(within time.Duration) {
	f.t.Helper()
	f.lockHolder(f.job, within)
}

func TestUnplaceableReleaseIsRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v", code, rec)
	}
	before, versions := f.snapshots(), len(f.versions())

	tests := []struct {
		name, old, new, want string
	}{
		{"no node in the datacenter", `datacenters = ["dc1"]`, `datacenters = ["dc9"]`, `no nodes are available in datacenter "dc9"`},
		{"a memory ask of 1 TB", "memory = 32", "memory = 1048576", `dimension "memory" exhausted`}, // MiB
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.writeEnv("dev", rdb, 1, "")
			f.editEnv("dev", tt.old, tt.new)
			start := time.Now()
			out, stderr, code := f.deployer("submit", "-env", "dev", "-image", good)
			if code != exitError || !strings.Contains(stderr, "Nomad cannot place job "+f.job+", so nothing was written") || !strings.Contains(stderr, tt.want) {
				t.Errorf("submit: exit %d, stderr:\n%s\nwant exit %d naming %q", code, stderr, exitError, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("refused after %s, want within seconds", took)
			}
			if after := f.snapshots(); len(after) != len(before) {
				t.Errorf("snapshots %v after, %v before: the refused release wrote one", after, before)
			}
			if n := len(f.versions()); n != versions {
				t.Errorf("%d versions, want %d: the refused release registered one", n, versions)
			}
			// plan shows the same reasons, and exits 1 for a change, as
			// nomad job plan does.
			pout, _, pcode := f.deployer("plan", "-env", "dev", "-image", good)
			if pcode != exitPlanChanged || !strings.Contains(pout, tt.want) {
				t.Errorf("plan: exit %d, stdout:\n%s\nwant %d naming %q", pcode, pout, exitPlanChanged, tt.want)
			}
		})
	}

	// Registered anyway, the blocked placement is reported within seconds,
	// not waited on until the progress deadline.
	t.Run("registered anyway, reported at once", func(t *testing.T) {
		f.writeEnv("dev", rdb, 1, "")
		f.editEnv("dev", `datacenters = ["dc1"]`, `datacenters = ["dc9"]`)
		start := time.Now()
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good, "-allow-unplaceable")
		took := time.Since(start)
		if code != exitFailed || !strings.Contains(rec.Detail, `no nodes are available in datacenter "dc9"`) || !strings.Contains(rec.Detail, "stays registered") {
			t.Errorf("exit %d, detail %q; want %d, Nomad's reason and that the job stays registered\n%s", code, rec.Detail, exitFailed, stderr)
		}
		if took > 20*time.Second {
			t.Errorf("reported after %s, want within seconds", took.Round(time.Second))
		}
	})
}

// A release arriving while another one's deployment is watched is a
// conflict, and does not cancel it: the lock is held until the end.
func TestASecondReleaseDuringADeploymentIsAConflictAndCancelsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	a, b := redistest.Start(t), redistest.Start(t)
	// A deployment that takes a while: 8 s of min_healthy_time.
	f.writeEnv("a", a, 1, "min_healthy_time = \"8s\"\nhealthy_deadline = \"40s\"\nprogress_deadline = \"60s\"")
	// The second release comes from another operator's checkout.
	g := f.checkout()
	g.writeEnv("b", b, 1, "")

	var first deploy.Record
	var firstCode int
	var wg sync.WaitGroup
	wg.Go(func() { first, firstCode, _ = submitJSON(t, f, "-env", "a", "-image", good) })
	f.waitForLock(60 * time.Second)

	_, stderr, code := g.deployer("submit", "-env", "b", "-image", good)
	if code != exitConflict || !strings.Contains(stderr, "held by tester, submit of") {
		t.Errorf("second submit: exit %d, stderr:\n%s\nwant %d and who holds the lock", code, stderr, exitConflict)
	}
	if n := len(f.versions()); n != 1 {
		t.Errorf("%d versions, want 1: the conflicting release registered one", n)
	}
	// With -wait, it waits for the first to end, then goes through.
	waited, code, stderr := submitJSON(t, g, "-env", "b", "-image", good, "-wait", "1m")
	if code != exitOK || waited.Outcome != deploy.Succeeded || !strings.Contains(stderr, "==> waiting (up to") {
		t.Errorf("submit -wait: exit %d %+v; want it to wait, then succeed\n%s", code, waited, stderr)
	}
	wg.Wait()
	if firstCode != exitOK || first.Outcome != deploy.Succeeded {
		t.Fatalf("first submit: exit %d, outcome %q (%s); want it to succeed, not be cancelled", firstCode, first.Outcome, first.Detail)
	}
	if n := len(f.versions()); n != 2 {
		t.Errorf("%d versions, want 2: the first and the one that waited", n)
	}
}

// A deployer killed mid-watch, its version registered and its deployment
// running, leaves nothing that blocks: its session expires and the lock goes
// with it.
func TestAKilledDeployerLeavesNoLockBehind(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	a, b := redistest.Start(t), redistest.Start(t)
	// 10 s of min_healthy_time: a deployment long enough to be killed in.
	f.writeEnv("a", a, 1, "min_healthy_time = \"10s\"\nhealthy_deadline = \"40s\"\nprogress_deadline = \"60s\"")
	// The releases after the kill come from another operator's checkout.
	g := f.checkout()
	g.writeEnv("b", b, 1, "")

	// This test binary is the deployer when called by that name
	// (testscript.Main), so the deployer can run as a process of its own.
	bin := filepath.Join(t.TempDir(), "deployer")
	if err := os.Symlink(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "submit", "-env", "a", "-image", good,
		"-environments", filepath.Join(f.dir, "environments"), "-job", filepath.Join(f.dir, "jobs", "counter.nomad.hcl"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "DEPLOYER_USER=killed")
	for _, k := range []string{"NOMAD_ADDR", "NOMAD_TOKEN", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"} {
		cmd.Env = append(cmd.Env, k+"="+f.env[k])
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Mid-watch: its version registered, its deployment running, and the
	// lock still its own.
	dep := f.waitForRunningDeployment(60 * time.Second)
	p, _, err := f.kv.KV().Get(f.lockKey(), nil)
	if err != nil || p == nil || p.Session == "" || !strings.HasPrefix(string(p.Value), "killed, submit of") {
		// Its output is read once it has ended.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("deployment of v%d running, lock %+v (%v); want it held by the deployer to kill\n%s", dep.JobVersion, p, err, &stderr)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	// Its deployment outlived it: the kill came before the watch could end.
	if d, _, err := f.nomad.Deployments().Info(dep.ID, nil); err != nil {
		t.Fatal(err)
	} else if d.Status != "running" {
		t.Fatalf("the killed deployer's deployment %s: %s (%s); want it still running at the kill", dep.ID, d.Status, d.StatusDescription)
	}
	t.Logf("killed while watching the deployment of v%d; its output:\n%s", dep.JobVersion, &stderr)

	// Right away, it is still a conflict: the dead holder's session lives
	// until its TTL runs out.
	if _, stderr, code := g.deployer("submit", "-env", "b", "-image", good); code != exitConflict {
		t.Errorf("submit right after the kill: exit %d, want %d:\n%s", code, exitConflict, stderr)
	}
	// Then Consul removes the lock: within twice the TTL, as it promises.
	for {
		p, _, err := f.kv.KV().Get(f.lockKey(), &consul.QueryOptions{})
		if err == nil && p == nil {
			break
		}
		if time.Since(killed) > 2*configstore.LockTTL+5*time.Second {
			t.Fatalf("the killed deployer's lock is still there %s after the kill: %+v", time.Since(killed).Round(time.Second), p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the lock went %s after the kill (TTL %s)", time.Since(killed).Round(100*time.Millisecond), configstore.LockTTL)
	if rec, code, _ := submitJSON(t, g, "-env", "b", "-image", good, "-wait", "60s"); code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Errorf("submit after the lock went: exit %d %+v", code, rec)
	}
}

// A rollback to a version Nomad cannot place (registered with
// -allow-unplaceable, in a datacenter with no node) is refused as a submit of
// it would be: by Nomad's plan, before the lock, the revert or a snapshot. And
// the unplaceable version, whose deployment never ends by itself, does not
// block the release after it.
func TestUnplaceableRollbackIsRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb, rdb2 := redistest.Start(t), redistest.Start(t)
	// Short deadlines: the unplaceable version's deployment fails, and
	// Nomad reverts it, within seconds.
	const update = "min_healthy_time = \"1s\"\nhealthy_deadline = \"10s\"\nprogress_deadline = \"20s\""
	f.writeEnv("dev", rdb, 1, update)
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v\n%s", code, rec, stderr)
	}
	f.editEnv("dev", `datacenters = ["dc1"]`, `datacenters = ["dc9"]`)
	unplaceable, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good, "-allow-unplaceable")
	if code != exitFailed || unplaceable.Release == "" {
		t.Fatalf("submit -allow-unplaceable to dc9: exit %d %+v; want %d and a registered version\n%s", code, unplaceable, exitFailed, stderr)
	}
	// A good release after it, in dc1, counting in another Redis, without
	// -wait: the unplaceable version's deployment placed nothing and never
	// ends by itself, so it must not block the next release.
	f.writeEnv("dev", rdb2, 1, update)
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK || rec.Outcome != deploy.Succeeded ||
		!strings.Contains(stderr, "has placed nothing (Nomad cannot place it); a new version replaces it") {
		t.Fatalf("good release after the unplaceable one: exit %d %+v; want it to replace the deployment that placed nothing\n%s", code, rec, stderr)
	}
	before, versions := f.snapshots(), len(f.versions())

	start := time.Now()
	rec, code, stderr := f.rollbackJSON("-to", unplaceable.Release)
	took := time.Since(start)
	const want = `no nodes are available in datacenter "dc9"`
	if code != exitError || !strings.Contains(stderr, "Nomad cannot place job "+f.job+", so nothing was written") || !strings.Contains(stderr, want) {
		t.Errorf("rollback -to %s: exit %d %+v, stderr:\n%s\nwant exit %d naming %q", unplaceable.Release, code, rec, stderr, exitError, want)
	}
	if took > 30*time.Second {
		t.Errorf("refused after %s, want within seconds", took.Round(time.Second))
	}
	if n := len(f.versions()); n != versions {
		t.Errorf("%d versions, want %d: the refused rollback registered one", n, versions)
	}
	if after := f.snapshots(); !slices.Equal(after, before) {
		t.Errorf("snapshots %v after, %v before: the refused rollback wrote one", after, before)
	}
	t.Logf("rollback -to %s refused in %s:\n%s", unplaceable.Release, took.Round(100*time.Millisecond), stderr)
}
