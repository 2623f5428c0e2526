package canary

import (
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestFisherGreaterMatchesReference checks FisherGreater against
// testdata/fisher.csv, which testdata/fisher_reference.py wrote (it says
// how to run it again): to 1e-12 relative against p, the tail summed
// exactly in rational arithmetic or with 50 digits, and to 1e-9 against
// scipy.stats.fisher_exact (alternative="greater", SciPy 1.10.1), which
// is itself off by up to 4e-10 at 10^6 requests a side.
func TestFisherGreaterMatchesReference(t *testing.T) {
	f, err := os.Open("testdata/fisher.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 30 {
		t.Fatalf("testdata/fisher.csv has %d rows: is it truncated?", len(rows))
	}
	for _, row := range rows[1:] {
		var c [4]int64
		for i := range c {
			if c[i], err = strconv.ParseInt(row[i], 10, 64); err != nil {
				t.Fatal(err)
			}
		}
		want, err := strconv.ParseFloat(row[4], 64)
		if err != nil {
			t.Fatal(err)
		}
		scipy, err := strconv.ParseFloat(row[5], 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%d of %d vs %d of %d", c[0], c[1], c[2], c[3]), func(t *testing.T) {
			got, err := FisherGreater(c[0], c[1], c[2], c[3])
			if err != nil {
				t.Fatal(err)
			}
			if !close(got, want, 1e-12) {
				t.Errorf("FisherGreater = %.17g, the exact sum %.17g (relative difference %.2g)", got, want, math.Abs(got-want)/want)
			}
			if !close(got, scipy, 1e-9) {
				t.Errorf("FisherGreater = %.17g, SciPy %.17g (relative difference %.2g)", got, scipy, math.Abs(got-scipy)/scipy)
			}
		})
	}
}

// close reports whether got is within tol of want, relatively; a
// reference that underflowed to 0 wants a value below the smallest normal
// float64's order.
func close(got, want, tol float64) bool {
	if want == 0 {
		return got < 1e-300
	}
	return math.Abs(got-want) <= tol*want
}

func TestFisherGreaterRefusesWhatAreNotCounts(t *testing.T) {
	for _, c := range [][4]int64{{-1, 10, 0, 10}, {11, 10, 0, 10}, {0, 10, 3, 2}, {0, -1, 0, 0}, {0, 1<<32 + 1, 0, 10}} {
		if p, err := FisherGreater(c[0], c[1], c[2], c[3]); err == nil {
			t.Errorf("FisherGreater%v = %g, want an error", c, p)
		}
	}
}

// FuzzFisherGreater checks what holds for every count: p is in [0, 1], it
// is 1 without a canary error, it never rises when the canary has one
// more error, and never falls when stable has one more.
func FuzzFisherGreater(f *testing.F) {
	for _, c := range [][4]uint32{{0, 0, 0, 0}, {15, 300, 0, 600}, {3, 300, 6, 600}, {1000, 1000, 0, 1000}, {5, 5, 100, 10000}, {999, 100000, 1, 3}} {
		f.Add(c[0], c[1], c[2], c[3])
	}
	f.Fuzz(func(t *testing.T, a, b, c, d uint32) {
		// Up to 2^20 requests a side keeps each run fast.
		n1, n2 := int64(b%(1<<20)), int64(d%(1<<20))
		k1, k2 := int64(a)%(n1+1), int64(c)%(n2+1)
		p := mustFisher(t, k1, n1, k2, n2)
		if !(p >= 0 && p <= 1) {
			t.Fatalf("p(%d of %d vs %d of %d) = %g, not in [0, 1]", k1, n1, k2, n2, p)
		}
		if k1 == 0 && p != 1 {
			t.Fatalf("p(0 of %d vs %d of %d) = %g, want 1", n1, k2, n2, p)
		}
		// A tolerance of a few float64 roundings: the sums are ordered
		// differently for neighbouring counts.
		const slack = 1e-12
		if k1 < n1 {
			if q := mustFisher(t, k1+1, n1, k2, n2); q > p*(1+slack)+1e-300 {
				t.Fatalf("p(%d of %d vs %d of %d) = %.17g > p with one error fewer, %.17g", k1+1, n1, k2, n2, q, p)
			}
		}
		if k2 < n2 {
			if q := mustFisher(t, k1, n1, k2+1, n2); q < p*(1-slack) {
				t.Fatalf("p(%d of %d vs %d of %d) = %.17g < p with one stable error fewer, %.17g", k1, n1, k2+1, n2, q, p)
			}
		}
	})
}

func mustFisher(t *testing.T, k1, n1, k2, n2 int64) float64 {
	t.Helper()
	p, err := FisherGreater(k1, n1, k2, n2)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFisherGreaterIsQuickAtTheLargestCounts checks that the walks stop
// where their terms underflow: at 2^32 requests a side, far in the tail
// (about 5*10^8 from the mode), an exhaustive walk would take minutes.
func TestFisherGreaterIsQuickAtTheLargestCounts(t *testing.T) {
	for _, c := range [][4]int64{{1 << 31, 1 << 32, 1 << 30, 1 << 32}, {1 << 30, 1 << 32, 1 << 31, 1 << 32}, {1 << 32, 1 << 32, 1<<32 - 1, 1 << 32}} {
		start := time.Now()
		p := mustFisher(t, c[0], c[1], c[2], c[3])
		if d := time.Since(start); d > 5*time.Second || !(p >= 0 && p <= 1) {
			t.Errorf("FisherGreater%v = %g after %s", c, p, d)
		}
	}
}
