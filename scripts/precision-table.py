#!/usr/bin/env python3
"""precision-table.py [MOE_BENCH] [benchmark flags]: runs the precision benchmarks of moe-bench once
(BM_Fused for every precision, shape and token count, and the two roofline probes; 9 repetitions of 0.1 s
each, interleaved in random order so that a slow minute of a shared machine spreads over every row
instead of landing on a few; medians)
and prints docs/PERFORMANCE.md's precision table as Markdown: per precision and shape, time, GB/s (and % of
the read-bandwidth probe), tokens/s relative to f32, GFLOP/s (and % of the f32 FMA probe) and bytes per
parameter, at 1, 8, 64 and 512 tokens. Every figure comes from the same run. A --benchmark_filter among the
flags narrows the BM_Fused runs (the probes always run); the other flags go to moe-bench as they are.
"""
import json
import re
import subprocess
import sys


def main():
    args = sys.argv[1:]
    binary = args.pop(0) if args and not args[0].startswith("-") else "build/moe-bench"
    # A narrower --benchmark_filter among the extra arguments still runs the two probes every ratio needs.
    pattern = "BM_Fused"
    for arg in list(args):
        if arg.startswith("--benchmark_filter="):
            pattern = arg.split("=", 1)[1]
            args.remove(arg)
    command = [binary, f"--benchmark_filter={pattern}|BM_ReadBandwidth|BM_FmaPeak", "--benchmark_repetitions=9",
               "--benchmark_min_time=0.1", "--benchmark_enable_random_interleaving=true",
               "--benchmark_report_aggregates_only=true", "--benchmark_format=json"] + args
    print("command: " + " ".join(command), file=sys.stderr)
    report = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
    medians = {b["run_name"]: b for b in report["benchmarks"] if b.get("aggregate_name") == "median"}
    bandwidth = medians["BM_ReadBandwidth/real_time"]["GB/s"]  # counters are stored as rates already
    peak = medians["BM_FmaPeak/real_time"]["GFLOP/s"]
    rows = {}
    for name, b in medians.items():
        match = re.match(r"BM_Fused<moe::(\w+)>/shape:(\d)/tokens:(\d+)/real_time", name)
        if match:
            precision, shape, tokens = match.group(1), int(match.group(2)), int(match.group(3))
            rows.setdefault((shape, precision), {})[tokens] = b
    shapes = {0: "mixtral", 1: "finegrained"}
    print(f"Probes in this run: read bandwidth {bandwidth:.1f} GB/s, FMA peak {peak:.1f} GFLOP/s "
          f"({report['context'].get('date', '')}).\n")
    token_counts = sorted({t for r in rows.values() for t in r})
    header = ["precision", "shape", "bytes/param"]
    for t in token_counts:
        header += [f"{t} tok ms", f"{t} tok GB/s (% probe)" if t <= 8 else f"{t} tok GFLOP/s (% f32 peak)",
                   f"{t} tok vs f32"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    order = ["f32", "bf16", "f16", "q8", "q4", "q8a8", "q4a8", "bf16a16"]  # the report's order is random
    for (shape, precision) in sorted(rows, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order),
                                                          k[1])):
        by_tokens = rows[(shape, precision)]
        base = rows.get((shape, "f32"), {})
        first = next(iter(by_tokens.values()))
        footprint = first.get("bytes/param")  # absent when the benchmark was skipped with an error
        cells = [precision, shapes.get(shape, str(shape)), f"{footprint:.3f}" if footprint else "-"]
        for t in token_counts:
            b = by_tokens.get(t)
            if b is None or "tokens/s" not in b:
                cells += ["-", "-", "-"]
                continue
            ms = b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
            if t <= 8:
                rate = b["GB/s"]
                cells += [f"{ms:.3g}", f"{rate:.1f} ({100 * rate / bandwidth:.0f}%)"]
            else:
                rate = b["GFLOP/s"]
                cells += [f"{ms:.3g}", f"{rate:.0f} ({100 * rate / peak:.0f}%)"]
            ratio = b["tokens/s"] / base[t]["tokens/s"] if "tokens/s" in base.get(t, {}) else float("nan")
            cells.append(f"{ratio:.2f}x")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
