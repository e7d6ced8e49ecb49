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


def case(title, expected, model, layer="1", x=None, output=None, extra=()):
    """Runs moe-run and checks the refusal."""
    global passed, failed
    if x is None:
        x = os.path.join(DIR, "mixtral", "input_1.npy")
    if output is None:
        output = os.path.join(work, "out-%d.npy" % (passed + failed))
    command = [*EMULATOR, MOE_RUN, "--model", model, "--layer", layer, "--input", x, "--output", output, *extra]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
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

shutil.rmtree(work)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
