#!/bin/sh
# What protection costs a device, in firmware on each emulated target: the
# instructions of sealing its update (tlm_seal_update: Ed25519 signature,
# X25519 sealed box) and of checking the server's signature on a signed
# model before opening it (tlm_seal_verify_model), counted by the QEMU
# plugin between the tlm_fw_seal_* markers; the stack's high-water mark and
# flash beside the same firmware without them. Prints Markdown.
# usage: bench/seal_firmware.sh BUILD_DIR MODEL.tlm TEXT OUT_DIR [TARGET...]
#   MODEL: the model to tune (the update: its norm gains in int8, and with
#   cortex-m7 also rank-4 adapters); its t2 quantization is the signed model.
#   TEXT: the device's own text, one line a story.
set -eu
build=$1 model=$2 text=$3 out=$4
shift 4
targets=${*:-cortex-m7 cortex-m4 esp32c3 lx106}
tlm=$build/tritlm
export TLM_BIN="$tlm" TLM_PLUGIN="${TLM_PLUGIN:-$build/libinsncount.so}"
fw=$(dirname "$0")/../firmware/build.sh
mkdir -p "$out"
"$tlm" fed keygen -o "$out/dev" >/dev/null 2>&1 || [ -f "$out/dev.key" ]
"$tlm" fed keygen -o "$out/srv" >/dev/null 2>&1 || [ -f "$out/srv.key" ]
"$tlm" quantize -m "$model" -o "$out/t2.tlm" --pack t2 2>/dev/null
rm -f "$out/t2.tlmg"
"$tlm" fed sign --key "$out/srv.key" -m "$out/t2.tlm" --round 1 -o "$out/t2.tlmg" 2>/dev/null
field() { sed -n "s/^$1 //p" "$2" | head -n 1; }
mhz() { case $1 in cortex-m7) echo 480 ;; cortex-m4) echo 168 ;; esp32c3) echo 160 ;; *) echo 240 ;; esac; }
echo "| target | what | message bytes | instructions | est. at the clock (1 instruction / cycle) | stack bytes (without) | flash bytes (without) |"
echo "|---|---|---|---|---|---|---|"
for t in $targets; do
    runs="gains"
    [ "$t" = cortex-m7 ] && runs="gains lora"
    for what in $runs; do
        opt="--encode int8" label="seal an int8 update of the gains"
        [ "$what" = lora ] && opt="--tune-lora 4" label="seal rank-4 adapters"
        # shellcheck disable=SC2086
        sh "$fw" "$t" "$model" "$out/$t-$what-plain" --tune "$text" --tune-steps 1 --tune-window 8 $opt -n 8 --run >"$out/$t-$what-plain.txt"
        # shellcheck disable=SC2086
        sh "$fw" "$t" "$model" "$out/$t-$what" --tune "$text" --tune-steps 1 --tune-window 8 $opt -n 8 \
            --key "$out/dev.key" --server-key "$out/srv.pub" --count seal --run >"$out/$t-$what.txt"
        n=$(field INSNS_PER_TOKEN "$out/$t-$what.txt")
        printf '| %s | %s | %s | %s | %s | %s (%s) | %s (%s) |\n' "$t" "$label" "$(field UPDATE_BYTES "$out/$t-$what.txt")" "$n" \
            "$(awk -v n="$n" -v f="$(mhz "$t")" 'BEGIN { printf "%.0f ms at %d MHz", n / f / 1e3, f }')" \
            "$(field STACK "$out/$t-$what.txt")" "$(field STACK "$out/$t-$what-plain.txt")" \
            "$(field FLASH "$out/$t-$what.txt")" "$(field FLASH "$out/$t-$what-plain.txt")"
    done
    sh "$fw" "$t" "$out/t2.tlm" "$out/$t-model-plain" -n 8 --kv-int8 --run >"$out/$t-model-plain.txt"
    sh "$fw" "$t" "$out/t2.tlmg" "$out/$t-model" --server-key "$out/srv.pub" -n 8 --kv-int8 --count seal --run >"$out/$t-model.txt"
    grep -q '^SIGNED' "$out/$t-model.txt" || { echo "seal_firmware.sh: $t did not verify the signed model" >&2; exit 1; }
    n=$(field INSNS_PER_TOKEN "$out/$t-model.txt")
    printf '| %s | %s | %s | %s | %s | %s (%s) | %s (%s) |\n' "$t" "check the signed t2 model" "$(wc -c <"$out/t2.tlmg")" "$n" \
        "$(awk -v n="$n" -v f="$(mhz "$t")" 'BEGIN { printf "%.0f ms at %d MHz", n / f / 1e3, f }')" \
        "$(field STACK "$out/$t-model.txt")" "$(field STACK "$out/$t-model-plain.txt")" \
        "$(field FLASH "$out/$t-model.txt")" "$(field FLASH "$out/$t-model-plain.txt")"
done
