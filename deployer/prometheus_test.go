package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"github.com/prometheus/common/model"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestPrometheusScrapesEveryAllocation is the stack's Prometheus as the
// canary analysis will read it (PROMETHEUS_ADDR): while a release's canary
// waits for promotion, every running allocation of the job is a target
// that is up, labelled with its allocation, its service and canary "true"
// for the canary alone; the requests users send through the front door
// show in the per-allocation counts, each exactly once; HAProxy's exporter
// is scraped; after the promotion no series says canary. Prometheus
// SIGKILLed comes back with make up's resume path, and after make down and
// make up it scrapes the allocations again and keeps what it had.
func TestPrometheusScrapesEveryAllocation(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "prom")
	if env := s.Env(); !slices.Contains(env, "PROMETHEUS_ADDR="+s.PrometheusAddr) || s.PrometheusAddr == "" {
		t.Errorf("the stack's environment %q lacks PROMETHEUS_ADDR=%s", env, s.PrometheusAddr)
	}
	good, _ := releaseImages(t, s)
	f.writeEnv("dev", redistest.Start(t), 2, "canary = 1\nauto_promote = false\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v\n%s", code, rec, stderr)
	}
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, 1)); code != exitUnknown || rec.Outcome != deploy.AwaitingPromotion {
		t.Fatalf("the canary release: exit %d %+v\n%s", code, rec, stderr)
	}
	targets := f.wantScraped(s, "while the canary waits", false)
	if n := len(targets); n != 3 {
		t.Fatalf("%d allocations run while the canary waits, want 2 and the canary", n)
	}

	// Requests through the front door, once HAProxy sends to all three:
	// each counted once, in the allocation that served it.
	waitFor(t, 10*time.Second, "HAProxy sending to the 3 passing instances", func() bool {
		lb, err := inHAProxy(s.Dir, "dev")
		return err == nil && len(lb) == 3
	})
	perAlloc := fmt.Sprintf(`sum by (%s) (counter_http_requests_total{%s=%q, route="/"})`, localstack.LabelAlloc, localstack.LabelService, f.job)
	before := byAlloc(stacktest.Query(t, s, perAlloc))
	const n = 30
	for i := range n {
		res, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s (%d): %v", url, i, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s (%d): %s", url, i, res.Status)
		}
	}
	var after map[string]float64
	stacktest.WaitQuery(t, s, 15*time.Second, perAlloc, func(v model.Vector) bool {
		after = byAlloc(v)
		return rise(before, after) >= n
	})
	t.Logf("GET / through the front door %d times: per allocation %v before, %v after", n, before, after)
	if got := rise(before, after); got != n {
		t.Errorf("the allocations' counts rose by %v, want %d: one per request", got, n)
	}
	for alloc := range targets {
		if after[alloc] <= before[alloc] {
			t.Errorf("alloc %s served none of the %d requests in Prometheus's counts (%v before, %v after)", alloc, n, before[alloc], after[alloc])
		}
	}
	stacktest.WaitQuery(t, s, 15*time.Second, `up{job="frontdoor"} == 1`, func(v model.Vector) bool { return len(v) == 1 })
	stacktest.WaitQuery(t, s, 15*time.Second, fmt.Sprintf(`haproxy_backend_http_requests_total{job="frontdoor", proxy="dev"} >= %d`, n),
		func(v model.Vector) bool { return len(v) == 1 })

	out, stderr, code := f.deployer("deployment", "-env", "dev", "-json", "promote")
	var rec deploy.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("promote: exit %d %+v (%v)\n%s", code, rec, err, stderr)
	}
	f.wantScraped(s, "after the promotion", true)

	// Prometheus dies (SIGKILL): make up's resume path starts it again,
	// and only it.
	pid := recordedPID(t, s.Dir, "prometheus")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "Prometheus gone after SIGKILL", func() bool { return !runningPID(pid) })
	s = stacktest.ResumeOwn(t, s)
	f.stack = s
	if again := recordedPID(t, s.Dir, "prometheus"); again == pid {
		t.Errorf("after SIGKILL and make up, Prometheus is still pid %d", pid)
	}
	f.wantScraped(s, "after Prometheus was killed and make up ran", true)

	// make down, make up: the allocations run again and are scraped
	// again, and what Prometheus had before is still there.
	stopped := time.Now()
	s = stacktest.RestartOwn(t, s)
	f.stack = s
	f.wantScraped(s, "after make down and make up", true)
	res, _, _, err := stacktest.Prometheus(t, s).Query(context.Background(), fmt.Sprintf(`up{%s=%q}`, localstack.LabelService, f.job), stopped.Add(-2*time.Second))
	if v, ok := res.(model.Vector); err != nil || !ok || len(v) == 0 {
		t.Errorf("after make down and make up, Prometheus has no samples from before: %v (%v)", res, err)
	}
}

// wantScraped waits until Prometheus's up series of the fixture's job,
// scraped since it was called, are exactly the job's running allocations,
// each up, with label alloc its
// ID, service the job, and canary "true" for a canary of a deployment not
// yet promoted (none once promoted); it returns them by allocation ID.
func (f *fixture) wantScraped(s *localstack.Stack, when string, promoted bool) map[string]string {
	f.t.Helper()
	want := map[string]string{}
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, a := range allocs {
		if a.DesiredStatus != nomad.AllocDesiredStatusRun || a.ClientStatus != nomad.AllocClientStatusRunning {
			continue
		}
		canary := !promoted && a.DeploymentStatus != nil && a.DeploymentStatus.Canary
		want[a.ID] = strconv.FormatBool(canary)
	}
	// Only samples scraped from now on: after a restart, the last ones
	// from before it are still within the query's lookback.
	start := time.Now()
	up := fmt.Sprintf(`up{%s=%q}`, localstack.LabelService, f.job)
	q := fmt.Sprintf(`%s and timestamp(%s) > %d`, up, up, start.Unix())
	var got map[string]string
	stacktest.WaitQuery(f.t, s, time.Minute, q, func(v model.Vector) bool {
		got = map[string]string{}
		for _, sample := range v {
			if sample.Value != 1 {
				return false
			}
			got[string(sample.Metric[localstack.LabelAlloc])] = string(sample.Metric[localstack.LabelCanary])
		}
		return maps.Equal(got, want)
	})
	f.t.Logf("%s: Prometheus scrapes the %d running allocations (alloc: canary) %v, %s after Nomad listed them", when, len(want), got, time.Since(start).Round(100*time.Millisecond))
	return want
}

// byAlloc maps each sample's alloc label to its value.
func byAlloc(v model.Vector) map[string]float64 {
	out := map[string]float64{}
	for _, s := range v {
		out[string(s.Metric[localstack.LabelAlloc])] = float64(s.Value)
	}
	return out
}

// rise is how much the counts in after exceed those in before, summed
// over the allocations (one absent before counts from 0).
func rise(before, after map[string]float64) float64 {
	total := 0.0
	for alloc, v := range after {
		total += v - before[alloc]
	}
	return total
}

// runningPID reports whether pid is a live process: not gone, and not a
// zombie its parent (the stack, in this test process) has yet to reap.
func runningPID(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && !bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z"))
}
