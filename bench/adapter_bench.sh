#!/bin/sh
# Personalizing a quantized model without rewriting it, side by side in one
# run: a device's own text (TRAIN, one line a sample) adapts MODEL (kept as
# it is, e.g. ternary in flash) in four ways, each scored on VAL (one line a
# sample, the int8 KV cache, token by token as a device decodes):
#   - the model itself;
#   - its norm gains tuned (--tensors norms: the model stays quantized);
#   - a rank-R adapter (fed update --lora R --rank R) applied while decoding
#     (--adapter: the model untouched, the adapter's bytes beside it);
#   - the same update merged into the model by the server (fed aggregate:
#     the changed matrices become fp32), and that merged model quantized
#     again post-training (--pack P), what a server would ship otherwise.
# Then, for each TARGET, the firmware with and without the adapter: RAM,
# flash and instructions per token (128 positions, context 256, int8 KV).
# usage: bench/adapter_bench.sh BUILD_DIR MODEL.tlm TRAIN.txt VAL.txt OUT_DIR [STEPS] [RANK] [PACK] [TARGETS...]
set -eu
build=$1 model=$2 train=$3 val=$4 out=$5 steps=${6:-150} rank=${7:-4} pack=${8:-t3}
shift 5
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
targets=${*:-cortex-m7 esp32c3}
tlm=$build/tritlm
mkdir -p "$out"
opts="--split lines --steps $steps --batch 8 --ctx 32 --lr 1e-2 --seed 1 --threads 2"
t0=$(date +%s)
# shellcheck disable=SC2086
"$tlm" fed update -m "$model" --data "$train" $opts --lora "$rank" --rank "$rank" -o "$out/adapter.tlmu" 2>/dev/null
# shellcheck disable=SC2086
"$tlm" fed update -m "$model" --data "$train" $opts --tensors norms -o "$out/norms.tlmu" 2>/dev/null
"$tlm" fed aggregate -m "$model" -o "$out/norms.tlm" "$out/norms.tlmu" 2>/dev/null
"$tlm" fed aggregate -m "$model" -o "$out/merged.tlm" "$out/adapter.tlmu" 2>/dev/null
"$tlm" quantize -m "$out/merged.tlm" -o "$out/requant.tlm" --pack "$pack" 2>/dev/null
score() { # MODEL [--adapter U] -> "loss top1"
    m=$1
    shift
    "$tlm" eval -m "$m" --text "$val" --split lines --kv-int8 "$@" --json |
        sed -n 's/.*"loss":\([0-9.e+-]*\).*"top1":\([0-9.e+-]*\).*/\1 \2/p'
}
size() { wc -c <"$1" | tr -d ' '; }
csv=$out/adapter_bench.csv
echo "variant,model_bytes,extra_bytes,val_loss,val_top1" >"$csv"
row() { # NAME MODEL_BYTES EXTRA_BYTES "loss top1"
    echo "$1,$2,$3,$(echo "$4" | tr ' ' ',')" >>"$csv"
    echo "$4" | awk -v n="$1" -v b="$2" -v e="$3" '{ printf "| %s | %s | %s | %.4f | %.4f |\n", n, b, e, $1, $2 }'
}
printf '| variant | model bytes | extra bytes | val loss | val top-1 |\n|---|---|---|---|---|\n'
row "the model itself" "$(size "$model")" 0 "$(score "$model")"
row "norm gains tuned (fed aggregate)" "$(size "$out/norms.tlm")" 0 "$(score "$out/norms.tlm")"
row "rank-$rank adapter while decoding (--adapter)" "$(size "$model")" "$(size "$out/adapter.tlmu")" \
    "$(score "$model" --adapter "$out/adapter.tlmu")"
row "the adapter merged (fed aggregate)" "$(size "$out/merged.tlm")" 0 "$(score "$out/merged.tlm")"
row "merged, then quantized again (--pack $pack)" "$(size "$out/requant.tlm")" 0 "$(score "$out/requant.tlm")"
echo
# firmware/build.sh with the counting plugin, every build decoding all 128
# positions (--no-stop: an adapted model may end its text sooner), so that
# the two builds are compared at the same positions
plugin=${TLM_PLUGIN:-$build/libinsncount.so}
fw() { # TARGET DIR [build.sh options] -> its KEY VALUE report
    t=$1 d=$2
    shift 2
    TLM_BIN=$tlm TLM_PLUGIN=$plugin TLM_FW_CACHE=$out "$(dirname "$0")/../firmware/build.sh" "$t" "$model" "$d" \
        --ctx 256 -n 128 --kv-int8 --no-stop --run "$@"
}
key() { echo "$r" | sed -n "s/^$1 //p"; }
printf '| target | build | RAM bytes | flash bytes | instructions/token | vs without |\n|---|---|---|---|---|---|\n'
echo "target,build,ram_bytes,flash_bytes,insns_per_token" >"$out/adapter_firmware.csv"
for t in $targets; do
    base=""
    for b in plain adapter; do
        if [ $b = adapter ]; then r=$(fw "$t" "$out/fw-$t-$b" --adapter "$out/adapter.tlmu"); else r=$(fw "$t" "$out/fw-$t-$b"); fi
        [ "$(key EXIT)" = 0 ] && [ "$(key TOKENS)" = 128 ] || { echo "$t $b: firmware failed" >&2; echo "$r" >&2; exit 1; }
        ins=$(key INSNS_PER_TOKEN) ram=$(($(key STATIC) + $(key STACK))) fl=$(key FLASH)
        [ -z "$base" ] && base=$ins
        echo "$t,$b,$ram,$fl,$ins" >>"$out/adapter_firmware.csv"
        printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$b" "$ram" "$fl" "$ins" \
            "$(awk -v a="$ins" -v b="$base" 'BEGIN { printf "%+.1f%%", 100 * (a - b) / b }')"
    done
done
echo "CSV: $csv $out/adapter_firmware.csv ($(($(date +%s) - t0)) s)"
