"""Runs the repository's generate model (`NAME_generate/1/model.py`, unchanged) the way Triton would, without Triton.

A stand-in for `triton_python_backend_utils` gives `model.py` what it uses (Tensor, InferenceRequest with
correlation ids and sequence flags, InferenceResponse, TritonError). Its `InferenceRequest.exec()` plays Triton's
sequence batcher with implicit state over the decoder `NAME/1/model.onnx` in ONNX Runtime 1.27.0, from the
decoder's `config.pbtxt`: request inputs are checked against the config's inputs, a START request gets each
state's initial state (its dims with -1 as 1, zero data, as Triton's SequenceStates::Initialize does), every
`present.*` output becomes the next request's `past_key_values.*`, END frees the sequence.

usage: triton_generate.py REPO NAME --ids JSON -n N
prints JSON {"token_ids": [...], "logits": [[...] per decoder request], "open_sequences": 0, ...}
"""

import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
from triton_ort import onnxruntime as ort

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

NUMPY = {mc.TYPE_INT64: np.int64, mc.TYPE_INT32: np.int32, mc.TYPE_FP32: np.float32, mc.TYPE_STRING: np.object_}


class TritonError(Exception):
    def message(self):
        return str(self)


class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def is_cpu(self):
        return True


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self._outputs, self._error = output_tensors, error

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def output_tensors(self):
        return self._outputs


class Sequencer:
    """Triton's sequence batcher with implicit state, for one decoder model (max_batch_size 0)."""

    def __init__(self, repo, name):
        with open(os.path.join(repo, name, "config.pbtxt")) as f:
            self.config = text_format.Parse(f.read(), mc.ModelConfig())
        path = os.path.join(repo, name, "1", "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.name, self.states, self.requests = name, {}, 0
        self.last_logits = []  # each request's last-position logits, for the caller to compare

    def start_state(self):
        state = {}
        for s in self.config.sequence_batching.state:
            shape = [1 if d == -1 else d for d in s.dims]
            init = s.initial_state[0]
            if list(init.dims) != shape:  # Triton would hand the model a buffer of another size than the shape
                raise TritonError(f"{s.input_name}: initial_state {list(init.dims)} but Triton starts at {shape}")
            state[s.input_name] = np.zeros(shape, dtype=NUMPY[s.data_type])
        return state

    def infer(self, model_name, inputs, requested, correlation_id, flags):
        if model_name != self.name:
            raise TritonError(f"unknown model {model_name}")
        if correlation_id == 0:
            raise TritonError("a sequence model needs a correlation id")
        config_inputs = {i.name: i for i in self.config.input}
        feed = {}
        for t in inputs:
            c = config_inputs.get(t.name())
            a = t.as_numpy()
            if c is None or a.dtype != NUMPY[c.data_type] or a.ndim != len(c.dims):
                raise TritonError(f"input {t.name()}: {a.dtype} {a.shape} does not match the config")
            if any(d not in (-1, n) for d, n in zip(c.dims, a.shape)):
                raise TritonError(f"input {t.name()}: shape {a.shape}, config dims {list(c.dims)}")
            feed[t.name()] = a
        missing = [n for n, c in config_inputs.items() if not c.optional and n not in feed]
        if missing:
            raise TritonError(f"missing inputs {missing}")
        if flags & pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START:
            self.states[correlation_id] = self.start_state()
        if correlation_id not in self.states:
            raise TritonError(f"sequence {correlation_id} was not started")
        state = self.states[correlation_id]
        feed.update(state)
        names = [o.name for o in self.config.output]
        pairs = [(s.input_name, s.output_name) for s in self.config.sequence_batching.state]
        values = self.session.run(names + [o for _, o in pairs], feed)
        self.requests += 1
        self.last_logits.append(values[0][0, -1].tolist())
        for k, (i, _) in enumerate(pairs):
            state[i] = values[len(names) + k]
        if flags & pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
            del self.states[correlation_id]
        return InferenceResponse([Tensor(n, v) for n, v in zip(names, values) if n in requested])


class InferenceRequest:
    sequencer = None

    def __init__(self, model_name, requested_output_names, inputs, correlation_id=0, flags=0, **_):
        self.args = (model_name, inputs, requested_output_names, correlation_id, flags)

    def exec(self):
        try:
            return InferenceRequest.sequencer.infer(*self.args)
        except TritonError as e:
            return InferenceResponse([], e)


def by_name(tensors, name):
    return next((t for t in tensors if t.name() == name), None)


pb = types.ModuleType("triton_python_backend_utils")
pb.Tensor, pb.InferenceRequest, pb.InferenceResponse, pb.TritonError = (
    Tensor,
    InferenceRequest,
    InferenceResponse,
    TritonError,
)
pb.PreferredMemory = lambda kind, device: (kind, device)
pb.TRITONSERVER_MEMORY_CPU = 0
pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1  # tritonserver.h
pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
pb.get_input_tensor_by_name = lambda request, name: by_name(request.inputs, name)
pb.get_output_tensor_by_name = lambda response, name: by_name(response.output_tensors(), name)
sys.modules["triton_python_backend_utils"] = pb


class Request:
    def __init__(self, inputs):
        self.inputs = inputs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("repo")
    p.add_argument("name")
    p.add_argument("--ids", required=True)
    p.add_argument("-n", type=int, default=16)
    a = p.parse_args()
    InferenceRequest.sequencer = Sequencer(a.repo, a.name)
    folder = os.path.join(a.repo, a.name + "_generate")
    with open(os.path.join(folder, "config.pbtxt")) as f:
        config = text_format.Parse(f.read(), mc.ModelConfig())
    spec = importlib.util.spec_from_file_location("gemma_generate_model", os.path.join(folder, "1", "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_repository": folder,
            "model_version": "1",
        }
    )
    ids = np.array(json.loads(a.ids), dtype=np.int64)
    request = Request([Tensor("input_ids", ids), Tensor("max_tokens", np.array([a.n], dtype=np.int32))])
    (response,) = model.execute([request])
    if response.has_error():
        sys.exit(f"model.py: {response.error().message()}")
    out = pb.get_output_tensor_by_name(response, "output_ids").as_numpy()
    print(
        json.dumps(
            {
                "token_ids": [int(i) for i in out],
                "logits": InferenceRequest.sequencer.last_logits,
                "decoder_requests": InferenceRequest.sequencer.requests,
                "open_sequences": len(InferenceRequest.sequencer.states),
                "onnxruntime": ort.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
