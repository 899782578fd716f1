#!/bin/sh
# On-device tuning in firmware: RAM, flash and instructions per tuning step
# of the core's tlm_tune on each emulated target, for windows of W
# positions, on the device's own text (one line a story). Prints Markdown.
# usage: bench/tune_firmware.sh BUILD_DIR MODEL.tlm TEXT OUT_DIR [STEPS] [TARGET:WINDOW[:RANK]...]
#   (RANK: tune adapters of that rank instead of the gains, --lora RANK)
set -eu
build=$1 model=$2 text=$3 out=$4 steps=${5:-2}
shift 4
[ $# -gt 0 ] && shift
runs=${*:-cortex-m7:16 cortex-m7:32 cortex-m4:16 esp32c3:8 esp32c3:16 lx106:8 lx106:16}
tlm=$build/tritlm
mkdir -p "$out"
get() { echo "$j" | sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
echo "| target | window | tunes | RAM bytes | arena bytes | flash bytes | instructions / step | est. s / step | clock MHz | loss, first and last step |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in $runs; do
    t=${r%%:*} w=${r#*:} rank=0
    case $w in *:*) rank=${w#*:} w=${w%%:*} ;; esac
    what=gains lora=""
    [ "$rank" -gt 0 ] && what="rank-$rank adapters" lora="--lora $rank"
    # shellcheck disable=SC2086
    j=$("$tlm" firmware --target "$t" -m "$model" --tune "$text" --tune-window "$w" --tune-steps "$steps" $lora \
        -o "$out/$t-$w-$rank" --run --json)
    losses=$(echo "$j" | sed -n 's/.*"losses":\[\([^]]*\)\].*/\1/p' | awk -F, '{ printf "%.4f, %.4f", $1, $NF }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %.3f | %s | %s |\n' "$t" "$w" "$what" "$(get ram_bytes)" "$(get arena_bytes)" \
        "$(get flash_bytes)" "$(get insns_per_step)" "$(get est_seconds_per_step)" "$(get clock_mhz)" "$losses"
done
