// Package canary judges a canary release by what it serves: its share of
// 5xx answers to GET / against the stable instances' over the same window,
// with a one-sided exact test corrected for repeated looks, and its GET /
// latency against theirs. It is pure arithmetic on counts: the caller
// (the deployer's watch, issue 26) brings the counter deltas.
package canary

import (
	"fmt"
	"math"
)

// FisherGreater is the one-sided p-value of Fisher's exact test that the
// canary's error rate is higher than the stable instances': k1 errors of n1
// canary requests, k2 of n2 stable ones. Given the k1+k2 errors in all,
// equal rates make the canary's share of them hypergeometric, and the
// p-value is P(X >= k1) for that distribution: R's
// fisher.test(matrix(c(k1, k2, n1-k1, n2-k2), 2), alternative = "greater")
// and scipy.stats.fisher_exact(..., alternative="greater").
//
// The test conditions on the total number of errors, so it is exact for
// any counts, small ones included, needs no estimate of the stable rate,
// and is conservative (never rejects more often than its level). It
// returns 1 when there is nothing to compare (no request on either side,
// or no error at all), and an error for counts that are not counts.
//
// It works in log space on ratios of consecutive probabilities, never on
// binomial coefficients, so it neither overflows nor loses precision at
// n = 10^6; its cost is linear in the distance from the distribution's
// mode to k1, at most about 40 of its standard deviations, since past
// that the p-value underflows.
func FisherGreater(k1, n1, k2, n2 int64) (float64, error) {
	if n1 < 0 || n2 < 0 || k1 < 0 || k2 < 0 || k1 > n1 || k2 > n2 {
		return 0, fmt.Errorf("counts %d of %d and %d of %d: want 0 <= errors <= requests", k1, n1, k2, n2)
	}
	if n1 > maxRequests || n2 > maxRequests {
		return 0, fmt.Errorf("counts %d of %d and %d of %d: more than %d requests on one side", k1, n1, k2, n2, int64(maxRequests))
	}
	K := k1 + k2
	if n1 == 0 || n2 == 0 || K == 0 {
		return 1, nil
	}
	h := hyper{K: float64(K), n1: float64(n1), n2: float64(n2)}
	lo, hi := max(0, K-n2), min(K, n1) // the support of X
	if k1 <= lo {
		return 1, nil
	}
	N := n1 + n2
	// The mode of the hypergeometric distribution, in float64: (K+1)(n1+1)
	// overflows an int64 at 2^32 requests a side. A mode off by one from
	// rounding costs a step, not accuracy: the sums walk both ways.
	mode := min(max(int64(float64(K+1)*float64(n1+1)/float64(N+2)), lo), hi)

	// total is the sum of every probability divided by that of the mode,
	// walking out from the mode until the terms stop counting.
	total := h.sumUp(mode, hi) + h.sumDown(mode, lo) - 1

	// Each tail is summed from its end nearest the mode outwards, in
	// terms relative to that end's, which only shrink: no sum overflows.
	// Above the mode, p is the upper tail itself; below it, one less the
	// lower tail, which is then at most about one half.
	var p float64
	if k1 > mode {
		w0 := 0.0 // log P(X = k1) / P(X = mode)
		for x := mode; x < k1; x++ {
			w0 += h.logRatio(x)
			if w0 < underflow {
				return 0, nil
			}
		}
		p = math.Exp(w0 + math.Log(h.sumUp(k1, hi)) - math.Log(total))
	} else {
		w0 := 0.0 // log P(X = k1-1) / P(X = mode)
		for x := mode; x > k1-1; x-- {
			w0 -= h.logRatio(x - 1)
			if w0 < underflow {
				return 1, nil
			}
		}
		p = 1 - math.Exp(w0+math.Log(h.sumDown(k1-1, lo))-math.Log(total))
	}
	return min(max(p, 0), 1), nil
}

// maxRequests bounds each side's count, and with it the cost: a walk from
// the mode stops where its terms underflow, about 40 standard deviations
// out, so it takes at most a few million steps at 2^32 requests a side.
const maxRequests = 1 << 32

// underflow is the log of a probability ratio past which the p-value is 0
// (or 1) in float64: below e^-745 is no float64 above 0, and the sums it
// multiplies are at most a few hundred thousand.
const underflow = -800

// negligible is the log of a term's share below which it no longer changes
// a sum of float64s (e^-40 is about 4e-18).
const negligible = -40

// hyper is the hypergeometric distribution of the canary's share of K
// errors among n1 canary and n2 stable requests.
type hyper struct{ K, n1, n2 float64 }

// sumUp is the sum of P(X = x) / P(X = from) for x from from to hi, for
// from at or past the mode, where the terms only shrink.
func (h hyper) sumUp(from, hi int64) float64 {
	sum := 1.0
	for x, w := from, 0.0; x < hi; x++ {
		w += h.logRatio(x)
		if w < negligible {
			break
		}
		sum += math.Exp(w)
	}
	return sum
}

// sumDown is the sum of P(X = x) / P(X = from) for x from from down to lo,
// for from below the mode.
func (h hyper) sumDown(from, lo int64) float64 {
	sum := 1.0
	for x, w := from, 0.0; x > lo; x-- {
		w -= h.logRatio(x - 1)
		if w < negligible {
			break
		}
		sum += math.Exp(w)
	}
	return sum
}

// logRatio is log P(X = x+1) / P(X = x):
// (K-x)(n1-x) / ((x+1)(n2-K+x+1)).
func (h hyper) logRatio(x int64) float64 {
	f := float64(x)
	return math.Log((h.K-f)*(h.n1-f)) - math.Log((f+1)*(h.n2-h.K+f+1))
}
