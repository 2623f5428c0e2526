package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// shippedAs is the shipped environments/NAME.hcl, every value as it ships
// (count, update, analysis) but where it points: the test's job, its front
// door's URL and its Redis.
func shippedAs(t *testing.T, f *fixture, name string, rdb *redistest.Server) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "environments", name+".hcl"))
	if err != nil {
		t.Fatal(err)
	}
	out := string(src)
	for _, r := range []struct{ re, with string }{
		{`(?m)^url *= .*$`, fmt.Sprintf("url = %q\njob = %q", f.url, f.job)},
		{`(?m)^( *HOST *= ).*$`, fmt.Sprintf("${1}%q", rdb.Host)},
		{`(?m)^( *PORT *= ).*$`, fmt.Sprintf("${1}%d", rdb.Port)},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(out) {
			t.Fatalf("environments/%s.hcl has no line matching %s", name, r.re)
		}
		out = re.ReplaceAllString(out, r.with)
	}
	if !strings.Contains(out, "analysis {") {
		t.Fatalf("environments/%s.hcl has no analysis block", name)
	}
	return []byte(out)
}

// demoLoad starts scripts/load through url, as make demo (scripts/demo)
// does while a release of test or prod is judged, with its defaults; stop
// sends it SIGTERM, as the demo does when the step ends, and says how long
// it took to end.
func demoLoad(t *testing.T, url string) (stop func() time.Duration) {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "scripts", "load"), url)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	stop = func() time.Duration {
		start := time.Now()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("scripts/load still ran 10 s after SIGTERM")
		}
		return time.Since(start)
	}
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			stop()
		}
	})
	return stop
}

// TestShippedAnalysisPassesUnderTheDemoLoad releases with the shipped
// test.hcl and prod.hcl (their count, update and analysis blocks as they
// ship, behind a front door of the test's own) what make demo releases:
// a good build, judged while scripts/load plays the users through the URL,
// as the demo does. Each judged release must pass on its own numbers
// (min_sample reached, exit 0), where without the load it would be
// inconclusive, which those files fail. Then a rollback, as the demo's last
// step: to the judged copy of the release that passed before, which Nomad
// promotes without a look.
func TestShippedAnalysisPassesUnderTheDemoLoad(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "shipped")
	good, _ := releaseImages(t, s)
	rdb := redistest.Start(t)
	judgeWithStack(t, f, s)
	file := filepath.Join(f.dir, "environments", "dev.hcl")
	write := func(name string) {
		if err := os.WriteFile(file, shippedAs(t, f, name, rdb), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// test's file: the first release has no stable instance, so Nomad
	// places it without a canary and there is nothing to judge.
	write("test")
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK || rec.Analysis != nil {
		t.Fatalf("first release with test.hcl: exit %d, analysis %+v\n%s", code, rec.Analysis, stderr)
	}
	judged := func(what, image string) {
		t.Helper()
		stop := demoLoad(t, url)
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", image)
		took := stop()
		a := rec.Analysis
		if code != exitOK || a == nil || a.Verdict != deploy.Promote || a.Outcome != "pass" || len(a.Looks) == 0 {
			t.Fatalf("%s under the demo's load: exit %d, analysis %+v, detail %q\n%s", what, code, a, rec.Detail, stderr)
		}
		last := a.Looks[len(a.Looks)-1]
		t.Logf("%s: passed at look %d, %s after its canary turned healthy: %s (load stopped in %s)",
			what, last.N, last.At.Sub(a.Since).Round(100*time.Millisecond), last.Reason, took.Round(time.Millisecond))
		if last.Canary.Requests < 300 || last.Stable.Requests == 0 || last.Latency == nil {
			t.Errorf("%s passed on canary %+v, stable %+v, latency %+v; want min_sample 300 and the latency rule judged", what, last.Canary, last.Stable, last.Latency)
		}
	}
	judged("a release with test.hcl", imageVariant(t, s, 1))

	// prod's file: its count of 2 comes with the release judged first,
	// against test's one instance; the next is judged against two, as in
	// prod.
	write("prod")
	judged("a release with prod.hcl, from one instance to two", imageVariant(t, s, 2))
	judged("a release with prod.hcl", imageVariant(t, s, 3))

	// A rollback, with no load: the release before passed its analysis
	// and has a judged copy (auto_promote on), which the rollback goes
	// back to, so Nomad promotes its canary once healthy: no look, no
	// verdict of the deployer's.
	rec, code, stderr := f.rollbackJSON()
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.Analysis != nil || rec.Version == nil {
		t.Fatalf("rollback to a release that passed: exit %d, outcome %q, analysis %+v, detail %q\n%s", code, rec.Outcome, rec.Analysis, rec.Detail, stderr)
	}
	wantPromotedByNomad(t, f.waitForDeployment(*rec.Version, time.Minute))
	// The version the rollback made is the same release as the newest
	// older one that runs it: the judged copy it went back to.
	hist := f.historyJSON()
	var to string
	for _, e := range hist {
		if e.Version == *rec.Version {
			to = e.SameAs
		}
	}
	copied := false
	for _, e := range hist {
		copied = copied || (to != "" && e.Release == to && e.JudgedCopyOf != "")
	}
	if !copied {
		t.Errorf("the rollback (version %d) runs the same release as %q, which history names no judged copy:\n%+v", *rec.Version, to, hist)
	}
}
