#!/usr/bin/env python3
"""Side-by-side benchmark driver (benchmarks/run.sh sets up the venv and calls this; see docs/benchmarks.md).

For every precision that `gemma-export --help` lists, and for the peers (ONNX Runtime GenAI models built by its own
builder from the same checkpoint, llama.cpp on the Q4_K_M GGUF), in one invocation on this machine: prefill tok/s
(one prompt length), decode tok/s, peak RSS of the process doing the generation, mean NLL on the same token ids, and
for the exporters the export time and peak RSS. Every measurement runs in its own process, and speed is measured in
rounds that visit every engine once (medians over the rounds), so that a shared machine's changing load hits all
engines alike. Prints one markdown table and writes every raw number to WORK/results-<threads>threads.json.
Standard library only: the peer engines run in the venv's python through peers.py.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, env=None, capture=True, stderr_to=None):
    """Runs `cmd`; returns (stdout, seconds, peak RSS bytes of that child) via wait4. `stderr_to`: a log file for
    chatty tools (the GenAI builder's progress bars)."""
    log(" ".join(cmd) + (f"  (log: {stderr_to})" if stderr_to else ""))
    start = time.perf_counter()
    err = open(stderr_to, "w") if stderr_to else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else None, stderr=err, env=env)
    out = proc.stdout.read().decode() if capture else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
    return out, seconds, usage.ru_maxrss * 1024


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def precisions(export_bin):
    """The values of --precision listed by `gemma-export --help` (clap's long help: one `- name: ...` line each
    under the option's header, or `[possible values: a, b]` in the short form)."""
    text = subprocess.run([export_bin, "--help"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^\s+--precision <PRECISION>\n(.*?)(?=^\s+--[a-z]|\Z)", text, re.S | re.M)
    block = m.group(1) if m else ""
    names = re.findall(r"^\s+- ([a-z0-9]+):", block, re.M)
    if not names:
        short = re.search(r"\[possible values: ([^\]]+)\]", block)
        names = [p.strip() for p in short.group(1).split(",")] if short else []
    if not names:
        raise SystemExit(f"could not read the precisions from `{export_bin} --help`")
    return names


def machine():
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def peer_ort_library(a):
    """The libonnxruntime of the venv's `onnxruntime` wheel (the one ONNX Runtime GenAI runs on), and its version."""
    out = subprocess.run([a.venv_python, "-c", (
        "import onnxruntime, os, glob; d = os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'); "
        "print(onnxruntime.__version__); print(sorted(glob.glob(os.path.join(d, 'libonnxruntime.so*')))[-1])")],
        capture_output=True, text=True, check=True).stdout.split()
    return out[1], out[0]


def baseline_bins(a):
    """The binaries of another build of gemma-onnx, for before/after rows in the same rounds: `--baseline DIR` (a
    folder with gemma-export and gemma), or `--baseline-rev REV`, built here from `git archive REV` into WORK."""
    if a.baseline:
        d = a.baseline
    else:
        src = os.path.join(a.work, f"baseline-src-{a.baseline_rev}")
        if not os.path.exists(os.path.join(src, "Cargo.toml")):
            os.makedirs(src, exist_ok=True)
            archive = subprocess.run(["git", "-C", ROOT, "archive", a.baseline_rev], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", src], input=archive.stdout, check=True)
        target = os.path.join(a.work, "baseline-target")
        env = dict(os.environ, CARGO_TARGET_DIR=target)
        run(["cargo", "build", "--release", "-q", "--manifest-path", os.path.join(src, "Cargo.toml"),
             "-p", "gemma-exporter", "-p", "gemma-runtime"], env=env, capture=False)
        d = os.path.join(target, "release")
    bins = {"export": os.path.join(d, "gemma-export"), "gemma": os.path.join(d, "gemma")}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            raise SystemExit(f"--baseline: no executable {b}")
    return bins


def gemma_onnx(a, bins, entries, model, ort=None, label=None):
    """Every precision with the project's ONNX Runtime (scripts/setup-ort; exported here), or with `ort` =
    (library, version): the same exports on another ONNX Runtime. `label` names another build (the baseline):
    its rows and exports are kept apart from this tree's."""
    env = dict(os.environ)
    m = re.search(r"version=\$\{ORT_VERSION:-([0-9.]+)\}", open(os.path.join(ROOT, "scripts/setup-ort")).read())
    name = f"gemma-onnx {label}" if label else "gemma-onnx"
    engine = f"{name} on ORT {os.environ.get('ORT_VERSION', m.group(1) if m else '?')}"
    if ort:
        env["ORT_DYLIB_PATH"] = ort[0]
        engine = f"{name} on ORT {ort[1]}"
    for prec in (a.peer_ort_precisions if ort else model["precisions"] or precisions(bins["export"])):
        # `int4:emb=4a` = --precision int4 --quant-spec emb=4a
        base, _, spec = prec.partition(":")
        out_dir = os.path.join(a.work, model["prefix"] + re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + "-"
                               + re.sub(r"[^A-Za-z0-9_.-]+", "_", prec))
        secs = rss = None
        if not ort:
            cmd = [bins["export"], model["hf"], "-o", out_dir, "--precision", base, "--force", "-q"]
            cmd += ["--quant-spec", spec] if spec else []
            # The export's own record (bench-export.json): --reuse-exports takes an export made by the same
            # command, with its time and peak RSS, instead of exporting again.
            record = os.path.join(out_dir, "bench-export.json")
            old = json.load(open(record)) if a.reuse_exports and os.path.exists(record) else {}
            if old.get("cmd") == cmd:
                secs, rss = old["seconds"], old["peak_rss_bytes"]
                log(f"reusing {out_dir} (exported in {secs:.0f} s)")
            else:
                _, secs, rss = run(cmd)
                json.dump({"cmd": cmd, "seconds": secs, "peak_rss_bytes": rss}, open(record, "w"))
        size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.startswith("model"))
        threads = ["--threads", str(a.threads)]
        entries.append({
            "size": model["size"], "engine": engine, "precision": prec, "env": env, "model_bytes": size,
            "export_seconds": secs, "export_peak_rss_bytes": rss,
            "speed": [bins["gemma"], "bench", "-m", out_dir, *threads,
                      "--prompt-tokens", ",".join(map(str, a.prompt_tokens)),
                      "--gen-tokens", str(a.gen_tokens), "--repeat", "1", "--json"],
            "nll": model["nll"] and [bins["gemma"], "perplexity", "-m", out_dir, *threads, "--context", str(a.context),
                                     "--json", "--text", os.path.join(ROOT, "tests/fixtures/real/perplexity.txt")],
        })


def genai(a, entries, model):
    builder = [a.venv_python, os.path.join(HERE, "genai_build.py")]
    ort_version = peer_ort_library(a)[1]
    peers = [a.venv_python, os.path.join(HERE, "peers.py")]
    for prec in a.genai_precisions:
        out_dir = os.path.join(a.work, f"{model['prefix']}genai-{prec}")
        secs = rss = None
        if not os.path.exists(os.path.join(out_dir, "genai_config.json")) or a.rebuild:
            try:
                _, secs, rss = run(builder + ["-i", model["hf"], "-o", out_dir, "-p", prec, "-e", "cpu",
                                              "-c", os.path.join(a.work, "genai-cache")],
                                   stderr_to=os.path.join(a.work, f"{model['prefix']}genai-{prec}-build.log"))
            except SystemExit as e:  # noted in the table's log, the other engines still run
                log(f"ORT GenAI's builder failed at {model['size']} {prec}: {e}")
                continue
        cfg_path = os.path.join(out_dir, "genai_config.json")
        cfg = json.load(open(cfg_path))
        cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = a.threads
        json.dump(cfg, open(cfg_path, "w"), indent=2)
        size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if "onnx" in f)
        common = ["--model", out_dir, "--threads", str(a.threads)]
        entries.append({
            "size": model["size"], "engine": f"ORT GenAI 0.18 on ORT {ort_version}", "precision": prec, "env": None,
            "model_bytes": size,
            "export_seconds": secs, "export_peak_rss_bytes": rss,
            "speed": peers + ["genai-speed", *common, "--prompt-tokens", *map(str, a.prompt_tokens),
                              "--gen-tokens", str(a.gen_tokens), "--repeat", "1"],
            "nll": model["nll"] and peers + ["genai-nll", *common, "--tokens", a.tokens_file, "--context",
                                             str(a.context)],
        })


def llama(a, entries, model):
    peers = [a.venv_python, os.path.join(HERE, "peers.py")]
    # OpenMP threads that spin at every barrier stall for a whole time slice whenever the machine has more runnable
    # threads than cores (a shared machine): passive waiting (the default here) keeps llama.cpp 10x faster there.
    env = dict(os.environ, OMP_WAIT_POLICY=a.omp_wait_policy)
    for quant, gguf in model["ggufs"]:
        common = ["--model", gguf, "--threads", str(a.threads)]
        entries.append({
            "size": model["size"], "engine": "llama.cpp (llama-cpp-python)", "precision": quant, "env": env,
            "model_bytes": os.path.getsize(gguf), "export_seconds": model["gguf_seconds"].get(quant),
            "export_peak_rss_bytes": model["gguf_rss"].get(quant),
            "speed": peers + ["llama-speed", *common, "--prompt-tokens", *map(str, a.prompt_tokens),
                              "--gen-tokens", str(a.gen_tokens), "--repeat", "1"],
            "nll": model["nll"] and peers + ["llama-nll", *common, "--tokens", a.tokens_file, "--context",
                                             str(a.context)],
        })


def synthetic(a, size):
    """The synthetic checkpoint of `size` (benchmarks/synthetic_checkpoint.py: the real shapes, random weights) and
    its llama.cpp GGUFs, made once under WORK/synthetic: the converter llama-cpp-python's sdist vendors
    (convert_hf_to_gguf.py, to bf16), then llama-cpp-python's quantize API; the bf16 GGUF is deleted after."""
    d = os.path.join(a.work, "synthetic", f"gemma-3-{size}")
    if not os.path.exists(os.path.join(d, "config.json")):
        run([a.venv_python, os.path.join(HERE, "synthetic_checkpoint.py"), d, "--size", size,
             "--tokenizer-dir", a.hf], capture=False)
    ggufs, seconds, rss = [], {}, {}
    bf16 = f"{d}-bf16.gguf"
    for quant in a.llama_quants:
        gguf = f"{d}-{quant}.gguf"
        if not os.path.exists(gguf):
            if not os.path.exists(bf16):
                if not a.converter:
                    raise SystemExit("--converter: the convert_hf_to_gguf.py of llama-cpp-python's sdist is needed")
                _, secs, peak = run([a.venv_python, a.converter, d, "--outtype", "bf16", "--outfile", bf16 + ".part"],
                                    stderr_to=f"{d}-convert.log")
                os.rename(bf16 + ".part", bf16)
                seconds["convert"], rss["convert"] = secs, peak
            _, secs, peak = run([a.venv_python, os.path.join(HERE, "peers.py"), "llama-quantize", "--model", bf16,
                                 "--out", gguf, "--type", quant, "--threads", str(a.threads)],
                                stderr_to=f"{gguf}.log")
            seconds[quant], rss[quant] = secs + seconds.get("convert", 0), max(peak, rss.get("convert", 0))
        ggufs.append((quant, gguf))
    if os.path.exists(bf16):
        os.remove(bf16)
    return d, ggufs, seconds, rss


def models(a):
    """The checkpoints to measure, one per --sizes entry: `270m` is the real model (--hf, and --gguf for
    llama.cpp, with NLL), `1b` and `4b` synthetic ones (speed, size and memory only). Our fp32 export of the 4B
    (17 GB) is left out unless --fp32-4b."""
    out = []
    for size in a.sizes:
        if size == "270m":
            out.append({"size": size, "hf": a.hf, "ggufs": [("Q4_K_M", a.gguf)], "gguf_seconds": {}, "gguf_rss": {},
                        "nll": True, "prefix": "", "precisions": a.precisions})
            continue
        hf, ggufs, secs, rss = synthetic(a, size)
        precs = a.precisions or precisions(a.export_bin)
        if size == "4b" and not a.fp32_4b:
            precs = [p for p in precs if p.partition(":")[0] not in ("fp32", "fp16", "bf16")]
        out.append({"size": size, "hf": hf, "ggufs": ggufs, "gguf_seconds": secs, "gguf_rss": rss, "nll": False,
                    "prefix": f"{size}-", "precisions": precs})
    return out


def measure(a, entries):
    """NLL once per engine, then speed in rounds: every round runs every engine once (one warm-up and one timed run
    each, in its own process), so a change of load on a shared machine hits every engine alike; medians over the
    rounds are reported."""
    expected = len(json.load(open(a.tokens_file)))
    results = []
    for e in entries:
        nll = last_json(run(e["nll"], env=e["env"])[0]) if e["nll"] else {"mean_nll": None, "predicted": None}
        if "tokens" in nll and nll["tokens"] != expected:
            raise SystemExit(f"{e['engine']} scored {nll['tokens']} tokens, the peers {expected}")
        results.append({k: v for k, v in e.items() if k not in ("speed", "nll", "env")}
                       | {"mean_nll": nll["mean_nll"], "predicted": nll["predicted"], "rounds": []})
    for r in range(a.rounds):
        log(f"speed round {r + 1}/{a.rounds}")
        for e, res in zip(entries, results):
            out = last_json(run(e["speed"], env=e["env"])[0])
            # gemma bench and peers.py alike: one row per prompt length; decode and TTFT from the first length.
            flat = {"decode_tokens_per_s": out["rows"][0]["decode_tokens_per_s"],
                    "time_to_first_token_ms": out["rows"][0]["time_to_first_token_ms"],
                    "peak_rss_bytes": out["peak_rss_bytes"]}
            for row in out["rows"]:
                flat[f"prefill_{row['prompt_tokens']}_tokens_per_s"] = row["prefill_tokens_per_s"]
            res["rounds"].append(flat)
            log(f"{res['size']} {res['engine']} {res['precision']}: {json.dumps(flat)}")
    for res in results:
        rounds = res["rounds"]
        for key in rounds[0]:
            res[key] = statistics.median(x[key] for x in rounds)
    return results


def table(results, info, a):
    mib = lambda b: "–" if b is None else f"{b / 2**20:.0f}"
    predicted = next((r["predicted"] for r in results if r["predicted"]), None)
    lines = [
        f"{info['date']}, {info['cpu']}, {info['logical_cores']} logical cores, {a.threads} threads; "
        f"load average {info['load_average'][0]:.2f} at start, {info['load_average_end'][0]:.2f} at the end; "
        f"prompts of {', '.join(map(str, a.prompt_tokens))} tokens, {a.gen_tokens} generated (decode and TTFT at the "
        f"{a.prompt_tokens[0]}-token prompt), median of {a.rounds} interleaved rounds"
        + (f"; NLL over {predicted} predicted tokens of tests/fixtures/real/perplexity.txt (windows of {a.context}), "
           "real 270M only (synthetic weights are no quality test)." if predicted else "."),
        "",
        "| size | engine | precision | " + " | ".join(f"prefill {n} tok/s" for n in a.prompt_tokens)
        + " | decode tok/s | TTFT ms | peak RSS MiB | mean NLL | vs our fp32 | model MiB | export s / peak MiB |",
        "|---" * (10 + len(a.prompt_tokens)) + "|",
    ]
    for r in results:
        ref = next((x["mean_nll"] for x in results if x["size"] == r["size"]
                    and x["engine"].startswith("gemma-onnx") and x["precision"] == "fp32"), None)
        nll = "–" if r["mean_nll"] is None else f"{r['mean_nll']:.4f}"
        rel = "–" if ref is None or r["mean_nll"] is None else f"{100 * (r['mean_nll'] / ref - 1):+.2f}%"
        exp = "–" if r.get("export_seconds") is None else f"{r['export_seconds']:.1f} / {mib(r['export_peak_rss_bytes'])}"
        prefill = " | ".join(f"{r[f'prefill_{n}_tokens_per_s']:.0f}" for n in a.prompt_tokens)
        lines.append(
            f"| {r['size']} | {r['engine']} | {r['precision']} | {prefill} | {r['decode_tokens_per_s']:.1f} "
            f"| {r['time_to_first_token_ms']:.0f} | {mib(r['peak_rss_bytes'])} | {nll} | {rel} "
            f"| {mib(r['model_bytes'])} | {exp} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="Hugging Face checkpoint folder of Gemma 3 270M (also the tokenizer "
                   "of the synthetic sizes)")
    p.add_argument("--sizes", type=lambda s: s.split(","), default=["270m"],
                   help="comma-separated: 270m (the real model), 1b, 4b (synthetic checkpoints with the real shapes, "
                        "made under WORK/synthetic) [270m]")
    p.add_argument("--converter", help="convert_hf_to_gguf.py of llama-cpp-python's sdist (for 1b/4b)")
    p.add_argument("--llama-quants", nargs="*", default=["Q8_0", "Q4_K_M"],
                   help="llama.cpp quantizations of the synthetic sizes [Q8_0 Q4_K_M]")
    p.add_argument("--fp32-4b", action="store_true", help="also export and run our fp32/fp16/bf16 at 4b (17 GB)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY for llama.cpp (an OpenMP build) [PASSIVE: spinning threads stall on a "
                        "machine with more runnable threads than cores]")
    p.add_argument("--gguf", required=True, help="Q4_K_M GGUF of the same model")
    p.add_argument("--work", required=True, help="folder for exports and peer models (outside the repo)")
    p.add_argument("--venv-python", required=True, help="python of the venv with the peer engines")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[128, 1024],
                   help="prompt lengths; decode and TTFT are taken at the first [128 1024]")
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="speed rounds over all engines (medians reported)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--precisions", nargs="*",
                   help="gemma-onnx precisions [default: all of gemma-export --help]; PRECISION:SPEC adds "
                        "--quant-spec SPEC, e.g. int4:emb=4a")
    p.add_argument("--genai-precisions", nargs="*", default=["int4", "int8", "fp32"])
    p.add_argument("--genai-sizes", type=lambda s: s.split(","), metavar="SIZES",
                   help="the --sizes GenAI's builder runs on (default: all); its builder holds the checkpoint in "
                        "fp32 torch tensors, ~16 GB at 4b")
    p.add_argument("--peer-ort-precisions", nargs="*", default=["fp32", "int8", "int4"],
                   help="gemma-onnx precisions also run on GenAI's onnxruntime wheel (none: skip)")
    p.add_argument("--skip", nargs="*", default=[], choices=["gemma-onnx", "genai", "llama"])
    p.add_argument("--rebuild", action="store_true", help="rebuild the GenAI models even if cached")
    p.add_argument("--reuse-exports", action="store_true",
                   help="keep an export made by the same command (with its recorded time and peak RSS)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also measure another build's gemma-export and gemma (a folder holding both), in the same "
                        "rounds: before/after figures of a change from one run")
    p.add_argument("--baseline-rev", metavar="REV",
                   help="like --baseline, with the binaries built from git revision REV (into WORK)")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    info = machine()

    run(["cargo", "build", "--release", "-q", "-p", "gemma-exporter", "-p", "gemma-runtime"], capture=False)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bins = {"export": os.path.join(target, "release", "gemma-export"), "gemma": os.path.join(target, "release", "gemma")}
    a.export_bin = bins["export"]

    # The token ids every engine scores: what `gemma perplexity` scores (one BOS, then the text).
    a.tokens_file = os.path.join(a.work, "perplexity-tokens.json")
    text = os.path.join(ROOT, "tests/fixtures/real/perplexity.txt")
    bos = json.load(open(os.path.join(a.hf, "config.json"))).get("bos_token_id", 2)
    run([a.venv_python, os.path.join(HERE, "peers.py"), "tokens", "--model", os.path.join(a.hf, "tokenizer.json"),
         "--text", text, "--bos", str(bos), "--tokens", a.tokens_file])

    entries = []
    for model in models(a):
        if "gemma-onnx" not in a.skip:
            gemma_onnx(a, bins, entries, model)
            if a.baseline or a.baseline_rev:
                gemma_onnx(a, baseline_bins(a), entries, model, label=f"baseline {a.baseline_rev or a.baseline}")
        if "genai" not in a.skip and (a.genai_sizes is None or model["size"] in a.genai_sizes):
            genai(a, entries, model)
            if "gemma-onnx" not in a.skip and a.peer_ort_precisions and model["nll"]:
                # The same exports on GenAI's ONNX Runtime, to compare the graphs on one ORT version.
                gemma_onnx(a, bins, entries, model, ort=peer_ort_library(a))
        if "llama" not in a.skip:
            llama(a, entries, model)
    results = measure(a, entries)
    info["load_average_end"] = os.getloadavg()
    out = os.path.join(a.work, f"results-{a.threads}threads.json")
    json.dump({"machine": info, "results": results}, open(out, "w"), indent=2)
    print(table(results, info, a))


if __name__ == "__main__":
    main()
