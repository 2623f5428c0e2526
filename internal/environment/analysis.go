package environment

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/kodekloud/counter/internal/canary"
)

// Analysis is the analysis block: how a canary is judged by what it
// serves (internal/canary, docs/analysis.md) before the deployer promotes
// or fails it. A file with one renders auto_promote = false.
type Analysis struct {
	// Errors judges the canary's share of 5xx answers to GET / against
	// stable's; default true.
	Errors *bool `hcl:"errors,optional"`
	// Alpha bounds the chance that a canary as good as stable is failed
	// on errors, over every look together; default 0.01.
	Alpha *float64 `hcl:"alpha,optional"`
	// MinSample is how many canary GET / requests a pass needs; default
	// 300.
	MinSample    *int     `hcl:"min_sample,optional"`
	Interval     *string  `hcl:"interval,optional"`     // between looks; default "10s"
	MaxDuration  *string  `hcl:"max_duration,optional"` // the longest the analysis may take; default "5m"
	Inconclusive *string  `hcl:"inconclusive,optional"` // "fail" (default) or "promote"
	Latency      *Latency `hcl:"latency,block"`

	// Every and Longest are Interval and MaxDuration, parsed.
	Every, Longest time.Duration
}

// Latency is the analysis block's latency rule: fail a canary whose
// quantile of GET / latency exceeds stable's by more than Threshold.
type Latency struct {
	Quantile  *float64 `hcl:"quantile,optional"` // default 0.9
	Threshold string   `hcl:"threshold"`

	ThresholdDuration time.Duration // Threshold, parsed
}

// The analysis block's defaults: the figures of docs/analysis.md's
// simulation, which catch a release answering 5xx to 5 % of requests
// 99.9 % of the time against a clean stable and fail a good canary under
// 1 % of the time.
const (
	defaultAlpha        = 0.01
	defaultMinSample    = 300
	defaultInterval     = "10s"
	defaultMaxDuration  = "5m"
	defaultInconclusive = "fail"
	defaultQuantile     = 0.9
	// minInterval is the shortest interval between looks: the counts come
	// from Prometheus, which scrapes every few seconds, so closer looks
	// would see the same numbers.
	minInterval = time.Second
)

// Plan is the block as internal/canary judges it.
func (a *Analysis) Plan() canary.Plan {
	p := canary.Plan{Alpha: *a.Alpha, MinSample: int64(*a.MinSample), IgnoreErrors: !*a.Errors}
	if a.Latency != nil {
		p.Latency = &canary.LatencyRule{Quantile: *a.Latency.Quantile, Threshold: a.Latency.ThresholdDuration}
	}
	return p
}

// validate checks the analysis block and fills in its defaults.
func (a *Analysis) validate(body *hclsyntax.Body, canaries int) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ab := blockBody(body, "analysis")
	bad := func(name, summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail,
			Subject: attrRange(body, "analysis", name).Ptr()})
	}
	orDefault(&a.Errors, true)
	orDefault(&a.Alpha, defaultAlpha)
	orDefault(&a.MinSample, defaultMinSample)
	orDefault(&a.Interval, defaultInterval)
	orDefault(&a.MaxDuration, defaultMaxDuration)
	orDefault(&a.Inconclusive, defaultInconclusive)

	if canaries == 0 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Analysis without a canary",
			Detail:  "the analysis judges a canary against the stable instances, and update sets canary = 0: set canary to 1 or more, or drop the analysis block.",
			Subject: attrRange(body, "update", "canary").Ptr()})
	}
	alphaOK := *a.Alpha > 0 && *a.Alpha < 0.5
	if !alphaOK {
		bad("alpha", "Invalid alpha", fmt.Sprintf("alpha = %g: the chance of failing a good canary, above 0 and below 0.5 (0.01 is usual).", *a.Alpha))
	}
	if *a.MinSample < 1 {
		bad("min_sample", "Invalid min_sample", fmt.Sprintf("min_sample = %d: a pass needs at least 1 canary request.", *a.MinSample))
	} else if alphaOK && *a.Errors {
		// Even a canary failing every request of the minimum sample, against
		// a stable with twice its traffic and no error, must be able to
		// fail: else the error test could only ever pass.
		n := int64(*a.MinSample)
		level := *a.Alpha * (1 - canary.EarlyShare)
		if p, err := canary.FisherGreater(n, n, 0, 2*n); err == nil && p > level {
			bad("min_sample", "min_sample too small to fail a canary",
				fmt.Sprintf("min_sample = %d: even %d errors of %d against none of %d stable requests gives p = %.2g, above the %.2g that alpha = %g leaves for the look at the minimum sample; the analysis could never fail on errors. Raise min_sample.",
					n, n, n, 2*n, p, level, *a.Alpha))
		}
	}
	durations := map[string]time.Duration{}
	for _, d := range []struct {
		name string
		v    string
	}{{"interval", *a.Interval}, {"max_duration", *a.MaxDuration}} {
		dur, err := time.ParseDuration(d.v)
		if err != nil || dur <= 0 {
			bad(d.name, "Invalid duration", fmt.Sprintf("%s = %q: want a duration above 0, such as \"10s\" or \"5m\".", d.name, d.v))
			continue
		}
		durations[d.name] = dur
	}
	every, okEvery := durations["interval"]
	longest, okLongest := durations["max_duration"]
	if okEvery && every < minInterval {
		bad("interval", "interval too short",
			fmt.Sprintf("interval = %s: at least %s; the counts come from Prometheus's scrapes, and closer looks would see the same numbers.", every, minInterval))
	}
	if okEvery && okLongest && longest < every {
		bad("max_duration", "max_duration shorter than interval",
			fmt.Sprintf("max_duration = %s with interval = %s: the analysis would end before its first look.", longest, every))
	}
	a.Every, a.Longest = every, longest
	switch *a.Inconclusive {
	case "fail", "promote":
	default:
		bad("inconclusive", "Invalid inconclusive",
			fmt.Sprintf("inconclusive = %q: want \"fail\" (fail the deployment; the default) or \"promote\".", *a.Inconclusive))
	}

	if l := a.Latency; l != nil {
		orDefault(&l.Quantile, defaultQuantile)
		lbad := func(name, summary, detail string) {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail,
				Subject: attrRange(ab, "latency", name).Ptr()})
		}
		if !(*l.Quantile > 0 && *l.Quantile < 1) {
			lbad("quantile", "Invalid quantile", fmt.Sprintf("quantile = %g: want a quantile above 0 and below 1, such as 0.9 for p90.", *l.Quantile))
		}
		dur, err := time.ParseDuration(l.Threshold)
		if err != nil || dur <= 0 {
			lbad("threshold", "Invalid threshold",
				fmt.Sprintf("threshold = %q: how much slower than stable the canary may be, a duration above 0 such as \"25ms\".", l.Threshold))
		}
		l.ThresholdDuration = dur
	}
	if !*a.Errors && a.Latency == nil {
		bad("errors", "Analysis that judges nothing",
			"errors = false and no latency block: the analysis would pass every canary; judge errors, latency or both.")
	}
	return diags
}
