#!/usr/bin/env python3
"""Writes a synthetic Gemma 3 checkpoint with the shapes of gemma-3-4b's text decoder (random bf16 weights, about
8.6 GB in 35 safetensors shards + model.safetensors.index.json) to measure the exporter's memory on a large model.

    python benchmarks/synthetic_checkpoint.py OUT_DIR [--layers 34]
    /usr/bin/time -v target/release/gemma-export OUT_DIR -o OUT_DIR-onnx --precision bf16 -q   # "Maximum resident"

Needs torch and safetensors (e.g. the fixtures venv). Not committed data: the folder is made on demand.
"""
import argparse, json, os
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=34)
a = p.parse_args()
V, H, I, NH, NKV, HD = 262208, 2560, 10240, 8, 4, 256
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(0)
rnd = lambda *s: (torch.randn(*s) * 0.02).to(torch.bfloat16)
weight_map, total = {}, 0
def shard(name, tensors):
    global total
    save_file(tensors, os.path.join(a.out, name), metadata={"format": "pt"})
    for k, v in tensors.items():
        weight_map[k] = name
        total += v.numel() * 2
shard("model-embed.safetensors", {"model.embed_tokens.weight": rnd(V, H), "model.norm.weight": rnd(H)})
for l in range(a.layers):
    p_ = f"model.layers.{l}."
    shard(f"model-layer-{l:02d}.safetensors", {
        p_ + "input_layernorm.weight": rnd(H), p_ + "post_attention_layernorm.weight": rnd(H),
        p_ + "pre_feedforward_layernorm.weight": rnd(H), p_ + "post_feedforward_layernorm.weight": rnd(H),
        p_ + "self_attn.q_proj.weight": rnd(NH * HD, H), p_ + "self_attn.k_proj.weight": rnd(NKV * HD, H),
        p_ + "self_attn.v_proj.weight": rnd(NKV * HD, H), p_ + "self_attn.o_proj.weight": rnd(H, NH * HD),
        p_ + "self_attn.q_norm.weight": rnd(HD), p_ + "self_attn.k_norm.weight": rnd(HD),
        p_ + "mlp.gate_proj.weight": rnd(I, H), p_ + "mlp.up_proj.weight": rnd(I, H), p_ + "mlp.down_proj.weight": rnd(H, I),
    })
with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
config = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": V, "hidden_size": H,
    "intermediate_size": I, "num_hidden_layers": a.layers, "num_attention_heads": NH, "num_key_value_heads": NKV,
    "head_dim": HD, "query_pre_attn_scalar": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
    "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
    "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "torch_dtype": "bfloat16",
}
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"{a.out}: {total / 1e9:.2f} GB of bf16 weights")
