"""Checks a Triton model repository written by `gemma-export --triton REPO` without a Triton server.

Parses both `config.pbtxt` files against Triton's `model_config.proto` (`tritonclient`'s `model_config_pb2`, strict
text format: an unknown field fails), loads the decoder in ONNX Runtime 1.27.0 (the version Triton's onnxruntime
backend pins) and applies the checks that backend and Triton's sequence batcher make when they load the model:
input count (config inputs less the optional ones, plus one per state), names, data types, dims (exact for
outputs), the state pairs (`past_key_values.{i}.*` -> `present.{i}.*` for every layer) and their initial state.

usage: triton_check.py REPO NAME     prints JSON {"ok": true, ...} or exits 1 with the failures on stderr
"""

import json
import os
import sys

from triton_ort import onnxruntime as ort  # ONNX Runtime 1.27.0, beside the venv's own

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

DTYPES = {mc.TYPE_INT64: "tensor(int64)", mc.TYPE_FP32: "tensor(float)"}


def parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), mc.ModelConfig())


def onnx_dims(shape):
    """Triton's view of an ONNX shape: a symbolic or unknown dim is -1; None is an unknown rank (a scalar to it)."""
    if shape is None:
        return []
    return [d if isinstance(d, int) else -1 for d in shape]


def compare_dims(model, config, exact):
    """The onnxruntime backend's CompareDimsSupported for max_batch_size 0 (a scalar takes dims of 1s)."""
    if not model:
        return all(d == 1 for d in config)
    return len(model) == len(config) and all(
        m == c for m, c in zip(model, config) if exact or m != -1
    )


def check(repo, name):
    failures = []
    fail = failures.append
    dec = parse(os.path.join(repo, name, "config.pbtxt"))
    gen = parse(os.path.join(repo, name + "_generate", "config.pbtxt"))
    if dec.name != name or dec.backend != "onnxruntime" or dec.max_batch_size != 0:
        fail(f"decoder config: name {dec.name!r}, backend {dec.backend!r}, max_batch_size {dec.max_batch_size}")
    if gen.backend != "python" or gen.parameters["decoder_model"].string_value != name:
        fail("generate config: python backend with parameter decoder_model = the decoder's name expected")

    session = ort.InferenceSession(
        os.path.join(repo, name, "1", "model.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs = {i.name: i for i in session.get_inputs()}
    overridable = {i.name: i for i in session.get_overridable_initializers()}
    outputs = {o.name: o for o in session.get_outputs()}
    states = list(dec.sequence_batching.state)

    expected = sum(1 for i in dec.input if not i.optional) + len(states)
    if expected != len(inputs):
        fail(f"configuration expects {expected} inputs, model provides {len(inputs)}")
    for i in dec.input:
        t = inputs.get(i.name) or overridable.get(i.name)
        if t is None:
            fail(f"input {i.name}: not in the model")
        elif DTYPES.get(i.data_type) != t.type:
            fail(f"input {i.name}: config {mc.DataType.Name(i.data_type)}, model {t.type}")
        elif not compare_dims(onnx_dims(t.shape), list(i.dims), exact=False):
            fail(f"input {i.name}: config dims {list(i.dims)}, model {t.shape}")
        if i.optional and i.name not in overridable:
            fail(f"input {i.name}: optional but not an initializer of the graph")
    for o in dec.output:
        t = outputs.get(o.name)
        if t is None or DTYPES.get(o.data_type) != t.type:
            fail(f"output {o.name}: missing or of another type")
        elif not compare_dims(onnx_dims(t.shape), list(o.dims), exact=True):
            fail(f"output {o.name}: config dims {list(o.dims)}, model {t.shape}")

    layers = len([n for n in inputs if n.startswith("past_key_values.") and n.endswith(".key")])
    want = {(f"past_key_values.{l}.{kv}", f"present.{l}.{kv}") for l in range(layers) for kv in ("key", "value")}
    got = {(s.input_name, s.output_name) for s in states}
    if got != want or len(states) != len(want):
        fail(f"state pairs: {sorted(got ^ want)} differ")
    for s in states:
        i, o = inputs.get(s.input_name), outputs.get(s.output_name)
        if i is None or o is None:
            continue
        for what, t in (("input", i), ("output", o)):
            if DTYPES.get(s.data_type) != t.type or not compare_dims(onnx_dims(t.shape), list(s.dims), False):
                fail(f"state {s.input_name}: config {list(s.dims)} vs model {what} {t.shape} {t.type}")
        if len(s.initial_state) != 1:
            fail(f"state {s.input_name}: one initial_state expected")
            continue
        init = s.initial_state[0]
        # Triton's sequence batcher: same type, a name, no -1, fixed dims equal to the state's; the state's first
        # shape is its dims with -1 as 1 (SequenceStates::Initialize), so the initial data must have that shape.
        start_shape = [1 if d == -1 else d for d in s.dims]
        if init.data_type != s.data_type or not init.name or not init.zero_data or list(init.dims) != start_shape:
            fail(f"state {s.input_name}: initial_state {list(init.dims)} (Triton starts it at {start_shape})")
    covered = {i.name for i in dec.input} | {s.input_name for s in states}
    for n in inputs:
        if n not in covered:
            fail(f"model input {n} is neither a config input nor a state")
    return failures, {"inputs": len(inputs), "outputs": len(outputs), "states": len(states), "layers": layers}


def main():
    repo, name = sys.argv[1], sys.argv[2]
    failures, counts = check(repo, name)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"ok": True, "onnxruntime": ort.__version__, **counts}))


if __name__ == "__main__":
    main()
