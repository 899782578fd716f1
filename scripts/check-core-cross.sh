#!/bin/sh
# Builds every file of the device core for four Arm M-profile cores with the
# project's warnings as errors: Cortex-M7 (double-precision FPv5, DSP),
# Cortex-M4F (single-precision FPv4, DSP), Cortex-M33 (Armv8-M, FPv5-SP,
# DSP) and Cortex-M0+ (Armv6-M: no FPU, no DSP, no unaligned access). Then
# checks that the objects call nothing but string.h and math.h functions and
# compiler helpers. (RV32IMC and Xtensa are built by the firmware tests.)
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
allowed='^(memcpy|memmove|memset|memcmp|sqrtf|expf|powf|cosf|sinf|logf|fabsf|floorf|ceilf|roundf|lrintf|__aeabi_[a-z0-9_]+)$'
check() { # NAME FLAGS...
    name=$1
    shift
    mkdir -p "$out/$name"
    rm -f "$out/$name"/*.o
    for f in "$src"/src/core/*.c; do
        "$CC" -std=c11 -Wall -Wextra -Werror -mthumb -O2 -ffreestanding -ffunction-sections -fdata-sections "$@" \
            -I"$src/include" -c "$f" -o "$out/$name/$(basename "$f" .c).o"
    done
    "$NM" --defined-only "$out/$name"/*.o | awk 'NF==3 {print $3}' | sort -u >"$out/$name/defined.txt"
    "$NM" -u "$out/$name"/*.o | awk 'NF==2 && $1=="U" {print $2}' | sort -u >"$out/$name/undefined.txt"
    external=$(comm -23 "$out/$name/undefined.txt" "$out/$name/defined.txt")
    bad=$(printf '%s\n' "$external" | grep -Ev "$allowed" | grep -v '^$' || true)
    if [ -n "$bad" ]; then
        echo "FAIL: the device core built for $name calls functions outside string.h/math.h:"
        echo "$bad"
        exit 1
    fi
    echo "core: $(ls "$out/$name"/*.o | wc -l) files built for $name; external symbols: $(printf '%s\n' $external | grep -v '^__' | tr '\n' ' ')and the compiler's helpers"
}
check cortex-m7 -mcpu=cortex-m7 -mfloat-abi=hard -mfpu=fpv5-d16
check cortex-m4 -mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16
check cortex-m33 -mcpu=cortex-m33 -mfloat-abi=hard -mfpu=fpv5-sp-d16
check cortex-m0plus -mcpu=cortex-m0plus -mfloat-abi=soft
