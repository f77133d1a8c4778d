#!/usr/bin/env bash
# Mean NLL and size of quantization mixes on the real Gemma 3 270M: one `gemma-export --precision int4 --quant-spec
# SPEC` per argument, scored by `gemma perplexity` on tests/fixtures/real/perplexity.txt (windows of 512), printed as
# markdown rows `| spec | MiB | mean NLL | vs fp32 |`. This is how the `int4`/`int8` defaults were chosen
# (docs/benchmarks.md, "Choosing the quantized defaults").
#
#   benchmarks/quant_study.sh all=8s,emb=8s64 all=8s,emb=8s64,gate=4a
#   FP32_NLL=3.7953526 benchmarks/quant_study.sh all=4a     # skip the fp32 export (transformers' value)
#
#   GEMMA3_270M_DIR   the HF checkpoint   [the bf16 folder `scripts/get-model --hf` builds]
#   GEMMA_BENCH_WORK  where exports go    [~/.cache/gemma-onnx-bench]; each is removed after scoring
#   THREADS           threads of the scoring runs [2]
# Uses the release build of this tree (built first).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $# -gt 0 ]] || { sed -n '2,13p' "$0"; exit 2; }
hf=${GEMMA3_270M_DIR:-$(scripts/get-model --hf | tail -n1)}
work=${GEMMA_BENCH_WORK:-$HOME/.cache/gemma-onnx-bench}/quant-study
threads=${THREADS:-2}
text=tests/fixtures/real/perplexity.txt
cargo build --release -q -p gemma-exporter -p gemma-runtime
bin=target/release
mkdir -p "$work"

# Mean NLL of the export in $1.
nll() {
  "$bin/gemma" perplexity -m "$1" --text "$text" --threads "$threads" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["mean_nll"])'
}

fp32=${FP32_NLL:-}
if [[ -z $fp32 ]]; then
  rm -rf "$work/fp32"
  "$bin/gemma-export" "$hf" -o "$work/fp32" >/dev/null
  fp32=$(nll "$work/fp32")
  rm -rf "$work/fp32"
fi
echo "fp32 mean NLL $fp32"
echo "| spec | MiB | mean NLL | vs fp32 |"
echo "|---|---|---|---|"
for spec in "$@"; do
  out="$work/mix"
  rm -rf "$out"
  "$bin/gemma-export" "$hf" -o "$out" --precision int4 --quant-spec "$spec" >/dev/null
  got=$(nll "$out")
  bytes=$(cat "$out/model.onnx" "$out/model.onnx_data" | wc -c)
  python3 -c "print('| \`$spec\` | %.0f | %.4f | %+.2f%% |' % ($bytes / 2**20, $got, ($got / $fp32 - 1) * 100))"
  rm -rf "$out"
done
