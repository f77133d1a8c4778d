#!/usr/bin/env python3
"""Greedy generation with Hugging Face Optimum (`optimum-onnx`, `ORTModelForCausalLM`) on a gemma-onnx portable
export folder, as a user of Optimum would run it: `ORTModelForCausalLM.from_pretrained(OUT)` and transformers'
`generate`. Prints one JSON object: {"token_ids": [[...generated ids of each prompt, the stop token included when
one ended it...]], "prompt_tokens": [N, ...], "onnx_file": the graph Optimum chose, "optimum_onnx": VERSION}, plus
"logits" (for the first prompt, per step, the last position's logits) with --logits.

The prompts are token ids (--ids '[[2, 17, 5], [2, 9]]', the tiny fixtures have no tokenizer; several prompts run
as one left-padded batch) or text (--prompt, encoded by `AutoTokenizer.from_pretrained(OUT)`). Run by
tests/tests/stack_optimum.rs in the venv of scripts/setup-stacks.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from importlib.metadata import version
from optimum.onnxruntime import ORTModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="export folder (portable graph)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="prompts as a JSON list of token id lists")
    src.add_argument("--prompt", help="prompt text, encoded by the folder's tokenizer")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=32)
    ap.add_argument("--logits", action="store_true", help="also print the first prompt's per-step logits")
    args = ap.parse_args()

    model = ORTModelForCausalLM.from_pretrained(args.model, local_files_only=True)
    if args.ids is not None:
        prompts = [[int(i) for i in p] for p in json.loads(args.ids)]
    else:
        from transformers import AutoTokenizer

        prompts = [AutoTokenizer.from_pretrained(args.model).encode(args.prompt)]
    if not prompts or not all(prompts):
        print("optimum_generate: empty prompt", file=sys.stderr)
        return 2
    # Left padding, as transformers pads a batch for generation; the pad id is masked out.
    width = max(len(p) for p in prompts)
    pad = model.generation_config.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.int64)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.int64)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        output_scores=args.logits,
        return_dict_in_generate=True,
    )
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [] if stops is None else [stops])
    token_ids = []
    for row in out.sequences[:, width:].tolist():
        # transformers pads a row that stopped early with pad_token_id: cut after the first stop token.
        kept = []
        for t in row:
            kept.append(t)
            if t in stops:
                break
        token_ids.append(kept)
    result = {
        "token_ids": token_ids,
        "prompt_tokens": [len(p) for p in prompts],
        "onnx_file": model.path.resolve().relative_to(Path(args.model).resolve()).as_posix(),
        "optimum_onnx": version("optimum-onnx"),
    }
    if args.logits:
        result["logits"] = [s[0].tolist() for s in out.scores[: len(token_ids[0])]]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())