#!/usr/bin/env python3
"""The peer engines of benchmarks/run.sh, measured the way `gemma bench` and `gemma perplexity` measure gemma-onnx.
Runs inside the benchmark venv (onnxruntime-genai, llama-cpp-python, numpy, tokenizers); one engine and one
measurement per process, so that the peak RSS it prints is that engine's alone. Prints one JSON object.

    python peers.py genai-speed  --model GENAI_DIR --threads 2 --prompt-tokens 128 --gen-tokens 128 --repeat 3
    python peers.py genai-nll    --model GENAI_DIR --threads 2 --tokens TOKENS.json --context 512
    python peers.py llama-speed  --model MODEL.gguf --threads 2 --prompt-tokens 128 --gen-tokens 128 --repeat 3
    python peers.py llama-nll    --model MODEL.gguf --threads 2 --tokens TOKENS.json --context 512
    python peers.py llama-quantize --model MODEL-bf16.gguf --out MODEL-Q8_0.gguf --type Q8_0 --threads 2
    python peers.py tokens       --model tokenizer.json --text TEXT --bos 2 --tokens TOKENS.json

Speed: a deterministic synthetic prompt (the same ids `gemma bench` uses: BOS, then a fixed LCG sequence), greedy
decoding of --gen-tokens tokens; prefill tok/s = prompt / prefill seconds; decode tok/s = (gen − 1) / seconds of
the remaining steps; time to first token = the prompt's forward pass and the first pick; one row per --prompt-tokens
length (shaped like `gemma bench --json`), medians over --repeat runs after one untimed warm-up run.
NLL: the token ids in TOKENS.json (what `gemma perplexity` scores: the text with one BOS, cut into windows of
--context tokens, each scored from scratch), mean over every predicted token of −log softmax(logits)[next] in
float64.
"""
import argparse
import json
import resource
import statistics
import time

import numpy as np


def synthetic_prompt(n, vocab, bos):
    """Mirror of gemma_runtime::bench::synthetic_prompt."""
    hi = min(vocab, 32000)
    span = max(hi - 3, 1)
    state = 0x2545F4914F6CDD1D
    ids = [bos] if n > 0 else []
    mask = (1 << 64) - 1
    while len(ids) < n:
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        ids.append(3 + (state >> 33) % span)
    return ids


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def nll_of_row(row, target):
    row = row.astype(np.float64)
    m = row.max()
    return float(m + np.log(np.exp(row - m).sum()) - row[target])


def windows(tokens, context):
    return [tokens[i:i + context] for i in range(0, len(tokens), context) if len(tokens[i:i + context]) >= 2]


# ---------------------------------------------------------------- ONNX Runtime GenAI

# GenAI's sliding layers use GroupQueryAttention's window cache with capacity max_length, which must be ≥ the window.
MIN_GENAI_LENGTH = 512


def genai_min_length(path):
    """The shortest `max_length` GenAI accepts for the model at `path`: it sizes its KV buffers by max_length, and
    its sliding layers need at least their window (512 at 270M and 1B, 1024 at 4B: genai_config.json's
    sliding_window.window_size)."""
    cfg = json.load(open(f"{path}/genai_config.json"))
    window = cfg["model"]["decoder"].get("sliding_window", {}).get("window_size", 0)
    return max(MIN_GENAI_LENGTH, window)


def genai_model(path, threads):
    """The model on the CPU provider; threads come from genai_config.json (run.sh sets intra_op_num_threads)."""
    import onnxruntime_genai as og
    cfg = json.load(open(f"{path}/genai_config.json"))
    got = cfg["model"]["decoder"].get("session_options", {}).get("intra_op_num_threads")
    if got != threads:
        raise SystemExit(f"{path}/genai_config.json: intra_op_num_threads is {got}, expected {threads}")
    config = og.Config(path)
    config.clear_providers()
    return og, og.Model(config), cfg["model"]["vocab_size"]


def genai_speed(a):
    og, model, vocab = genai_model(a.model, a.threads)
    cfg = json.load(open(f"{a.model}/genai_config.json"))
    bos = cfg["model"].get("bos_token_id", 2)
    min_length = genai_min_length(a.model)

    def run(prompt, gen):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max(len(prompt) + gen, min_length), do_sample=False)
        g = og.Generator(model, params)
        t0 = time.perf_counter()
        g.append_tokens(prompt)  # the prompt's forward pass
        t1 = time.perf_counter()
        for _ in range(gen - 1):  # pick a token from the current logits, run the model on it
            g.generate_next_token()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    print(json.dumps(speed_rows(a, lambda n: synthetic_prompt(n, vocab, bos), run)))


def speed_rows(a, prompt_of, run):
    """One row per --prompt-tokens length, shaped like `gemma bench --json`: prefill tok/s, decode tok/s and time to
    first token (the prompt's forward pass and the first pick), medians over --repeat runs after a warm-up."""
    rows = []
    for n in a.prompt_tokens:
        prompt = prompt_of(n)
        run(prompt, 8)
        runs = [run(prompt, a.gen_tokens) for _ in range(a.repeat)]
        rows.append({
            "prompt_tokens": n,
            "prefill_tokens_per_s": statistics.median(n / p for p, _ in runs),
            "decode_tokens_per_s": statistics.median((a.gen_tokens - 1) / d for _, d in runs),
            "time_to_first_token_ms": statistics.median(p * 1e3 for p, _ in runs),
        })
    return {"rows": rows, "peak_rss_bytes": peak_rss_bytes()}


def genai_nll(a):
    og, model, vocab = genai_model(a.model, a.threads)
    tokens = json.load(open(a.tokens))
    min_length = genai_min_length(a.model)
    total, count = 0.0, 0
    for w in windows(tokens, a.context):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max(len(w), min_length), do_sample=False)
        g = og.Generator(model, params)
        # The builder's graphs return the last position's logits only: feed one token per step.
        for t in range(len(w) - 1):
            g.append_tokens([w[t]])
            logits = np.asarray(g.get_output("logits")).reshape(-1)
            total += nll_of_row(logits[-vocab:], w[t + 1])
            count += 1
    print(json.dumps({"mean_nll": total / count, "predicted": count, "peak_rss_bytes": peak_rss_bytes()}))


# ---------------------------------------------------------------- llama.cpp

def llama_model(path, threads, logits_all, n_ctx):
    from llama_cpp import Llama
    return Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                 n_threads_batch=threads, logits_all=logits_all, verbose=False)


def llama_speed(a):
    llm = llama_model(a.model, a.threads, False, max(a.prompt_tokens) + a.gen_tokens + 8)

    # Without logits_all, llama-cpp-python leaves `scores` unwritten: the last position's logits come from the
    # context (the one output row of the last eval).
    last_logits = lambda: np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))

    def run(prompt, gen):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = int(np.argmax(last_logits()))
        t1 = time.perf_counter()
        for _ in range(gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(last_logits()))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    print(json.dumps(speed_rows(a, lambda n: synthetic_prompt(n, llm.n_vocab(), llm.token_bos()), run)))


def llama_quantize(a):
    """llama-cpp-python's quantize API (llama_model_quantize) from --model (a bf16/f16 GGUF) to --out."""
    import ctypes
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
                    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[a.type]
    params.nthread = a.threads
    if llama_cpp.llama_model_quantize(a.model.encode(), a.out.encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama_model_quantize failed: {a.model} -> {a.out} ({a.type})")


def llama_nll(a):
    llm = llama_model(a.model, a.threads, True, a.context)
    tokens = json.load(open(a.tokens))
    total, count = 0.0, 0
    for w in windows(tokens, a.context):
        llm.reset()
        llm.eval(w)
        scores = np.asarray(llm.scores[: len(w)])
        for t in range(len(w) - 1):
            total += nll_of_row(scores[t], w[t + 1])
            count += 1
    print(json.dumps({"mean_nll": total / count, "predicted": count, "peak_rss_bytes": peak_rss_bytes()}))


def tokens(a):
    """The ids `gemma perplexity` scores: the text encoded with special tokens, with exactly one leading BOS."""
    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(a.model).encode(open(a.text).read(), add_special_tokens=True).ids
    while ids and ids[0] == a.bos:
        ids = ids[1:]
    json.dump([a.bos] + ids, open(a.tokens, "w"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["genai-speed", "genai-nll", "llama-speed", "llama-nll", "llama-quantize", "tokens"])
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[128])
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tokens")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--text")
    p.add_argument("--bos", type=int, default=2)
    p.add_argument("--out", help="llama-quantize: the GGUF to write")
    p.add_argument("--type", default="Q4_K_M", help="llama-quantize: Q8_0, Q4_K_M or Q4_0")
    a = p.parse_args()
    {"genai-speed": genai_speed, "genai-nll": genai_nll, "llama-speed": llama_speed, "llama-nll": llama_nll,
     "llama-quantize": llama_quantize, "tokens": tokens}[a.mode](a)


if __name__ == "__main__":
    main()
