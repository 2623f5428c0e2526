package canary

import (
	"math/rand/v2"
	"testing"
)

// TestSimulatedFalseFailAndPower runs the looks of many canaries drawn at
// random (seeded, so the figures are the same on every run) and checks the
// two promises of the error test: a canary as good as stable is failed at
// most alpha of the time, and a release answering 5xx to 5 % of GET /
// is caught at the figures. Each look adds 30 canary requests and
// 60 stable ones (the canary gets a third of the traffic, as one canary
// beside two instances does), so the minimum sample of 300 is reached at
// the tenth look. docs/analysis.md quotes the rates this prints with -v.
func TestSimulatedFalseFailAndPower(t *testing.T) {
	const (
		alpha     = 0.01
		minSample = 300
		perLook   = 30
		runs      = 4000
	)
	tests := []struct {
		name           string
		canary, stable float64 // 5xx rates
		// The rate of fails must be at most maxFail, or at least minFail.
		maxFail, minFail float64
	}{
		{"good canary/no errors anywhere", 0, 0, alpha, 0},
		{"good canary/both at 0.1 %", 0.001, 0.001, alpha, 0},
		{"good canary/both at 1 %", 0.01, 0.01, alpha, 0},
		{"good canary/both at 5 %", 0.05, 0.05, alpha, 0},
		{"good canary/better than stable", 0.001, 0.01, alpha, 0},
		// The figures: 0.999 and 0.85 for one look at 300 at
		// alpha = 0.01. The early looks cost a little of the second.
		{"bad canary/5 % against stable at 0", 0.05, 0, 1, 0.99},
		{"bad canary/5 % against stable at 1 %", 0.05, 0.01, 1, 0.8},
	}
	plan := Plan{Alpha: alpha, MinSample: minSample}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(26, uint64(i)))
			fails, early := 0, 0
			for range runs {
				v := simulate(t, rng, plan, perLook, tt.canary, tt.stable)
				if v.Outcome == Fail {
					fails++
					if v.Window.Canary.Requests < minSample {
						early++
					}
				}
			}
			rate := float64(fails) / runs
			t.Logf("canary at %g, stable at %g: failed %d of %d (%.4f), %d of them before the minimum sample", tt.canary, tt.stable, fails, runs, rate, early)
			if rate > tt.maxFail || rate < tt.minFail {
				t.Errorf("fail rate %.4f, want it in [%g, %g]", rate, tt.minFail, tt.maxFail)
			}
		})
	}
}

// simulate looks at one canary until a verdict other than Continue.
func simulate(t *testing.T, rng *rand.Rand, plan Plan, perLook int, canary, stable float64) Verdict {
	t.Helper()
	j, err := NewJudge(plan)
	if err != nil {
		t.Fatal(err)
	}
	var w Window
	for {
		w.Canary.Requests += int64(perLook)
		w.Canary.Errors += binomial(rng, perLook, canary)
		w.Stable.Requests += int64(2 * perLook)
		w.Stable.Errors += binomial(rng, 2*perLook, stable)
		v, err := j.Look(w, false)
		if err != nil {
			t.Fatal(err)
		}
		if v.Outcome != Continue {
			return v
		}
	}
}

func binomial(rng *rand.Rand, n int, p float64) int64 {
	var k int64
	for range n {
		if rng.Float64() < p {
			k++
		}
	}
	return k
}
