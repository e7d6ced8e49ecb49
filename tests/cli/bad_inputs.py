#!/usr/bin/env python3
"""bad_inputs.py MOE_RUN DIR: moe-run must refuse each broken input with a one-line error naming the file and
the problem, a non-zero exit, and no output file. DIR holds the folders tests/make_checkpoints.py wrote; the
broken copies go to a temporary folder. MOE_EMULATOR, when set (e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu"),
is the command that runs MOE_RUN (a cross-compiled build).
"""
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

MOE_RUN, DIR = sys.argv[1], sys.argv[2]
EMULATOR = shlex.split(os.environ.get("MOE_EMULATOR", ""))
work = tempfile.mkdtemp(prefix="moe-bad-inputs-")
passed = failed = 0


def copy(name):
    target = os.path.join(work, name + "-" + str(len(os.listdir(work))))
    shutil.copytree(os.path.join(DIR, name), target)
    return target


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_safetensors(path, header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def case(title, expected, model, layer="1", x=None, output=None, extra=(), seconds=60):
    """Runs moe-run and checks the refusal, which must come within `seconds` (ten times that under an
    emulator): a refusal that first allocates or iterates over a declared size, or waits on a FIFO, fails."""
    global passed, failed
    if x is None:
        x = os.path.join(DIR, "mixtral", "input_1.npy")
    if output is None:
        output = os.path.join(work, "out-%d.npy" % (passed + failed))
    command = [*EMULATOR, MOE_RUN, "--model", model, "--layer", layer, "--input", x, "--output", output, *extra]
    limit = seconds * (10 if EMULATOR else 1)
    start = time.monotonic()
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        failed += 1
        print("FAILED %s: still running after %g s" % (title, limit))
        return
    elapsed = time.monotonic() - start
    message = run.stderr.strip()
    problems = []
    if run.returncode == 0:
        problems.append("exit code 0")
    if expected not in message:
        problems.append("message lacks %r" % expected)
    if len(message.splitlines()) != 1:
        problems.append("not one line")
    if os.path.exists(output):
        problems.append("an output file was left")
    if elapsed > limit:
        problems.append("took %.1f s" % elapsed)
    if problems:
        failed += 1
        print("FAILED %s: %s\n  stderr: %s" % (title, ", ".join(problems), message))
    else:
        passed += 1
        print("ok %s: %s" % (title, message))


mixtral = os.path.join(DIR, "mixtral")

case("missing folder", "does not exist", os.path.join(work, "no-such-model"))

m = copy("mixtral")
os.remove(os.path.join(m, "model.safetensors"))
case("missing safetensors", "no model.safetensors", m)

m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
with open(path, "rb") as f:
    data = f.read()
with open(path, "wb") as f:
    f.write(data[: len(data) - 100])
case("truncated safetensors", "model.safetensors", m)

m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
with open(path, "r+b") as f:
    f.write(struct.pack("<Q", 1 << 40))
case("header length past the end of the file", "model.safetensors", m)

m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
header, body = read_safetensors(path)
names = [k for k in header if k != "__metadata__"]
# Two tensors of one shape; the second made to start 4 bytes into the first, with its own length.
a = "model.layers.0.block_sparse_moe.experts.0.w1.weight"
b = "model.layers.0.block_sparse_moe.experts.1.w1.weight"
begin, end = header[a]["data_offsets"]
header[b]["data_offsets"] = [begin + 4, end + 4]
write_safetensors(path, header, body)
case("overlapping data offsets", "overlap", m)

m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
header, body = read_safetensors(path)
header[names[0]]["data_offsets"] = [len(body) - 4, len(body) + 4096]
write_safetensors(path, header, body)
case("data offsets out of range", "model.safetensors", m)

m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
header, body = read_safetensors(path)
gone = "model.layers.1.block_sparse_moe.experts.1.w2.weight"
del header[gone]
write_safetensors(path, header, body)
case("missing tensor", gone, m)

m = copy("mixtral")
with open(os.path.join(m, "config.json")) as f:
    config = json.load(f)
config["intermediate_size"] += 8
with open(os.path.join(m, "config.json"), "w") as f:
    json.dump(config, f)
case("shape that does not match config.json", "config.json implies", m)

m = copy("mixtral")
with open(os.path.join(m, "config.json")) as f:
    config = json.load(f)
config["torch_dtype"] = "float16"
with open(os.path.join(m, "config.json"), "w") as f:
    json.dump(config, f)
case("dtype that does not match config.json", "declares float16", m)

m = copy("mixtral")
with open(os.path.join(m, "config.json")) as f:
    config = json.load(f)
config["model_type"] = "llama"
with open(os.path.join(m, "config.json"), "w") as f:
    json.dump(config, f)
case("unknown model_type", "supported: mixtral", m)

case("a dense layer", "dense", os.path.join(DIR, "deepseek_v3"), layer="0",
     x=os.path.join(DIR, "deepseek_v3", "input_1.npy"))
case("a layer that does not exist", "does not exist", mixtral, layer="99")

x = np.load(os.path.join(mixtral, "input_1.npy"))
wide = os.path.join(work, "wide.npy")
np.save(wide, np.concatenate([x, x[:, :3]], axis=1))
case("input width is not hidden_size", "columns but hidden_size", mixtral, x=wide)

bad = x.copy()
bad[2, 5] = np.nan
nan_path = os.path.join(work, "nan.npy")
np.save(nan_path, bad)
case("NaN in the input", "token 2 has NaN or Inf", mixtral, x=nan_path)
bad[2, 5] = np.inf
np.save(nan_path, bad)
case("Inf in the input", "token 2 has NaN or Inf", mixtral, x=nan_path)

case("unwritable output path", "cannot write", mixtral, output=os.path.join(work, "no-such-dir", "y.npy"))
case("missing input file", "cannot open", mixtral, x=os.path.join(work, "missing.npy"))

# ---- config.json values: refused by the key, before anything is allocated or iterated for them -------------


def edited_config(name, **changes):
    folder = copy(name)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return folder


for experts in (1000000, 100000000, 2147483647):
    case("num_local_experts = %d" % experts, "key 'num_local_experts' = %d is out of range" % experts,
         edited_config("mixtral", num_local_experts=experts), seconds=5)
case("num_experts_per_tok above the experts", "key 'num_experts_per_tok' = 9 is out of range",
     edited_config("mixtral", num_experts_per_tok=9))
case("intermediate_size far above the tensors", "config.json implies",
     edited_config("mixtral", intermediate_size=1 << 29), seconds=5)
case("intermediate_size negative", "key 'intermediate_size' = -56 is out of range",
     edited_config("mixtral", intermediate_size=-56))
deepseek_x = os.path.join(DIR, "deepseek_v3", "input_1.npy")
case("negative routed_scaling_factor", "key 'routed_scaling_factor' = -2.500000 must be positive",
     edited_config("deepseek_v3", routed_scaling_factor=-2.5), x=deepseek_x)
case("negative n_shared_experts", "key 'n_shared_experts' = -1 is out of range",
     edited_config("deepseek_v3", n_shared_experts=-1), x=deepseek_x)
case("negative first_k_dense_replace", "key 'first_k_dense_replace' = -1 is out of range",
     edited_config("deepseek_v3", first_k_dense_replace=-1), x=deepseek_x)
case("topk_group above n_group", "key 'topk_group' = 5 is out of range",
     edited_config("deepseek_v3", topk_group=5), x=deepseek_x)
qwen_x = os.path.join(DIR, "qwen2_moe", "input_1.npy")
case("mlp_only_layers as a string", "key 'mlp_only_layers' has the wrong type",
     edited_config("qwen2_moe", mlp_only_layers="3"), x=qwen_x)
case("mlp_only_layers holding a negative number", "key 'mlp_only_layers' holds -1",
     edited_config("qwen2_moe", mlp_only_layers=[-1]), x=qwen_x)
case("decoder_sparse_step of 0", "key 'decoder_sparse_step' = 0 is out of range",
     edited_config("qwen2_moe", decoder_sparse_step=0), x=qwen_x)

v2_x = os.path.join(DIR, "deepseek_v2", "input_1.npy")
case("an unknown DeepSeek-V2 topk_method", "topk_method 'noaux_tc' is not supported for deepseek_v2",
     edited_config("deepseek_v2", topk_method="noaux_tc"), x=v2_x)
case("group_limited_greedy without n_group", "key 'n_group' is missing", edited_config("deepseek_v2", n_group=None),
     x=v2_x)
case("n_group that does not divide the experts", "n_group = 5 must divide the 12 experts",
     edited_config("deepseek_v2", n_group=5, topk_group=2), x=v2_x)
case("DeepSeek-V2 norm_topk_prob = true", "norm_topk_prob = true is not supported for deepseek_v2",
     edited_config("deepseek_v2", norm_topk_prob=True), x=v2_x)
case("DeepSeek-V2 moe_layer_freq 2", "moe_layer_freq other than 1 is not supported",
     edited_config("deepseek_v2", moe_layer_freq=2), x=v2_x)
llama4_x = os.path.join(DIR, "llama4_text", "input_1.npy")
case("a Llama 4 dense layer", "is a dense MLP, not MoE (interleave_moe_layer_step = 2)",
     os.path.join(DIR, "llama4_text"), layer="0", x=llama4_x)
case("a Llama 4 layer not in moe_layers", "is a dense MLP, not MoE (it is not in moe_layers)",
     os.path.join(DIR, "llama4"), layer="1", x=llama4_x)
case("llama4 without text_config", "text_config is missing", edited_config("llama4", text_config=None), x=llama4_x)
case("Llama 4 experts of another width", "config.json implies [6, 40, 56]",
     edited_config("llama4_text", intermediate_size=28), x=llama4_x)

# ---- FIFOs in place of the files: refused at once, never waited on ---------------------------------------

for target in ("config.json", "model.safetensors", "model.safetensors.index.json", "shard", "input"):
    folder = copy("olmoe_sharded" if target in ("model.safetensors.index.json", "shard") else "mixtral")
    x = os.path.join(DIR, "mixtral", "input_1.npy")
    if target == "shard":
        path = os.path.join(folder, "model-00002-of-00002.safetensors")
        x = os.path.join(DIR, "olmoe_sharded", "input_1.npy")
    elif target == "input":
        path = x = os.path.join(work, "fifo-input.npy")
    else:
        path = os.path.join(folder, target)
        if target == "model.safetensors.index.json":
            x = os.path.join(DIR, "olmoe_sharded", "input_1.npy")
    if os.path.exists(path):
        os.remove(path)
    os.mkfifo(path)
    case("a FIFO as the %s" % target, "it is a FIFO, not a regular file", folder, x=x, seconds=5)
    os.remove(path)

# ---- FP8 checkpoints (F8_E4M3 weights with block scales) -----------------------------------------------------

fp8 = os.path.join(DIR, "deepseek_v3_fp8")
fp8_x = os.path.join(fp8, "input_1.npy")
expert = "model.layers.1.mlp.experts.3.up_proj.weight"


def edited_tensors(name, edit):
    folder = copy(name)
    path = os.path.join(folder, "model.safetensors")
    header, body = read_safetensors(path)
    body = bytearray(body)
    edit(header, body)
    write_safetensors(path, header, bytes(body))
    return folder


def drop_scales(header, body):
    del header[expert + "_scale_inv"]


case("an FP8 weight without its scales", "'%s_scale_inv' are missing" % expert, edited_tensors("deepseek_v3_fp8", drop_scales),
     x=fp8_x)


def reshape_scales(header, body):
    header[expert + "_scale_inv"]["shape"] = [3, 2]


case("FP8 scales of the wrong shape", "in blocks of 16 x 24 needs [2, 3]",
     edited_tensors("deepseek_v3_fp8", reshape_scales), x=fp8_x)


def nan_code(header, body):
    begin = header[expert]["data_offsets"][0]
    body[begin + 5] = 0x7F


case("a NaN FP8 code", "tensor '%s' has a NaN code at (0, 5)" % expert, edited_tensors("deepseek_v3_fp8", nan_code),
     x=fp8_x)


def nan_scale(header, body):
    begin = header[expert + "_scale_inv"]["data_offsets"][0]
    body[begin + 4:begin + 8] = struct.pack("<f", float("nan"))


case("a NaN FP8 block scale", "'%s_scale_inv' has NaN or Inf at block (0, 1)" % expert,
     edited_tensors("deepseek_v3_fp8", nan_scale), x=fp8_x)


def huge_scale(header, body):
    begin = header[expert + "_scale_inv"]["data_offsets"][0]
    body[begin + 4:begin + 8] = struct.pack("<f", 3e38)


case("an FP8 block scale whose products overflow", "tensor '%s' at (0, 24): code" % expert,
     edited_tensors("deepseek_v3_fp8", huge_scale), x=fp8_x)
case("FP8 weights without a quantization_config", "is F8_E4M3, but config.json has no quantization_config",
     edited_config("deepseek_v3_fp8", quantization_config=None), x=fp8_x)
case("a quantization method that is not fp8", "quant_method 'gptq' is not supported",
     edited_config("deepseek_v3_fp8", quantization_config={"quant_method": "gptq", "bits": 4}), x=fp8_x)
case("an fp8 format that is not e4m3", "fmt 'e5m2' is not supported",
     edited_config("deepseek_v3_fp8", quantization_config={"quant_method": "fp8", "fmt": "e5m2",
                                                           "weight_block_size": [16, 24]}), x=fp8_x)
case("per-tensor fp8 scales", "weight_block_size must be [rows, columns]",
     edited_config("deepseek_v3_fp8", quantization_config={"quant_method": "fp8", "fmt": "e4m3"}), x=fp8_x)
case("an fp8 block of 0 rows", "key 'weight_block_size' = 0 is out of range",
     edited_config("deepseek_v3_fp8", quantization_config={"quant_method": "fp8", "weight_block_size": [0, 24]}),
     x=fp8_x)
case("fp8 blocks other than the scales'", "needs [1, 1]",
     edited_config("deepseek_v3_fp8", quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}),
     x=fp8_x)

# ---- fbgemm_fp8 (Llama 4 Maverick FP8: a scale per output unit, 3-D FP8 experts) ------------------------------

row_x = os.path.join(DIR, "llama4_text_fp8", "input_1.npy")
gate_up8 = "model.layers.1.feed_forward.experts.gate_up_proj"
shared8 = "model.layers.1.feed_forward.shared_expert.up_proj.weight"


def reshape_expert_scales(header, body):
    header[gate_up8 + "_scale"]["shape"] = [6, 48, 1]


def reshape_row_scales(header, body):
    header[shared8 + "_scale"]["shape"] = [1, 24]


def nan_expert_code(header, body):
    begin = header[gate_up8]["data_offsets"][0]
    body[begin + 2 * 40 * 48 + 3 * 48 + 7] = 0xFF


def inf_row_scale(header, body):
    begin = header[shared8 + "_scale"]["data_offsets"][0]
    body[begin + 8:begin + 12] = struct.pack("<f", float("inf"))


case("fbgemm_fp8 expert scales of the wrong shape",
     "with one scale per expert and output needs [6, 1, 48]", edited_tensors("llama4_text_fp8", reshape_expert_scales),
     x=row_x)
case("fbgemm_fp8 row scales of the wrong shape", "with one scale per row needs [24, 1]",
     edited_tensors("llama4_text_fp8", reshape_row_scales), x=row_x)
case("a NaN code in a 3-D FP8 expert tensor", "tensor '%s' has a NaN code at (2, 3, 7)" % gate_up8,
     edited_tensors("llama4_text_fp8", nan_expert_code), x=row_x)
case("an Inf fbgemm_fp8 row scale", "'%s_scale' has NaN or Inf at block (2, 0)" % shared8,
     edited_tensors("llama4_text_fp8", inf_row_scale), x=row_x)
case("3-D FP8 experts under block-scaled fp8", "F8_E4M3 is read for 2-D weights, and for llama4's experts under fbgemm_fp8",
     edited_config("llama4_text_fp8", quantization_config={"quant_method": "fp8", "weight_block_size": [8, 8]}), x=row_x)

# ---- MXFP4 checkpoints (gpt-oss: U8 blocks and E8M0 scales) -------------------------------------------------

oss_x = os.path.join(DIR, "gpt_oss", "input_1.npy")
oss_scales = "model.layers.1.mlp.experts.down_proj_scales"


def nan_e8m0(header, body):
    begin = header[oss_scales]["data_offsets"][0]
    body[begin + 2 * 3 + 1] = 0xFF  # expert 0, row 2, block 1 (3 blocks a row)


case("an E8M0 scale of 0xff", "'%s' has the NaN scale 0xff at (0, 2, 1)" % oss_scales,
     edited_tensors("gpt_oss", nan_e8m0), x=oss_x)


def huge_e8m0(header, body):
    begin = header[oss_scales]["data_offsets"][0]
    body[begin + 2 * 3 + 1] = 0xFE  # 2^127 (the generator's codes reach 6, which overflows f32 there)


case("an E8M0 scale whose block overflows", "'%s' has the scale 2^127 at (0, 2, 1), whose block overflows float32"
     % oss_scales, edited_tensors("gpt_oss", huge_e8m0), x=oss_x)


def reshape_blocks(header, body):
    header["model.layers.1.mlp.experts.gate_up_proj_blocks"]["shape"] = [8, 192, 1, 32]


case("MXFP4 blocks of the wrong shape", "config.json implies [8, 192, 2, 16]",
     edited_tensors("gpt_oss", reshape_blocks), x=oss_x)


def float_scales(header, body):
    header[oss_scales]["dtype"] = "I8"


case("MXFP4 scales of another dtype", "has dtype 'I8', which is not supported",
     edited_tensors("gpt_oss", float_scales), x=oss_x)
case("MXFP4 in another family", "quant_method 'mxfp4' is read for gpt_oss only",
     edited_config("mixtral", quantization_config={"quant_method": "mxfp4"}))
case("a swiglu_limit transformers does not use", "swiglu_limit = 5.000000 is not supported",
     edited_config("gpt_oss", swiglu_limit=5.0), x=oss_x)
case("MXFP4 with a hidden size off the blocks", "MXFP4 needs hidden_size and intermediate_size multiples of 32",
     edited_config("gpt_oss", intermediate_size=100), x=oss_x)
case("an unquantised gpt-oss without its quantization_config", "experts.gate_up_proj' not found",
     edited_config("gpt_oss", quantization_config=None), x=oss_x)

# ---- --list-layers: the same checks, from the headers -----------------------------------------------------


def listing(title, expected, args):
    global passed, failed
    run = subprocess.run([*EMULATOR, MOE_RUN, *args], capture_output=True, text=True, timeout=600)
    # a usage error adds moe-run's "(run moe-run --help for the options)" line
    message = "\n".join(l for l in run.stderr.strip().splitlines() if not l.startswith("(run moe-run --help"))
    if run.returncode != 0 and expected in message and len(message.splitlines()) == 1:
        passed += 1
        print("ok %s: %s" % (title, message))
    else:
        failed += 1
        print("FAILED %s: exit %d, stderr: %s" % (title, run.returncode, message))


m = copy("mixtral")
path = os.path.join(m, "model.safetensors")
header, body = read_safetensors(path)
del header["model.layers.0.block_sparse_moe.experts.5.w2.weight"]
write_safetensors(path, header, body)
listing("--list-layers on a folder missing a tensor", "experts.5.w2.weight' not found", ["--model", m, "--list-layers"])
listing("--list-layers with FP8 scales of the wrong shape", "needs [2, 3]",
        ["--model", edited_tensors("deepseek_v3_fp8", reshape_scales), "--list-layers"])
listing("--list-layers without --model", "--list-layers needs --model DIR", ["--list-layers"])
listing("--list-layers with --layer", "--list-layers takes --model DIR and nothing else",
        ["--model", mixtral, "--layer", "1", "--list-layers"])

# ---- a run that succeeds: MXFP4 weights under --dtype auto -------------------------------------------------
# moe-run keeps them mxfp4 (exact) and, on an AVX2 target (16 registers and an int8 dot product, where
# mxfp4's E2M1 decode costs five instructions), ends with one note on stderr naming --dtype mxfp4a8; on any
# other target stderr stays empty (moe::faster_decode_twin).
version = subprocess.run([*EMULATOR, MOE_RUN, "--version"], capture_output=True, text=True, timeout=600).stdout
built_for = next((l.split() for l in version.splitlines() if l.startswith("built for:")), [])
target = built_for[3].rstrip(":") if len(built_for) > 3 else ""  # "built for: x86-64 avx2_fma_f16c: ..."
output = os.path.join(work, "mxfp4-auto.npy")
run = subprocess.run([*EMULATOR, MOE_RUN, "--model", os.path.join(DIR, "gpt_oss"), "--layer", "1", "--input", oss_x,
                      "--output", output], capture_output=True, text=True, timeout=600)
note = "--dtype mxfp4a8 runs the same mxfp4 weights about twice as fast at decode"
lines = run.stderr.strip().splitlines()
want_note = target.startswith("avx2")
if run.returncode == 0 and os.path.exists(output) and (
        (want_note and len(lines) == 1 and note in lines[0]) or (not want_note and not lines)):
    passed += 1
    print("ok MXFP4 weights under --dtype auto on target %s: %s" % (target, lines[0] if lines else "no note"))
else:
    failed += 1
    print("FAILED MXFP4 weights under --dtype auto on target %r: exit %d, stderr: %s"
          % (target, run.returncode, run.stderr.strip()))

shutil.rmtree(work)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
