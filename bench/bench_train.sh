#!/bin/sh
# Training throughput, side by side in one run: tritlm against PyTorch on the
# CPU (Debian's python3-torch; used by this benchmark only) for the same
# configuration (stories260K's dimensions), the same batch and thread count.
# usage: bench/bench_train.sh [BUILD] [STEPS] [CTX] [BATCH]
set -eu
build=${1:-build}
steps=${2:-30}
ctx=${3:-512}
batch=${4:-8}
threads=$(nproc)
here=$(dirname "$0")
data=${TLM_DATA_DIR:-$here/../../shared/data}
out=$build/bench-out
mkdir -p "$out"
echo "config: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, ctx $ctx, batch $batch, $threads threads, $steps steps"
"$build/tritlm" train --data "$data/tinystories/train.txt" --tokenizer "$data/llama2c/tok512.bin" \
    --dim 64 --hidden 172 --layers 5 --heads 8 --kv-heads 4 --ctx "$ctx" --batch "$batch" --steps "$steps" \
    --threads "$threads" --eval-every 0 --ckpt-every 0 -o "$out/bench_train.tlm" --json 2>/dev/null >"$out/train_tritlm.json"
# tokens/s of the steps alone (the CSV times each step), skipping the first 3 as PyTorch's side does
tritlm_tps=$(awk -F, 'NR>4 {n++; s+=$5} END {printf "%.0f", s/n}' "$out/bench_train.tlm.train.csv")
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 "$here/train_torch.py" --ctx "$ctx" --batch "$batch" --steps "$steps" --threads "$threads" >"$out/train_torch.json"
    torch_tps=$(sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' "$out/train_torch.json")
else
    echo "PyTorch not installed (apt-get install python3-torch): no comparison"
    torch_tps=0
fi
printf '%-32s %12s\n' "trainer" "tokens/s"
printf '%-32s %12s\n' "tritlm train" "$tritlm_tps"
printf '%-32s %12s\n' "PyTorch (CPU, same model)" "$torch_tps"
if [ "$torch_tps" != 0 ]; then
    awk -v a="$tritlm_tps" -v b="$torch_tps" 'BEGIN {printf "ratio tritlm / PyTorch: %.2fx\n", a / b}'
fi
printf '{"ctx":%s,"batch":%s,"threads":%s,"tritlm_tokens_per_s":%s,"pytorch_tokens_per_s":%s}\n' "$ctx" "$batch" "$threads" "$tritlm_tps" "$torch_tps"
