#!/usr/bin/env python3
"""make_checkpoints.py OUT_DIR [--seed S] [--switch-dropped zero|input]: tiny Hugging Face model folders with
PyTorch reference outputs of their MoE blocks, for the checkpoint tests (written into a build folder, never
into git).

For every family moe's checkpoint loader supports, OUT_DIR/<name>/ gets a config.json, a model.safetensors
(or two shards and model.safetensors.index.json) holding only the tensors the MoE blocks need (plus the dense
MLP of dense layers) under the names of the published checkpoints, and for each tested layer L an input_L.npy
(tokens x hidden_size, float32) and expected_L.npy: the MoE block's output without the residual, computed in
float64 from the stored weights (after their rounding to bf16 / f16, or the FP8 codes times their block scales)
and the float32 input. OUT_DIR/MANIFEST.txt lists "<folder> <layer> <weight dtype>" for every (folder, layer)
with reference files, and "<folder> <layer> <weight dtype> <moe-run --dtype> <bar>" for the runs that convert
the weights at load.

Each block follows the transformers modeling code of its family (the function names are cited where they are
implemented below). The inputs are redrawn until every routing decision has a clear margin, so that a float32
implementation must make the same choices. Everything derives from --seed through numpy's RandomState (a
frozen stream), so the output is byte-for-byte deterministic.

Needs Python 3 with numpy and torch (Debian: python3-numpy, python3-torch); no transformers, no safetensors.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time

try:
    import numpy as np
    import torch
except ImportError:  # e.g. a pyenv python3 first on PATH: fall back to Debian's interpreter, which has both
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("make_checkpoints.py needs numpy and torch (Debian: apt-get install python3-numpy python3-torch)")

F64 = torch.float64
TORCH_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
CONFIG_DTYPE = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
TOKENS = 7
MARGIN = 1e-3  # minimum gap (in probability / score units) at every routing decision


# ---------------------------------------------------------------------------------------------------------
# Tensors and files


def e4m3_table():
    """The value of every e4m3fn code (OCP FP8 E4M3: sign, 4 exponent bits of bias 7, 3 mantissa bits,
    subnormals, no infinities, S.1111.111 NaN), from the definition."""
    c = np.arange(256)
    e, m = (c >> 3) & 15, c & 7
    magnitude = np.where(e == 0, np.ldexp(m.astype(np.float64), -9), np.ldexp((8 + m).astype(np.float64), e - 10))
    values = np.where(c & 0x80, -magnitude, magnitude)
    values[(c & 0x7F) == 0x7F] = np.nan
    return values


E4M3 = e4m3_table()


def e4m3_encode(x):
    """The e4m3fn codes of float64 values |x| <= 448: round to nearest, ties to the even code."""
    magnitudes = E4M3[:0x7F]  # codes 0 .. 0x7e, increasing
    a = np.abs(x)
    assert (a <= 448.0).all()
    hi = np.minimum(np.searchsorted(magnitudes, a), 0x7E)
    lo = np.maximum(hi - 1, 0)
    below, above = a - magnitudes[lo], magnitudes[hi] - a
    pick = np.where(below < above, lo, np.where(above < below, hi, np.where(lo % 2 == 0, lo, hi)))
    return (pick | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


class RawTensor:
    """A tensor stored as raw bytes of a safetensors dtype torch 1.13 lacks (F8_E4M3, and U8 codes)."""

    def __init__(self, st_dtype, shape, data):
        self.st_dtype, self.shape, self.data = st_dtype, tuple(shape), data


class Checkpoint:
    """The tensors of one model folder, in the order they are written, each as stored (f32 / bf16 / f16, or
    F8_E4M3 codes with block scales)."""

    def __init__(self, rng, dtype, fp8_block=None, fp8_rows=False):
        self.rng = rng
        self.dtype = dtype
        self.fp8_block = fp8_block  # (rows, cols): expert and shared-expert weights are stored as FP8
        self.fp8_rows = fp8_rows  # fbgemm_fp8: they are stored as FP8 with one scale per output unit
        self.tensors = {}

    def add(self, name, shape, std, dtype=None, values=None, fp8=False, scale_shape=None):
        """Draws a tensor (normal, standard deviation std, or the given values), stores it rounded to the
        folder's dtype (or dtype) and returns the stored values as float64. With fp8 (and a folder with an
        fp8_block) the tensor is stored as e4m3 codes, with float32 scales max|block| / 448 per block in
        name + "_scale_inv", as DeepSeek-V3's FP8 checkpoints are; the values returned are code * scale. With
        fp8 in a folder of fp8_rows, as fbgemm_fp8 stores it (see _add_fp8_rows)."""
        if values is None:
            values = self.rng.standard_normal(shape) * std
        values = np.ascontiguousarray(values, dtype=np.float64)
        assert name not in self.tensors, name
        if fp8 and self.fp8_rows:
            return self._add_fp8_rows(name, values, scale_shape)
        if fp8 and self.fp8_block:
            return self._add_fp8(name, values)
        stored = torch.from_numpy(values).to(torch.float32)
        stored = stored.to(TORCH_DTYPE[dtype or self.dtype])
        self.tensors[name] = stored
        return stored.to(F64)

    def _add_fp8(self, name, values):
        br, bc = self.fp8_block
        rows, cols = values.shape
        nbr, nbc = -(-rows // br), -(-cols // bc)
        scales = np.zeros((nbr, nbc), dtype=np.float32)
        codes = np.zeros((rows, cols), dtype=np.uint8)
        decoded = np.zeros((rows, cols), dtype=np.float64)
        for i in range(nbr):
            for j in range(nbc):
                block = values[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
                scale = np.float32(np.abs(block).max() / 448.0)
                scales[i, j] = scale
                # the float32 scale may round below max / 448: clamp as DeepSeek's quantiser does
                c = e4m3_encode(np.clip(block / np.float64(scale), -448.0, 448.0))
                codes[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = c
                decoded[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = E4M3[c] * np.float64(scale)
        self.tensors[name] = RawTensor("F8_E4M3", (rows, cols), codes.tobytes())
        self.tensors[name + "_scale_inv"] = torch.from_numpy(scales)
        return torch.from_numpy(decoded)

    def _add_fp8_rows(self, name, values, scale_shape):
        """fbgemm_fp8 (transformers' integrations/fbgemm_fp8.py): e4m3 codes with one float32 scale per output
        unit, max|column or row| / 448, in name + "_scale": a W[out][in] weight's scales out x 1
        (FbgemmFp8Linear); a 3-D experts x in x out tensor's (x W, Llama4TextExperts) one per expert and output,
        stored in scale_shape (experts x 1 x out for gate_up_proj, experts x out x 1 for down_proj)."""
        # axis 1 is the inputs in both: W's columns, x W's rows
        scale = (np.abs(values).max(axis=1, keepdims=True) / 448.0).astype(np.float32)
        codes = e4m3_encode(np.clip(values / scale.astype(np.float64), -448.0, 448.0)).astype(np.uint8)
        decoded = E4M3[codes] * scale.astype(np.float64)
        self.tensors[name] = RawTensor("F8_E4M3", values.shape, np.ascontiguousarray(codes).tobytes())
        self.tensors[name + "_scale"] = torch.from_numpy(np.ascontiguousarray(scale.reshape(scale_shape or scale.shape)))
        return torch.from_numpy(decoded)

    def f64(self, name):
        return self.tensors[name].to(F64)


def st_dtype(t):
    return t.st_dtype if isinstance(t, RawTensor) else SAFETENSORS_DTYPE[t.dtype]


def tensor_bytes(t):
    if isinstance(t, RawTensor):
        return t.data
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float16:
        return t.numpy().astype("<f2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, items):
    """items: (name, tensor) pairs, packed in this order. Returns the size of the tensor data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, t in items:
        data = tensor_bytes(t)
        header[name] = {"dtype": st_dtype(t), "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    return offset


def read_safetensors(path):
    """The tensors of a file as {name: (dtype string, shape, raw bytes)}: used by the self-check."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[begin:end])
    return out


def write_folder(out_dir, name, config, ckpt, layers, shards=1):
    """config.json, the weights (one file or `shards` files plus the index), input_L.npy, expected_L.npy."""
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    items = list(ckpt.tensors.items())
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), items)
    else:
        # Split by count, not by layer, so that one layer's tensors live in both files.
        per = -(-len(items) // shards)
        weight_map = {}
        total = 0
        for s in range(shards):
            file = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = items[s * per:(s + 1) * per]
            total += write_safetensors(os.path.join(folder, file), part)
            for tensor_name, _ in part:
                weight_map[tensor_name] = file
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    for layer, (x, y, extra) in layers.items():
        np.save(os.path.join(folder, "input_%s.npy" % layer), np.ascontiguousarray(x, dtype=np.float32))
        np.save(os.path.join(folder, "expected_%s.npy" % layer), np.ascontiguousarray(y, dtype=np.float32))
        for prefix, array in extra.items():
            np.save(os.path.join(folder, "%s_%s.npy" % (prefix, layer)), np.ascontiguousarray(array, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------
# The blocks, in float64


def silu(x):
    return x * torch.sigmoid(x)


def glu_expert(x, gate, up, down):
    """down(silu(gate x) * up x), weights in the PyTorch layout W[out][in] (MixtralBlockSparseTop2MLP,
    Qwen2MoeMLP, OlmoeMLP, DeepseekV3MLP)."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


class Margins:
    """Collects the gap at every routing decision; the input is redrawn while the smallest is under MARGIN."""

    def __init__(self):
        self.smallest = float("inf")

    def gap_after(self, scores, k):
        """scores: tokens x n. The gap between the k-th and (k+1)-th largest of each row."""
        if k < scores.shape[1]:
            s = torch.sort(scores, dim=-1, descending=True).values
            self.smallest = min(self.smallest, float((s[:, k - 1] - s[:, k]).min()))

    def require(self, ok):
        if not ok:
            self.smallest = -1.0

    def fine(self):
        return self.smallest >= MARGIN


def softmax_topk(logits, k, normalize, margins):
    """softmax over all experts (in float), top-k of the probabilities, optionally divided by their sum:
    MixtralSparseMoeBlock.forward (always renormalised), Qwen2MoeSparseMoeBlock.forward / Qwen2MoeTopKRouter,
    Qwen3MoeSparseMoeBlock, OlmoeSparseMoeBlock.route_tokens_to_experts (iff norm_topk_prob)."""
    probs = torch.softmax(logits, dim=-1)
    margins.gap_after(probs, k)
    weights, index = torch.topk(probs, k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, index


def combine(x, weights, index, expert_fn):
    """sum over the token's chosen experts of weight * expert(x) (the index_add_ loops of the blocks)."""
    y = torch.zeros_like(x)
    for e in sorted(set(index.flatten().tolist())):
        token, slot = torch.where(index == e)
        y.index_add_(0, token, expert_fn(e, x[token]) * weights[token, slot, None])
    return y


def block_topk_glu(x, router, experts, k, normalize, margins):
    weights, index = softmax_topk(x @ router.T, k, normalize, margins)
    return combine(x, weights, index, lambda e, xs: glu_expert(xs, *experts[e]))


def block_deepseek_v3(x, router, bias, experts, shared, c, margins):
    """DeepseekV3MoE.route_tokens_to_experts (DeepseekV3TopkRouter.get_topk_indices in earlier versions) and
    DeepseekV3MoE.forward: sigmoid scores; selection on scores + e_score_correction_bias: each group's score is
    the sum of its two largest biased scores, the topk_group best groups stay, the other groups' biased scores
    become 0.0 (masked_fill(~mask, 0.0)), top-k of those; weights are the unbiased sigmoid scores of the chosen
    experts, divided by their sum + 1e-20 iff norm_topk_prob, times routed_scaling_factor; plus the shared
    experts (one MLP of n_shared_experts * moe_intermediate_size, no gate)."""
    E, G, TG, K = c["n_routed_experts"], c["n_group"], c["topk_group"], c["num_experts_per_tok"]
    scores = torch.sigmoid(x @ router.T)
    choice = scores + bias
    group_scores = choice.view(-1, G, E // G).topk(2, dim=-1)[0].sum(dim=-1)
    margins.gap_after(group_scores, TG)
    group_idx = torch.topk(group_scores, k=TG, dim=-1)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1.0)
    score_mask = group_mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
    masked = choice.masked_fill(~score_mask.bool(), 0.0)
    margins.gap_after(masked, K)
    # With 0.0 as the mask value a kept expert whose biased score is <= 0 would tie with the masked ones; the
    # inputs are redrawn until the k-th chosen biased score is clearly positive, so masking with 0.0 or -inf
    # chooses the same experts.
    index = torch.topk(masked, k=K, dim=-1)[1]
    margins.require(bool((masked.gather(1, index) >= MARGIN).all()))
    weights = scores.gather(1, index)
    if c["norm_topk_prob"]:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    weights = weights * c["routed_scaling_factor"]
    y = combine(x, weights, index, lambda e, xs: glu_expert(xs, *experts[e]))
    unbiased = torch.topk(scores.masked_fill(~score_mask.bool(), 0.0), k=K, dim=-1)[1]
    changed = int((torch.sort(unbiased, -1).values != torch.sort(index, -1).values).any(-1).sum())
    return y + glu_expert(x, *shared), changed


def block_dbrx(x, router, w1, v1, w2, c, margins):
    """DbrxRouter.forward + DbrxExperts / DbrxExpertGLU.forward (transformers 4.40-4.5x): softmax, top-k,
    divided by the p-norm of the k weights (p = moe_normalize_expert_weights, skipped when null); w1, v1, w2
    are (moe_num_experts * ffn_hidden_size, d_model), viewed as (experts, ffn_hidden_size, d_model): expert e
    computes (act(x w1_e^T) * (x v1_e^T)) w2_e, i.e. w2_e is the transpose of the PyTorch-layout down_proj."""
    f = c["ffn_config"]
    E, F, K, p = f["moe_num_experts"], f["ffn_hidden_size"], f["moe_top_k"], f["moe_normalize_expert_weights"]
    probs = torch.softmax(x @ router.T, dim=-1)
    margins.gap_after(probs, K)
    weights, index = torch.topk(probs, K, dim=-1)
    if p is not None:
        weights = weights / torch.norm(weights, p=p, dim=-1, keepdim=True)
    H = x.shape[1]
    w1, v1, w2 = w1.view(E, F, H), v1.view(E, F, H), w2.view(E, F, H)
    return combine(x, weights, index, lambda e, xs: (silu(xs @ w1[e].T) * (xs @ v1[e].T)) @ w2[e])


def block_switch(x, router, experts, capacity, dropped, margins):
    """SwitchTransformersTop1Router.forward + SwitchTransformersSparseMLP.forward, the input being one
    sequence: softmax (router_dtype float32; no jitter at inference), the argmax expert; a token is dropped
    when its expert already took expert_capacity earlier tokens of the sequence (cumsum of the one-hot choices
    over the sequence); every token's output is its largest router probability times next_states, where
    next_states is the expert's relu MLP wo(relu(wi x)) for a kept token and, for a dropped one, zero
    (dropped="zero": transformers since PR #37123, "Correctly drop tokens in SwitchTransformer") or the input
    itself (dropped="input": transformers 4.25 to early 2025, next_states = hidden_states.clone())."""
    probs = torch.softmax(x @ router.T, dim=-1)
    margins.gap_after(probs, 1)
    top, choice = probs.max(dim=-1)
    onehot = torch.nn.functional.one_hot(choice, router.shape[0])
    kept = ((torch.cumsum(onehot, dim=0) <= capacity) & onehot.bool()).any(-1)
    next_states = x.clone() if dropped == "input" else torch.zeros_like(x)
    for e in sorted(set(choice[kept].tolist())):
        rows = kept & (choice == e)
        wi, wo = experts[e]
        next_states[rows] = torch.relu(x[rows] @ wi.T) @ wo.T
    return top.unsqueeze(-1) * next_states, int((~kept).sum())


def draw_input(rng, tokens, hidden, compute, tries=200):
    """Draws tokens x hidden float32 inputs until compute(x64, margins) routes them with clear margins."""
    for _ in range(tries):
        x = rng.standard_normal((tokens, hidden)).astype(np.float32)
        margins = Margins()
        result = compute(torch.from_numpy(x).to(F64), margins)
        if margins.fine():
            return x, result
    raise RuntimeError("no input with routing margins >= %g in %d draws" % (MARGIN, tries))


def folder_rng(seed, name):
    digest = hashlib.sha256(("%d/%s" % (seed, name)).encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


# ---------------------------------------------------------------------------------------------------------
# The families


def mixtral(seed, name, dtype):
    c = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 40,
         "intermediate_size": 56, "num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
         "hidden_act": "silu", "router_jitter_noise": 0.0, "output_router_logits": False,
         "router_aux_loss_coef": 0.02, "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.block_sparse_moe." % L
        router = ck.add(p + "gate.weight", (E, H), 1.5 / H ** 0.5)
        experts = []
        for e in range(E):
            w1 = ck.add(p + "experts.%d.w1.weight" % e, (F, H), 1 / H ** 0.5)
            w2 = ck.add(p + "experts.%d.w2.weight" % e, (H, F), 1 / F ** 0.5)
            w3 = ck.add(p + "experts.%d.w3.weight" % e, (F, H), 1 / H ** 0.5)
            experts.append((w1, w3, w2))
        x, y = draw_input(rng, TOKENS, H, lambda x, m: block_topk_glu(x, router, experts, 2, True, m))
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def qwen2_moe(seed, name, dtype):
    # Layers 1 and 3 are sparse by decoder_sparse_step = 2, and mlp_only_layers makes 3 dense again.
    c = {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 48,
         "intermediate_size": 96, "moe_intermediate_size": 24, "shared_expert_intermediate_size": 40,
         "num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 4, "norm_topk_prob": False,
         "decoder_sparse_step": 2, "mlp_only_layers": [3], "hidden_act": "silu", "output_router_logits": False,
         "router_aux_loss_coef": 0.001, "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, E = c["hidden_size"], c["num_experts"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        sparse = L not in c["mlp_only_layers"] and (L + 1) % c["decoder_sparse_step"] == 0
        if not sparse:  # Qwen2MoeMLP of intermediate_size
            F = c["intermediate_size"]
            ck.add(p + "gate_proj.weight", (F, H), 1 / H ** 0.5)
            ck.add(p + "up_proj.weight", (F, H), 1 / H ** 0.5)
            ck.add(p + "down_proj.weight", (H, F), 1 / F ** 0.5)
            continue
        F, Fs = c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
        router = ck.add(p + "gate.weight", (E, H), 1.5 / H ** 0.5)
        experts = [tuple(ck.add(p + "experts.%d.%s.weight" % (e, w), shape, 1 / shape[1] ** 0.5)
                         for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))))
                   for e in range(E)]
        shared = tuple(ck.add(p + "shared_expert.%s.weight" % w, shape, 1 / shape[1] ** 0.5)
                       for w, shape in (("gate_proj", (Fs, H)), ("up_proj", (Fs, H)), ("down_proj", (H, Fs))))
        shared_gate = ck.add(p + "shared_expert_gate.weight", (1, H), 1 / H ** 0.5)

        def compute(x, m):
            # Qwen2MoeSparseMoeBlock.forward: routed experts + sigmoid(shared_expert_gate x) * shared_expert(x)
            routed = block_topk_glu(x, router, experts, c["num_experts_per_tok"], c["norm_topk_prob"], m)
            return routed + torch.sigmoid(x @ shared_gate.T) * glu_expert(x, *shared)

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def fp8_config(c, fp8_block):
    """config.json's quantization_config as DeepSeek-V3/R1 and Qwen3 FP8 publish it (their blocks are
    [128, 128]; the tests also use blocks that do not divide the tensors)."""
    if fp8_block:
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "weight_block_size": list(fp8_block)}
    return c


def qwen3_moe(seed, name, dtype, fp8_block=None, hidden=64, moe_ffn=32):
    c = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": hidden,
         "intermediate_size": 96, "moe_intermediate_size": moe_ffn, "num_hidden_layers": 2, "num_experts": 16,
         "num_experts_per_tok": 4, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
         "hidden_act": "silu", "output_router_logits": False, "router_aux_loss_coef": 0.001,
         "torch_dtype": CONFIG_DTYPE[dtype]}
    return _glu_family(seed, name, dtype, fp8_config(c, fp8_block), c["moe_intermediate_size"], c["num_experts"],
                       fp8_block)


def olmoe(seed, name, dtype):
    c = {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_size": 40,
         "intermediate_size": 24, "num_hidden_layers": 3, "num_experts": 16, "num_experts_per_tok": 4,
         "norm_topk_prob": False, "hidden_act": "silu", "output_router_logits": False,
         "router_aux_loss_coef": 0.01, "torch_dtype": CONFIG_DTYPE[dtype]}
    return _glu_family(seed, name, dtype, c, c["intermediate_size"], c["num_experts"])


def _glu_family(seed, name, dtype, c, F, E, fp8_block=None):
    """qwen3_moe and olmoe: model.layers.L.mlp.gate / experts.e.{gate,up,down}_proj, every layer sparse."""
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype, fp8_block)
    H = c["hidden_size"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        router = ck.add(p + "gate.weight", (E, H), 1.5 / H ** 0.5)
        experts = [tuple(ck.add(p + "experts.%d.%s.weight" % (e, w), shape, 1 / shape[1] ** 0.5, fp8=True)
                         for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))))
                   for e in range(E)]
        x, y = draw_input(rng, TOKENS, H, lambda x, m: block_topk_glu(
            x, router, experts, c["num_experts_per_tok"], c["norm_topk_prob"], m))
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def glm4_moe(seed, name, dtype):
    """GLM-4.5 (modeling_glm4_moe.py): DeepSeek-V3's router and block under model_type glm4_moe. The config
    leaves out the MoE keys that have defaults, so Glm4MoeConfig's (n_group 1, topk_group 1,
    routed_scaling_factor 1.0, n_shared_experts 1, first_k_dense_replace 1) decide them."""
    defaults = {"n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0, "n_shared_experts": 1,
                "first_k_dense_replace": 1}
    return deepseek_v3(seed, name, dtype, model_type="glm4_moe", omitted=defaults)


def deepseek_v3_defaults(seed, name, dtype):
    """deepseek_v3 whose config leaves out the same keys: DeepseekV3Config's defaults (n_group 8, topk_group 4,
    routed_scaling_factor 2.5, n_shared_experts 1, first_k_dense_replace 3) decide them; layer 3 is sparse."""
    defaults = {"n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "n_shared_experts": 1,
                "first_k_dense_replace": 3}
    return deepseek_v3(seed, name, dtype, omitted=defaults, layers=4)


def deepseek_v3(seed, name, dtype, fp8_block=None, model_type="deepseek_v3", omitted=None, layers=3):
    # e_score_correction_bias stays float32, as in the published bf16 checkpoints
    # (DeepseekV3PreTrainedModel._keep_in_fp32_modules_strict); the other tensors are in `dtype`, or with
    # fp8_block the MLP weights are F8_E4M3 with block scales and the router stays bf16, as in the published
    # FP8 checkpoints.
    c = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 56,
         "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": layers,
         "n_routed_experts": 16,
         "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "norm_topk_prob": True,
         "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "moe_layer_freq": 1, "scoring_func": "sigmoid",
         "topk_method": "noaux_tc", "hidden_act": "silu", "torch_dtype": CONFIG_DTYPE[dtype]}
    fp8_config(c, fp8_block)
    if model_type != "deepseek_v3":
        c["architectures"], c["model_type"] = ["Glm4MoeForCausalLM"], model_type
        del c["scoring_func"], c["topk_method"], c["moe_layer_freq"]
    written = dict(c)
    for key, value in (omitted or {}).items():  # the reference uses the class default, the file has no key
        del written[key]
        c[key] = value
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype, fp8_block)
    H, E = c["hidden_size"], c["n_routed_experts"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        if L < c["first_k_dense_replace"]:  # DeepseekV3MLP of intermediate_size
            F = c["intermediate_size"]
            ck.add(p + "gate_proj.weight", (F, H), 1 / H ** 0.5, fp8=True)
            ck.add(p + "up_proj.weight", (F, H), 1 / H ** 0.5, fp8=True)
            ck.add(p + "down_proj.weight", (H, F), 1 / F ** 0.5, fp8=True)
            continue
        F, Fs = c["moe_intermediate_size"], c["moe_intermediate_size"] * c["n_shared_experts"]
        router = ck.add(p + "gate.weight", (E, H), 1.5 / H ** 0.5)
        bias = ck.add(p + "gate.e_score_correction_bias", (E,), 0.08, dtype="f32")
        experts = [tuple(ck.add(p + "experts.%d.%s.weight" % (e, w), shape, 1 / shape[1] ** 0.5, fp8=True)
                         for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))))
                   for e in range(E)]
        shared = tuple(ck.add(p + "shared_experts.%s.weight" % w, shape, 1 / shape[1] ** 0.5, fp8=True)
                       for w, shape in (("gate_proj", (Fs, H)), ("up_proj", (Fs, H)), ("down_proj", (H, Fs))))

        def compute(x, m):
            y, changed = block_deepseek_v3(x, router, bias, experts, shared, c, m)
            m.require(changed > 0)  # the bias must change some token's choice
            return y, changed

        x, (y, changed) = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return written, ck, layers


def block_deepseek_v2(x, router, experts, shared, c, margins):
    """DeepseekV2Moe.route_tokens_to_experts + DeepseekV2Moe.forward (modeling_deepseek_v2.py): softmax over every
    expert; greedy: the k largest probabilities; group_limited_greedy: each group scores its largest probability,
    the topk_group best groups stay, the others' probabilities become 0.0, the k largest of those; weights the
    chosen probabilities times routed_scaling_factor; plus the shared experts (one MLP of n_shared_experts *
    moe_intermediate_size). Returns the output and how many tokens the groups moved off plain greedy."""
    E, K = c["n_routed_experts"], c["num_experts_per_tok"]
    probs = torch.softmax(x @ router.T, dim=-1)
    masked = probs
    if c["topk_method"] == "group_limited_greedy":
        G, TG = c["n_group"], c["topk_group"]
        group_scores = probs.view(-1, G, E // G).max(dim=-1).values
        margins.gap_after(group_scores, TG)
        group_idx = torch.topk(group_scores, k=TG, dim=-1)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1.0)
        score_mask = group_mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        masked = probs.masked_fill(~score_mask.bool(), 0.0)
    margins.gap_after(masked, K)
    weights, index = torch.topk(masked, k=K, dim=-1)
    weights = weights * c["routed_scaling_factor"]
    y = combine(x, weights, index, lambda e, xs: glu_expert(xs, *experts[e]))
    greedy = torch.topk(probs, k=K, dim=-1)[1]
    changed = int((torch.sort(greedy, -1).values != torch.sort(index, -1).values).any(-1).sum())
    return y + glu_expert(x, *shared), changed


def deepseek_v2(seed, name, dtype, lite=False):
    """DeepSeek-V2 (group_limited_greedy, routed_scaling_factor 16, as published) or, with lite, DeepSeek-V2-Lite
    (greedy, factor 1) whose config leaves those keys and first_k_dense_replace to DeepseekV2Config's defaults."""
    c = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 48,
         "intermediate_size": 80, "moe_intermediate_size": 24, "num_hidden_layers": 3, "n_routed_experts": 12,
         "n_shared_experts": 2, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2,
         "topk_method": "group_limited_greedy", "routed_scaling_factor": 16.0, "first_k_dense_replace": 1,
         "moe_layer_freq": 1, "norm_topk_prob": False, "scoring_func": "softmax", "hidden_act": "silu",
         "torch_dtype": CONFIG_DTYPE[dtype]}
    written = dict(c)
    if lite:
        c.update({"topk_method": "greedy", "routed_scaling_factor": 1.0, "first_k_dense_replace": 0})
        for key in ("topk_method", "routed_scaling_factor", "first_k_dense_replace", "n_group", "topk_group"):
            del written[key]
        c["num_hidden_layers"] = written["num_hidden_layers"] = 2
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, E = c["hidden_size"], c["n_routed_experts"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        if L < c["first_k_dense_replace"]:  # DeepseekV2MLP of intermediate_size
            F = c["intermediate_size"]
            for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))):
                ck.add(p + w + ".weight", shape, 1 / shape[1] ** 0.5)
            continue
        F, Fs = c["moe_intermediate_size"], c["moe_intermediate_size"] * c["n_shared_experts"]
        router = ck.add(p + "gate.weight", (E, H), 2.0 / H ** 0.5)
        experts = [tuple(ck.add(p + "experts.%d.%s.weight" % (e, w), shape, 1 / shape[1] ** 0.5)
                         for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))))
                   for e in range(E)]
        shared = tuple(ck.add(p + "shared_experts.%s.weight" % w, shape, 1 / shape[1] ** 0.5)
                       for w, shape in (("gate_proj", (Fs, H)), ("up_proj", (Fs, H)), ("down_proj", (H, Fs))))

        def compute(x, m):
            y, changed = block_deepseek_v2(x, router, experts, shared, c, m)
            m.require(lite or changed > 0)  # the groups must move some token off plain greedy
            return y

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return written, ck, layers


def llama4(seed, name, dtype, nested, fbgemm=False):
    """Llama4Router.forward + Llama4TextMoe.forward + Llama4TextExperts.forward (modeling_llama4.py): the k
    largest logits, their sigmoids as scores (the rest sigmoid(-inf) = 0); every expert runs on the input times
    its score, (up * silu(gate)) down with gate | up = x gate_up_proj[e] chunked in two and down_proj[e] (x W, not
    W x); their sum plus the shared expert's MLP. nested: the llama4 (multimodal) layout, text_config and
    language_model.*, MoE layers listed in moe_layers; else llama4_text, every interleave_moe_layer_step-th layer.
    fbgemm: as Llama 4 Maverick FP8 ships (quant_method fbgemm_fp8): the experts, shared expert and dense MLPs in
    FP8 with a scale per output unit, the router not converted; the reference is the block on the decoded
    weights (fbgemm's kernels also round the activations to FP8 on a GPU; that is not reproduced)."""
    t = {"model_type": "llama4_text", "hidden_size": 40, "intermediate_size": 24, "intermediate_size_mlp": 56,
         "num_hidden_layers": 4, "num_local_experts": 6, "num_experts_per_tok": 2, "hidden_act": "silu",
         "torch_dtype": CONFIG_DTYPE[dtype]}
    if nested:
        t["moe_layers"] = [0, 2]
        c = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "text_config": t,
             "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 16},
             "torch_dtype": CONFIG_DTYPE[dtype]}
        moe = [0, 2]
    else:
        t["architectures"], t["interleave_moe_layer_step"] = ["Llama4ForCausalLM"], 2
        c = t
        moe = [1, 3]
    if fbgemm:
        c["quantization_config"] = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                    "modules_to_not_convert": ["feed_forward.router", "self_attn", "lm_head"]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype, fp8_rows=fbgemm)
    H, F, E, K = t["hidden_size"], t["intermediate_size"], t["num_local_experts"], t["num_experts_per_tok"]
    layers = {}
    for L in range(t["num_hidden_layers"]):
        p = ("language_model." if nested else "") + "model.layers.%d.feed_forward." % L
        if L not in moe:  # Llama4TextMLP of intermediate_size_mlp
            Fd = t["intermediate_size_mlp"]
            for w, shape in (("gate_proj", (Fd, H)), ("up_proj", (Fd, H)), ("down_proj", (H, Fd))):
                ck.add(p + w + ".weight", shape, 1 / shape[1] ** 0.5, fp8=True)
            continue
        router = ck.add(p + "router.weight", (E, H), 1.5 / H ** 0.5)
        gate_up = ck.add(p + "experts.gate_up_proj", (E, H, 2 * F), 1 / H ** 0.5, fp8=True, scale_shape=(E, 1, 2 * F))
        down = ck.add(p + "experts.down_proj", (E, F, H), 1 / F ** 0.5, fp8=True, scale_shape=(E, H, 1))
        shared = tuple(ck.add(p + "shared_expert.%s.weight" % w, shape, 1 / shape[1] ** 0.5, fp8=True)
                       for w, shape in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))))

        def compute(x, m):
            logits = x @ router.T
            m.gap_after(logits, K)
            top, index = torch.topk(logits, K, dim=-1)
            scores = torch.sigmoid(torch.full_like(logits, float("-inf")).scatter_(1, index, top))
            y = glu_expert(x, *shared)
            for e in range(E):
                gu = (x * scores[:, e:e + 1]) @ gate_up[e]
                y = y + (gu[:, F:] * silu(gu[:, :F])) @ down[e]
            return y

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_decode(blocks, scales):
    """transformers' convert_moe_packed_tensors (integrations/mxfp4.py), in float64: blocks (..., G, 16) uint8,
    two E2M1 codes a byte, low nibble first; scales (..., G) uint8 E8M0; returns (..., G * 32), each code's value
    times 2^(scale - 127)."""
    lo, hi = FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]
    values = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    values = np.ldexp(values, scales.astype(np.int64)[..., None] - 127)
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def mxfp4_check():
    """The decoder against the E2M1 definition (sign, 2 exponent bits of bias 1, 1 mantissa bit), every code."""
    for code in range(16):
        e, m = (code >> 1) & 3, code & 1
        value = (m / 2.0 if e == 0 else (1 + m / 2.0) * 2.0 ** (e - 1)) * (-1 if code & 8 else 1)
        byte = np.array([[code | (code << 4)] * 16], dtype=np.uint8)
        decoded = mxfp4_decode(byte, np.array([130], dtype=np.uint8))
        assert (decoded == value * 8.0).all(), code
    # low nibble first: 0x71 is 0.5 (code 1), then 6 (code 7)
    two = mxfp4_decode(np.array([[0x71] * 16], dtype=np.uint8), np.array([127], dtype=np.uint8))
    assert list(two[:2]) == [0.5, 6.0], two[:2]


def block_gpt_oss(x, router, router_bias, gate_up, gate_up_bias, down, down_bias, c, margins):
    """GptOssTopKRouter.forward + GptOssExperts.forward (modeling_gpt_oss.py), with transformers' parameters
    (gate_up (experts, hidden, 2 ffn) and down (experts, ffn, hidden), x W): the k largest of the biased logits, a
    softmax over those k; gate_up = x W + b, gate = [..., ::2] clamped above at 7, up = [..., 1::2] clamped to
    [-7, 7], (up + 1) * gate * sigmoid(1.702 gate), then down + b. Returns the output and how many gate and up
    values the clamps cut."""
    K, limit = c["num_experts_per_tok"], 7.0
    logits = x @ router.T + router_bias
    margins.gap_after(logits, K)
    top, index = torch.topk(logits, K, dim=-1)
    weights = torch.softmax(top, dim=1)
    clamped = [0]

    def expert(e, xs):
        gu = xs @ gate_up[e] + gate_up_bias[e]
        gate, up = gu[..., ::2], gu[..., 1::2]
        clamped[0] += int((gate > limit).sum() + (up.abs() > limit).sum())
        gate = gate.clamp(min=None, max=limit)
        up = up.clamp(min=-limit, max=limit)
        glu = gate * torch.sigmoid(gate * 1.702)
        return ((up + 1) * glu) @ down[e] + down_bias[e]

    return combine(x, weights, index, expert), clamped[0]


def gpt_oss(seed, name, dtype, mxfp4):
    """gpt-oss's MoE block: as published (mxfp4: the experts' weights as MXFP4 blocks and E8M0 scales, everything
    else in dtype), or re-saved unquantised (transformers' gate_up_proj / down_proj parameters in dtype)."""
    c = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 64,
         "intermediate_size": 96, "num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 3,
         "experts_per_token": 3, "swiglu_limit": 7.0, "hidden_act": "silu", "torch_dtype": CONFIG_DTYPE[dtype]}
    if mxfp4:
        c["quantization_config"] = {"quant_method": "mxfp4",
                                    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                               "model.embed_tokens", "lm_head"]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        router = ck.add(p + "router.weight", (E, H), 1.5 / H ** 0.5)
        router_bias = ck.add(p + "router.bias", (E,), 0.5)
        weights = {}
        for w, rows, cols in (("gate_up_proj", 2 * F, H), ("down_proj", H, F)):
            if mxfp4:
                # Scales of 2^-3 and 2^-2 (E[code^2] = 8.6) make gate and up values of standard deviation ~3:
                # some are clamped.
                blocks = rng.randint(0, 256, size=(E, rows, cols // 32, 16)).astype(np.uint8)
                scales = rng.randint(124, 126, size=(E, rows, cols // 32)).astype(np.uint8)
                ck.tensors[p + "experts.%s_blocks" % w] = RawTensor("U8", blocks.shape, blocks.tobytes())
                ck.tensors[p + "experts.%s_scales" % w] = RawTensor("U8", scales.shape, scales.tobytes())
                weights[w] = torch.from_numpy(mxfp4_decode(blocks, scales)).transpose(1, 2)  # (E, in, out)
            else:
                weights[w] = ck.add(p + "experts." + w, (E, cols, rows), 3.0 / cols ** 0.5)
        gate_up_bias = ck.add(p + "experts.gate_up_proj_bias", (E, 2 * F), 0.5)
        down_bias = ck.add(p + "experts.down_proj_bias", (E, H), 0.5)

        def compute(x, m):
            y, clamped = block_gpt_oss(x, router, router_bias, weights["gate_up_proj"], gate_up_bias,
                                       weights["down_proj"], down_bias, c, m)
            m.require(clamped > 0)  # the clamps must matter
            return y

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def grok1(seed, name, dtype):
    """hpc-ai's Grok-1 port (modeling_grok1.py MoeBlock / MoeMLP): softmax over every expert in float32, the
    top-k probabilities as weights (not renormalised); experts gelu(linear x) * linear_v x, then linear_1, with
    the exact GELU of the port's nn.GELU()."""
    c = {"architectures": ["Grok1ModelForCausalLM"], "model_type": "grok-1", "hidden_size": 48,
         "intermediate_size": 40, "num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "attn_output_multiplier": 0.08838834764831845,
         "embedding_multiplier_scale": 78.38367176906169, "output_multiplier_scale": 0.5773502691896257,
         "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E, K = c["hidden_size"], c["intermediate_size"], c["num_experts"], c["num_experts_per_tok"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.moe_block." % L
        router = ck.add(p + "gate.weight", (E, H), 1.5 / H ** 0.5)
        experts = [tuple(ck.add(p + "experts.%d.%s.weight" % (e, w), shape, 1 / shape[1] ** 0.5)
                         for w, shape in (("linear", (F, H)), ("linear_v", (F, H)), ("linear_1", (H, F))))
                   for e in range(E)]

        def compute(x, m):
            weights, index = softmax_topk(x @ router.T, K, False, m)
            return combine(x, weights, index,
                           lambda e, xs: (torch.nn.functional.gelu(xs @ experts[e][0].T) * (xs @ experts[e][1].T))
                           @ experts[e][2].T)

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def granitemoe(seed, name, dtype):
    """GraniteMoeTopKGating.forward + GraniteMoeMoE.forward (modeling_granitemoe.py): the k largest router
    logits, a softmax over those k; input_linear (experts x 2 ffn x hidden) gives 2 ffn values chunked in two,
    act(first) * second, then output_linear (experts x hidden x ffn)."""
    c = {"architectures": ["GraniteMoeForCausalLM"], "model_type": "granitemoe", "hidden_size": 48,
         "intermediate_size": 40, "num_hidden_layers": 2, "num_local_experts": 6, "num_experts_per_tok": 2,
         "hidden_act": "silu", "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
         "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E, K = c["hidden_size"], c["intermediate_size"], c["num_local_experts"], c["num_experts_per_tok"]
    layers = {}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d.block_sparse_moe." % L
        router = ck.add(p + "router.layer.weight", (E, H), 1.5 / H ** 0.5)
        w_in = ck.add(p + "input_linear.weight", (E, 2 * F, H), 1 / H ** 0.5)
        w_out = ck.add(p + "output_linear.weight", (E, H, F), 1 / F ** 0.5)

        def compute(x, m):
            logits = x @ router.T
            m.gap_after(logits, K)
            top, index = torch.topk(logits, K, dim=-1)
            weights = torch.softmax(top, dim=-1)

            def expert(e, xs):
                h = xs @ w_in[e].T
                return (silu(h[:, :F]) * h[:, F:]) @ w_out[e].T

            return combine(x, weights, index, expert)

        x, y = draw_input(rng, TOKENS, H, compute)
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def dbrx(seed, name, dtype):
    c = {"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 40, "n_heads": 4, "n_layers": 2,
         "max_seq_len": 64, "vocab_size": 64,
         "attn_config": {"attn_pdrop": 0.0, "clip_qkv": 8.0, "kv_n_heads": 2, "rope_theta": 500000.0},
         "ffn_config": {"ffn_act_fn": {"name": "silu"}, "ffn_hidden_size": 48, "moe_num_experts": 8,
                        "moe_top_k": 4, "moe_jitter_eps": None, "moe_loss_weight": 0.05,
                        "moe_normalize_expert_weights": 1.0},
         "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E = c["d_model"], c["ffn_config"]["ffn_hidden_size"], c["ffn_config"]["moe_num_experts"]
    layers = {}
    for L in range(c["n_layers"]):
        p = "transformer.blocks.%d.ffn." % L
        router = ck.add(p + "router.layer.weight", (E, H), 1.5 / H ** 0.5)
        w1 = ck.add(p + "experts.mlp.w1", (E * F, H), 1 / H ** 0.5)
        v1 = ck.add(p + "experts.mlp.v1", (E * F, H), 1 / H ** 0.5)
        w2 = ck.add(p + "experts.mlp.w2", (E * F, H), 1 / F ** 0.5)
        x, y = draw_input(rng, TOKENS, H, lambda x, m: block_dbrx(x, router, w1, v1, w2, c, m))
        layers[str(L)] = (x, y.numpy(), {})
    return c, ck, layers


def switch_transformers(seed, name, dtype, dropped):
    # SwitchTransformersConfig derives encoder_sparse_step = num_layers // num_sparse_encoder_layers (and the
    # decoder's likewise); saved configs carry both, the step keys winning. Encoder: 3 layers, step 3, so only
    # layer 1 is sparse (N % step == 1); decoder: 2 layers, step 1, both sparse.
    c = {"architectures": ["SwitchTransformersForConditionalGeneration"], "model_type": "switch_transformers",
         "d_model": 48, "d_ff": 64, "d_kv": 16, "num_heads": 3, "num_layers": 3, "num_decoder_layers": 2,
         "num_sparse_encoder_layers": 1, "num_sparse_decoder_layers": 2, "encoder_sparse_step": 3,
         "decoder_sparse_step": 1, "num_experts": 4, "expert_capacity": 2, "router_bias": False,
         "router_jitter_noise": 0.0, "router_dtype": "float32", "router_ignore_padding_tokens": False,
         "dense_act_fn": "relu", "feed_forward_proj": "relu", "is_gated_act": False, "is_encoder_decoder": True,
         "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1, "vocab_size": 64, "torch_dtype": CONFIG_DTYPE[dtype]}
    rng = folder_rng(seed, name)
    ck = Checkpoint(rng, dtype)
    H, F, E, cap = c["d_model"], c["d_ff"], c["num_experts"], c["expert_capacity"]
    layers = {}
    total_dropped = 0
    for stack, count, step, ff in (("encoder", c["num_layers"], c["encoder_sparse_step"], 1),
                                   ("decoder", c["num_decoder_layers"], c["decoder_sparse_step"], 2)):
        for N in range(count):
            # the feed-forward sublayer is layer.1 of an encoder block, layer.2 of a decoder block
            p = "%s.block.%d.layer.%d.mlp." % (stack, N, ff)
            sparse = (N % step == 1 or step == 1) if step > 0 else False
            if not sparse:  # SwitchTransformersDenseActDense
                ck.add(p + "wi.weight", (F, H), 1 / H ** 0.5)
                ck.add(p + "wo.weight", (H, F), 1 / F ** 0.5)
                continue
            router = ck.add(p + "router.classifier.weight", (E, H), 1.5 / H ** 0.5)
            experts = [(ck.add(p + "experts.expert_%d.wi.weight" % e, (F, H), 1 / H ** 0.5),
                        ck.add(p + "experts.expert_%d.wo.weight" % e, (H, F), 1 / F ** 0.5)) for e in range(E)]
            first = stack == "encoder"

            def compute(x, m):
                y, n_dropped = block_switch(x, router, experts, cap, dropped, m)
                if first:
                    m.require(n_dropped > 0)  # the encoder's sparse layer must drop tokens
                return y, n_dropped

            x, (y, n_dropped) = draw_input(rng, TOKENS, H, compute)
            other = "input" if dropped == "zero" else "zero"
            y_other, _ = block_switch(torch.from_numpy(x).to(F64), router, experts, cap, other, Margins())
            total_dropped += n_dropped
            layers["%s.%d" % (stack, N)] = (x, y.numpy(), {"expected_dropped_" + other: y_other.numpy()})
    assert total_dropped > 0
    return c, ck, layers


# ---------------------------------------------------------------------------------------------------------
# Self-check


def mixtral_by_loops(x, ck, L, c):
    """Mixtral's block again, token by token in plain numpy, from the tensors as stored."""
    p = "model.layers.%d.block_sparse_moe." % L
    gate = ck.f64(p + "gate.weight").numpy()
    E, k = c["num_local_experts"], c["num_experts_per_tok"]
    out = np.zeros(x.shape, dtype=np.float64)
    for t in range(x.shape[0]):
        xt = x[t].astype(np.float64)
        logits = [float(np.dot(gate[e], xt)) for e in range(E)]
        top = max(logits)
        exps = [np.exp(v - top) for v in logits]
        probs = [v / sum(exps) for v in exps]
        chosen = sorted(range(E), key=lambda e: (-probs[e], e))[:k]
        total = sum(probs[e] for e in chosen)
        for e in chosen:
            w1 = ck.f64(p + "experts.%d.w1.weight" % e).numpy()
            w2 = ck.f64(p + "experts.%d.w2.weight" % e).numpy()
            w3 = ck.f64(p + "experts.%d.w3.weight" % e).numpy()
            h = np.zeros(w1.shape[0])
            for i in range(w1.shape[0]):
                g = float(np.dot(w1[i], xt))
                h[i] = g / (1.0 + np.exp(-g)) * float(np.dot(w3[i], xt))
            for j in range(w2.shape[0]):
                out[t, j] += probs[e] / total * float(np.dot(w2[j], h))
    return out


def e4m3_check():
    """The NumPy e4m3 codec, exhaustively: every code re-encodes to itself, and values halfway between two
    neighbours go to the even code."""
    for c in range(256):
        if (c & 0x7F) != 0x7F:
            assert int(e4m3_encode(np.array([E4M3[c]]))[0]) == c, c
    assert E4M3[0x7E] == 448.0 and E4M3[0x01] == 2.0 ** -9 and E4M3[0x38] == 1.0
    for c in range(0x7E):
        middle = (E4M3[c] + E4M3[c + 1]) / 2
        assert int(e4m3_encode(np.array([middle]))[0]) == (c if c % 2 == 0 else c + 1), c


def self_check(out_dir, built):
    e4m3_check()
    mxfp4_check()
    for name in ("mixtral", "mixtral_bf16"):
        c, ck, layers = built[name]
        for layer, (x, y, _) in layers.items():
            loops = mixtral_by_loops(x, ck, int(layer), c)
            diff = float(np.max(np.abs(loops - y)))
            assert diff <= 1e-10, "%s layer %s: loops and vectorised reference differ by %g" % (name, layer, diff)
    # The files read back bit for bit, shards included.
    for name, (c, ck, layers) in built.items():
        folder = os.path.join(out_dir, name)
        stored = {}
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
            assert len(files) > 1
        else:
            files = ["model.safetensors"]
        for file in files:
            part = read_safetensors(os.path.join(folder, file))
            assert not set(part) & set(stored), "a tensor in two shards"
            stored.update(part)
        assert list(sorted(stored)) == sorted(ck.tensors), name
        for tensor_name, t in ck.tensors.items():
            dtype, shape, data = stored[tensor_name]
            assert dtype == st_dtype(t) and shape == list(t.shape) and data == tensor_bytes(t)
        for layer, (x, y, _) in layers.items():
            assert np.array_equal(np.load(os.path.join(folder, "input_%s.npy" % layer)), x.astype(np.float32))
            assert np.array_equal(np.load(os.path.join(folder, "expected_%s.npy" % layer)), y.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--switch-dropped", choices=("zero", "input"), default="zero",
                        help="a dropped Switch token's next_states: zero (transformers since PR #37123, the "
                             "default) or its input (earlier transformers); the other is saved as "
                             "expected_dropped_<other>_L.npy")
    args = parser.parse_args()
    start = time.time()
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)

    plan = [  # folder, family function, weight dtype (manifest), shards
        ("mixtral", mixtral, "f32", 1),
        ("mixtral_bf16", mixtral, "bf16", 1),
        ("qwen2_moe", qwen2_moe, "f32", 1),
        ("qwen3_moe", qwen3_moe, "bf16", 1),
        ("olmoe", olmoe, "f32", 1),
        ("deepseek_v3", deepseek_v3, "bf16", 1),
        ("deepseek_v3_defaults", deepseek_v3_defaults, "f32", 1),
        ("glm4_moe", glm4_moe, "f32", 1),
        # FP8 as published: e4m3 weights with block scales; blocks that cut the 56 x 32 tensors unevenly.
        ("deepseek_v3_fp8", lambda s, n, d: deepseek_v3(s, n, d, fp8_block=(16, 24)), "bf16", 1),
        # and as published, 128 x 128 blocks, on tensors of 2 x 2 blocks, partial ones at both ends: moe keeps
        # the codes and scales (--dtype auto is fp8)
        ("qwen3_moe_fp8", lambda s, n, d: qwen3_moe(s, n, d, fp8_block=(128, 128), hidden=200, moe_ffn=136), "bf16",
         1),
        ("granitemoe", granitemoe, "bf16", 1),
        ("deepseek_v2", deepseek_v2, "bf16", 1),
        ("deepseek_v2_lite", lambda s, n, d: deepseek_v2(s, n, d, lite=True), "f32", 1),
        ("llama4_text", lambda s, n, d: llama4(s, n, d, nested=False), "bf16", 1),
        ("llama4", lambda s, n, d: llama4(s, n, d, nested=True), "f32", 1),
        # Llama 4 Maverick FP8's layout: fbgemm_fp8, a scale per output unit, 3-D FP8 experts
        ("llama4_text_fp8", lambda s, n, d: llama4(s, n, d, nested=False, fbgemm=True), "bf16", 1),
        ("grok1", grok1, "bf16", 1),
        ("gpt_oss", lambda s, n, d: gpt_oss(s, n, d, mxfp4=True), "bf16", 1),
        ("gpt_oss_bf16", lambda s, n, d: gpt_oss(s, n, d, mxfp4=False), "bf16", 1),
        ("dbrx", dbrx, "f16", 1),
        ("switch_transformers", lambda s, n, d: switch_transformers(s, n, d, args.switch_dropped), "f32", 1),
    ]
    built = {}
    manifest = []
    for name, family, dtype, shards in plan:
        c, ck, layers = family(args.seed, name, dtype)
        write_folder(args.out_dir, name, c, ck, layers, shards)
        built[name] = (c, ck, layers)
        quantization = c.get("quantization_config", {}).get("quant_method")
        label = quantization or dtype
        manifest += ["%s %s %s" % (name, layer, label) for layer in layers]
    # The sharded variant: olmoe's very tensors, config and references, in two files plus the index.
    c, ck, layers = built["olmoe"]
    write_folder(args.out_dir, "olmoe_sharded", c, ck, layers, shards=2)
    built["olmoe_sharded"] = built["olmoe"]
    manifest += ["olmoe_sharded %s f32" % layer for layer in layers]
    # Weights converted at load into other precisions: "<folder> <layer> <weights> <--dtype> <bar>", the bar
    # (max|Y - reference| / max|reference|) a few times the rounding those precisions add on these shapes;
    # 1e-4 where the conversion is exact (FP8 and MXFP4 values in f32, MXFP4 values in bf16).
    manifest += ["deepseek_v3_fp8 1 fp8 bf16 1e-2", "deepseek_v3_fp8 2 fp8 f16 2e-3", "qwen3_moe_fp8 1 fp8 q8 5e-2",
                 "deepseek_v3_fp8 1 fp8 fp8 1e-1", "qwen3_moe_fp8 0 fp8 f32 1e-4", "gpt_oss 0 mxfp4 f32 1e-4",
                 "gpt_oss 1 mxfp4 q8 5e-2", "gpt_oss 1 mxfp4 bf16 1e-4", "mixtral 0 f32 mxfp4 0.4", "gpt_oss 0 mxfp4 mxfp4a8 5e-2",
                 "llama4_text_fp8 1 fbgemm_fp8 f32 1e-4", "llama4_text_fp8 3 fbgemm_fp8 bf16 1e-2"]
    with open(os.path.join(args.out_dir, "MANIFEST.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")

    self_check(args.out_dir, built)
    print("make_checkpoints.py: %d folders, %d (folder, layer) references in %s (%.1f s), self-check passed"
          % (len(built), len(manifest), args.out_dir, time.time() - start))


if __name__ == "__main__":
    main()
