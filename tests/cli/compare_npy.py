#!/usr/bin/env python3
"""compare_npy.py ACTUAL.npy EXPECTED.npy [TOLERANCE]: max|actual - expected| / max|expected| <= tolerance.

Prints one line with the figure; exits 1 when it is over the tolerance (default 1e-4, the checkpoint issue's
bar) or the shapes differ.
"""
import sys

import numpy as np


def main():
    actual, expected = np.load(sys.argv[1]), np.load(sys.argv[2])
    tolerance = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    if actual.shape != expected.shape or actual.dtype != np.float32:
        print(f"{sys.argv[1]}: shape {actual.shape} {actual.dtype}, expected {expected.shape} float32")
        return 1
    scale = float(np.max(np.abs(expected.astype(np.float64))))
    error = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    relative = error / scale if scale > 0 else error
    verdict = "ok" if relative <= tolerance else "FAILED"
    print(f"{sys.argv[1]}: max|Y - reference| / max|reference| = {relative:.3g} ({verdict}, bar {tolerance:g})")
    return 0 if relative <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
