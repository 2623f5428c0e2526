package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// TestRevertToAJudgedReleaseNeedsNoPromotion: in an environment with an
// analysis block, a release is registered with auto_promote = false, and a
// revert made outside the deployer to it waits for a promotion nobody
// gives. Two judged releases, A and B, each get a judged copy (the same
// job with auto_promote on). A nomad job revert to A itself waits, and
// status says to revert to A's judged copy instead; nomad job revert to
// that copy finishes on its own and brings back A's image and config, so
// does a revert in the Nomad UI to B's judged copy, and deployer rollback
// -to A goes to A's judged copy. The first release, placed without a
// canary, gets a copy too, and nomad job revert to it promotes itself. A
// release promoted by hand gets none, and a deployer rollback to it copies
// the version the rollback makes.
func TestRevertToAJudgedReleaseNeedsNoPromotion(t *testing.T) {
	t.Parallel()
	envtest.NeedsServers(t, "Nomad, Consul, Redis, Docker, Prometheus and chromium")
	chromium := envtest.LookPath(t, "chromium", "chromium")
	f, s, url := frontDoorFixture(t, "judged")
	judgeWithStack(t, f, s)
	const analysis = "analysis {\n  alpha = 0.01\n  min_sample = 300\n  interval = \"2s\"\n  max_duration = \"60s\"\n}\n"
	file := filepath.Join(f.dir, "environments", "dev.hcl")
	writeEnv := func(rdb *redistest.Server) {
		t.Helper()
		f.writeEnv("dev", rdb, 2, "canary = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
		env, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, append(env, analysis...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var refs []string // each release's image, as submitted
	release := func(i int) released {
		t.Helper()
		rdb := redistest.Start(t)
		// Counts apart, so that an answer names the Redis, and so the
		// config, it came from.
		if err := rdb.Set("visitorCount", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		writeEnv(rdb)
		start := time.Now()
		refs = append(refs, imageVariant(t, s, i))
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", refs[i])
		if code != exitOK || len(rec.Warnings) > 0 {
			t.Fatalf("release %d: exit %d, warnings %q, detail %q\n%s", i, code, rec.Warnings, rec.Detail, stderr)
		}
		t.Logf("release %d: %s, judged copy %q, in %s", i, rec.Release, rec.JudgedCopy, time.Since(start).Round(100*time.Millisecond))
		return released{rec: rec, redis: rdb}
	}
	// The first release has no stable instances, so no canary: nothing
	// to judge, and it is copied all the same, as it serves all the
	// traffic and is what a first rollback goes back to.
	first := release(0)
	if first.rec.Analysis != nil || first.rec.JudgedCopy != "v"+strconv.FormatUint(*first.rec.Version+1, 10) {
		t.Fatalf("the first release, placed without a canary: analysis %+v, judged copy %q; want none judged, and copied as the next version", first.rec.Analysis, first.rec.JudgedCopy)
	}
	firstCopy := *first.rec.JudgedCopyVersion
	f.wantInPlace(firstCopy)
	// A promotion from what runs, the copy, names the release it copies.
	f.writeEnvJob("test", f.otherJob("test"), redistest.Start(t), 1, "")
	if rec, code, stderr := f.promote("-from", "dev", "-env", "test"); code != exitOK || rec.PromotedFrom != "dev "+first.rec.Release+" (judged copy "+first.rec.JudgedCopy+")" {
		t.Errorf("promote -from dev while %s runs: exit %d, promoted from %q; want %q\n%s", first.rec.JudgedCopy, code, rec.PromotedFrom, "dev "+first.rec.Release+" (judged copy "+first.rec.JudgedCopy+")", stderr)
	}
	l := startJudgedLoad(t, url)
	waitFor(t, 30*time.Second, "answers through the front door", func() bool { n, _ := l.counts("before"); return n > 50 })
	a, b := release(1), release(2)
	for _, r := range []released{a, b} {
		if r.rec.Analysis == nil || r.rec.Analysis.Verdict != deploy.Promote || r.rec.JudgedCopy != "v"+strconv.FormatUint(*r.rec.Version+1, 10) {
			t.Fatalf("%s: analysis %+v, judged copy %q; want promoted by analysis and copied as the next version", r.rec.Release, r.rec.Analysis, r.rec.JudgedCopy)
		}
	}
	aCopy, bCopy := *a.rec.JudgedCopyVersion, *b.rec.JudgedCopyVersion
	for _, v := range []uint64{aCopy, bCopy} {
		f.wantInPlace(v)
	}
	// What runs is B's judged copy: B submitted again is no change.
	n := len(f.versions())
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", refs[2]); code != exitOK || rec.Outcome != deploy.NoChange || len(f.versions()) != n {
		t.Errorf("B submitted again over its judged copy: exit %d, outcome %q, %d versions (was %d); want no change\n%s", code, rec.Outcome, len(f.versions()), n, stderr)
	}
	// The load was for the judging; it stops here, as the counts below
	// tell which Redis, and so which config, an instance reads.
	l.halt()
	if n, bad := l.counts("before"); bad > 0 {
		t.Errorf("users saw %d errors of %d answers through the front door during the releases; want none", bad, n)
	}
	for _, e := range f.historyJSON() {
		want := map[uint64]string{firstCopy: first.rec.Release, aCopy: a.rec.Release, bCopy: b.rec.Release}[e.Version]
		if e.JudgedCopyOf != want || (want != "" && !e.Stable) {
			t.Errorf("history: %s is judged copy of %q (stable %v), want %q", e.Release, e.JudgedCopyOf, e.Stable, want)
		}
	}

	// A revert to A itself (auto_promote off) waits for a promotion, and
	// status names A's judged copy.
	if _, code := f.nomadCLI("job", "revert", "-detach", f.job, a.rec.Release); code != 0 {
		t.Fatalf("nomad job revert %s %s: exit %d", f.job, a.rec.Release, code)
	}
	waiting := *f.versions()[0].Version
	var out string
	waitFor(t, 90*time.Second, "the revert to "+a.rec.Release+" to await promotion", func() bool {
		out, _, _ = f.deployer("status", "-env", "dev")
		return strings.Contains(out, "Promotion:")
	})
	if !strings.Contains(out, "Revert:") || !strings.Contains(out, "revert to "+a.rec.JudgedCopy+" instead") {
		t.Errorf("status of a revert to %s that awaits promotion does not name its judged copy %s:\n%s", a.rec.Release, a.rec.JudgedCopy, out)
	}
	t.Logf("status of the waiting revert (job version %d):\n%s", waiting, out)

	// Each revert outside the deployer makes the next version, whose
	// deployment must end on its own, promoted by Nomad, running want's
	// image and config (and no longer not's).
	next := waiting
	reverted := func(how, to string, want, not released, revert func()) {
		t.Helper()
		next++
		start := time.Now()
		revert()
		dep := f.waitForDeployment(next, 2*time.Minute)
		if dep.Status != "successful" {
			t.Fatalf("%s to %s: deployment %s is %s: %s", how, to, dep.ID, dep.Status, dep.StatusDescription)
		}
		t.Logf("%s to %s: deployment successful in %s", how, to, time.Since(start).Round(100*time.Millisecond))
		wantPromotedByNomad(t, dep)
		f.wantContainers(dep, want, not)
		f.wantRunning(want, "after "+how+" to "+to)
	}
	cli := func(to string) func() {
		return func() {
			if _, code := f.nomadCLI("job", "revert", "-detach", f.job, to); code != 0 {
				t.Fatalf("nomad job revert %s %s: exit %d", f.job, to, code)
			}
		}
	}
	// The real nomad CLI, to A's judged copy: the waiting deployment is
	// replaced, and the new one promotes itself.
	reverted("nomad job revert", a.rec.JudgedCopy, a, b, cli(a.rec.JudgedCopy))
	// The Nomad UI, to B's judged copy.
	reverted("the Nomad UI's revert", b.rec.JudgedCopy, b, a, func() { revertInUI(t, f, chromium, int(bCopy)) })

	// The deployer, asked for A: it goes to A's judged copy.
	rec, code, stderr := f.rollbackJSON("-to", a.rec.Release)
	if code != exitOK || rec.Outcome != deploy.Succeeded || !strings.Contains(stderr, a.rec.Release+" has a judged copy, "+a.rec.JudgedCopy) {
		t.Fatalf("rollback -to %s: exit %d, outcome %q; want 0, succeeded, via its judged copy %s\n%s", a.rec.Release, code, rec.Outcome, a.rec.JudgedCopy, stderr)
	}
	f.wantRunning(a, "after deployer rollback -to A")
	next = *rec.Version

	// The nomad CLI, to the first release's copy: it promotes itself too.
	reverted("nomad job revert", first.rec.JudgedCopy+" (the first release's copy)", first, a, cli(first.rec.JudgedCopy))

	// A release promoted by hand gets no copy; a deployer rollback to it
	// promotes its canary as judged before, and then copies the version
	// the rollback made, so that a revert to that one needs no promotion.
	c := released{redis: redistest.Start(t)}
	if err := c.redis.Set("visitorCount", "400"); err != nil {
		t.Fatal(err)
	}
	writeEnv(c.redis)
	c.rec, code, stderr = submitJSON(t, f, "-env", "dev", "-detach", "-image", imageVariant(t, s, 3))
	if code != exitOK || c.rec.Outcome != deploy.Detached {
		t.Fatalf("release C -detach: exit %d, outcome %q\n%s", code, c.rec.Outcome, stderr)
	}
	waitFor(t, 90*time.Second, "C's canary to await promotion", func() bool {
		out, _, _ := f.deployer("status", "-env", "dev")
		return strings.Contains(out, "Promotion:")
	})
	out, stderr, code = f.deployer("deployment", "-env", "dev", "-json", "promote")
	var promoted deploy.Record
	if err := json.Unmarshal([]byte(out), &promoted); err != nil || code != exitOK || promoted.Outcome != deploy.Succeeded || promoted.Release != c.rec.Release || promoted.JudgedCopy != "" {
		t.Fatalf("C (%s) promoted by hand: exit %d, %s %s, judged copy %q (%v); want 0, succeeded, no copy\n%s",
			c.rec.Release, code, promoted.Release, promoted.Outcome, promoted.JudgedCopy, err, stderr)
	}
	if promoted.Image != c.rec.Image {
		t.Errorf("deployment promote names C's image %s, submit named it %s", promoted.Image, c.rec.Image)
	}
	if rec, code, stderr := f.rollbackJSON("-to", a.rec.Release); code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to %s: exit %d, outcome %q\n%s", a.rec.Release, code, rec.Outcome, stderr)
	}
	rec, code, stderr = f.rollbackJSON("-to", c.rec.Release)
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.JudgedCopy != "v"+strconv.FormatUint(*rec.Version+1, 10) {
		t.Fatalf("rollback -to %s (promoted by hand, no copy): exit %d, outcome %q, judged copy %q; want 0, succeeded, copied as the next version\n%s",
			c.rec.Release, code, rec.Outcome, rec.JudgedCopy, stderr)
	}
	f.wantInPlace(*rec.JudgedCopyVersion)
	f.wantRunning(c, "after deployer rollback -to C")

	if out, _, _ := f.deployer("status", "-env", "dev"); !strings.Contains(out, "Drift:        none") {
		t.Errorf("status after the rollbacks:\n%s", out)
	}
}

// wantInPlace checks that the deployment of job version v (a judged copy,
// which changes update.auto_promote alone) succeeded on the allocations
// that ran before it was registered: Nomad updated them in place, with no
// canary and no new instance.
func (f *fixture) wantInPlace(v uint64) {
	f.t.Helper()
	dep := f.waitForDeployment(v, time.Minute)
	job, _, err := f.nomad.Jobs().VersionByTag(f.job, "v"+strconv.FormatUint(v, 10), nil)
	if err != nil {
		f.t.Fatalf("version %d: %v", v, err)
	}
	allocs, _, err := f.nomad.Deployments().Allocations(dep.ID, nil)
	if err != nil {
		f.t.Fatalf("allocations of deployment %s: %v", dep.ID, err)
	}
	for _, a := range allocs {
		if a.CreateIndex >= *job.JobModifyIndex {
			f.t.Errorf("judged copy v%d: allocation %s was made for it (create index %d, the copy registered at %d); want the release's, updated in place",
				v, a.ID, a.CreateIndex, *job.JobModifyIndex)
		}
	}
	f.t.Logf("judged copy v%d: deployment %s %s, %d allocations updated in place", v, short(dep.ID, 8), dep.Status, len(allocs))
	if dep.Status != "successful" || len(allocs) == 0 {
		f.t.Errorf("judged copy v%d: deployment %s is %s with %d allocations", v, dep.ID, dep.Status, len(allocs))
	}
}

// wantPromotedByNomad checks that every canary group of dep was promoted,
// which nobody did by hand: Nomad did, by auto_promote.
func wantPromotedByNomad(t *testing.T, dep *nomad.Deployment) {
	t.Helper()
	for name, tg := range dep.TaskGroups {
		if tg.DesiredCanaries > 0 && !tg.Promoted {
			t.Errorf("deployment %s: group %s's canary is not promoted", dep.ID, name)
		}
	}
}
