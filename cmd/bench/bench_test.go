package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

func TestLoadOrder(t *testing.T) {
	app := []*appTarget{{name: "app"}}
	both := []*appTarget{{name: "app"}, {name: "baseline"}}
	door := []*appTarget{{name: "app", door: "127.0.0.1:1"}, {name: "baseline"}}
	tests := []struct {
		name    string
		targets []*appTarget
		n       int
		want    []string
	}{
		{"one app/starts with redis-benchmark", app, 0, []string{"redis-benchmark", "app GET /", "app GET /healthz"}},
		{"one app/turns once a round", app, 1, []string{"app GET /", "app GET /healthz", "redis-benchmark"}},
		{"one app/comes back after three", app, 3, []string{"redis-benchmark", "app GET /", "app GET /healthz"}},
		{"with a baseline/puts the two GET / side by side", both, 0,
			[]string{"redis-benchmark", "app GET /", "baseline GET /", "app GET /healthz", "baseline GET /healthz"}},
		{"with a baseline/turns the whole cycle", both, 2,
			[]string{"baseline GET /", "app GET /healthz", "baseline GET /healthz", "redis-benchmark", "app GET /"}},
		{"with a front door/puts it next to its app's GET /", door, 0,
			[]string{"redis-benchmark", "app GET /", "app GET / front door", "baseline GET /", "app GET /healthz", "baseline GET /healthz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cycle := loadCycle(tt.targets)
			got := turn(cycle, tt.n)
			if !slices.Equal(got, tt.want) {
				t.Errorf("turn(%q, %d) = %q, want %q", cycle, tt.n, got, tt.want)
			}
			if tt.n > 0 && !slices.Equal(cycle, turn(cycle, 0)) {
				t.Errorf("turn changed its cycle: %q", cycle)
			}
		})
	}
}

func TestReportPutsTheBaselineBesideTheApp(t *testing.T) {
	point := func(c int, app, healthz, redis float64) appPoint {
		return pointOf(c, []appRun{{appLoads: appLoads{AppRPS: app, AppP99MS: 1, HealthzRPS: healthz, RedisRPS: redis}}})
	}
	rep := &report{Date: "2026-12-03T00:00:00Z", Cores: 2, App: &appReport{Rounds: 1, Duration: "1s",
		App: &appResult{Revision: "abc1234-dirty", From: "working tree", ExactOK: true, PeakRSSMiB: 10,
			Points: []appPoint{point(64, 80, 100, 100)}},
		Baseline: &appResult{Revision: "9f07735", From: "git archive 9f07735", ExactOK: false, PeakRSSMiB: 14,
			Points: []appPoint{point(64, 100, 100, 90)}},
	}}
	var b strings.Builder
	writeTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"app abc1234-dirty (working tree)",
		"baseline 9f07735 (git archive 9f07735)",
		"app abc1234-dirty beside baseline 9f07735, same run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// The side-by-side rows: what, then the app's figure, the baseline's
	// and, where it means something, their ratio.
	for _, want := range [][]string{
		{"c=64", "GET", "/", "req/s", "80", "100", "0.80"},
		{"GET", "/", "÷", "its", "/healthz", "0.80", "1.00"},
		{"GET", "/", "÷", "redis-benchmark", "0.80", "1.11"},
		{"peak", "RSS", "MiB", "10.0", "14.0", "0.71"},
		{"counter", "check", "ok", "FAILED"},
	} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			found = found || slices.Equal(strings.Fields(line), want)
		}
		if !found {
			t.Errorf("report lacks the row %q:\n%s", want, out)
		}
	}

	chart := t.TempDir() + "/chart.png"
	if err := throughputChart(rep, chart); err != nil {
		t.Fatalf("chart with a baseline: %v", err)
	}
}

func TestBuildAppAtARevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the app from git archive; not under -short")
	}
	root, err := repoRoot()
	if err != nil {
		t.Skip(err)
	}
	work := t.TempDir()
	b, err := buildApp(t.Context(), root, work, "baseline", "HEAD", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if b.from != "git archive HEAD" || b.revision == "" || strings.HasSuffix(b.revision, "-dirty") {
		t.Errorf("built %+v, want HEAD's short commit from git archive", b)
	}
	if fi, err := os.Stat(b.bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("no executable at %s: %v", b.bin, err)
	}
	if _, err := os.Stat(work + "/baseline-src"); !os.IsNotExist(err) {
		t.Errorf("the extracted source is still there: %v", err)
	}
	if _, err := buildApp(t.Context(), root, work, "none", "no-such-revision", io.Discard); err == nil ||
		!strings.Contains(err.Error(), "no-such-revision") {
		t.Errorf("an unknown revision: got %v, want an error naming it", err)
	}
}

// TestFrontDoorBesideTheApp runs the app half of the bench at a tiny scale
// with the front door: HAProxy with the stack's config, fed by a Consul
// agent, in front of the app built from the working tree. Every figure of
// the front door must be there and every request through it answered 200.
func TestFrontDoorBesideTheApp(t *testing.T) {
	envtest.NeedsServers(t, "redis-server, wrk, HAProxy and Consul")
	for _, tool := range []struct{ name, pkg string }{
		{"redis-server", "redis-server"}, {"redis-benchmark", "redis-tools"}, {"wrk", "wrk"}, {"haproxy", "haproxy"},
	} {
		envtest.LookPath(t, tool.name, tool.pkg)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	o := appOptions{conns: []int{4}, rounds: 2, d: time.Second, frontDoor: true}
	rep, err := benchApp(t.Context(), root, t.TempDir(), o, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	r := rep.App
	if !strings.Contains(r.FrontDoor, "HAProxy") || !strings.Contains(r.FrontDoor, "localstack.HAProxyConfig") {
		t.Errorf("the result does not say what the front door was: %q", r.FrontDoor)
	}
	for _, p := range r.Points {
		if p.FrontDoorRPS <= 0 || p.FrontDoorP99MS <= 0 || p.RatioFrontDoor <= 0 {
			t.Errorf("c=%d: no front door figures under wrk: %+v", p.Conns, p)
		}
	}
	if len(r.HalfRuns) != o.rounds {
		t.Errorf("%d rounds at half of the peak, want %d", len(r.HalfRuns), o.rounds)
	}
	for i, h := range r.HalfRuns {
		if h.FrontDoorP50MS <= 0 || h.FrontDoorP99MS <= 0 || h.P99MS <= 0 || h.HealthzP99MS <= 0 ||
			h.DirectAtDoorHalfP99MS <= 0 || h.DoorAtDoorHalfP99MS <= 0 {
			t.Errorf("round %d at half of the peak lacks a figure: %+v", i+1, h)
		}
	}
	if r.FrontDoorOwnHalfRate <= 0 || r.FrontDoorOwnHalfP99MS <= 0 {
		t.Errorf("no front door latency at half of its own peak: %v req/s, p99 %v", r.FrontDoorOwnHalfRate, r.FrontDoorOwnHalfP99MS)
	}
	if r.FrontDoorHalfP99MS <= 0 || r.FrontDoorHalfP50MS <= 0 {
		t.Errorf("no front door latency at half of the peak: p50 %v, p99 %v", r.FrontDoorHalfP50MS, r.FrontDoorHalfP99MS)
	}
	if r.FrontDoorFailed != 0 {
		t.Errorf("%d requests through the front door failed\n%s", r.FrontDoorFailed, progress.String())
	}
	if !r.ExactOK {
		t.Errorf("counter check: %s", r.Exact)
	}
	var table strings.Builder
	writeTable(&table, &report{Date: "2026-12-03T00:00:00Z", Cores: 2, App: rep})
	for _, want := range []string{"front door: GET / through HAProxy", "front door added", "at half of the front door's own peak", "requests through the front door that failed: 0"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, table.String())
		}
	}
}

// TestFrontDoorReport checks the front door's block of the report: its
// figures beside GET / direct, and a warning when the half-peak rate was
// more than the front door carried, so that a queue's latency is not read
// as the cost of the hop.
func TestFrontDoorReport(t *testing.T) {
	tests := []struct {
		name     string
		doorRPS  float64
		halfRate float64
		queued   bool
	}{
		{"says nothing of a queue/when the front door carried more than the rate", 900, 500, false},
		{"says its requests queued/when the rate was above its peak", 400, 500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pointOf(64, []appRun{{appLoads: appLoads{AppRPS: 1000, HealthzRPS: 1000, RedisRPS: 1000, FrontDoorRPS: tt.doorRPS, FrontDoorP99MS: 2}}})
			r := &appResult{Revision: "abc1234", From: "working tree", Points: []appPoint{p}, HalfRate: tt.halfRate,
				HalfP50MS: 1, HalfP99MS: 3, FrontDoor: "HAProxy", FrontDoorHalfP50MS: 1.5, FrontDoorHalfP99MS: 3.5,
				FrontDoorAddedP50: 0.5, FrontDoorAddedP99: 0.5, FrontDoorOwnHalfRate: tt.doorRPS / 2, FrontDoorOwnHalfP99MS: 2.25,
				FrontDoorOwnAddedP50: 0.2, FrontDoorOwnAddedP99: 0.25,
				HalfRuns: []halfRun{{P99MS: 3, FrontDoorP99MS: 3.5, DirectAtDoorHalfP99MS: 2, DoorAtDoorHalfP99MS: 2.25}}}
			var b strings.Builder
			writeFrontDoor(&b, r)
			out := b.String()
			for _, want := range []string{"front door: GET / through HAProxy", "front door added (median of the rounds' differences): p50 0.50 ms, p99 0.50 ms; per round p99: +0.50",
				"front door p99 2.25 ms, added p50 0.20 ms, p99 0.25 ms (medians of the rounds' differences); per round p99: +0.25"} {
				if !strings.Contains(out, want) {
					t.Errorf("the report lacks %q:\n%s", want, out)
				}
			}
			if got := strings.Contains(out, "its requests queued"); got != tt.queued {
				t.Errorf("says the requests queued: %v, want %v:\n%s", got, tt.queued, out)
			}
			rep := &report{Date: "2026-12-03T00:00:00Z", Cores: 2, App: &appReport{Rounds: 1, Duration: "1s", App: r}}
			if err := throughputChart(rep, t.TempDir()+"/chart.png"); err != nil {
				t.Errorf("chart with a front door: %v", err)
			}
		})
	}
}
