#!/usr/bin/env python3
"""fuzz/make_corpus.py: writes the seed corpora of fuzz/run.sh (fuzz/corpus/{npy,safetensors,config}/),
a few small valid and broken files of each kind, byte for byte the same on every run. Standard library only.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(kind, name, data):
    folder = os.path.join(HERE, "corpus", kind)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def npy(header, data, major=1, pad=True):
    text = header
    if pad:
        preamble = 10 if major == 1 else 12
        text += " " * (63 - (preamble + len(text)) % 64) + "\n"
    length = struct.pack("<H", len(text)) if major == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([major, 0]) + length + text.encode("latin1") + data


def dict_header(descr="<f4", shape="(2, 3)", order="False"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, order, shape)


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
six = f32(1, 2, 3, 4, 5, 6)
put("npy", "f32_2x3.npy", npy(dict_header(), six))
put("npy", "f16_2x2.npy", npy(dict_header("<f2", "(2, 2)"), struct.pack("<4H", 0x3C00, 0xC000, 0x7BFF, 0x0001)))
put("npy", "v2_f32.npy", npy(dict_header(), six, major=2))
put("npy", "v3_f32.npy", npy(dict_header(), six, major=3))
put("npy", "empty_0x4.npy", npy(dict_header(shape="(0, 4)"), b""))
put("npy", "py2_long.npy", npy('{"descr": "|f4", "shape": (2L, 3L), "fortran_order": False}', six, pad=False))
put("npy", "bad_1d.npy", npy(dict_header(shape="(6,)"), six))
put("npy", "bad_3d.npy", npy(dict_header(shape="(1, 2, 3)"), six))
put("npy", "bad_fortran.npy", npy(dict_header(order="True"), six))
put("npy", "bad_f8.npy", npy(dict_header("<f8"), six + six))
put("npy", "bad_truncated.npy", npy(dict_header(), six[:20]))
put("npy", "bad_trailing.npy", npy(dict_header(), six + b"xy"))
put("npy", "bad_huge.npy", npy(dict_header(shape="(4294967296, 4294967296)"), six))


def safetensors(header, data, pad=True):
    text = json.dumps(header) if not isinstance(header, str) else header
    if pad:
        text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + data


three = f32(1.5, -2, 0.25, 8) + struct.pack("<4H", 0x3F80, 0xC000, 0x7F80, 0x0001) + struct.pack("<2H", 0x3C00, 0x7BFF)
put("safetensors", "three_dtypes.safetensors", safetensors({
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]},
    "c": {"dtype": "F16", "shape": [1, 2], "data_offsets": [24, 28]}}, three))
put("safetensors", "scalar_and_empty.safetensors", safetensors({
    "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
    "e": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [4, 4]}}, f32(3)))
put("safetensors", "f8_e4m3.safetensors", safetensors({
    "w": {"dtype": "F8_E4M3", "shape": [2, 3], "data_offsets": [0, 6]},
    "w_scale_inv": {"dtype": "F32", "shape": [1, 1], "data_offsets": [8, 12]}}, bytes([0x38, 0xB8, 0x7E, 0x01, 0x7F, 0xFF, 0, 0]) + f32(0.5)))
put("safetensors", "mxfp4.safetensors", safetensors({
    "w_blocks": {"dtype": "U8", "shape": [1, 2, 1, 16], "data_offsets": [0, 32]},
    "w_scales": {"dtype": "U8", "shape": [1, 2, 1], "data_offsets": [32, 34]}}, bytes(range(32)) + bytes([127, 0xFF])))
put("safetensors", "metadata_only.safetensors", safetensors({"__metadata__": {}}, b""))
put("safetensors", "bad_overlap.safetensors", safetensors({
    "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
    "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}}, three))
put("safetensors", "bad_header_past_eof.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
put("safetensors", "bad_dtype.safetensors", safetensors({"t": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, three))
put("safetensors", "bad_shape.safetensors", safetensors({"t": {"dtype": "F32", "shape": [-1, 2.5], "data_offsets": [0, 8]}}, three))
put("safetensors", "bad_offsets.safetensors", safetensors({"t": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, three))
put("safetensors", "bad_json.safetensors", safetensors('{"t": {"dtype": "F32", "shape": [1]', b"", pad=False))
put("safetensors", "bad_truncated.safetensors", safetensors({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32(1, 2)))

put("config", "mixtral.json", json.dumps({
    "model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128, "num_local_experts": 8,
    "num_experts_per_tok": 2, "num_hidden_layers": 2, "hidden_act": "silu", "rope_theta": 1e6,
    "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": False, "vocab_size": 32000}))
put("config", "deepseek_v3.json", json.dumps({
    "model_type": "deepseek_v3", "hidden_size": 64, "moe_intermediate_size": 32, "n_routed_experts": 16,
    "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "norm_topk_prob": True,
    "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "n_shared_experts": None}))
put("config", "deepseek_v3_fp8.json", json.dumps({
    "model_type": "deepseek_v3", "hidden_size": 64, "moe_intermediate_size": 32, "n_routed_experts": 16,
    "num_hidden_layers": 4, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "norm_topk_prob": True,
    "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "n_shared_experts": 1, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]}}))
put("config", "qwen2_moe.json", json.dumps({
    "model_type": "qwen2_moe", "hidden_size": 48, "moe_intermediate_size": 24, "shared_expert_intermediate_size": 40,
    "num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 4, "decoder_sparse_step": 2,
    "mlp_only_layers": [3]}))
put("config", "granitemoe.json", json.dumps({
    "model_type": "granitemoe", "hidden_size": 48, "intermediate_size": 40, "num_hidden_layers": 2,
    "num_local_experts": 6, "num_experts_per_tok": 2, "hidden_act": "silu"}))
put("config", "deepseek_v2.json", json.dumps({
    "model_type": "deepseek_v2", "hidden_size": 48, "moe_intermediate_size": 24, "n_routed_experts": 12,
    "num_hidden_layers": 3, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2,
    "topk_method": "group_limited_greedy", "routed_scaling_factor": 16.0, "first_k_dense_replace": 1,
    "n_shared_experts": 2, "moe_layer_freq": 1, "norm_topk_prob": False}))
put("config", "llama4_text.json", json.dumps({
    "model_type": "llama4_text", "hidden_size": 40, "intermediate_size": 24, "intermediate_size_mlp": 56,
    "num_hidden_layers": 4, "num_local_experts": 6, "num_experts_per_tok": 2, "interleave_moe_layer_step": 2}))
put("config", "llama4.json", json.dumps({
    "model_type": "llama4", "text_config": {
        "model_type": "llama4_text", "hidden_size": 40, "intermediate_size": 24, "num_hidden_layers": 4,
        "num_local_experts": 6, "num_experts_per_tok": 1, "moe_layers": [0, 2]}}))
put("config", "gpt_oss.json", json.dumps({
    "model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_local_experts": 8, "num_experts_per_tok": 3, "swiglu_limit": 7.0,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.mlp.router"]}}))
put("config", "grok1.json", json.dumps({
    "model_type": "grok-1", "hidden_size": 48, "intermediate_size": 40, "num_hidden_layers": 2, "num_experts": 8,
    "num_experts_per_tok": 2}))
put("config", "dbrx.json", json.dumps({
    "model_type": "dbrx", "d_model": 64, "ffn_config": {"ffn_hidden_size": 96, "moe_num_experts": 4,
                                                       "moe_top_k": 2, "moe_normalize_expert_weights": 1}}))
put("config", "bad_types.json", json.dumps({
    "model_type": 3, "hidden_size": "64", "num_experts_per_tok": 2.0, "norm_topk_prob": "yes",
    "num_hidden_layers": -2, "vocab_size": 18446744073709551615, "n_group": 300, "routed_scaling_factor": 1e300}))
put("config", "not_object.json", "[1, 2, {\"hidden_size\": 4}]")
put("config", "invalid.json", '{"hidden_size": 64,, }')


# Model folders for fuzz_model: config.json, a NUL byte, then model.safetensors. One small MoE layer of each
# expert-tensor layout the loader reads (per expert, F8_E4M3 with block scales, MXFP4 blocks and scales,
# transposed, stacked, fused), values from a fixed generator so the files are the same on every run. Each
# tensor starts 8-aligned and 32 bytes after the previous one ends: fuzz_model poisons those gaps for ASan,
# so a read that strays past a tensor is reported rather than landing in its neighbour.
class Values:
    def __init__(self):
        self.state = 12345

    def byte(self):
        self.state = (self.state * 1103515245 + 12345) % (1 << 31)
        return self.state >> 23

    def f32(self, n):
        return [(self.byte() - 128) / 256 for _ in range(n)]


def encode(dtype, shape, values):
    n = 1
    for d in shape:
        n *= d
    if dtype == "F32":
        return struct.pack("<%df" % n, *values.f32(n))
    if dtype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in values.f32(n))
    if dtype == "F16":
        return struct.pack("<%de" % n, *values.f32(n))
    if dtype == "F8_E4M3":  # codes of magnitude below 2 (exponent field < 8), never the NaN code 0x7f / 0xff
        return bytes(values.byte() & 0xBF for _ in range(n))
    if dtype == "SCALES":  # E8M0 around 2^0
        return bytes(124 + values.byte() % 6 for _ in range(n))
    return bytes(values.byte() for _ in range(n))  # U8 MXFP4 blocks: any byte is two E2M1 codes


def model(name, config, tensors):
    values, header, data = Values(), {}, b""
    for tensor, dtype, shape in tensors:
        blob = encode(dtype, shape, values)
        header[tensor] = {"dtype": "U8" if dtype == "SCALES" else dtype, "shape": shape,
                          "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob + b"\xa5" * (32 + -len(blob) % 8)
    put("model", name, json.dumps(config).encode() + b"\0" + safetensors(header, data))


def per_expert(prefix, names, experts, ffn, hidden, dtype):
    out = []
    for e in range(experts):
        for proj in names[:-1]:
            out.append(("%s%d.%s.weight" % (prefix, e, proj), dtype, [ffn, hidden]))
        out.append(("%s%d.%s.weight" % (prefix, e, names[-1]), dtype, [hidden, ffn]))
    return out


p = "model.layers.0.block_sparse_moe."
model("mixtral_f32", {"model_type": "mixtral", "hidden_size": 4, "intermediate_size": 3, "num_local_experts": 2,
                      "num_experts_per_tok": 2, "num_hidden_layers": 1},
      [(p + "gate.weight", "F32", [2, 4])] + per_expert(p + "experts.", ["w1", "w3", "w2"], 2, 3, 4, "F32"))
p = "model.layers.0.mlp."
model("qwen2_moe_f16", {"model_type": "qwen2_moe", "hidden_size": 4, "moe_intermediate_size": 3,
                        "shared_expert_intermediate_size": 5, "num_hidden_layers": 1, "num_experts": 3,
                        "num_experts_per_tok": 1},
      [(p + "gate.weight", "F16", [3, 4])] + per_expert(p + "experts.", ["gate_proj", "up_proj", "down_proj"], 3, 3, 4, "F16") +
      [(p + "shared_expert.gate_proj.weight", "F16", [5, 4]), (p + "shared_expert.up_proj.weight", "F16", [5, 4]),
       (p + "shared_expert.down_proj.weight", "F16", [4, 5]), (p + "shared_expert_gate.weight", "F16", [1, 4])])
fp8 = []
for t in per_expert(p + "experts.", ["gate_proj", "up_proj", "down_proj"], 4, 3, 8, "F8_E4M3") + [
        (p + "shared_experts.gate_proj.weight", "F8_E4M3", [3, 8]), (p + "shared_experts.up_proj.weight", "F8_E4M3", [3, 8]),
        (p + "shared_experts.down_proj.weight", "F8_E4M3", [8, 3])]:
    fp8 += [t, (t[0] + "_scale_inv", "F32", [(t[2][0] + 1) // 2, (t[2][1] + 3) // 4])]
model("deepseek_v3_fp8", {"model_type": "deepseek_v3", "hidden_size": 8, "moe_intermediate_size": 3,
                          "n_routed_experts": 4, "num_hidden_layers": 1, "num_experts_per_tok": 2, "n_group": 2,
                          "topk_group": 1, "first_k_dense_replace": 0, "n_shared_experts": 1,
                          "quantization_config": {"fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [2, 4]}},
      [(p + "gate.weight", "F32", [4, 8]), (p + "gate.e_score_correction_bias", "F32", [4])] + fp8)
model("gpt_oss_mxfp4", {"model_type": "gpt_oss", "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_local_experts": 2, "num_experts_per_tok": 1, "quantization_config": {"quant_method": "mxfp4"}},
      [(p + "router.weight", "BF16", [2, 32]), (p + "router.bias", "BF16", [2]),
       (p + "experts.gate_up_proj_blocks", "U8", [2, 64, 1, 16]), (p + "experts.gate_up_proj_scales", "SCALES", [2, 64, 1]),
       (p + "experts.down_proj_blocks", "U8", [2, 32, 1, 16]), (p + "experts.down_proj_scales", "SCALES", [2, 32, 1]),
       (p + "experts.gate_up_proj_bias", "BF16", [2, 64]), (p + "experts.down_proj_bias", "BF16", [2, 32])])
p = "model.layers.0.feed_forward."
model("llama4_text_bf16", {"model_type": "llama4_text", "hidden_size": 4, "intermediate_size": 3,
                           "num_hidden_layers": 1, "num_local_experts": 2, "num_experts_per_tok": 1},
      [(p + "router.weight", "BF16", [2, 4]), (p + "experts.gate_up_proj", "BF16", [2, 4, 6]),
       (p + "experts.down_proj", "BF16", [2, 3, 4]), (p + "shared_expert.gate_proj.weight", "BF16", [3, 4]),
       (p + "shared_expert.up_proj.weight", "BF16", [3, 4]), (p + "shared_expert.down_proj.weight", "BF16", [4, 3])])
model("llama4_text_fbgemm_fp8", {"model_type": "llama4_text", "hidden_size": 4, "intermediate_size": 3,
                                 "num_hidden_layers": 1, "num_local_experts": 2, "num_experts_per_tok": 1,
                                 "quantization_config": {"quant_method": "fbgemm_fp8"}},
      [(p + "router.weight", "BF16", [2, 4]), (p + "experts.gate_up_proj", "F8_E4M3", [2, 4, 6]),
       (p + "experts.gate_up_proj_scale", "F32", [2, 1, 6]), (p + "experts.down_proj", "F8_E4M3", [2, 3, 4]),
       (p + "experts.down_proj_scale", "F32", [2, 4, 1])] +
      [(p + "shared_expert.%s.weight%s" % (w, suffix), dtype, shape)
       for w, rows, cols in (("gate_proj", 3, 4), ("up_proj", 3, 4), ("down_proj", 4, 3))
       for suffix, dtype, shape in (("", "F8_E4M3", [rows, cols]), ("_scale", "F32", [rows, 1]))])
p = "model.layers.0.block_sparse_moe."
model("granitemoe_f32", {"model_type": "granitemoe", "hidden_size": 4, "intermediate_size": 3, "num_hidden_layers": 1,
                         "num_local_experts": 2, "num_experts_per_tok": 1},
      [(p + "router.layer.weight", "F32", [2, 4]), (p + "input_linear.weight", "F32", [2, 6, 4]),
       (p + "output_linear.weight", "F32", [2, 4, 3])])
p = "transformer.blocks.0.ffn."
model("dbrx_bf16", {"model_type": "dbrx", "d_model": 4, "n_layers": 1,
                    "ffn_config": {"ffn_hidden_size": 3, "moe_num_experts": 2, "moe_top_k": 1}},
      [(p + "router.layer.weight", "BF16", [2, 4]), (p + "experts.mlp.w1", "BF16", [6, 4]),
       (p + "experts.mlp.v1", "BF16", [6, 4]), (p + "experts.mlp.w2", "BF16", [6, 4])])
