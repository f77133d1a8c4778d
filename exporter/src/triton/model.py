"""Triton Python backend model written by gemma-export: the tokenizer and a greedy decode loop (BLS) over the
decoder model named by the `decoder_model` parameter, whose KV cache Triton keeps as implicit state.

Inputs: `text_input` (string; needs the Python package `tokenizers` and the tokenizer.json beside this file) or
`input_ids` (int64 [n]); `max_tokens` (int32 [1], default 64). Outputs: `text_output` (the generated text, special
tokens skipped; empty without a tokenizer) and `output_ids` (int64, the generated ids, a final stop id included).
Greedy, like `gemma generate --temperature 0`; it stops at the ids of the `stop_token_ids` parameter.

Each request is one sequence of the decoder: its own correlation id, the first step flagged START, the last END.
Every KV state starts as one zero row (Triton starts a -1 dimension at 1), which a leading 0 in `attention_mask`
masks; the tokens' positions start at 0.
"""

import itertools
import json
import os
import random

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MAX_TOKENS = 64
START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.decoder = params["decoder_model"]
        self.stops = {int(s) for s in params.get("stop_token_ids", "").split(",") if s}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = None
        path = os.path.join(here, "tokenizer.json")
        if os.path.isfile(path):
            try:
                from tokenizers import Tokenizer
            except ImportError:
                Tokenizer = None  # text_input is refused with a message; input_ids still work
            if Tokenizer is not None:
                self.tokenizer = Tokenizer.from_file(path)
        # Correlation ids unique across instances and restarts: a random 40-bit base, then a counter.
        self.sequences = itertools.count(random.SystemRandom().getrandbits(40) << 20)

    def execute(self, requests):
        return [self.respond(r) for r in requests]

    def respond(self, request):
        try:
            prompt, max_tokens = self.read(request)
            ids = self.generate(prompt, max_tokens)
            text = self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer else ""
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
                    pb_utils.Tensor("output_ids", np.array(ids, dtype=np.int64)),
                ]
            )
        except Exception as e:  # every failure becomes the request's error, never the server's
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))

    def read(self, request):
        """The prompt's token ids and max_tokens of one request."""
        max_tokens = DEFAULT_MAX_TOKENS
        t = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        if t is not None:
            max_tokens = int(t.as_numpy().reshape(-1)[0])
        if max_tokens < 0:
            raise ValueError(f"max_tokens is {max_tokens}: give 0 or more")
        ids = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if ids is not None:
            return [int(i) for i in ids.as_numpy().reshape(-1)], max_tokens
        text = pb_utils.get_input_tensor_by_name(request, "text_input")
        if text is None:
            raise ValueError("give text_input or input_ids")
        if self.tokenizer is None:
            raise ValueError("text_input needs tokenizer.json beside model.py and the Python package tokenizers")
        value = text.as_numpy().reshape(-1)[0]
        value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        return self.tokenizer.encode(value).ids, max_tokens

    def generate(self, prompt, max_tokens):
        """Greedy ids after `prompt`: one prefill step, then one token per step, as one decoder sequence."""
        if not prompt:
            raise ValueError("the prompt is empty")
        sequence = next(self.sequences)
        out, feed, cached, flags = [], list(prompt), 0, START
        while len(out) < max_tokens:
            last = len(out) + 1 == max_tokens
            logits = self.step(sequence, feed, cached, flags | (END if last else 0))
            flags = 0
            cached += len(feed)
            token = int(np.argmax(logits))
            out.append(token)
            if token in self.stops:
                if not last:  # end the sequence now, so Triton frees its slot and state
                    self.step(sequence, [token], cached, END)
                break
            feed = [token]
        return out

    def step(self, sequence, feed, cached, flags):
        """One decoder request: `feed` after `cached` tokens; the last position's logits."""
        n = len(feed)
        mask = np.ones((1, 1 + cached + n), dtype=np.int64)
        mask[0, 0] = 0  # the zero row every KV state starts with
        inputs = [
            pb_utils.Tensor("input_ids", np.array([feed], dtype=np.int64)),
            pb_utils.Tensor("attention_mask", mask),
            pb_utils.Tensor("position_ids", np.arange(cached, cached + n, dtype=np.int64)[None]),
            pb_utils.Tensor("num_logits_to_keep", np.array([1], dtype=np.int64)),
        ]
        request = pb_utils.InferenceRequest(
            model_name=self.decoder,
            requested_output_names=["logits"],
            inputs=inputs,
            correlation_id=sequence,
            flags=flags,
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.decoder}: {response.error().message()}")
        logits = pb_utils.get_output_tensor_by_name(response, "logits")
        return logits.as_numpy()[0, -1]
