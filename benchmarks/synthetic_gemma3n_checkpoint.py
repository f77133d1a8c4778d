#!/usr/bin/env python3
"""Writes a synthetic Gemma 3n text checkpoint with the shapes of gemma-3n-E4B's language model (random bf16
weights, about 13.7 GB in one safetensors shard per layer + model.safetensors.index.json), to time the exporter and
the runtime on an E4B-sized model (the real checkpoint cannot be downloaded here).

    python benchmarks/synthetic_gemma3n_checkpoint.py ~/.cache/gemma3n-e4b-synthetic
    /usr/bin/time -v target/release/gemma-export ~/.cache/gemma3n-e4b-synthetic -o OUT --precision int4 -q

The tensor names and shapes come from transformers' own Gemma3nForCausalLM built on the meta device (no memory),
so they are exactly what a `gemma3n_text` checkpoint holds. Needs torch, transformers ≥ 4.53 and safetensors (the
fixtures venv). Not committed data: the folder is made on demand; delete it when done.
"""
import argparse, json, os
import torch
from safetensors.torch import save_file
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

p = argparse.ArgumentParser()
p.add_argument("out")
a = p.parse_args()
L = 35
types = ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(L)]
config = {  # google/gemma-3n-E4B's text_config
    "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text", "vocab_size": 262400,
    "vocab_size_per_layer_input": 262144, "hidden_size": 2048, "hidden_size_per_layer_input": 256,
    "intermediate_size": [16384] * L, "num_hidden_layers": L, "num_attention_heads": 8, "num_key_value_heads": 2,
    "head_dim": 256, "max_position_embeddings": 32768, "sliding_window": 512, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
    "final_logit_softcapping": 30.0, "altup_active_idx": 0, "altup_coef_clip": 120.0, "altup_correct_scale": True,
    "altup_num_inputs": 4, "laurel_rank": 64, "num_kv_shared_layers": 15, "layer_types": types,
    "activation_sparsity_pattern": [0.95 if i < 10 else 0.0 for i in range(L)],
    "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "torch_dtype": "bfloat16",
}
with torch.device("meta"):
    model = Gemma3nForCausalLM(Gemma3nTextConfig(**{k: v for k, v in config.items() if k != "architectures"}))
shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
os.makedirs(a.out, exist_ok=True)
gen = torch.Generator().manual_seed(0)

def rnd(shape):
    """Random bf16 N(0, 0.02²), made 16M values at a time (the 2.3e9-value per-layer table stays 4.7 GB)."""
    out = torch.empty(shape, dtype=torch.bfloat16)
    flat = out.view(-1)
    for i in range(0, flat.numel(), 1 << 24):
        n = min(1 << 24, flat.numel() - i)
        flat[i:i + n] = (torch.randn(n, generator=gen) * 0.02).to(torch.bfloat16)
    return out

groups = {}
for k in shapes:
    parts = k.split(".")
    key = f"layer-{int(parts[parts.index('layers') + 1]):02d}" if "layers" in parts else (
        "per-layer-embed" if "per_layer" in k and "embed" in k else "embed")
    groups.setdefault(key, []).append(k)
weight_map, total = {}, 0
for key, names in sorted(groups.items()):
    name = f"model-{key}.safetensors"
    tensors = {k: rnd(shapes[k]) for k in names}
    save_file(tensors, os.path.join(a.out, name), metadata={"format": "pt"})
    for k, v in tensors.items():
        weight_map[k] = name
        total += v.numel() * 2
    del tensors
with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"{a.out}: {total / 1e9:.2f} GB of bf16 weights in {len(groups)} shards")
