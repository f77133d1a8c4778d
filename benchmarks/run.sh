#!/usr/bin/env bash
# Side-by-side benchmark on this machine, in one invocation: gemma-onnx at every precision `gemma-export --help`
# lists, ONNX Runtime GenAI 0.18 (models built by its own builder from the same checkpoint) and llama.cpp
# (llama-cpp-python on the Q4_K_M GGUF), all with the same thread count. Prints one markdown table: prefill tok/s at
# 128 and 1024 prompt tokens, decode tok/s, time to first token, peak RSS, mean NLL on tests/fixtures/real/perplexity.txt
# (the same token ids for every engine; real 270M only), model size, export time and peak RSS. Raw numbers go to
# $GEMMA_BENCH_WORK/results-<threads>threads.json. The latest figures and how to read them: docs/benchmarks.md.
# `--sizes 270m,1b,4b` adds synthetic checkpoints with the real 1B and 4B shapes (benchmarks/synthetic_checkpoint.py),
# which llama.cpp runs at Q8_0 and Q4_K_M: converted by the convert_hf_to_gguf.py that llama-cpp-python's sdist
# vendors (downloaded once into ~/.cache), quantized by llama-cpp-python's quantize API.
#
#   benchmarks/run.sh                      # everything, 2 threads, the real 270M
#   benchmarks/run.sh --sizes 270m,1b,4b --genai-precisions int4 --rounds 2
#   THREADS=4 benchmarks/run.sh --skip llama
#   benchmarks/run.sh --precisions fp32 int4 --genai-precisions int4 --rounds 5
#
# Extra arguments go to benchmarks/bench.py (--help lists them). Nothing is written inside the repository:
#   GEMMA_BENCH_VENV  python venv with the peers   [~/.cache/gemma-onnx-bench-venv]; made on first use. Building
#                     llama-cpp-python compiles llama.cpp (~15 min on 2 cores), once.
#   GEMMA_BENCH_WORK  exports, GenAI models, results [~/.cache/gemma-onnx-bench]
#   GEMMA3_270M_DIR   the HF checkpoint            [the bf16 folder `scripts/get-model --hf` builds]
#   GEMMA3_270M_GGUF  the Q4_K_M GGUF              [the project's default model, from `scripts/get-model`]
# The GenAI builder needs torch: when the fixtures venv (~/.cache/gemma-onnx-fixtures-venv, see
# tests/fixtures/README.md) has it, the benchmark venv borrows it through a .pth file instead of downloading it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${THREADS:-2}
venv=${GEMMA_BENCH_VENV:-$HOME/.cache/gemma-onnx-bench-venv}
work=${GEMMA_BENCH_WORK:-$HOME/.cache/gemma-onnx-bench}
fixtures_venv=${GEMMA_FIXTURES_VENV:-$HOME/.cache/gemma-onnx-fixtures-venv}
gguf=${GEMMA3_270M_GGUF:-$(scripts/get-model | tail -n1)}
hf=${GEMMA3_270M_DIR:-$(scripts/get-model --hf | tail -n1)}
[[ -f $gguf ]] || { echo "error: no GGUF at $gguf (set GEMMA3_270M_GGUF, or unset it to use scripts/get-model)" >&2; exit 1; }
[[ -f $hf/config.json ]] || { echo "error: no checkpoint folder at $hf (set GEMMA3_270M_DIR, or unset it to use scripts/get-model --hf)" >&2; exit 1; }

scripts/setup-ort >/dev/null

if [[ ! -x $venv/bin/python ]]; then
  echo "[bench] creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
py=$venv/bin/python
# Peers named after --skip are neither installed nor built.
skipped=" $(printf '%s\n' "$@" | sed -n '/^--skip$/,/^--/p' | { grep -v '^--' || true; } | tr '\n' ' ')"
"$py" -c 'import tokenizers' 2>/dev/null || "$venv/bin/pip" install -q tokenizers
[[ $skipped == *" genai "* ]] || "$py" -c 'import numpy, tokenizers, onnx, onnx_ir, transformers, onnxruntime_genai' 2>/dev/null || {
  echo "[bench] installing onnxruntime-genai 0.18 and its builder's dependencies" >&2
  "$venv/bin/pip" install -q numpy tokenizers onnx onnx_ir transformers "onnxruntime-genai==0.18.*"
}
# torch: for the GenAI builder, and for the synthetic sizes' checkpoint script and llama.cpp's converter.
synthetic_sizes=$(printf '%s\n' "$@" | grep -qE '(^|,)(1b|4b)(,|$)' && echo yes || true)
{ [[ $skipped == *" genai "* ]] && [[ -z $synthetic_sizes ]]; } || "$py" -c 'import torch' 2>/dev/null || {
  site=$(echo "$fixtures_venv"/lib/python3*/site-packages)
  if [[ -d $site/torch ]]; then
    echo "$site" > "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-borrowed-torch.pth"
  else
    "$venv/bin/pip" install -q torch
  fi
}
# Not GGML_NATIVE: on a CPU that advertises AMX, the native build crashed at the first decode step; these are the
# instruction sets of x86-64 AVX-512 machines, without AMX.
llama_version=0.3.36
[[ $skipped == *" llama "* ]] || "$py" -c 'import llama_cpp' 2>/dev/null || {
  echo "[bench] building llama-cpp-python from source (compiles llama.cpp; ~15 min on 2 cores, once)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "$venv/bin/pip" install -q "llama-cpp-python==$llama_version"
}
# The synthetic sizes: llama.cpp's converter from the same sdist, with its requirements (torch is borrowed above).
converter=()
if [[ $skipped != *" llama "* ]] && [[ -n $synthetic_sizes ]]; then
  sdist=$HOME/.cache/llama-cpp-python-sdist
  script=$sdist/llama_cpp_python-$llama_version/vendor/llama.cpp/convert_hf_to_gguf.py
  [[ -f $script ]] || {
    echo "[bench] downloading llama-cpp-python $llama_version's sdist for convert_hf_to_gguf.py" >&2
    # Only this package as source: with --no-binary :all: pip also builds cmake from source for the metadata step.
    "$venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$llama_version" -d "$sdist"
    tar -xzf "$sdist/llama_cpp_python-$llama_version.tar.gz" -C "$sdist"
  }
  "$py" -c 'import sentencepiece, safetensors, torch, transformers' 2>/dev/null \
    || "$venv/bin/pip" install -q sentencepiece safetensors transformers protobuf
  converter=(--converter "$script")
fi

exec python3 benchmarks/bench.py --hf "$hf" --gguf "$gguf" --work "$work" --venv-python "$py" --threads "$threads" \
  "${converter[@]}" "$@"
