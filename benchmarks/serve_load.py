#!/usr/bin/env python3
"""Load test of OpenAI-compatible servers: N concurrent streaming chat clients (default 1, 4, 8) for a fixed time
each, reporting aggregate generated tok/s, time to first token p50/p95, requests and errors; optionally the
server's resident memory (RSS) over many requests. Standard library only.

Starts the servers itself on 127.0.0.1 with the same thread count:
  benchmarks/serve_load.py --gemma target/release/gemma --model gemma-3-270m-onnx --threads 2
  benchmarks/serve_load.py --llama-python ~/.cache/gemma-onnx-bench-venv/bin/python \\
      --gguf ~/.cache/gemma-test-models/gemma-3-270m-q4_k_m.gguf --threads 2
or measures one already running: --base-url http://127.0.0.1:8080/v1.
Memory: --rss-requests 1000 sends that many requests (8 at a time) and prints the server's RSS every 100.
Prints a markdown table (one row per server and client count)."""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle for a child.",
    "List some facts about the Moon.",
]


def wait_ready(base, timeout=300):
    u = urllib.parse.urlparse(base)
    start = time.time()
    while time.time() - start < timeout:
        try:
            # /health (gemma serve: 503 while loading); servers without it answer 404, then /v1/models.
            for path in ("/health", "/v1/models"):
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    return
                if r.status != 404:
                    break
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{base} not ready after {timeout} s")


def one_request(base, model, prompt, max_tokens, api_key):
    """Streams one chat completion: (tokens, ttft seconds) or raises."""
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    start = time.time()
    c.request("POST", u.path.rstrip("/") + "/chat/completions", json.dumps(body), headers)
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    ttft, chunks, usage = None, 0, None
    for line in r:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        obj = json.loads(data)
        if obj.get("usage"):
            usage = obj["usage"].get("completion_tokens")
        for ch in obj.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.time() - start
    c.close()
    return (usage if usage is not None else chunks), (ttft if ttft is not None else time.time() - start)


def load(base, model, clients, seconds, max_tokens, api_key):
    stop = time.time() + seconds
    lock = threading.Lock()
    tokens, ttfts, errors, done = [0], [], [0], [0]

    def client(i):
        k = 0
        while time.time() < stop:
            prompt = PROMPTS[(i + k) % len(PROMPTS)]
            k += 1
            try:
                n, ttft = one_request(base, model, prompt, max_tokens, api_key)
                with lock:
                    tokens[0] += n
                    ttfts.append(ttft)
                    done[0] += 1
            except Exception as e:  # noqa: BLE001 (counted, reported)
                with lock:
                    errors[0] += 1
                print(f"[serve_load] error: {e}", file=sys.stderr)

    start = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    q = statistics.quantiles(ttfts, n=20) if len(ttfts) >= 2 else [ttfts[0] if ttfts else 0.0] * 19
    return {"clients": clients, "tok_s": tokens[0] / elapsed, "ttft_p50": statistics.median(ttfts) if ttfts else 0,
            "ttft_p95": q[18], "requests": done[0], "errors": errors[0]}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_over_requests(base, model, pid, count, api_key):
    sent = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if sent[0] >= count:
                    return
                sent[0] += 1
                k = sent[0]
            one_request(base, model, PROMPTS[k % len(PROMPTS)], 4, api_key)
            if k % 100 == 0:
                print(f"[serve_load] {k} requests: RSS {rss_mb(pid):.0f} MB", file=sys.stderr)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def start(cmd, base):
    print(f"[serve_load] starting: {' '.join(cmd)}", file=sys.stderr)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(base)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url")
    ap.add_argument("--gemma", help="the gemma binary (starts `gemma serve`)")
    ap.add_argument("--model", help="export folder for --gemma")
    ap.add_argument("--llama-python", help="python with llama-cpp-python[server] (starts llama_cpp.server)")
    ap.add_argument("--gguf", help="GGUF for --llama-python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=8, help="gemma serve --max-batch (1: no batching)")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rss-requests", type=int, default=0)
    ap.add_argument("--api-key")
    a = ap.parse_args()
    servers = []
    if a.base_url:
        servers.append(("server", None, a.base_url))
    if a.gemma:
        port = 18080
        cmd = [a.gemma, "serve", "-m", a.model, "--port", str(port), "--threads", str(a.threads),
               "--max-batch", str(a.max_batch)]
        servers.append((f"gemma serve (max-batch {a.max_batch})", cmd, f"http://127.0.0.1:{port}/v1"))
    if a.llama_python:
        port = 18081
        cmd = [a.llama_python, "-m", "llama_cpp.server", "--model", a.gguf, "--port", str(port),
               "--n_threads", str(a.threads), "--n_ctx", "2048", "--verbose", "False",
               # The Q4_K_M GGUF carries no chat template; without this llama-cpp-python falls back to a Llama 2
               # prompt, on which Gemma answers with end-of-turn at once (0 tokens per request).
               "--chat_format", "gemma",
               # By default a new request interrupts the one being generated: concurrent clients would then each
               # get a few tokens. Queue them instead, as a server must.
               "--interrupt_requests", "False"]
        servers.append(("llama.cpp server", cmd, f"http://127.0.0.1:{port}/v1"))
    # Every server is started first, then each client count visits every server in turn: the rows of one client
    # count are measured back to back, so a change in the machine's load hits both servers alike.
    procs = []
    try:
        for name, cmd, base in servers:
            procs.append(start(cmd, base) if cmd else None)
        rows = {name: [] for name, _, _ in servers}
        for n in [int(x) for x in a.clients.split(",")]:
            for name, cmd, base in servers:
                r = load(base, "gemma", n, a.seconds, a.max_tokens, a.api_key)
                if r["requests"] and not r["tok_s"]:
                    sys.exit(f"{name} generated no tokens at all ({r['requests']} requests): check its chat format")
                rows[name].append(f"| {name} | {n} | {r['tok_s']:.1f} | {r['ttft_p50']:.3f} | "
                                  f"{r['ttft_p95']:.3f} | {r['requests']} | {r['errors']} |")
                print(f"[serve_load] {rows[name][-1]}", file=sys.stderr, flush=True)
        print("| server | clients | tok/s | TTFT p50 (s) | TTFT p95 (s) | requests | errors |")
        print("|---|---|---|---|---|---|---|")
        for name, _, _ in servers:
            print("\n".join(rows[name]), flush=True)
        for (name, cmd, base), proc in zip(servers, procs):
            if a.rss_requests and proc:
                rss_over_requests(base, "gemma", proc.pid, a.rss_requests, a.api_key)
    finally:
        for proc in procs:
            if proc:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
