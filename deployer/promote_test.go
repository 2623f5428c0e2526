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
	"github.com/kodekloud/counter/internal/testredis"
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
	redis := map[string]*testredis.Server{}
	for i, env := range envs {
		// Each environment's Redis counts from its own number, so an
		// answer says which config the app read.
		redis[env] = testredis.Start(t)
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
		want := fmt.Sprintf("Welcome to KODEKLOUD! Visitor Count: %d", 100*(i+2)+1)
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
	refused := func(what, want string, args ...string) {
		t.Helper()
		_, stderr, code := f.deployer(append([]string{"promote"}, args...)...)
		if code != exitError || !strings.Contains(stderr, want) || !strings.Contains(stderr, "nothing was changed") {
			t.Errorf("promote %s: exit %d, stderr %q; want 1 and %q", what, code, stderr, want)
		}
		if now := len(f.versionsOf(jobs["prod"])); now != n {
			t.Errorf("a refused promotion (%s) registered %d version(s) of prod", what, now-n)
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
	f.writeEnvJob("prod", jobs["prod"], testredis.Start(t), 1, "min_healthy_time = \"3s\"\nhealthy_deadline = \"30s\"")
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
