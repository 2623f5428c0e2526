#!/usr/bin/python3
"""Writes fisher.csv: reference p-values for canary.FisherGreater.

Not run by go test. Run it by hand where SciPy is installed (Debian's
python3-scipy 1.10.1 made the file in the repository):

    apt-get install python3-scipy
    /usr/bin/python3 internal/canary/testdata/fisher_reference.py > internal/canary/testdata/fisher.csv

Each row is a canary's k1 errors of n1 requests against stable's k2 of n2,
and scipy.stats.fisher_exact's one-sided p-value for
[[k1, n1-k1], [k2, n2-k2]] with alternative="greater". Where the counts are
small enough, the script also sums the hypergeometric tail exactly in
rational arithmetic (Python's integers) and stops if SciPy's value differs
from it by more than 1e-12 relative: the CSV is then right, not merely
SciPy's.
"""
import csv
import math
import sys
from fractions import Fraction

import scipy
from scipy.stats import fisher_exact

CASES = [
    # (k1, n1, k2, n2): small counts, where exactness matters
    (0, 10, 0, 20), (1, 10, 0, 20), (2, 10, 0, 20), (3, 10, 1, 20),
    (1, 1, 0, 1), (1, 2, 1, 2), (5, 5, 0, 5), (0, 5, 5, 5),
    (1, 30, 0, 60), (2, 30, 0, 60), (3, 30, 1, 60), (4, 30, 0, 60),
    # the figures: a 5 % canary at 300 requests, stable twice that
    (15, 300, 0, 600), (15, 300, 6, 600), (10, 300, 6, 600),
    (16, 312, 0, 640), (5, 312, 2, 640), (3, 300, 6, 600),
    (7, 300, 3, 600), (9, 300, 6, 600), (12, 300, 6, 600),
    # canary better than stable: p near 1
    (0, 300, 6, 600), (1, 300, 20, 600), (2, 1000, 50, 2000),
    # larger counts, extreme tails
    (100, 1000, 0, 2000), (50, 1000, 40, 2000), (30, 1000, 40, 2000),
    (500, 10000, 200, 20000), (120, 10000, 200, 20000),
    (1000, 1000, 0, 1000), (999, 1000, 1, 1000),
    # n = 10^6: no overflow, and still exact
    (1100, 1000000, 2000, 2000000), (1000, 1000000, 2000, 2000000),
    (50000, 1000000, 2000, 2000000), (10, 1000000, 0, 1000000),
    (500000, 1000000, 999000, 2000000), (3, 1000000, 0, 10),
    # uneven sides
    (2, 5, 100, 10000), (1, 5, 100, 10000), (0, 5, 100, 10000),
    (40, 100000, 0, 50), (30, 50, 20000, 100000),
]


def exact(k1, n1, k2, n2):
    K, N = k1 + k2, n1 + n2
    top = sum(math.comb(K, x) * math.comb(N - K, n1 - x) for x in range(k1, min(K, n1) + 1))
    return Fraction(top, math.comb(N, n1))


def main():
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["k1", "n1", "k2", "n2", "p"])
    for k1, n1, k2, n2 in CASES:
        p = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1]
        if n1 + n2 <= 30000:
            e = float(exact(k1, n1, k2, n2))
            if abs(p - e) > 1e-12 * e:
                sys.exit(f"scipy {scipy.__version__} gives {p!r} for {(k1, n1, k2, n2)}, exact {e!r}")
        w.writerow([k1, n1, k2, n2, repr(float(p))])


if __name__ == "__main__":
    main()
