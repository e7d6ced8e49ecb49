#!/usr/bin/env python3
"""compare-benchmarks.py OLD NEW FILTER [ROUNDS]: runs two moe-bench binaries (before and after a change)
alternately, ROUNDS times (default 3; the order flips every round so that a slow spell of a shared machine
lands on both), each run 5 repetitions of 0.1 s of the benchmarks matching FILTER, and prints per
benchmark the median real time of each binary over the rounds and old/new (> 1: the new one is faster),
then the geometric mean of old/new. Figures within one run only: compare nothing across runs.
"""
import json
import math
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    old, new, pattern = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    times = {"old": {}, "new": {}}
    for r in range(rounds):
        order = [("old", old), ("new", new)]
        for tag, binary in order if r % 2 == 0 else order[::-1]:
            report = subprocess.run(
                [binary, f"--benchmark_filter={pattern}", "--benchmark_repetitions=5", "--benchmark_min_time=0.1",
                 "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
                check=True, stdout=subprocess.PIPE, text=True).stdout
            for b in json.loads(report)["benchmarks"]:
                if b.get("aggregate_name") == "median":
                    times[tag].setdefault(b["run_name"], []).append(b["real_time"])
    ratios = []
    for name in sorted(times["old"]):
        if name not in times["new"]:
            continue
        before, after = statistics.median(times["old"][name]), statistics.median(times["new"][name])
        ratios.append(before / after)
        print(f"{name:60s} old {before:10.2f}  new {after:10.2f}  old/new {before / after:5.3f}")
    if ratios:
        print(f"geometric mean of old/new: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")


if __name__ == "__main__":
    main()
