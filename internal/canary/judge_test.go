package canary

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestJudgeLooks(t *testing.T) {
	type look struct {
		canary, stable Counts
		final          bool
		want           Outcome
		reason         []string // all must appear in the verdict
	}
	tests := []struct {
		name  string
		plan  Plan
		looks []look
	}{
		{"passes at the minimum sample, not before", Plan{Alpha: 0.01, MinSample: 300}, []look{
			{Counts{150, 1}, Counts{300, 1}, false, Continue, []string{"150 of the 300 canary requests a pass needs", "canary 0.7 % 5xx of 150 vs stable 0.3 % 5xx of 300"}},
			{Counts{312, 1}, Counts{640, 1}, false, Pass, []string{"errors: canary 0.3 % 5xx of 312 vs stable 0.2 % 5xx of 640, p=0.55"}},
			// Decided: a later look changes nothing.
			{Counts{400, 40}, Counts{800, 0}, false, Pass, []string{"of 312"}},
		}},
		// The example: 16 of 312 against 0 of 640 is p = 1.4e-8
		// (SciPy), far below an early look's level.
		{"fails early on strong evidence", Plan{Alpha: 0.01, MinSample: 1000}, []look{
			{Counts{312, 16}, Counts{640, 0}, false, Fail, []string{"errors: canary 5.1 % 5xx of 312 vs stable 0.0 % 5xx of 640, p=1.4e-8 (fails at p <= 0.00062)"}},
		}},
		// 4 of 30 against 0 of 60 is p = 0.0107: enough for one look at
		// alpha = 0.05, not for an early look's share of it.
		{"needs more evidence early than at the minimum sample", Plan{Alpha: 0.05, MinSample: 300}, []look{
			{Counts{30, 4}, Counts{60, 0}, false, Continue, []string{"p=0.011 (fails at p <= 0.001)"}},
			{Counts{300, 4}, Counts{600, 0}, false, Fail, []string{"p=0.012 (fails at p <= 0.049)"}},
		}},
		{"no traffic at the deadline is inconclusive", Plan{Alpha: 0.01, MinSample: 300}, []look{
			{Counts{}, Counts{}, false, Continue, []string{"canary no requests vs stable no requests, p=1 (no new canary request: cannot fail at this look)"}},
			{Counts{20, 0}, Counts{40, 0}, true, Inconclusive, []string{"deadline before the minimum sample of 300 canary requests"}},
		}},
		{"leaves errors unjudged where told to", Plan{Alpha: 0.01, MinSample: 300, IgnoreErrors: true}, []look{
			{Counts{312, 16}, Counts{640, 0}, false, Pass, []string{"errors: canary 5.1 % 5xx of 312 vs stable 0.0 % 5xx of 640, not judged (errors = false)"}},
		}},
		{"no stable request to compare with is inconclusive", Plan{Alpha: 0.01, MinSample: 100}, []look{
			{Counts{100, 0}, Counts{}, false, Inconclusive, []string{"no stable request to compare with"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := NewJudge(tt.plan)
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range tt.looks {
				v, err := j.Look(Window{Canary: l.canary, Stable: l.stable}, l.final)
				if err != nil {
					t.Fatal(err)
				}
				if v.Outcome != l.want {
					t.Errorf("look %d: %s, want %s", i+1, v, l.want)
				}
				for _, r := range l.reason {
					if !strings.Contains(v.String(), r) {
						t.Errorf("look %d: %q lacks %q", i+1, v, r)
					}
				}
				if v.Spent > tt.plan.Alpha*(1+1e-12) {
					t.Errorf("look %d spent %g of alpha %g", i+1, v.Spent, tt.plan.Alpha)
				}
			}
		})
	}
}

func TestJudgeRefuses(t *testing.T) {
	for _, p := range []Plan{{Alpha: 0, MinSample: 10}, {Alpha: 0.5, MinSample: 10}, {Alpha: math.NaN(), MinSample: 10}, {Alpha: 0.01},
		{Alpha: 0.01, MinSample: 10, Latency: &LatencyRule{Quantile: 1}}, {Alpha: 0.01, MinSample: 10, Latency: &LatencyRule{Quantile: 0.9, Threshold: -1}}} {
		if _, err := NewJudge(p); err == nil {
			t.Errorf("NewJudge(%+v) took it", p)
		}
	}
	j, _ := NewJudge(Plan{Alpha: 0.01, MinSample: 100})
	if _, err := j.Look(Window{Canary: Counts{50, 2}, Stable: Counts{100, 0}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Look(Window{Canary: Counts{40, 2}, Stable: Counts{100, 0}}, false); err == nil || !strings.Contains(err.Error(), "canary counts went down") {
		t.Errorf("canary counts that went down: %v, want an error", err)
	}
	if _, err := j.Look(Window{Canary: Counts{60, 2}, Stable: Counts{90, 0}}, false); err == nil || !strings.Contains(err.Error(), "stable counts went down, from 0 errors of 100 to 0 of 90") {
		t.Errorf("stable counts that went down: %v, want an error", err)
	}
}

// The app's buckets (app/handler.go), in seconds.
var appBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, math.Inf(1)}

func TestLatencyRule(t *testing.T) {
	// p90: rank 270 falls in (0.001, 0.0025] holding 45, 20 past its start:
	// 0.001 + 0.0015*20/45 = 1.667 ms.
	fast := Histogram{appBuckets, []int64{10, 250, 295, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300}}
	tests := []struct {
		name   string
		canary Histogram
		want   Outcome
		reason string
	}{
		{"as fast as stable passes", fast, Pass, "latency: canary p90 1.667ms vs stable p90 1.667ms, within 25ms slower"},
		// 50 ms slower: every request in (0.05, 0.1].
		{"50 ms slower fails", Histogram{appBuckets, []int64{0, 0, 0, 0, 0, 0, 0, 300, 300, 300, 300, 300, 300}}, Fail,
			"latency: canary p90 95ms vs stable p90 1.667ms, more than 25ms slower"},
		{"slower than every finite bucket gives the highest", Histogram{appBuckets, []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 300}}, Fail,
			"canary p90 2.5s"},
		{"an empty histogram is inconclusive", Histogram{appBuckets, make([]int64, len(appBuckets))}, Inconclusive, "latency: canary's histogram: no requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := NewJudge(Plan{Alpha: 0.01, MinSample: 300, Latency: &LatencyRule{Quantile: 0.9, Threshold: 25 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			v, err := j.Look(Window{Canary: Counts{300, 0}, Stable: Counts{600, 0}, CanaryLatency: tt.canary, StableLatency: fast}, false)
			if err != nil {
				t.Fatal(err)
			}
			if v.Outcome != tt.want || !strings.Contains(v.Reason, tt.reason) {
				t.Errorf("%s, want %s with %q", v, tt.want, tt.reason)
			}
		})
	}
}

func TestHistogramQuantile(t *testing.T) {
	// Values worked by hand as histogram_quantile computes them.
	tests := []struct {
		name string
		h    Histogram
		q    float64
		want float64
	}{
		{"interpolates in the first bucket from 0", Histogram{[]float64{1, 2}, []int64{10, 10}}, 0.5, 0.5},
		{"interpolates in a middle bucket", Histogram{[]float64{1, 2, 4}, []int64{10, 30, 40}}, 0.5, 1.5},
		{"the top of the bucket that holds the rank", Histogram{[]float64{1, 2, 4}, []int64{10, 30, 40}}, 0.75, 2},
		{"+Inf gives the highest finite bound", Histogram{[]float64{1, 2, math.Inf(1)}, []int64{1, 2, 100}}, 0.9, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.h.Quantile(tt.q)
			if err != nil || math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Quantile(%g) = %g, %v; want %g", tt.q, got, err, tt.want)
			}
		})
	}
	for _, h := range []Histogram{{}, {[]float64{1}, []int64{1, 2}}, {[]float64{2, 1}, []int64{1, 2}}, {[]float64{1, 2}, []int64{2, 1}},
		{[]float64{1}, []int64{-1}}, {[]float64{math.Inf(1)}, []int64{5}}} {
		if q, err := h.Quantile(0.5); err == nil {
			t.Errorf("Quantile of %+v = %g, want an error", h, q)
		}
	}
}
