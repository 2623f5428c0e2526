package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// judgeWithStack points the fixture's deployer at the stack's own
// Prometheus, the PROMETHEUS_ADDR its environment gives users (bin/stack
// env prints the same), as a user of the stack would judge with it.
func judgeWithStack(t *testing.T, f *fixture, s *localstack.Stack) {
	t.Helper()
	for _, kv := range s.Env() {
		if addr, ok := strings.CutPrefix(kv, "PROMETHEUS_ADDR="); ok && addr != "" {
			f.env["PROMETHEUS_ADDR"] = addr
			return
		}
	}
	t.Fatalf("the stack's environment %q gives no PROMETHEUS_ADDR", s.Env())
}

// wantJudgeLabels waits until the stack's Prometheus has the job's GET /
// counts of every running allocation, each series labelled with its
// allocation's ID (alloc, what the judge selects by) and canary "false":
// the stack's scrape config finds the test's job as it finds the shipped
// environments'.
func wantJudgeLabels(t *testing.T, f *fixture, s *localstack.Stack) {
	t.Helper()
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, al := range allocs {
		if al.ClientStatus == "running" {
			running = append(running, al.ID)
		}
	}
	slices.Sort(running)
	q := fmt.Sprintf(`counter_http_requests_total{%s=%q, route="/", code="200"}`, localstack.LabelService, f.job)
	stacktest.WaitQuery(t, s, 30*time.Second, q, func(v model.Vector) bool {
		var got []string
		for _, smp := range v {
			if smp.Metric[localstack.LabelCanary] != "false" {
				return false
			}
			got = append(got, string(smp.Metric[localstack.LabelAlloc]))
		}
		slices.Sort(got)
		return slices.Equal(got, running)
	})
}

// slowImage builds the app from a patched copy of its source whose GET /
// sleeps 50 ms before it answers, inside the time the app measures
// (counter_http_request_duration_seconds), while /readyz is as quick as
// ever: a release slower for users that health checks pass.
func slowImage(t *testing.T, s *localstack.Stack) string {
	t.Helper()
	return patchedImage(t, s, "slow", "\tslow()\n", `package main

import "time"

// slow is the test's patch: 50 ms more on every GET /.
func slow() { time.Sleep(50 * time.Millisecond) }
`)
}

// analysisBlock is the analysis block of the judge tests' environment,
// with extra lines inside it.
func analysisBlock(extra string) string {
	return "analysis {\n  alpha = 0.01\n  min_sample = 300\n  interval = \"2s\"\n" + extra + "}\n"
}

// TestAnalysisActsOnNoTrafficAndFailsASlowCanary judges canaries on the
// stack's own Prometheus. With no user, a canary serves no GET /: at
// max_duration the analysis is inconclusive, which by default fails the
// deployment (Nomad reverts it, exit 4) and with inconclusive = "promote"
// promotes it (exit 0), each saying inconclusive and the sample it had.
// Then, under load through the front door, a build whose GET / is 50 ms
// slower is failed by the latency rule (threshold 25 ms), with both
// quantiles in the reason, though it answers no 5xx.
func TestAnalysisActsOnNoTrafficAndFailsASlowCanary(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "slow")
	good, _ := releaseImages(t, s)
	slow := slowImage(t, s)
	f.writeEnv("dev", redistest.Start(t), 2, "canary = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
	file := filepath.Join(f.dir, "environments", "dev.hcl")
	env, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	withAnalysis := func(extra string) {
		t.Helper()
		if err := os.WriteFile(file, append(slices.Clone(env), analysisBlock(extra)...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	withAnalysis("  max_duration = \"10s\"\n")
	judgeWithStack(t, f, s)
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK || rec.Analysis != nil {
		t.Fatalf("first release: exit %d, analysis %+v\n%s", code, rec.Analysis, stderr)
	}
	wantJudgeLabels(t, f, s)

	const sample = "deadline before the minimum sample of 300 canary requests: canary no requests vs stable no requests"
	for i, c := range []struct {
		name, extra string
		code        int
		verdict     deploy.Verdict
		detail      string
	}{
		{"inconclusive fails by default", "", exitAutoReverted, deploy.Fail,
			"canary failed by analysis (inconclusive): " + sample},
		{"inconclusive = promote promotes", "  inconclusive = \"promote\"\n", exitOK, deploy.Promote,
			"canary promoted by analysis (inconclusive): " + sample},
	} {
		withAnalysis("  max_duration = \"10s\"\n" + c.extra)
		// -wait: Nomad's revert of a failed release has a deployment of
		// its own, which may still run.
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, i+1), "-wait", "90s")
		a := rec.Analysis
		if code != c.code || a == nil || a.Outcome != "inconclusive" || a.Verdict != c.verdict || !strings.Contains(rec.Detail, c.detail) {
			t.Fatalf("%s, with no traffic: exit %d (want %d), analysis %+v, detail %q (want it to hold %q)\n%s",
				c.name, code, c.code, a, rec.Detail, c.detail, stderr)
		}
		if c.verdict == deploy.Promote && !strings.Contains(rec.Detail, `(inconclusive = "promote")`) {
			t.Errorf("%s: detail %q does not say inconclusive = \"promote\" decided", c.name, rec.Detail)
		}
		t.Logf("%s, with no traffic: exit %d, %d looks: %s", c.name, code, len(a.Looks), rec.Detail)
	}

	l := startJudgedLoad(t, url)
	waitFor(t, 30*time.Second, "answers through the front door", func() bool { n, _ := l.counts("before"); return n > 50 })
	withAnalysis("  max_duration = \"60s\"\n  latency {\n    threshold = \"25ms\"\n  }\n")
	l.enter("slow")
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", slow, "-wait", "90s")
	l.enter("after slow")
	a := rec.Analysis
	if code != exitAutoReverted || a == nil || a.Verdict != deploy.Fail || a.Outcome != "fail" ||
		!strings.Contains(rec.Detail, "canary failed by analysis: latency: canary p90 ") || !strings.Contains(rec.Detail, " vs stable p90 ") ||
		!strings.Contains(rec.Detail, "more than 25ms slower") {
		t.Fatalf("the slow release: exit %d (want %d), analysis %+v, detail %q\n%s", code, exitAutoReverted, a, rec.Detail, stderr)
	}
	last := a.Looks[len(a.Looks)-1]
	n, bad := l.counts("slow")
	t.Logf("slow: failed at look %d, %s after its canary turned healthy: %s; through the URL meanwhile: %d answers, %d 5xx or none",
		last.N, last.At.Sub(a.Since).Round(100*time.Millisecond), last.Reason, n, bad)
	if last.Latency == nil || !last.Latency.Fail || last.Canary.Errors != 0 {
		t.Errorf("the slow canary was failed on %+v, latency %+v; want on its latency alone, with no 5xx", last.Canary, last.Latency)
	}
}
