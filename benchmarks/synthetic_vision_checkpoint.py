#!/usr/bin/env python3
"""Writes a synthetic Gemma3ForConditionalGeneration checkpoint with the released 4B's image path (SigLIP So400m/14:
27 layers, 1152 wide, 896 px, 256 soft tokens per image) and a 2-layer text decoder of the 4B's width (hidden 2560,
vocabulary 262208), random bf16 weights, plus the Gemma 3 tokenizer and chat template of the Gemma 3 270M folder that
`scripts/get-model --hf` builds (or --tokenizer-dir) and a hub-style preprocessor_config.json. It measures the image path's time to first token and memory where no real
4B weights are reachable (docs/benchmarks.md, "The image path").

    python benchmarks/synthetic_vision_checkpoint.py OUT_DIR [--text-layers 2] [--tokenizer-dir DIR]
    target/release/gemma-export OUT_DIR -o OUT_DIR-onnx -q
    /usr/bin/time -v target/release/gemma-vision describe photo.jpg -m OUT_DIR-onnx --threads 2 --json

Needs torch and transformers (the fixtures venv). About 2.3 GB on disk; not committed data.
"""
import argparse
import json
import os
import shutil
import subprocess

import torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--text-layers", type=int, default=2)
p.add_argument("--tokenizer-dir", help="folder with tokenizer.json and tokenizer_config.json "
               "[default: the Gemma 3 270M folder of `scripts/get-model --hf`]")
a = p.parse_args()
tokenizer_dir = a.tokenizer_dir or subprocess.run(
    [os.path.join(HERE, "..", "scripts", "get-model"), "--hf"], stdout=subprocess.PIPE, text=True, check=True
).stdout.strip().splitlines()[-1]

layers = a.text_layers
config = Gemma3Config(
    text_config=dict(
        hidden_size=2560, intermediate_size=10240, num_hidden_layers=layers, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, vocab_size=262208, sliding_window=1024, query_pre_attn_scalar=256,
        rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
        max_position_embeddings=131072,
        layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)],
    ),
    vision_config=dict(
        model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
        num_attention_heads=16, image_size=896, patch_size=14, num_channels=3, layer_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh", vision_use_head=False,
    ),
    mm_tokens_per_image=256, boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
)
torch.manual_seed(0)
model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16)
model.save_pretrained(a.out, max_shard_size="1GB")
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tokenizer_dir, f), os.path.join(a.out, f))
hub = {"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
       "size": {"height": 896, "width": 896}, "resample": 2, "do_resize": True, "do_rescale": True,
       "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
       "do_convert_rgb": None, "do_pan_and_scan": None, "pan_and_scan_min_crop_size": None,
       "pan_and_scan_max_num_crops": None, "pan_and_scan_min_ratio_to_activate": None, "image_seq_length": 256}
with open(os.path.join(a.out, "preprocessor_config.json"), "w") as f:
    json.dump(hub, f, indent=2)
print(a.out)
