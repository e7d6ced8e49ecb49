#!/usr/bin/python3
"""bench/torch_moe.py: the PyTorch eager peer of bench/moe_bench.cpp.

What it measures: wall-clock time of one forward pass of a Mixtral-style sparse Mixture-of-Experts block
(softmax router, renormalised top-k, SwiGLU experts) written the way Hugging Face transformers runs it in
eager mode: one gathered batch per expert that received a token, three nn.Linear GEMMs per expert, the
outputs scattered back with index_add_. It is the formulation the C++ BM_EigenPerExpert family mimics,
timed here in PyTorch itself so its figures can sit next to the library's in docs/PERFORMANCE.md.

Like the C++ benchmark, weights are cold: the script builds several independently initialised copies of
the block (different seeds) so that one round over them, counting the top_k experts a pass reads at least,
is at least 4x the last-level cache (--llc-mib, 32 MiB by default), capped so that all copies together
stay under 8 GiB; forward passes go round-robin over the copies and over 4 different input batches. For
every token count it times --rounds repetitions, each looping forward passes for at least --min-time
seconds and reporting the mean per pass, and prints the median, min and max of those means. Everything
runs under torch.inference_mode().

Before timing each token count, the block's output on copy 0 is checked against a plain per-token
float64 reference (see check_block); a disagreement beyond 1e-4 (f32) or 2e-2 (bf16) fails the run.

Reproducing the doc figures (run on an idle machine; the second holds ~5.3 GiB of f32 weights and takes
minutes to set up):
    /usr/bin/python3 bench/torch_moe.py --threads 2
    /usr/bin/python3 bench/torch_moe.py --threads 2 --hidden 4096 --ffn 14336 --tokens 1
(bench/moe_bench.cpp's "mixtral" shape is FFN 3584 at 1, 8, 64 and 512 tokens; to time exactly that shape:
    /usr/bin/python3 bench/torch_moe.py --threads 2 --ffn 3584 --tokens 1,8,64,512)
Add --dtype bf16 for bfloat16 weights and activations, --json FILE to keep the results.

Requirements: Debian 12's packaged PyTorch (1.13.1; torch.__version__ says 1.13.0a0), run with
/usr/bin/python3, not a virtualenv or pyenv interpreter. Debian's torch calls whichever BLAS the
libblas.so.3 alternative points at: the reference BLAS from libblas3 unless an optimised one is installed.
For multi-threaded OpenBLAS, which honours torch.set_num_threads through OpenMP, install
libopenblas0-openmp:
    apt-get install -y python3-torch libopenblas0-openmp
The header line prints the BLAS library actually loaded. Only the standard library and torch are used;
nothing is downloaded. This script is not part of CI and is not built or run by CMake.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # the usual cause: a python3 that is not Debian's /usr/bin/python3
    sys.exit(f"torch_moe.py: cannot import torch ({exc}); run it with /usr/bin/python3 and Debian's python3-torch")

COLD_FACTOR = 4                  # a round over the copies reads at least this many last-level caches
WEIGHT_BUDGET = 8 * 1024 ** 3    # bytes: all copies together stay under this
BATCHES = 4                      # different input batches the passes rotate over
CHECK_ROWS = 16                  # tokens checked against the float64 reference per token count
TOLERANCE = {"f32": 1e-4, "bf16": 2e-2}
# A token whose k-th and (k+1)-th router logits (float64 reference) are closer than this may legitimately
# route differently in the block's own precision; such tokens are skipped by the check, and counted.
TIE_MARGIN = {"f32": 1e-4, "bf16": 5e-2}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


# ---- the block -------------------------------------------------------------------------------------------

class SwiGLUExpert(nn.Module):
    """One expert: w2(silu(w1(x)) * w3(x)), bias-free (transformers' MixtralBlockSparseTop2MLP)."""

    def __init__(self, hidden, ffn, dtype):
        super().__init__()
        self.w1 = nn.utils.skip_init(nn.Linear, hidden, ffn, bias=False, dtype=dtype)  # gate
        self.w3 = nn.utils.skip_init(nn.Linear, hidden, ffn, bias=False, dtype=dtype)  # up
        self.w2 = nn.utils.skip_init(nn.Linear, ffn, hidden, bias=False, dtype=dtype)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoeBlock(nn.Module):
    """A Mixtral sparse MoE block.

    forward follows MixtralSparseMoeBlock.forward in transformers' src/transformers/models/mixtral/
    modeling_mixtral.py (the eager loop over experts); this is an independent rewrite, not a copy, and it
    leaves out what inference does not use (router jitter, the returned router logits).
    """

    def __init__(self, hidden, ffn, experts, top_k, dtype):
        super().__init__()
        self.hidden = hidden
        self.num_experts = experts
        self.top_k = top_k
        self.gate = nn.utils.skip_init(nn.Linear, hidden, experts, bias=False, dtype=dtype)
        self.experts = nn.ModuleList(SwiGLUExpert(hidden, ffn, dtype) for _ in range(experts))

    def forward(self, hidden_states):
        batch, seq, hidden = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden)
        router_logits = self.gate(hidden_states)                               # (tokens, E)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, self.top_k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final = torch.zeros((batch * seq, hidden), dtype=hidden_states.dtype, device=hidden_states.device)
        # (E, top_k, tokens): expert_mask[e][slot][token] is 1 where token's slot-th choice is expert e.
        expert_mask = F.one_hot(selected, num_classes=self.num_experts).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero().squeeze(-1).tolist()
        for e in expert_hit:
            idx, top_x = torch.where(expert_mask[e])
            current_state = hidden_states[top_x]
            out = self.experts[e](current_state) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out.to(hidden_states.dtype))
        return final.view(batch, seq, hidden)


def build_block(args, dtype, seed):
    """A block whose weights are drawn from N(0, 1/fan_in) (std 1/sqrt(fan_in)) with its own generator:
    router logits and expert activations stay O(1) whatever the shape. Drawn in float32, then rounded."""
    block = SparseMoeBlock(args.hidden, args.ffn, args.experts, args.top_k, dtype)
    gen = torch.Generator().manual_seed(seed)
    linears = [block.gate] + [lin for ex in block.experts for lin in (ex.w1, ex.w3, ex.w2)]
    with torch.no_grad():
        for lin in linears:
            out_f, in_f = lin.weight.shape
            lin.weight.copy_(torch.randn(out_f, in_f, generator=gen).mul_(1.0 / math.sqrt(in_f)))
    block.requires_grad_(False)
    block.eval()
    return block


# ---- the reference ---------------------------------------------------------------------------------------

def reference_token(block, x):
    """The block's output for one token x (a 1-D tensor), computed independently in float64: all router
    logits, the top_k largest, softmax weights renormalised over them, the weighted sum of the chosen
    experts' SwiGLU outputs. Returns (output, margin between the k-th and (k+1)-th logits)."""
    x = x.double()
    logits = (block.gate.weight.double() @ x).tolist()
    order = sorted(range(len(logits)), key=lambda e: -logits[e])
    chosen = order[:block.top_k]
    margin = logits[chosen[-1]] - logits[order[block.top_k]] if len(order) > block.top_k else math.inf
    top = max(logits)
    probs = {e: math.exp(logits[e] - top) for e in chosen}  # softmax's denominator cancels on renormalising
    total = sum(probs.values())
    out = torch.zeros(block.hidden, dtype=torch.float64)
    for e in chosen:
        ex = block.experts[e]
        gate = ex.w1.weight.double() @ x
        up = ex.w3.weight.double() @ x
        act = gate / (1.0 + torch.exp(-gate)) * up
        out += (probs[e] / total) * (ex.w2.weight.double() @ act)
    return out, margin


def check_block(block, batches, tokens, args):
    """Runs the block on the token count's batches (copy 0) and compares up to CHECK_ROWS tokens, spread
    over the batch, with reference_token. The error is max |block - reference| / max |reference| over the
    checked tokens' outputs. Returns (error, tokens checked, tokens skipped as near-ties)."""
    worst_diff = 0.0
    worst_ref = 0.0
    checked = skipped = 0
    want = min(CHECK_ROWS, tokens)
    for x in batches:
        if checked >= want:
            break
        got = block(x).view(tokens, args.hidden).double()
        flat = x.view(tokens, args.hidden)
        count = want - checked
        rows = sorted({(i * (tokens - 1)) // max(count - 1, 1) for i in range(count)})
        for r in rows:
            ref, margin = reference_token(block, flat[r])
            if margin < TIE_MARGIN[args.dtype]:
                skipped += 1
                continue
            worst_diff = max(worst_diff, (got[r] - ref).abs().max().item())
            worst_ref = max(worst_ref, ref.abs().max().item())
            checked += 1
    if checked == 0:
        return math.inf, 0, skipped
    return worst_diff / max(worst_ref, 1e-300), checked, skipped


# ---- set-up and timing -----------------------------------------------------------------------------------

def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be positive and finite: {text!r}")
    return value


def token_list(text):
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"token counts must be positive: {text!r}")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time transformers' eager Mixtral MoE loop in PyTorch (the peer of bench/moe_bench.cpp).")
    p.add_argument("--hidden", type=positive_int, default=1024, help="hidden size (default 1024)")
    p.add_argument("--ffn", type=positive_int, default=2816, help="expert FFN size (default 2816)")
    p.add_argument("--experts", type=positive_int, default=8, help="number of experts (default 8)")
    p.add_argument("--top-k", type=positive_int, default=2, help="experts per token (default 2)")
    p.add_argument("--tokens", type=token_list, default=[1, 64, 512],
                   help="comma-separated token counts (default 1,64,512)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                   help="weights and activations: f32 or bf16 (default f32)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--rounds", type=positive_int, default=7,
                   help="timed repetitions per token count; the median is printed (default 7)")
    p.add_argument("--min-time", type=positive_float, default=0.2,
                   help="seconds each repetition loops forward passes for, at least (default 0.2)")
    p.add_argument("--llc-mib", type=positive_float, default=32.0,
                   help="last-level cache size the cold-weight rotation is sized for, MiB (default 32)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    if args.top_k > args.experts:
        p.error(f"--top-k {args.top_k} exceeds --experts {args.experts}")
    if args.json is not None:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            p.error(f"--json: no such directory: {folder}")
    return args


def loaded_blas():
    """The BLAS shared library this process has mapped (what libblas.so.3 resolved to), or 'unknown'."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return "unknown"
    hits = sorted({os.path.realpath(p) for p in paths if re.search(r"blas", os.path.basename(p), re.I)})
    return ", ".join(hits) if hits else "unknown"


def header_info():
    config = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", config)
    blas_info = m.group(1) if m else "unknown"
    m = re.search(r"ATen parallel backend: *(.+)", torch.__config__.parallel_info())
    backend = m.group(1).strip() if m else "unknown"
    return {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "parallel_backend": backend,
        "blas_info": blas_info,
        "blas_library": loaded_blas(),
    }


def copy_count(args, elem_bytes):
    """(copies, copies the cold rotation wants, bytes of one copy)."""
    expert_bytes = 3 * args.hidden * args.ffn * elem_bytes
    pass_bytes = args.top_k * expert_bytes                       # what a pass reads at least
    copy_bytes = args.experts * expert_bytes + args.experts * args.hidden * elem_bytes
    want = max(1, math.ceil(COLD_FACTOR * args.llc_mib * 1024 ** 2 / pass_bytes))
    return min(want, WEIGHT_BUDGET // copy_bytes), want, copy_bytes


def time_tokens(blocks, batches, args, counter):
    """--rounds repetitions; each runs passes (rotating copies and batches) for at least --min-time and
    yields the mean seconds per pass. counter keeps the rotation going across repetitions."""
    means = []
    for _ in range(args.rounds):
        passes = 0
        start = time.perf_counter()
        while True:
            i = counter[0]
            blocks[i % len(blocks)](batches[i % len(batches)])
            counter[0] = i + 1
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= args.min_time:
                break
        means.append(elapsed / passes)
    return means


def write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv):
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    elem_bytes = torch.tensor([], dtype=dtype).element_size()
    torch.set_num_threads(args.threads)

    copies, want, copy_bytes = copy_count(args, elem_bytes)
    if copies < 1:
        sys.stderr.write(f"torch_moe.py: one copy of the block needs {copy_bytes / 1024 ** 3:.2f} GiB, "
                         f"over the {WEIGHT_BUDGET / 1024 ** 3:.0f} GiB weight budget\n")
        return 2

    info = header_info()
    shape = {"hidden": args.hidden, "ffn": args.ffn, "experts": args.experts, "top_k": args.top_k}
    print(f"torch {info['torch_version']}  threads={info['threads']} (ATen parallel backend: "
          f"{info['parallel_backend']})  BLAS_INFO={info['blas_info']} -> {info['blas_library']}  "
          f"shape: hidden={args.hidden} ffn={args.ffn} experts={args.experts} top_k={args.top_k}  "
          f"dtype={args.dtype}", flush=True)
    pass_mib = args.top_k * 3 * args.hidden * args.ffn * elem_bytes / 1024 ** 2
    cold = "" if copies >= want else (f"  WARM: the {WEIGHT_BUDGET / 1024 ** 3:.0f} GiB budget allows "
                                      f"{copies} of the {want} copies wanted")
    print(f"copies={copies}  ({copies} x {pass_mib:.1f} MiB of top-{args.top_k} expert weights a round, "
          f"{copies * pass_mib / args.llc_mib:.1f}x the {args.llc_mib:g} MiB LLC; "
          f"{copies * copy_bytes / 1024 ** 3:.2f} GiB of weights){cold}", flush=True)

    results, checks = [], []
    with torch.inference_mode():
        blocks = [build_block(args, dtype, seed=1000 + c) for c in range(copies)]
        for tokens in args.tokens:
            gen = torch.Generator().manual_seed(7 * tokens + 1)
            batches = [torch.randn(1, tokens, args.hidden, generator=gen).to(dtype) for _ in range(BATCHES)]

            err, checked, skipped = check_block(blocks[0], batches, tokens, args)
            tol = TOLERANCE[args.dtype]
            print(f"check tokens={tokens}: max_rel_err={err:.3g} (tolerance {tol:g}) over {checked} token(s) "
                  f"vs a float64 per-token reference on copy 0"
                  + (f", {skipped} near-tie token(s) skipped" if skipped else ""), flush=True)
            checks.append({"tokens": tokens, "max_rel_err": err, "tokens_checked": checked,
                           "near_ties_skipped": skipped, "tolerance": tol})
            if not err <= tol:
                why = "no token with an unambiguous routing" if checked == 0 else f"max_rel_err {err:.3g} > {tol:g}"
                sys.stderr.write(f"torch_moe.py: correctness check failed at tokens={tokens}: {why}\n")
                return 1

            counter = [0]
            for _ in range(max(copies, 2)):  # warm-up: code paths and allocator, one pass per copy
                blocks[counter[0] % copies](batches[counter[0] % BATCHES])
                counter[0] += 1
            means = time_tokens(blocks, batches, args, counter)
            med = statistics.median(means)
            row = {"tokens": tokens, "median_ms": med * 1e3, "min_ms": min(means) * 1e3,
                   "max_ms": max(means) * 1e3, "tokens_per_s": tokens / med}
            results.append(row)
            print(f"tokens={tokens}  median_ms={row['median_ms']:.3f}  min_ms={row['min_ms']:.3f}  "
                  f"max_ms={row['max_ms']:.3f}  tokens_per_s={row['tokens_per_s']:.1f}", flush=True)

    if args.json is not None:
        write_json(args.json, {
            **info, "shape": shape, "dtype": args.dtype, "copies": copies, "copies_wanted": want,
            "llc_mib": args.llc_mib, "rounds": args.rounds, "min_time_s": args.min_time,
            "batches": BATCHES, "checks": checks, "results": results,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
