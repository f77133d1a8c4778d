#!/usr/bin/env python3
"""Summarize an ONNX Runtime profile (the JSON written with GEMMA_ORT_PROFILE=PREFIX or SessionOptions
enable_profiling): total kernel time per operator type, split into prefill runs (more than one token) and decode runs
(one token), plus the slowest nodes. Standard library only.

    GEMMA_ORT_PROFILE=/tmp/prof gemma bench -m DIR --prompt-tokens 128 --gen-tokens 64 --repeat 1
    python3 benchmarks/profile_summary.py /tmp/prof_*.json
"""
import collections
import json
import sys


def main(path):
    events = json.load(open(path))
    # Kernel events belong to the model_run that encloses them in time.
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    # A run is "decode" when it feeds one token: read the sequence length from the embedding lookup's ids or the
    # attention's query shape.
    by_run = collections.defaultdict(list)
    ri = 0
    for k in sorted(kernels, key=lambda e: e["ts"]):
        while ri + 1 < len(runs) and k["ts"] >= runs[ri + 1][0]:
            ri += 1
        by_run[ri].append(k)
    kinds = {}
    for ri, ks in by_run.items():
        seq = None
        for k in ks:
            shapes = k["args"].get("input_type_shape") or []
            op = k["args"].get("op_name")
            if op in ("Gather", "GatherBlockQuantized") and len(shapes) >= 2:
                dims = list(shapes[1].values())[0]  # the ids [batch, seq]
                seq = dims[-1] if dims else 1
                break
            if op == "GroupQueryAttention" and shapes:
                seq = list(shapes[0].values())[0][1]  # query [batch, seq, hidden]
                break
        kinds[ri] = "decode" if seq == 1 else "prefill"
    for kind in ("prefill", "decode"):
        rids = [r for r, k in kinds.items() if k == kind]
        if not rids:
            continue
        per_op = collections.defaultdict(lambda: [0.0, 0])
        per_node = collections.defaultdict(float)
        total = 0.0
        for r in rids:
            for k in by_run[r]:
                op = k["args"].get("op_name", "?")
                per_op[op][0] += k["dur"]
                per_op[op][1] += 1
                per_node[k["name"][: -len("_kernel_time")]] += k["dur"]
                total += k["dur"]
        wall = sum(runs[r][1] - runs[r][0] for r in rids)
        n = len(rids)
        print(f"== {kind}: {n} run(s), {wall / n / 1000:.2f} ms per run (kernels {total / n / 1000:.2f} ms)")
        for op, (d, c) in sorted(per_op.items(), key=lambda x: -x[1][0])[:12]:
            print(f"  {op:36s} {d / n / 1000:8.2f} ms/run {100 * d / total:5.1f}%  ({c // n} nodes)")
        print("  slowest nodes:")
        for name, d in sorted(per_node.items(), key=lambda x: -x[1])[:6]:
            print(f"    {name:60s} {d / n / 1000:8.2f} ms/run")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(p)
        main(p)
