#!/usr/bin/env python3
"""Max |Δ| between the image features of two exports of one checkpoint (e.g. fp32 and int8) on one image: each
export's own `preprocess.onnx` then `vision_encoder.onnx`, run by ONNX Runtime's Python package on the CPU. Prints
one JSON object (max and mean |Δ|, max |f| and RMS of the reference, seconds per encoder run) for the image features
and for two inner tensors, SigLIP's output (`post_layernorm`) and the projector's normed input: a synthetic
checkpoint's projection weight is all zeros (transformers initialises it so), which makes its features zero
whatever the tower computes. Needs onnxruntime, onnx, numpy and Pillow; writes and deletes a copy of each
`vision_encoder.onnx` with those tensors as extra outputs (`_taps.onnx`, beside it, for its external data).

    python benchmarks/vision_feature_error.py IMAGE REFERENCE_EXPORT OTHER_EXPORT [--threads 2]
"""
import argparse
import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("image")
p.add_argument("reference")
p.add_argument("other")
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

image = np.asarray(Image.open(a.image).convert("RGB"), dtype=np.uint8)


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


# Inner tensors, by the node that writes them (the exporter's node names).
TAPS = {
    "siglip_output": "/vision_tower/post_layernorm/",
    "projector_normed_input": "/multi_modal_projector/norm/gain/",
}


def features(export):
    pre = session(os.path.join(export, "preprocess.onnx"))
    pixels = pre.run(["pixel_values"], {"image": image, "do_pan_and_scan": np.array(False)})[0]
    model = onnx.load(os.path.join(export, "vision_encoder.onnx"), load_external_data=False)
    names = {"image_features": "image_features"}
    for tap, prefix in TAPS.items():
        node = next(n for n in model.graph.node if n.name.startswith(prefix))
        names[tap] = node.output[0]
        model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
    path = os.path.join(export, "_taps.onnx")
    onnx.save(model, path)
    try:
        enc = session(path)
        t = time.perf_counter()
        out = enc.run(list(names.values()), {"pixel_values": pixels})
        seconds = time.perf_counter() - t
    finally:
        os.remove(path)
    return dict(zip(names, out)), seconds


ref, t_ref = features(a.reference)
other, t_other = features(a.other)
report = {"encoder_seconds": {"reference": t_ref, "other": t_other}, "onnxruntime": ort.__version__}
for name, r in ref.items():
    r = r.astype(np.float64)
    d = np.abs(r - other[name].astype(np.float64))
    report[name] = {
        "shape": list(r.shape),
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "reference_max_abs": float(np.abs(r).max()),
        "reference_rms": float(np.sqrt((r ** 2).mean())),
    }
print(json.dumps(report, indent=1))
