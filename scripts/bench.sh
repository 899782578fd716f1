#!/bin/sh
# Runs the benchmarks of bench/ and prints their tables and JSON.
set -eu
build=${1:-build}
data=${TLM_DATA_DIR:-$(dirname "$0")/../../shared/data}
mkdir -p "$build/bench-out"
"$build/tritlm" import llama2c "$data/llama2c/stories260K.bin" "$data/llama2c/tok512.bin" -o "$build/bench-out/stories260K.tlm"
"$build/bench/bench_decode" "$build/bench-out/stories260K.tlm" "$data/tinystories/dev.txt" --repeat 31 \
    --json "$build/bench-out/decode.json"
