package canary

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Outcome is what one look at a canary decides.
type Outcome int

const (
	// Continue: no strong evidence against the canary yet, and not yet
	// the minimum sample: look again at the next interval.
	Continue Outcome = iota
	// Pass: the minimum sample is in and nothing failed; promote.
	Pass
	// Fail: strong evidence that the canary is worse; fail the deployment.
	Fail
	// Inconclusive: the deadline came before the minimum sample (or
	// without stable requests to compare with); the environment's
	// inconclusive action decides.
	Inconclusive
)

func (o Outcome) String() string {
	return [...]string{"continue", "pass", "fail", "inconclusive"}[o]
}

// Plan is how a canary is judged: the environment file's analysis block.
type Plan struct {
	// Alpha bounds the probability that a canary as good as the stable
	// instances is failed on errors, over all the looks together.
	Alpha float64
	// MinSample is how many canary GET / requests a pass needs.
	MinSample int64
	// Latency, when not nil, also fails a canary whose latency quantile
	// exceeds stable's by more than a threshold.
	Latency *LatencyRule
	// IgnoreErrors leaves the canary's errors unjudged (errors = false):
	// only the latency rule can fail it.
	IgnoreErrors bool
}

// EarlyShare is the part of Alpha that the looks before the minimum sample
// share; the look at the minimum sample keeps the rest.
//
// Why a fixed split with a union bound rather than Pocock's or O'Brien and
// Fleming's boundaries: those come from the joint normal distribution of
// the statistics at planned information fractions, and here the counts
// are small and discrete (stable often has 0 errors, where the normal
// approximation is worst) and the looks fall where traffic puts them. The
// probability that any look fails a good canary is at most the sum of the
// levels the looks use (Bonferroni), whatever their dependence, number or
// spacing, and each exact test keeps its level; so the sum, at most Alpha,
// bounds the false-fail rate exactly. The price of the bound is power, and
// the split keeps it small: four fifths of Alpha wait for the look at the
// minimum sample, where the evidence is strongest, while the early looks
// spend one fifth in proportion to the sample they have (Lan and DeMets'
// alpha spending with a linear spending function), so at alpha = 0.01
// with ten looks each early one asks for p <= 0.0002: strong evidence.
const EarlyShare = 0.2

// Counts are cumulative GET / answers over the analysis window.
type Counts struct {
	Requests int64
	Errors   int64 // answered 5xx
}

// Window is what one look sees: the canary's and the stable instances'
// counts, both since the same start.
type Window struct {
	Canary, Stable               Counts
	CanaryLatency, StableLatency Histogram // empty without a latency rule
}

// Verdict is one look's decision with the numbers behind it.
type Verdict struct {
	Outcome Outcome
	Look    int // 1 for the first look
	Window  Window
	// P is the one-sided exact p-value of the canary's errors against
	// stable's; Level the most it could be for a fail at this look.
	P, Level float64
	// Spent is the part of Alpha spent by this and the earlier looks.
	Spent float64
	// Latency is the latency rule's finding, nil without one or before
	// the minimum sample.
	Latency *LatencyFinding
	// Reason says why, in words and numbers.
	Reason string
}

func (v Verdict) String() string {
	return v.Outcome.String() + ": " + v.Reason
}

// Judge runs the looks of one canary's analysis. The zero value is not
// usable: make one with NewJudge.
type Judge struct {
	plan     Plan
	looks    int
	fraction float64 // information fraction of the last look, n1/MinSample capped at 1
	spent    float64
	last     Counts // the canary's at the last look
	// lastStable is stable's at the last look.
	lastStable Counts
	done       *Verdict
}

// NewJudge checks the plan and returns a judge with no look made.
func NewJudge(p Plan) (*Judge, error) {
	switch {
	case !(p.Alpha > 0 && p.Alpha < 0.5):
		return nil, fmt.Errorf("alpha %g: want a false-fail rate above 0 and below 0.5", p.Alpha)
	case p.MinSample < 1:
		return nil, fmt.Errorf("minimum sample %d: want at least 1 request", p.MinSample)
	}
	if l := p.Latency; l != nil {
		if !(l.Quantile > 0 && l.Quantile < 1) || l.Threshold < 0 {
			return nil, fmt.Errorf("latency quantile %g, threshold %s: want a quantile between 0 and 1 and a threshold of 0 or more", l.Quantile, l.Threshold)
		}
	}
	return &Judge{plan: p}, nil
}

// Look judges the window's counts, cumulative since the analysis began.
// final says the analysis's deadline has come: a look that would continue
// is inconclusive instead. Once a look has passed, failed or found it
// inconclusive, every later look returns that verdict.
func (j *Judge) Look(w Window, final bool) (Verdict, error) {
	if j.done != nil {
		return *j.done, nil
	}
	c, s := w.Canary, w.Stable
	for _, side := range []struct {
		name     string
		was, now Counts
	}{{"canary", j.last, c}, {"stable", j.lastStable, s}} {
		if side.now.Requests < side.was.Requests || side.now.Errors < side.was.Errors {
			return Verdict{}, fmt.Errorf("%s counts went down, from %d errors of %d to %d of %d: the window must be cumulative (a restarted instance starts its counters again)",
				side.name, side.was.Errors, side.was.Requests, side.now.Errors, side.now.Requests)
		}
	}
	p, err := FisherGreater(c.Errors, c.Requests, s.Errors, s.Requests)
	if err != nil {
		return Verdict{}, err
	}
	j.looks++
	j.last, j.lastStable = c, s
	t := min(float64(c.Requests)/float64(j.plan.MinSample), 1)
	var level float64
	if t >= 1 {
		// The look at the minimum sample: what the early looks left.
		level = j.plan.Alpha - j.spent
	} else {
		level = j.plan.Alpha * EarlyShare * (t - j.fraction)
	}
	j.fraction = t
	j.spent += level
	v := Verdict{Look: j.looks, Window: w, P: p, Level: level, Spent: j.spent}
	when := "fails at p <= " + num(level)
	if level <= 0 {
		// A look with no new canary request adds no evidence, so it
		// spends none of alpha and cannot fail.
		when = "no new canary request: cannot fail at this look"
	}
	errs := fmt.Sprintf("canary %s vs stable %s, p=%s (%s)", share(c), share(s), num(p), when)
	if j.plan.IgnoreErrors {
		errs = fmt.Sprintf("canary %s vs stable %s, not judged (errors = false)", share(c), share(s))
	}
	switch {
	case p <= level && level > 0 && !j.plan.IgnoreErrors:
		v.Outcome, v.Reason = Fail, "errors: "+errs
	case t >= 1 && s.Requests == 0:
		v.Outcome, v.Reason = Inconclusive, "no stable request to compare with: "+errs
	case t >= 1:
		v.Outcome, v.Reason = Pass, "errors: "+errs
		if l := j.plan.Latency; l != nil {
			f, err := l.judge(w.CanaryLatency, w.StableLatency)
			if err != nil {
				v.Outcome, v.Reason = Inconclusive, "latency: "+err.Error()+"; errors: "+errs
				break
			}
			v.Latency = &f
			if f.Fail {
				v.Outcome = Fail
				v.Reason = "latency: " + f.String() + "; errors: " + errs
			} else {
				v.Reason += "; latency: " + f.String()
			}
		}
	case final:
		v.Outcome = Inconclusive
		v.Reason = fmt.Sprintf("deadline before the minimum sample of %d canary requests: %s", j.plan.MinSample, errs)
	default:
		v.Outcome = Continue
		v.Reason = fmt.Sprintf("%d of the %d canary requests a pass needs: %s", c.Requests, j.plan.MinSample, errs)
	}
	if v.Outcome != Continue {
		j.done = &v
	}
	return v, nil
}

// share writes counts as the "5.1 % 5xx of 312".
func share(c Counts) string {
	if c.Requests == 0 {
		return "no requests"
	}
	return fmt.Sprintf("%.1f %% 5xx of %d", 100*float64(c.Errors)/float64(c.Requests), c.Requests)
}

// num writes a probability with two significant digits: 2e-09, 0.013.
func num(p float64) string {
	return strings.Replace(fmt.Sprintf("%.2g", p), "e-0", "e-", 1)
}

// LatencyRule fails a canary whose latency quantile, estimated from its
// histogram, exceeds stable's by more than Threshold. It is a threshold on
// two estimates, not a statistical test: it is judged once, at the look
// with the minimum sample, and its false-fail rate is not part of Alpha.
type LatencyRule struct {
	Quantile  float64 // 0.9 for p90
	Threshold time.Duration
}

// LatencyFinding is the latency rule's comparison.
type LatencyFinding struct {
	Quantile       float64
	Canary, Stable time.Duration // estimated quantiles
	Threshold      time.Duration
	Fail           bool
}

func (f LatencyFinding) String() string {
	verb := "within"
	if f.Fail {
		verb = "more than"
	}
	return fmt.Sprintf("canary p%g %s vs stable p%g %s, %s %s slower", 100*f.Quantile, f.Canary.Round(time.Microsecond),
		100*f.Quantile, f.Stable.Round(time.Microsecond), verb, f.Threshold)
}

func (r LatencyRule) judge(canary, stable Histogram) (LatencyFinding, error) {
	qc, err := canary.Quantile(r.Quantile)
	if err != nil {
		return LatencyFinding{}, fmt.Errorf("canary's histogram: %w", err)
	}
	qs, err := stable.Quantile(r.Quantile)
	if err != nil {
		return LatencyFinding{}, fmt.Errorf("stable's histogram: %w", err)
	}
	f := LatencyFinding{Quantile: r.Quantile, Canary: seconds(qc), Stable: seconds(qs), Threshold: r.Threshold}
	f.Fail = f.Canary-f.Stable > r.Threshold
	return f, nil
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * float64(time.Second))) }

// Histogram is a Prometheus histogram's cumulative buckets over the
// window: Counts[i] requests took at most Bounds[i] seconds. Bounds ascend
// and may end with +Inf.
type Histogram struct {
	Bounds []float64
	Counts []int64
}

// Quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: it finds the bucket that holds the rank q*total and interpolates
// linearly inside it (from 0 for the first bucket); a rank in the +Inf
// bucket gives the highest finite bound. The estimate is exact only to the
// bucket's width, so a latency threshold should exceed the width of the
// buckets where the quantiles fall.
func (h Histogram) Quantile(q float64) (float64, error) {
	if len(h.Bounds) != len(h.Counts) || len(h.Bounds) == 0 {
		return 0, errors.New("no buckets, or bounds and counts of different lengths")
	}
	if h.Counts[0] < 0 {
		return 0, errors.New("bucket 0: a negative count")
	}
	for i := 1; i < len(h.Bounds); i++ {
		if !(h.Bounds[i] > h.Bounds[i-1]) || h.Counts[i] < h.Counts[i-1] {
			return 0, fmt.Errorf("bucket %d: bounds must ascend and counts must not fall", i)
		}
	}
	total := h.Counts[len(h.Counts)-1]
	if total <= 0 {
		return 0, errors.New("no requests")
	}
	rank := q * float64(total)
	for i, c := range h.Counts {
		if float64(c) < rank {
			continue
		}
		if math.IsInf(h.Bounds[i], 1) {
			if i == 0 {
				return 0, errors.New("only a +Inf bucket")
			}
			return h.Bounds[i-1], nil
		}
		lo, below := 0.0, int64(0)
		if i > 0 {
			lo, below = h.Bounds[i-1], h.Counts[i-1]
		}
		in := c - below
		if in == 0 {
			return h.Bounds[i], nil
		}
		return lo + (h.Bounds[i]-lo)*(rank-float64(below))/float64(in), nil
	}
	return h.Bounds[len(h.Bounds)-1], nil
}
