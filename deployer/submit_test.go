package main

import (
	"encoding/json"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/welcome"
)

func submitJSON(t *testing.T, f *fixture, args ...string) (deploy.Record, int, string) {
	t.Helper()
	out, stderr, code := f.deployer(append([]string{"submit", "-json"}, args...)...)
	var rec deploy.Record
	if out != "" {
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("submit -json printed %q: %v", out, err)
		}
	}
	return rec, code, stderr
}

func TestSubmitCountsInTheRedisTheEnvironmentNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	first, second := redistest.Start(t), redistest.Start(t)
	if err := first.Set("visitorCount", "41"); err != nil {
		t.Fatal(err)
	}
	if err := second.Set("visitorCount", "500"); err != nil {
		t.Fatal(err)
	}

	f.writeEnv("dev", first, 1, "")
	rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.Release != "v0" {
		t.Fatalf("first submit: exit %d, record %+v; want 0, succeeded, v0", code, rec)
	}
	if !strings.Contains(rec.Image, "@sha256:") || rec.ImageDigest == "" {
		t.Errorf("image %q digest %q: want the tag pinned to its digest", rec.Image, rec.ImageDigest)
	}
	if _, body := get(t, f.appURL(rec.ConfigHash)+"/"); body != welcome.Prefix+"42" {
		t.Errorf("v0 answered %q, want count 42 from the first Redis", body)
	}

	t.Run("resubmitting the same release is no change", func(t *testing.T) {
		again, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
		if code != exitOK || again.Outcome != deploy.NoChange || again.Release != "v0" {
			t.Errorf("resubmit: exit %d, outcome %q release %q; want 0, no-change, v0", code, again.Outcome, again.Release)
		}
		// make up's second run takes the address to call from this.
		if len(again.URLs) == 0 || !slices.Equal(again.URLs, rec.URLs) {
			t.Errorf("resubmit URLs %v, want the running release's %v", again.URLs, rec.URLs)
		}
		if n := len(f.versions()); n != 1 {
			t.Errorf("%d job versions after an unchanged resubmit, want 1", n)
		}
	})

	f.writeEnv("dev", second, 1, "")
	rec2, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK || rec2.Outcome != deploy.Succeeded || rec2.Release != "v1" {
		t.Fatalf("second submit: exit %d, record %+v; want 0, succeeded, v1", code, rec2)
	}
	if rec2.ConfigHash == rec.ConfigHash || rec2.ConfigPath == rec.ConfigPath {
		t.Errorf("a new config kept the old snapshot %s", rec.ConfigPath)
	}
	if _, body := get(t, f.appURL(rec2.ConfigHash)+"/"); body != welcome.Prefix+"501" {
		t.Errorf("v1 answered %q, want count 501 from the second Redis", body)
	}
	if v, _ := first.Get("visitorCount"); v != "42" {
		t.Errorf("first Redis counts %s after v1, want 42 (untouched)", v)
	}

	// A stale -check-index is a conflict and changes nothing.
	f.writeEnv("dev", first, 1, "")
	if _, _, code := f.deployer("submit", "-env", "dev", "-image", good, "-check-index", "1"); code != exitConflict {
		t.Errorf("submit with a stale -check-index: exit %d, want %d", code, exitConflict)
	}

	vs := f.versions()
	if len(vs) != 2 {
		t.Fatalf("%d versions, want 2", len(vs))
	}
	for _, v := range vs {
		want := release.Name(*v.Version)
		if v.VersionTag == nil || v.VersionTag.Name != want {
			t.Errorf("version %d tag %+v, want %s", *v.Version, v.VersionTag, want)
		}
		if v.Meta[release.MetaSubmittedBy] != "tester" || v.Meta[release.MetaConfigPath] == "" {
			t.Errorf("version %d meta %v lacks the release identity", *v.Version, v.Meta)
		}
	}
	// Both snapshots stay: v0 must stay revertible.
	if n := len(f.snapshots()); n != 2 {
		t.Errorf("%d snapshots, want 2: %v", n, f.snapshots())
	}
}

func TestBrokenImageFailsAndNomadAutoReverts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, bad := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, `min_healthy_time = "1s"
healthy_deadline = "8s"
progress_deadline = "30s"`)

	rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("good submit: exit %d %+v", code, rec)
	}
	brk, code, stderr := submitJSON(t, f, "-env", "dev", "-image", bad)
	if code != exitAutoReverted || brk.Outcome != deploy.AutoReverted || brk.RevertedTo == nil || *brk.RevertedTo != 0 {
		t.Fatalf("broken submit: exit %d, record %+v; want %d, auto-reverted to 0", code, brk, exitAutoReverted)
	}
	if !strings.Contains(stderr, "reverted the job to v0 (job version 0)") {
		t.Errorf("stderr does not say Nomad reverted to v0:\n%s", stderr)
	}
	// Why it failed, in the instance's own words: it exited, and said why.
	if len(brk.Causes) == 0 {
		t.Fatalf("the failed submit names no cause: %+v", brk)
	}
	c := brk.Causes[0]
	if c.ExitCode == nil || *c.ExitCode == 0 || !strings.Contains(strings.Join(c.Stderr, "\n"), `unexpected arguments ["not-an-argument"]`) ||
		!strings.Contains(strings.Join(c.Events, "\n"), "Terminated") {
		t.Errorf("cause = %+v; want the exit code, the Terminated event and the app's own complaint from its stderr", c)
	}
	vs := f.versions()
	if len(vs) < 3 {
		t.Fatalf("%d versions, want v0, the broken v1 and Nomad's revert v2", len(vs))
	}
	if img := vs[0].TaskGroups[0].Tasks[0].Config["image"]; img != rec.Image {
		t.Errorf("after the revert the job runs %v, want v0's %s", img, rec.Image)
	}
	if _, body := get(t, f.appURL(rec.ConfigHash)+"/"); !strings.HasPrefix(body, welcome.Prefix) {
		t.Errorf("after the revert the app answered %q", body)
	}
}

func TestConcurrentSubmitsMakeOneVersionAndOneConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	a, b := redistest.Start(t), redistest.Start(t)
	// Two operators, each with a checkout of their own.
	g := f.checkout()
	f.writeEnv("a", a, 1, "")
	g.writeEnv("b", b, 1, "")
	if _, code, _ := submitJSON(t, f, "-env", "a", "-image", good); code != exitOK {
		t.Fatalf("first submit: exit %d", code)
	}
	before := f.snapshots()

	// Both are real changes: a runs two instances now, b another Redis.
	// Both are planned against the same job, as two operators would; the
	// index pins that, so the outcome does not depend on which process the
	// scheduler runs first.
	f.writeEnv("a", a, 2, "")
	out, _, code := f.deployer("plan", "-env", "a", "-image", good, "-json")
	var plan struct {
		CheckIndex uint64 `json:"check_index"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || code != 1 || plan.CheckIndex == 0 {
		t.Fatalf("plan: exit %d, %q, %v; want 1 and a check index", code, out, err)
	}
	index := strconv.FormatUint(plan.CheckIndex, 10)
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i, op := range []struct {
		f   *fixture
		env string
	}{{f, "a"}, {g, "b"}} {
		wg.Go(func() {
			_, _, codes[i] = op.f.deployer("submit", "-env", op.env, "-image", good, "-detach", "-check-index", index)
		})
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, c := range codes {
		switch c {
		case exitOK:
			ok++
		case exitConflict:
			conflict++
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("exit codes %v, want one %d and one %d", codes, exitOK, exitConflict)
	}
	if n := len(f.versions()); n != 2 {
		t.Errorf("%d versions, want 2 (the first and the winner)", n)
	}
	// The loser leaves no snapshot behind: at most the winner's is new.
	if after := f.snapshots(); len(after) > len(before)+1 {
		t.Errorf("snapshots %v after, %v before: the conflicting submit left one", after, before)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(envtest.FreePort(t)))
}

func TestUnreachableServersChangeNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")

	t.Run("consul unreachable registers no job", func(t *testing.T) {
		env := maps.Clone(f.env)
		env["CONSUL_HTTP_ADDR"] = closedAddr(t)
		_, stderr, code := runCLI(t, f.dir, env, "submit", "-env", "dev", "-image", good)
		if code != exitError || !strings.Contains(stderr, "Consul") {
			t.Errorf("exit %d, stderr %q; want 1 and an error naming Consul", code, stderr)
		}
		if _, _, err := f.nomad.Jobs().Info(f.job, nil); err == nil {
			t.Errorf("job %s was registered without its config", f.job)
		}
	})
	t.Run("nomad unreachable writes no snapshot", func(t *testing.T) {
		addr := "http://" + closedAddr(t)
		env := maps.Clone(f.env)
		env["NOMAD_ADDR"] = addr
		_, stderr, code := runCLI(t, f.dir, env, "submit", "-env", "dev", "-image", good)
		if code != exitError || !strings.Contains(stderr, "Nomad at "+addr) {
			t.Errorf("exit %d, stderr %q; want 1 and an error naming Nomad at %s", code, stderr, addr)
		}
		if s := f.snapshots(); len(s) != 0 {
			t.Errorf("snapshots %v written while Nomad was unreachable", s)
		}
	})
}

func TestBadEnvironmentFileWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	tests := []struct {
		name, update string
		want         []string // in stderr
	}{
		{"a value the file alone rules out", "canary = -1", []string{"dev.hcl:", "canary = -1"}},
		// The job spec's kill_timeout is 15s: Nomad would refuse the job.
		{"a deadline the job spec rules out", "min_healthy_time = \"1s\"\nhealthy_deadline = \"5s\"\nprogress_deadline = \"10s\"",
			[]string{"dev.hcl:", "progress_deadline = \"10s\"", "kill_timeout of 15s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.writeEnv("dev", rdb, 1, tt.update)
			// plan exits as nomad job plan does: 255 for an error.
			for cmd, exit := range map[string]int{"render": exitError, "plan": 255, "submit": exitError} {
				_, stderr, code := f.deployer(cmd, "-env", "dev", "-image", good)
				if code != exit {
					t.Errorf("%s: exit %d, want %d\n%s", cmd, code, exit, stderr)
				}
				for _, w := range tt.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("%s: stderr lacks %q (the file, line and value):\n%s", cmd, w, stderr)
					}
				}
			}
			if _, _, err := f.nomad.Jobs().Info(f.job, nil); err == nil {
				t.Errorf("job %s registered from a bad environment file", f.job)
			}
			keys, _, _ := f.kv.KV().Keys(configstore.DefaultPrefix+"/default/"+f.job, "", nil)
			if len(keys) != 0 {
				t.Errorf("KV keys %v written from a bad environment file", keys)
			}
		})
	}
}

// TestSameReleaseRunsOnlyOnceItsDeploymentSucceeded submits a release that
// is already registered: while its deployment runs that is a conflict, and
// after it failed it is that failure, never "it already runs".
func TestSameReleaseRunsOnlyOnceItsDeploymentSucceeded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)

	closed := redistest.Start(t)
	closed.Stop()
	f.writeEnv("dev", closed, 1, "min_healthy_time = \"1s\"\nhealthy_deadline = \"10s\"\nprogress_deadline = \"20s\"")
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitFailed {
		t.Fatalf("a first release that never turns healthy: exit %d %+v, want %d", code, rec, exitFailed)
	}
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitFailed || rec.Outcome != deploy.Failed || len(rec.Causes) == 0 {
		t.Errorf("the same release again: exit %d, outcome %q, %d causes; want %d, failed, and why\n%s",
			code, rec.Outcome, len(rec.Causes), exitFailed, stderr)
	}

	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "min_healthy_time = \"10s\"\nhealthy_deadline = \"1m\"")
	if _, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good, "-detach"); code != exitOK {
		t.Fatalf("submit -detach: exit %d\n%s", code, stderr)
	}
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitConflict {
		t.Errorf("the same release while its deployment runs: exit %d, outcome %q; want %d (conflict)\n%s", code, rec.Outcome, exitConflict, stderr)
	}
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good, "-wait", "1m"); code != exitOK || rec.Outcome != deploy.NoChange {
		t.Errorf("the same release with -wait: exit %d, outcome %q; want 0 and no change once it runs\n%s", code, rec.Outcome, stderr)
	}
}
