#!/usr/bin/env python3
"""Greedy generation with ONNX Runtime GenAI (`onnxruntime_genai`) on a gemma-onnx export folder, as a user of
GenAI would run it: the folder is loaded as it is, through its genai_config.json. Prints one JSON object:
{"token_ids": [...generated ids, the stop token included when one ended the run...], "prompt_tokens": N,
 "decode_tokens_per_s": X, "onnxruntime_genai": VERSION}, plus "logits" (per step, the last position's logits
from which that token was chosen) with --logits.

The prompt is token ids (--ids '[2, 17, 5]', the tiny fixtures have no tokenizer) or text (--prompt, encoded by
GenAI's tokenizer from the folder's tokenizer files; --add-bos prepends bos_token_id, which GenAI's Gemma 3
tokenizer does not add). Run by tests/tests/stack_genai.rs in the venv of scripts/setup-stacks.
"""
import argparse
import json
import sys
import time

import onnxruntime_genai as og


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="export folder (with genai_config.json)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="prompt token ids as a JSON list")
    src.add_argument("--prompt", help="prompt text, encoded by GenAI's tokenizer")
    ap.add_argument("--add-bos", action="store_true", help="prepend bos_token_id to --prompt's ids")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, help="intra-op threads of the decoder session")
    ap.add_argument("--logits", action="store_true", help="also print each step's last-position logits")
    args = ap.parse_args()

    config = og.Config(args.model)
    config.clear_providers()  # CPU
    if args.threads:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}))
    model = og.Model(config)
    with open(f"{args.model}/genai_config.json") as f:
        genai_config = json.load(f)
    if args.ids is not None:
        ids = [int(i) for i in json.loads(args.ids)]
    else:
        ids = [int(i) for i in og.Tokenizer(model).encode(args.prompt)]
        if args.add_bos:
            ids.insert(0, genai_config["model"]["bos_token_id"])
    if not ids:
        print("genai_generate: empty prompt", file=sys.stderr)
        return 2

    # max_length sizes GenAI's KV buffers. The sliding layers' GroupQueryAttention needs a buffer of at least the
    # window (GenAI gives them min(max_length, window + 16) rows), so max_length may not be below the window even
    # for a short run; the loop below stops after --max-new-tokens itself.
    window = genai_config["model"]["decoder"].get("sliding_window", {}).get("window_size", 0)
    max_length = min(genai_config["model"]["context_length"], max(len(ids) + args.max_new_tokens, window))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=max_length)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)  # prefill (GenAI runs the prompt here)
    generated = []
    logits = []
    first_done = None
    while not generator.is_done() and len(generated) < args.max_new_tokens:
        generator.generate_next_token()
        if args.logits:
            # The output of the run whose logits chose this token (the prefill in append_tokens for the first one,
            # the run inside generate_next_token after that), [batch, positions, vocab]: keep the last position.
            logits.append([float(x) for x in generator.get_output("logits")[0, -1, :]])
        generated.append(int(generator.get_next_tokens()[0]))
        if first_done is None:
            first_done = time.perf_counter()
    end = time.perf_counter()
    decode_steps = len(generated) - 1
    tok_s = decode_steps / (end - first_done) if decode_steps > 0 and end > first_done else 0.0
    out = {
        "token_ids": generated,
        "prompt_tokens": len(ids),
        "decode_tokens_per_s": tok_s,
        "onnxruntime_genai": og.__version__,
    }
    if args.logits:
        out["logits"] = logits
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
