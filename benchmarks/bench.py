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


def gemma_onnx(a, bins, entries, ort=None, label=None):
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
    for prec in (a.peer_ort_precisions if ort else a.precisions or precisions(bins["export"])):
        # `int4:emb=4a` = --precision int4 --quant-spec emb=4a
        base, _, spec = prec.partition(":")
        out_dir = os.path.join(a.work, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", prec))
        secs = rss = None
        if not ort:
            cmd = [bins["export"], a.hf, "-o", out_dir, "--precision", base, "--force", "-q"]
            _, secs, rss = run(cmd + (["--quant-spec", spec] if spec else []))
        size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.startswith("model"))
        threads = ["--threads", str(a.threads)]
        entries.append({
            "engine": engine, "precision": prec, "env": env, "model_bytes": size,
            "export_seconds": secs, "export_peak_rss_bytes": rss,
            "speed": [bins["gemma"], "bench", "-m", out_dir, *threads, "--prompt-tokens", str(a.prompt_tokens),
                      "--gen-tokens", str(a.gen_tokens), "--repeat", "1", "--json"],
            "nll": [bins["gemma"], "perplexity", "-m", out_dir, *threads, "--context", str(a.context), "--json",
                    "--text", os.path.join(ROOT, "tests/fixtures/real/perplexity.txt")],
        })


def genai(a, entries):
    builder = [a.venv_python, os.path.join(HERE, "genai_build.py")]
    ort_version = peer_ort_library(a)[1]
    peers = [a.venv_python, os.path.join(HERE, "peers.py")]
    for prec in a.genai_precisions:
        out_dir = os.path.join(a.work, f"genai-{prec}")
        secs = rss = None
        if not os.path.exists(os.path.join(out_dir, "genai_config.json")) or a.rebuild:
            _, secs, rss = run(builder + ["-i", a.hf, "-o", out_dir, "-p", prec, "-e", "cpu",
                                          "-c", os.path.join(a.work, "genai-cache")],
                               stderr_to=os.path.join(a.work, f"genai-{prec}-build.log"))
        cfg_path = os.path.join(out_dir, "genai_config.json")
        cfg = json.load(open(cfg_path))
        cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = a.threads
        json.dump(cfg, open(cfg_path, "w"), indent=2)
        size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if "onnx" in f)
        common = ["--model", out_dir, "--threads", str(a.threads)]
        entries.append({
            "engine": f"ORT GenAI 0.18 on ORT {ort_version}", "precision": prec, "env": None, "model_bytes": size,
            "export_seconds": secs, "export_peak_rss_bytes": rss,
            "speed": peers + ["genai-speed", *common, "--prompt-tokens", str(a.prompt_tokens),
                              "--gen-tokens", str(a.gen_tokens), "--repeat", "1"],
            "nll": peers + ["genai-nll", *common, "--tokens", a.tokens_file, "--context", str(a.context)],
        })


def llama(a, entries):
    peers = [a.venv_python, os.path.join(HERE, "peers.py")]
    common = ["--model", a.gguf, "--threads", str(a.threads)]
    entries.append({
        "engine": "llama.cpp (llama-cpp-python)", "precision": "Q4_K_M", "env": None,
        "model_bytes": os.path.getsize(a.gguf), "export_seconds": None, "export_peak_rss_bytes": None,
        "speed": peers + ["llama-speed", *common, "--prompt-tokens", str(a.prompt_tokens),
                          "--gen-tokens", str(a.gen_tokens), "--repeat", "1"],
        "nll": peers + ["llama-nll", *common, "--tokens", a.tokens_file, "--context", str(a.context)],
    })


def measure(a, entries):
    """NLL once per engine, then speed in rounds: every round runs every engine once (one warm-up and one timed run
    each, in its own process), so a change of load on a shared machine hits every engine alike; medians over the
    rounds are reported."""
    expected = len(json.load(open(a.tokens_file)))
    results = []
    for e in entries:
        nll = last_json(run(e["nll"], env=e["env"])[0])
        if "tokens" in nll and nll["tokens"] != expected:
            raise SystemExit(f"{e['engine']} scored {nll['tokens']} tokens, the peers {expected}")
        results.append({k: v for k, v in e.items() if k not in ("speed", "nll", "env")}
                       | {"mean_nll": nll["mean_nll"], "predicted": nll["predicted"], "rounds": []})
    for r in range(a.rounds):
        log(f"speed round {r + 1}/{a.rounds}")
        for e, res in zip(entries, results):
            out = last_json(run(e["speed"], env=e["env"])[0])
            if "rows" in out:  # gemma bench
                row = out["rows"][0]
                out = {"prefill_tokens_per_s": row["prefill_tokens_per_s"],
                       "decode_tokens_per_s": row["decode_tokens_per_s"], "peak_rss_bytes": out["peak_rss_bytes"]}
            res["rounds"].append(out)
    for res in results:
        rounds = res["rounds"]
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"):
            res[key] = statistics.median(x[key] for x in rounds)
    return results


def table(results, info, a):
    ref = next((r["mean_nll"] for r in results if r["engine"].startswith("gemma-onnx") and r["precision"] == "fp32"),
               None)
    mib = lambda b: "–" if b is None else f"{b / 2**20:.0f}"
    lines = [
        f"{info['date']}, {info['cpu']}, {info['logical_cores']} logical cores, {a.threads} threads; "
        f"load average at start {info['load_average'][0]:.2f}; prompt {a.prompt_tokens} tokens, "
        f"{a.gen_tokens} generated, median of {a.rounds} rounds; NLL over {results[0]['predicted'] if results else 0} "
        f"predicted tokens of tests/fixtures/real/perplexity.txt (windows of {a.context}).",
        "",
        "| engine | precision | prefill tok/s | decode tok/s | peak RSS MiB | mean NLL | vs our fp32 | model MiB "
        "| export s / peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rel = "–" if ref is None else f"{100 * (r['mean_nll'] / ref - 1):+.2f}%"
        exp = "–" if r.get("export_seconds") is None else f"{r['export_seconds']:.1f} / {mib(r['export_peak_rss_bytes'])}"
        lines.append(
            f"| {r['engine']} | {r['precision']} | {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} "
            f"| {mib(r['peak_rss_bytes'])} | {r['mean_nll']:.4f} | {rel} | {mib(r['model_bytes'])} | {exp} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="Hugging Face checkpoint folder of Gemma 3 270M")
    p.add_argument("--gguf", required=True, help="Q4_K_M GGUF of the same model")
    p.add_argument("--work", required=True, help="folder for exports and peer models (outside the repo)")
    p.add_argument("--venv-python", required=True, help="python of the venv with the peer engines")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="speed rounds over all engines (medians reported)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--precisions", nargs="*",
                   help="gemma-onnx precisions [default: all of gemma-export --help]; PRECISION:SPEC adds "
                        "--quant-spec SPEC, e.g. int4:emb=4a")
    p.add_argument("--genai-precisions", nargs="*", default=["int4", "int8", "fp32"])
    p.add_argument("--peer-ort-precisions", nargs="*", default=["fp32", "int8", "int4"],
                   help="gemma-onnx precisions also run on GenAI's onnxruntime wheel (none: skip)")
    p.add_argument("--skip", nargs="*", default=[], choices=["gemma-onnx", "genai", "llama"])
    p.add_argument("--rebuild", action="store_true", help="rebuild the GenAI models even if cached")
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

    # The token ids every engine scores: what `gemma perplexity` scores (one BOS, then the text).
    a.tokens_file = os.path.join(a.work, "perplexity-tokens.json")
    text = os.path.join(ROOT, "tests/fixtures/real/perplexity.txt")
    bos = json.load(open(os.path.join(a.hf, "config.json"))).get("bos_token_id", 2)
    run([a.venv_python, os.path.join(HERE, "peers.py"), "tokens", "--model", os.path.join(a.hf, "tokenizer.json"),
         "--text", text, "--bos", str(bos), "--tokens", a.tokens_file])

    entries = []
    if "gemma-onnx" not in a.skip:
        gemma_onnx(a, bins, entries)
        if a.baseline or a.baseline_rev:
            gemma_onnx(a, baseline_bins(a), entries, label=f"baseline {a.baseline_rev or a.baseline}")
    if "genai" not in a.skip:
        genai(a, entries)
        if "gemma-onnx" not in a.skip and a.peer_ort_precisions:
            # The same exports on GenAI's ONNX Runtime, to compare the graphs on one ORT version.
            gemma_onnx(a, bins, entries, ort=peer_ort_library(a))
    if "llama" not in a.skip:
        llama(a, entries)
    results = measure(a, entries)
    info["load_average_end"] = os.getloadavg()
    out = os.path.join(a.work, f"results-{a.threads}threads.json")
    json.dump({"machine": info, "results": results}, open(out, "w"), indent=2)
    print(table(results, info, a))


if __name__ == "__main__":
    main()
