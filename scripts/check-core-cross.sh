#!/bin/sh
# Builds every file of the device core for a Cortex-M7 (hard float) with the
# project's warnings as errors, then checks that the objects call nothing
# but string.h and math.h functions and compiler helpers.
# usage: check-core-cross.sh SOURCE_DIR OUT_DIR
set -eu
src=$1
out=$2
CC=${TLM_ARM_CC:-arm-none-eabi-gcc}
NM=${TLM_ARM_NM:-arm-none-eabi-nm}
if ! command -v "$CC" >/dev/null 2>&1; then
    case "${CI:-}${TLM_REQUIRE_CROSS:-}" in
    ""|0|false) echo "SKIP: $CC not installed (apt-get install gcc-arm-none-eabi)"; exit 77 ;;
    *) echo "FAIL: $CC not installed but required here"; exit 1 ;;
    esac
fi
mkdir -p "$out"
rm -f "$out"/*.o
FLAGS="-std=c11 -Wall -Wextra -Werror -mcpu=cortex-m7 -mfloat-abi=hard -mfpu=fpv5-d16 -mthumb -O2 -ffreestanding -ffunction-sections -fdata-sections"
for f in "$src"/src/core/*.c; do
    "$CC" $FLAGS -I"$src/include" -c "$f" -o "$out/$(basename "$f" .c).o"
done
allowed='^(memcpy|memmove|memset|memcmp|sqrtf|expf|powf|cosf|sinf|logf|fabsf|floorf|ceilf|roundf|lrintf|__aeabi_[a-z0-9_]+)$'
"$NM" --defined-only "$out"/*.o | awk 'NF==3 {print $3}' | sort -u >"$out/defined.txt"
"$NM" -u "$out"/*.o | awk 'NF==2 && $1=="U" {print $2}' | sort -u >"$out/undefined.txt"
external=$(comm -23 "$out/undefined.txt" "$out/defined.txt")
bad=$(printf '%s\n' "$external" | grep -Ev "$allowed" | grep -v '^$' || true)
if [ -n "$bad" ]; then
    echo "FAIL: the device core calls functions outside string.h/math.h:"
    echo "$bad"
    exit 1
fi
echo "core: $(ls "$out"/*.o | wc -l) files built for cortex-m7; external symbols: $(printf '%s ' $external)"
