#!/usr/bin/env python3
"""list_layers.py MOE_RUN DIR: moe-run --model F --list-layers on every model folder of DIR (written by
tests/make_checkpoints.py) must list every layer, MoE exactly where MANIFEST.txt has references, with the
experts and top-k of config.json, the stored dtype of the expert weights and the bytes of the block's tensors
as the safetensors headers give them (every tensor under the layer's MoE prefix). MOE_EMULATOR, when set, is the
command that runs MOE_RUN (a cross-compiled build).
"""
import json
import os
import shlex
import struct
import subprocess
import sys

MOE_RUN, DIR = sys.argv[1], sys.argv[2]
EMULATOR = shlex.split(os.environ.get("MOE_EMULATOR", ""))


def headers(folder):
    """{tensor name: (dtype, bytes)} over the folder's safetensors files."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for tensor, info in header.items():
            if tensor != "__metadata__":
                out[tensor] = (info["dtype"], info["data_offsets"][1] - info["data_offsets"][0])
    return out


def block_prefix(config, layer):
    t = config["model_type"]
    if t in ("mixtral", "granitemoe"):
        return "model.layers.%s.block_sparse_moe." % layer
    if t == "dbrx":
        return "transformer.blocks.%s.ffn." % layer
    if t == "grok-1":
        return "model.layers.%s.moe_block." % layer
    if t in ("llama4_text", "llama4"):
        return ("language_model." if t == "llama4" else "") + "model.layers.%s.feed_forward." % layer
    if t == "switch_transformers":
        stack, n = layer.split(".")
        return "%s.block.%s.layer.%s.mlp." % (stack, n, "2" if stack == "decoder" else "1")
    return "model.layers.%s.mlp." % layer


def experts_and_k(config):
    t = config["model_type"]
    if t == "dbrx":
        return config["ffn_config"]["moe_num_experts"], config["ffn_config"]["moe_top_k"]
    if t == "switch_transformers":
        return config["num_experts"], 1
    if t == "llama4":
        config = config["text_config"]
    experts = config.get("num_local_experts", config.get("n_routed_experts", config.get("num_experts")))
    return experts, config["num_experts_per_tok"]


moe_layers = {}
with open(os.path.join(DIR, "MANIFEST.txt")) as f:
    for line in f:
        parts = line.split()
        if len(parts) >= 2:
            moe_layers.setdefault(parts[0], set()).add(parts[1])

failed = 0
for folder_name, expected_moe in sorted(moe_layers.items()):
    folder = os.path.join(DIR, folder_name)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    run = subprocess.run([*EMULATOR, MOE_RUN, "--model", folder, "--list-layers"], capture_output=True, text=True,
                         timeout=300)
    problems = []
    if run.returncode != 0:
        problems.append("exit %d: %s" % (run.returncode, run.stderr.strip()))
    rows = [line.split() for line in run.stdout.splitlines()[2:]]
    tensors = headers(folder)
    experts, k = experts_and_k(config)
    listed_moe = set()
    for row in rows:
        layer, kind = row[0], row[1]
        if kind == "dense":
            continue
        listed_moe.add(layer)
        prefix = block_prefix(config, layer)
        mine = {n: v for n, v in tensors.items() if n.startswith(prefix)}
        megabytes = sum(b for _, b in mine.values()) / 1e6
        weights = [d for n, (d, _) in mine.items()
                   if (".experts." in n or "input_linear" in n) and not n.endswith(("_scale_inv", "_bias"))]
        if config.get("quantization_config", {}).get("quant_method") == "mxfp4":
            weights = ["MXFP4"]
        if int(row[2]) != experts or int(row[3]) != k:
            problems.append("layer %s: experts %s top-k %s, config.json says %d, %d" % (layer, row[2], row[3], experts, k))
        if weights and row[7] != weights[0]:
            problems.append("layer %s: expert weights %s, the file has %s" % (layer, row[7], weights[0]))
        if abs(float(row[-1]) - megabytes) > 0.0015:
            problems.append("layer %s: %s MB, the headers give %.3f" % (layer, row[-1], megabytes))
    if listed_moe != expected_moe:
        problems.append("MoE layers listed %s, expected %s" % (sorted(listed_moe), sorted(expected_moe)))
    if problems:
        failed += 1
        print("FAILED %s: %s" % (folder_name, "; ".join(problems)))
    else:
        print("ok %s: %d layers, MoE %s" % (folder_name, len(rows), ", ".join(sorted(listed_moe))))
sys.exit(1 if failed else 0)
