#!/usr/bin/env python3
"""`python -m onnxruntime_genai.models.builder ARGS` with the known Gemma 3 bug worked around: transformers 5.x
loads Gemma 3's RoPE settings as a nested `rope_parameters` ({"full_attention": {...}, "sliding_attention": {...}},
even from a 4.x config.json with rope_theta / rope_local_base_freq), while the builder (0.18) reads the flat form
(`rope_parameters["rope_type"]`, `rope_theta`, `rope_local_base_freq`). The config object is flattened as the builder
loads it: the global layers' parameters become `rope_parameters`, the sliding layers' theta `rope_local_base_freq`.
Nothing else changes: the weights, precision and options are the builder's own."""
import runpy
import sys

import transformers

_from_pretrained = transformers.AutoConfig.from_pretrained


def _flattened(*args, **kwargs):
    config = _from_pretrained(*args, **kwargs)
    for c in (config, getattr(config, "text_config", None)):
        rp = getattr(c, "rope_parameters", None)
        if isinstance(rp, dict) and "full_attention" in rp:
            full, local = dict(rp["full_attention"]), dict(rp.get("sliding_attention", {}))
            full.setdefault("rope_type", "default")
            c.rope_parameters = full
            c.rope_theta = full.get("rope_theta", 1_000_000.0)
            c.rope_local_base_freq = local.get("rope_theta", 10_000.0)
    return config


transformers.AutoConfig.from_pretrained = _flattened
sys.argv = ["onnxruntime_genai.models.builder"] + sys.argv[1:]
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
