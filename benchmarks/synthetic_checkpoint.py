#!/usr/bin/env python3
"""Writes a synthetic Gemma 3 text checkpoint with the real shapes of gemma-3-1b or of gemma-3-4b's text decoder
(random bf16 weights; one safetensors shard per layer + model.safetensors.index.json, config.json and the Gemma 3
tokenizer), for the side-by-side benchmark at the sizes users run (benchmarks/run.sh --sizes) and to measure the
exporter's memory on a large model. About 2.0 GB (1b) or 7.8 GB (4b) on disk; not committed data.

    python benchmarks/synthetic_checkpoint.py OUT_DIR [--size 4b] [--layers N] [--tokenizer-dir DIR]
    /usr/bin/time -v target/release/gemma-export OUT_DIR -o OUT_DIR-onnx --precision bf16 -q   # "Maximum resident"

Scale: each projection's standard deviation is the real Gemma 3 270M's for that kind of tensor (q/k/v/gate/up
0.0395, o 0.0301, down 0.0162, embedding 0.0408), times sqrt(270M fan-in / this fan-in), the scale of a trained
layer of this width (the 270M's projections sit at 1/sqrt(fan-in)); norm weights are N(0, 0.1) around Gemma's
implicit 1. Random weights measure speed, size and memory; they are not a quality test.
Needs torch and safetensors (e.g. the fixtures venv).
"""
import argparse
import json
import math
import os
import shutil
import subprocess

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
# name: (vocab, hidden, intermediate, layers, heads, kv heads, sliding window, rope scaling, max positions)
SHAPES = {
    "1b": (262144, 1152, 6912, 26, 4, 1, 512, None, 32768),
    "4b": (262208, 2560, 10240, 34, 8, 4, 1024, {"rope_type": "linear", "factor": 8.0}, 131072),
}
HD = 256
# The real 270M's per-kind standard deviation and its fan-in (hidden 640, intermediate 2048, 4 heads of 256).
STD_270M = {"q_proj": (0.0395, 640), "k_proj": (0.0395, 640), "v_proj": (0.0395, 640), "o_proj": (0.0301, 1024),
            "gate_proj": (0.0395, 640), "up_proj": (0.0395, 640), "down_proj": (0.0162, 2048)}

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--size", choices=sorted(SHAPES), default="4b")
p.add_argument("--layers", type=int, help="fewer layers than the real model (export-memory checks)")
p.add_argument("--tokenizer-dir", help="folder with tokenizer.json and tokenizer_config.json "
               "[default: the Gemma 3 270M folder of `scripts/get-model --hf`]")
a = p.parse_args()
V, H, I, L, NH, NKV, WINDOW, ROPE_SCALING, MAX_POS = SHAPES[a.size]
L = a.layers or L
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(0)


def proj(kind, rows, cols):
    std, fan_in = STD_270M[kind]
    return (torch.randn(rows, cols, dtype=torch.bfloat16) * (std * math.sqrt(fan_in / cols))).to(torch.bfloat16)


norm = lambda n: (torch.randn(n) * 0.1).to(torch.bfloat16)
weight_map, total = {}, 0


def shard(name, tensors):
    global total
    save_file(tensors, os.path.join(a.out, name), metadata={"format": "pt"})
    for k, v in tensors.items():
        weight_map[k] = name
        total += v.numel() * 2


emb = (torch.randn(V, H, dtype=torch.bfloat16) * 0.0408).to(torch.bfloat16)
shard("model-embed.safetensors", {"model.embed_tokens.weight": emb, "model.norm.weight": norm(H)})
del emb
for l in range(L):
    p_ = f"model.layers.{l}."
    shard(f"model-layer-{l:02d}.safetensors", {
        p_ + "input_layernorm.weight": norm(H), p_ + "post_attention_layernorm.weight": norm(H),
        p_ + "pre_feedforward_layernorm.weight": norm(H), p_ + "post_feedforward_layernorm.weight": norm(H),
        p_ + "self_attn.q_proj.weight": proj("q_proj", NH * HD, H),
        p_ + "self_attn.k_proj.weight": proj("k_proj", NKV * HD, H),
        p_ + "self_attn.v_proj.weight": proj("v_proj", NKV * HD, H),
        p_ + "self_attn.o_proj.weight": proj("o_proj", H, NH * HD),
        p_ + "self_attn.q_norm.weight": norm(HD), p_ + "self_attn.k_norm.weight": norm(HD),
        p_ + "mlp.gate_proj.weight": proj("gate_proj", I, H), p_ + "mlp.up_proj.weight": proj("up_proj", I, H),
        p_ + "mlp.down_proj.weight": proj("down_proj", H, I),
    })
with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
config = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": V, "hidden_size": H,
    "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV,
    "head_dim": HD, "query_pre_attn_scalar": 256, "sliding_window": WINDOW, "sliding_window_pattern": 6,
    "layer_types": ["full_attention" if (l + 1) % 6 == 0 else "sliding_attention" for l in range(L)],
    "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": ROPE_SCALING,
    "max_position_embeddings": MAX_POS, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
    "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "torch_dtype": "bfloat16",
}
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
tok_dir = a.tokenizer_dir or subprocess.run(
    [os.path.join(HERE, "..", "scripts", "get-model"), "--hf"], capture_output=True, text=True, check=True
).stdout.strip().splitlines()[-1]
for name in ("tokenizer.json", "tokenizer.model"):
    if os.path.exists(os.path.join(tok_dir, name)):
        shutil.copy(os.path.join(tok_dir, name), a.out)
# The 270M's tokenizer_config.json names an image token that its tokenizer.json lacks, so transformers appends it
# as id 262144, past the 1B's embedding (llama.cpp's converter asserts every id has a row): text-only, as the 1B.
tok_config = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
for key in ("image_token", "boi_token", "eoi_token"):
    tok_config.pop(key, None)
with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
    json.dump(tok_config, f, indent=2, ensure_ascii=False)
print(f"{a.out}: {total / 1e9:.2f} GB of bf16 weights ({a.size} shapes, {L} layers)")
