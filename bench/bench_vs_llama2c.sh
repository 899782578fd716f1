#!/bin/sh
# Greedy decoding speed of tritlm against llama2.c's run.c on the same model,
# interleaved run by run so that machine noise hits both alike.
# llama2.c is not part of tritlm: build its run.c yourself
# (gcc -O3 -march=native -o run run.c -lm) and pass the binary.
# usage: LLAMA2C_RUN=/path/to/run bench/bench_vs_llama2c.sh [BUILD] [RUNS]
set -eu
build=${1:-build}
runs=${2:-21}
run=${LLAMA2C_RUN:?set LLAMA2C_RUN to llama2.c run binary}
data=${TLM_DATA_DIR:-$(dirname "$0")/../../shared/data}
ck=$data/llama2c/stories260K.bin
tok=$data/llama2c/tok512.bin
out=$build/bench-out
mkdir -p "$out"
"$build/tritlm" import llama2c "$ck" "$tok" -o "$out/stories260K.tlm" 2>/dev/null
: >"$out/l2c.txt"
: >"$out/tlm.txt"
i=0
while [ $i -lt "$runs" ]; do
    "$run" "$ck" -z "$tok" -n 256 -t 0 2>&1 >/dev/null | sed -n 's/achieved tok\/s: //p' >>"$out/l2c.txt"
    "$build/tritlm" generate -m "$out/stories260K.tlm" -n 256 -t 0 2>&1 >/dev/null | sed -n 's/.*s: \([0-9.]*\) tok\/s/\1/p' >>"$out/tlm.txt"
    i=$((i + 1))
done
med() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
l=$(med "$out/l2c.txt")
t=$(med "$out/tlm.txt")
echo "greedy decode of stories260K, 256 positions, median of $runs interleaved runs"
echo "llama2.c run.c: $l tok/s"
echo "tritlm:         $t tok/s"
awk -v a="$t" -v b="$l" 'BEGIN {printf "ratio tritlm / llama2.c: %.2fx\n", a / b}'
