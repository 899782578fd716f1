#!/bin/sh
# Instructions per generated token on each emulated target, fp32 build
# against ternary-integer builds of the same model, in one run: 128
# positions from a fixed prompt, context 256 (fp32 with its fp32 KV cache
# and as much RAM as the target has; ternary with the int8 KV cache in the
# RAM budget). Prints a Markdown table and a CSV.
# usage: bench/firmware_bench.sh BUILD_DIR MODEL_FP32.tlm [OUT_DIR] [TARGETS...]
set -eu
build=$1 model=$2 out=${3:-$build/fw-bench}
shift 2
[ $# -gt 0 ] && shift
targets=${*:-cortex-m7 cortex-m4 cortex-m0plus esp32c3 lx106}
tlm=$build/tritlm
mkdir -p "$out"
"$tlm" quantize -m "$model" -o "$out/t2.tlm" --pack t2 2>/dev/null
"$tlm" quantize -m "$model" -o "$out/t3.tlm" --pack t3 2>/dev/null
csv=$out/firmware_bench.csv
echo "target,build,ram_kb_budget,ram_bytes,flash_bytes,insns_per_token,ratio_vs_fp32,est_tokens_per_s,clock_mhz" >"$csv"
get() { echo "$j" | sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; } # a number from the JSON in $j
printf '| target | build | RAM bytes | flash bytes | instructions/token | vs fp32 | est. tok/s |\n|---|---|---|---|---|---|---|\n'
for t in $targets; do
    case $t in cortex-m7 | cortex-m4 | cortex-m0plus) big=512 ;; esp32c3) big=400 ;; lx106) big=512 ;; esac
    base=""
    for b in fp32 t2 t3; do
        if [ $b = fp32 ]; then m=$model ram=$big kv=""; else m=$out/$b.tlm ram=256 kv=--kv-int8; fi
        j=$("$tlm" firmware --target "$t" -m "$m" --ctx 256 -n 128 --ram-kb $ram $kv -o "$out/$t-$b" --run --json)
        ins=$(get insns_per_token) ramb=$(get ram_bytes) fl=$(get flash_bytes) tps=$(get est_tokens_per_s) mhz=$(get clock_mhz)
        [ -z "$base" ] && base=$ins
        ratio=$(awk -v a="$base" -v b="$ins" 'BEGIN { printf "%.2f", a / b }')
        echo "$t,$b,$ram,$ramb,$fl,$ins,$ratio,$tps,$mhz" >>"$csv"
        printf '| %s | %s%s | %s | %s | %s | %sx | %.1f |\n' "$t" "$b" "${kv:+ + int8 KV}" "$ramb" "$fl" "$ins" "$ratio" "$tps"
    done
done
echo "CSV: $csv"
