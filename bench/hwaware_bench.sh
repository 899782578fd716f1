#!/bin/sh
# Hardware-aware quantization, one row per (model, device, options): the
# plan `tritlm quantize --device` chose, its predicted and its measured
# (QEMU) flash, RAM and instructions per token, and the written model's dev
# loss and top-1 beside the fp32 model's. Prints a Markdown table.
# usage: bench/hwaware_bench.sh BUILD_DIR DEV.txt OUT_DIR CASE...
#   CASE: MODEL.tlm@DEVICE[@EXTRA OPTIONS, words separated by commas]
#   e.g.  stories260K.tlm@stm32f722  stories260K.tlm@stm32f722@--flash-kb,200
set -eu
build=$1 dev=$2 out=$3
shift 3
tlm=$build/tritlm
mkdir -p "$out"
num() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":{[^}]*\"$3\":\([0-9.e+-]*\).*/\1/p"; }
top() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p"; }
printf '| model | device | options | plan (layers; embedding) | flash pred. / measured | RAM | instr./token pred. / measured | est. tok/s | dev loss (input model) | dev top-1 (input model) | seconds |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
k=0
for case in "$@"; do
    model=${case%%@*} rest=${case#*@}
    device=${rest%%@*} extra=""
    [ "$rest" != "$device" ] && extra=$(echo "${rest#*@}" | tr ',' ' ')
    k=$((k + 1))
    o=$out/plan$k.tlm
    t0=$(date +%s)
    # shellcheck disable=SC2086
    j=$("$tlm" quantize -m "$model" -o "$o" --device "$device" --calib "$dev" $extra --json 2>"$out/plan$k.err") || {
        echo "| $(basename "$model") | $device | $extra | failed: $(tail -n 1 "$out/plan$k.err") |"; continue; }
    secs=$(($(date +%s) - t0))
    plan=$(printf '%s\n' "$j" | grep -o '"type":"[a-z0-9]*"' | sed 's/"type":"//; s/"//' | tr '\n' ' ' |
        awk '{ for (i = 1; i < NF; i++) printf "%s%s", $i, (i < NF - 1 ? "," : ""); printf "; %s", $NF }')
    e=$("$tlm" eval -m "$o" --text "$dev" --json 2>/dev/null)
    f=$("$tlm" eval -m "$model" --text "$dev" --json 2>/dev/null)
    printf '| %s | %s | %s | %s | %s / %s | %s | %s / %s | %.0f | %.4f (%.4f) | %.4f (%.4f) | %s |\n' \
        "$(basename "$model")" "$device" "${extra:--}" "$plan" \
        "$(num "$j" predicted flash_bytes)" "$(num "$j" measured flash_bytes)" "$(num "$j" measured ram_bytes)" \
        "$(num "$j" predicted insns_per_token)" "$(num "$j" measured insns_per_token)" \
        "$(num "$j" measured est_tokens_per_s)" "$(top "$e" loss)" "$(top "$f" loss)" "$(top "$e" top1)" "$(top "$f" top1)" "$secs"
done
