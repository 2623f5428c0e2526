package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/welcome"
)

// One build goes dev -> test -> prod: each promotion carries the digest and
// the commit, each environment counts in its own Redis, the job records
// where the build came from; promoting what runs changes nothing; a source
// that drifted or is not stable is refused, changing nothing; a promotion
// racing a submit is one release and one conflict.
func TestPromoteCarriesOneBuildThroughTheEnvironments(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, bad := releaseImages(t, f.stack)
	envs := []string{"dev", "test", "prod"}
	jobs := map[string]string{"dev": f.job, "test": f.otherJob("test"), "prod": f.otherJob("prod")}
	redis := map[string]*redistest.Server{}
	for i, env := range envs {
		// Each environment's Redis counts from its own number, so an
		// answer says which config the app read.
		redis[env] = redistest.Start(t)
		if err := redis[env].Set("visitorCount", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		f.writeEnvJob(env, jobs[env], redis[env], 1, "")
	}
	dev, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK || dev.ImageDigest == "" {
		t.Fatalf("release to dev: exit %d %+v", code, dev)
	}

	for i, step := range []struct{ from, to string }{{"dev", "test"}, {"test", "prod"}} {
		rec, code, stderr := f.promote("-from", step.from, "-env", step.to)
		if code != exitOK || rec.Outcome != deploy.Succeeded {
			t.Fatalf("promote %s -> %s: exit %d %+v\n%s", step.from, step.to, code, rec, stderr)
		}
		if rec.ImageDigest != dev.ImageDigest || rec.GitCommit != dev.GitCommit || rec.PromotedFrom != step.from+" v0" {
			t.Errorf("promote %s -> %s: digest %s commit %q from %q; want dev's %s, %q, from %q",
				step.from, step.to, rec.ImageDigest, rec.GitCommit, rec.PromotedFrom, dev.ImageDigest, dev.GitCommit, step.from+" v0")
		}
		if len(rec.URLs) == 0 {
			t.Fatalf("promote %s -> %s named no passing instance", step.from, step.to)
		}
		want := welcome.Prefix + strconv.Itoa(100*(i+2)+1)
		if _, body := get(t, rec.URLs[0]); body != want {
			t.Errorf("%s's app answered %q, want %q from %s's own Redis", step.to, body, want, step.to)
		}
		if got := f.versionsOf(jobs[step.to])[0].Meta[release.MetaPromotedFrom]; got != step.from+" v0" {
			t.Errorf("%s's job meta %s = %q", step.to, release.MetaPromotedFrom, got)
		}
	}
	if out, _, _ := f.deployer("history", "-env", "prod"); !strings.Contains(out, "promoted from test v0") {
		t.Errorf("prod's history does not say where its build came from:\n%s", out)
	}

	// Promoting what runs changes nothing.
	n := len(f.versionsOf(jobs["prod"]))
	if rec, code, _ := f.promote("-from", "test", "-env", "prod"); code != exitOK || rec.Outcome != deploy.NoChange {
		t.Errorf("promote of what prod runs: exit %d outcome %q, want no change", code, rec.Outcome)
	}

	// Refused, changing nothing: a source release that is not stable (a
	// release that failed), and a source whose snapshot was edited.
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", bad); code != exitAutoReverted {
		t.Fatalf("the bad release to dev: exit %d %+v, want %d", code, rec, exitAutoReverted)
	}
	snaps := f.snapshotsOf(jobs["prod"])
	refused := func(what, want string, args ...string) {
		t.Helper()
		_, stderr, code := f.deployer(append([]string{"promote"}, args...)...)
		if code != exitError || !strings.Contains(stderr, want) || !strings.Contains(stderr, "nothing was changed") {
			t.Errorf("promote %s: exit %d, stderr %q; want 1 and %q", what, code, stderr, want)
		}
		if now := len(f.versionsOf(jobs["prod"])); now != n {
			t.Errorf("a refused promotion (%s) registered %d version(s) of prod", what, now-n)
		}
		if now := f.snapshotsOf(jobs["prod"]); !slices.Equal(now, snaps) {
			t.Errorf("a refused promotion (%s) left prod's config snapshots %v, were %v", what, now, snaps)
		}
	}
	refused("of a failed release", "it is not stable", "-from", "dev@v1", "-env", "prod")
	testPath := f.versionsOf(jobs["test"])[0].Meta[release.MetaConfigPath]
	if _, err := f.kv.KV().Put(&consul.KVPair{Key: testPath + "/PORT", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	refused("of a drifted release", "was edited or deleted in Consul", "-from", "test", "-env", "prod")

	// A job registered by hand (no release meta) names no build. It goes
	// to a datacenter with no nodes: it only needs to exist.
	hand := f.otherJob("hand")
	job := f.versionsOf(jobs["dev"])[0]
	job.ID, job.Name, job.Meta, job.Datacenters = &hand, &hand, nil, []string{"nowhere"}
	job.Version, job.JobModifyIndex, job.Stable, job.VersionTag = nil, nil, nil, nil
	if _, _, err := f.nomad.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	f.writeEnvJob("hand", hand, redis["dev"], 1, "")
	refused("of a job made by hand", "was not made by the deployer", "-from", "hand", "-env", "prod")

	// A promotion racing a submit to the same environment: one release, one
	// conflict. Each is a real change (another Redis), and a deployment
	// lasts longer than the gap between the two.
	f.writeEnvJob("prod", jobs["prod"], redistest.Start(t), 1, "min_healthy_time = \"3s\"\nhealthy_deadline = \"30s\"")
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i, args := range [][]string{{"promote", "-from", "dev", "-env", "prod"}, {"submit", "-env", "prod", "-image", good}} {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 300 * time.Millisecond)
			_, _, codes[i] = f.deployer(args...)
		})
	}
	wg.Wait()
	slices.Sort(codes)
	if !slices.Equal(codes, []int{exitOK, exitConflict}) || len(f.versionsOf(jobs["prod"])) != n+1 {
		t.Errorf("promote against submit: exit codes %v, %d new versions; want [0 5] and one", codes, len(f.versionsOf(jobs["prod"]))-n)
	}
}

func (f *fixture) promote(args ...string) (deploy.Record, int, string) {
	f.t.Helper()
	out, stderr, code := f.deployer(append([]string{"promote", "-json"}, args...)...)
	var rec deploy.Record
	if out != "" {
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			f.t.Fatalf("promote -json printed %q: %v", out, err)
		}
	}
	return rec, code, stderr
}

// versionsOf returns a job's versions, newest first.
func (f *fixture) versionsOf(job string) []*nomad.Job {
	f.t.Helper()
	vs, _, _, err := f.nomad.Jobs().Versions(job, false, nil)
	if err != nil {
		f.t.Fatalf("versions of %s: %v", job, err)
	}
	return vs
}

// A promotion is decided like a submit, by what runs where it goes: -from
// dev@v0 carries v0's build while dev runs a later one, printing its plan
// first; a changed count in the target's file is a new version of the build
// that runs there, while another release of the source with that build is
// not; a source with no passing instance, or stopped, is refused, leaving
// the target without a new version or config snapshot.
func TestPromoteGoesByWhatRunsWhereItGoes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	later := imageVariant(t, f.stack, 1)
	prod := f.otherJob("prod")
	devRedis, prodRedis := redistest.Start(t), redistest.Start(t)
	f.writeEnv("dev", devRedis, 1, "")
	f.writeEnvJob("prod", prod, prodRedis, 1, "")
	v0, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK || v0.ImageDigest == "" {
		t.Fatalf("dev v0: exit %d %+v", code, v0)
	}
	if v1, code, _ := submitJSON(t, f, "-env", "dev", "-image", later); code != exitOK || v1.ImageDigest == v0.ImageDigest {
		t.Fatalf("dev v1, another build: exit %d, digest %s (v0's %s)", code, v1.ImageDigest, v0.ImageDigest)
	}

	rec, code, stderr := f.promote("-from", "dev@v0", "-env", "prod")
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.ImageDigest != v0.ImageDigest || rec.PromotedFrom != "dev v0" {
		t.Fatalf("promote -from dev@v0 while dev runs v1: exit %d, outcome %q, digest %s, from %q; want success with v0's %s from \"dev v0\"\n%s",
			code, rec.Outcome, rec.ImageDigest, rec.PromotedFrom, v0.ImageDigest, stderr)
	}
	// The plan, on stderr before registering: the new job, the new config.
	plan := fmt.Sprintf("+ Job: %q", prod)
	if i, j := strings.Index(stderr, plan), strings.Index(stderr, "==> registered"); i < 0 || j < i ||
		!strings.Contains(stderr, fmt.Sprintf("+ PORT = %q", strconv.Itoa(prodRedis.Port))) {
		t.Errorf("promote printed no plan (%q, then the config diff) before registering:\n%s", plan, stderr)
	}

	// The same build, but prod's file asks for two instances: a release.
	// While it runs, its deploy lock says whose promotion holds it, and of
	// what from where, for the message another release of prod would get.
	f.writeEnvJob("prod", prod, prodRedis, 2, "")
	var wg sync.WaitGroup
	wg.Go(func() { rec, code, stderr = f.promote("-from", "dev@v0", "-env", "prod") })
	holder := f.lockHolder(prod, 60*time.Second)
	wg.Wait()
	if want := fmt.Sprintf("tester, promote of %s from dev v0, since ", v0.Image); !strings.HasPrefix(holder, want) {
		t.Errorf("prod's deploy lock, held by the promotion, says %q; want %q and the time", holder, want)
	}
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.Release != "v1" || rec.ImageDigest != v0.ImageDigest || len(rec.URLs) != 2 {
		t.Errorf("promote of the build prod runs, with count 2: exit %d, outcome %q, release %q, digest %s, %d URLs; want v1 succeeded with 2 instances\n%s",
			code, rec.Outcome, rec.Release, rec.ImageDigest, len(rec.URLs), stderr)
	}
	if !strings.Contains(stderr, `~ Count: "1" => "2"`) {
		t.Errorf("promote's plan does not show the count change:\n%s", stderr)
	}
	n, snaps := len(f.versionsOf(prod)), f.snapshotsOf(prod)

	// dev goes back to v0's build as its v2: promoting that is the build
	// prod runs, with prod's config, named by another source release: no
	// change.
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK || rec.Release != "v2" {
		t.Fatalf("dev v2, v0's build again: exit %d %+v", code, rec)
	}
	rec, code, stderr = f.promote("-from", "dev", "-env", "prod")
	if code != exitOK || rec.Outcome != deploy.NoChange || !strings.Contains(rec.Detail, "already runs the build of dev v2") {
		t.Errorf("promote of dev v2, the build prod runs: exit %d, outcome %q, detail %q; want no change\n%s", code, rec.Outcome, rec.Detail, stderr)
	}
	if now := len(f.versionsOf(prod)); now != n {
		t.Errorf("promoting the build prod runs registered %d version(s)", now-n)
	}
	if got := f.versionsOf(prod)[0].Meta[release.MetaPromotedFrom]; got != "dev v0" {
		t.Errorf("prod's running version is promoted from %q, want \"dev v0\"", got)
	}

	refused := func(what, want string) {
		t.Helper()
		_, stderr, code := f.deployer("promote", "-from", "dev", "-env", "prod")
		if code != exitError || !strings.Contains(stderr, want) || !strings.Contains(stderr, "nothing was changed") {
			t.Errorf("promote %s: exit %d, stderr %q; want 1 and %q", what, code, stderr, want)
		}
		if now := len(f.versionsOf(prod)); now != n {
			t.Errorf("a refused promotion (%s) registered %d version(s) of prod", what, now-n)
		}
		if now := f.snapshotsOf(prod); !slices.Equal(now, snaps) {
			t.Errorf("a refused promotion (%s) left prod's config snapshots %v, were %v", what, now, snaps)
		}
	}
	// prod moves on to another config, so that a promotion that is not
	// refused would be a change, with a snapshot of its own.
	f.writeEnvJob("prod", prod, redistest.Start(t), 2, "")

	// dev's Redis goes away: its instance fails its readiness check.
	devRedis.Stop()
	f.waitNoPassing(f.job, f.versionsOf(f.job)[0].Meta[release.MetaConfigHash])
	refused("of a source with no passing instance", "no instance of it passes its health check now")

	if _, _, err := f.nomad.Jobs().Deregister(f.job, false, nil); err != nil {
		t.Fatal(err)
	}
	refused("of a stopped source", "the job is stopped")
}

// snapshotsOf returns the config snapshot folders stored for job.
func (f *fixture) snapshotsOf(job string) []string {
	f.t.Helper()
	keys, _, err := f.kv.KV().Keys("counter/releases/default/"+job+"/", "/", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return keys
}

// waitNoPassing waits until Consul lists no passing instance of the job's
// service that runs the release with configHash.
func (f *fixture) waitNoPassing(job, configHash string) {
	f.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		entries, _, err := f.kv.Health().Service(job, "release-"+configHash, true, nil)
		if err == nil && len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%d passing instance(s) of %s with release-%s in Consul after 60s (err %v)", len(entries), job, configHash, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
