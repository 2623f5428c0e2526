#!/usr/bin/python3
"""Writes fisher.csv: reference p-values for canary.FisherGreater.

Not run by go test. Run it by hand where SciPy is installed (Debian's
python3-scipy 1.10.1 made the file in the repository):

    apt-get install python3-scipy
    /usr/bin/python3 internal/canary/testdata/fisher_reference.py > internal/canary/testdata/fisher.csv

Each row is a canary's k1 errors of n1 requests against stable's k2 of n2,
and the one-sided p-value of Fisher's exact test for
[[k1, n1-k1], [k2, n2-k2]] (the canary's rate greater) twice:

- p: the hypergeometric tail P(X >= k1), summed exactly in rational
  arithmetic (Python's integers) where n1 + n2 <= 30000, and above that
  with 50 significant digits (Python's decimal), from the ratios of
  neighbouring probabilities, until the terms fall below 1e-45 of the
  largest;
- scipy: scipy.stats.fisher_exact(..., alternative="greater").

The script stops if the two differ by more than 1e-12 relative where p is
exact, or 1e-8 elsewhere: at 10^6 requests a side SciPy 1.10.1 is off by
up to 4e-10 relative (0.50687183664879 for 0.50687183686368), which the
50-digit sum does not share.
"""
import csv
import math
import sys
from decimal import Decimal, getcontext
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


def fifty_digits(k1, n1, k2, n2):
    getcontext().prec = 50
    K = k1 + k2
    lo, hi = max(0, K - n2), min(K, n1)

    def ratio(x):  # P(X = x+1) / P(X = x)
        return Decimal((K - x) * (n1 - x)) / Decimal((x + 1) * (n2 - K + x + 1))

    # Terms relative to P(X = k1), outwards both ways.
    up, t, x, top = Decimal(1), Decimal(1), k1, Decimal(1)
    while x < hi:
        t *= ratio(x)
        x += 1
        up += t
        top = max(top, t)
        if t < top * Decimal("1e-45"):
            break
    down, t, x = Decimal(0), Decimal(1), k1
    while x > lo:
        t /= ratio(x - 1)
        x -= 1
        down += t
        top = max(top, t)
        if t < top * Decimal("1e-45"):
            break
    return up / (up + down)


def main():
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["k1", "n1", "k2", "n2", "p", "scipy"])
    for k1, n1, k2, n2 in CASES:
        sp = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1])
        if k1 == 0 or k1 + k2 == 0:
            p, tol = 1.0, 1e-12
        elif n1 + n2 <= 30000:
            p, tol = float(exact(k1, n1, k2, n2)), 1e-12
        else:
            p, tol = float(fifty_digits(k1, n1, k2, n2)), 1e-8
        if abs(sp - p) > tol * p:
            sys.exit(f"scipy {scipy.__version__} gives {sp!r} for {(k1, n1, k2, n2)}, the sum {p!r}")
        w.writerow([k1, n1, k2, n2, repr(p), repr(sp)])


if __name__ == "__main__":
    main()
