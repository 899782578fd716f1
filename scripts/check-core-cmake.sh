#!/bin/sh
# Builds tests/cmake-consumer, a firmware project that adds tritlm with
# add_subdirectory and links the device core into a Cortex-M7 executable
# through cmake/arm-none-eabi-cortex-m7.cmake, warnings as errors; then
# checks that the core took its DSP kernels (SMLAD in the executable) and
# that none of the host side (the tool, cJSON, libsodium) came along.
# usage: check-core-cmake.sh SOURCE_DIR OUT_DIR
set -eu
src=$1
out=$2
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1; then
    case "${CI:-}${TLM_REQUIRE_CROSS:-}" in
    ""|0|false) echo "SKIP: arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)"; exit 77 ;;
    *) echo "FAIL: arm-none-eabi-gcc not installed but required here"; exit 1 ;;
    esac
fi
rm -rf "$out"
cmake -S "$src/tests/cmake-consumer" -B "$out" -DTRITLM_DIR="$src" -DTLM_WERROR=ON \
    -DCMAKE_TOOLCHAIN_FILE="$src/cmake/arm-none-eabi-cortex-m7.cmake" -DCMAKE_BUILD_TYPE=MinSizeRel >"$out.log" 2>&1 ||
    { cat "$out.log"; echo "FAIL: configure"; exit 1; }
cmake --build "$out" >>"$out.log" 2>&1 || { cat "$out.log"; echo "FAIL: build"; exit 1; }
file "$out/app" | grep -q "ARM" || { echo "FAIL: $out/app is not an Arm executable"; exit 1; }
smlad=$(arm-none-eabi-objdump -d "$out/app" | grep -c 'smlad' || true)
[ "$smlad" -gt 0 ] || { echo "FAIL: no SMLAD in the executable: the core did not build its DSP kernels"; exit 1; }
if cmake --build "$out" --target help | grep -q "tritlm_host\|tlm_insncount\|test_"; then
    echo "FAIL: the subdirectory build configured the host side"; exit 1
fi
echo "consumer: $(arm-none-eabi-size "$out/app" | tail -1 | awk '{print $1 + $2 " bytes of code and data"}'), $smlad SMLAD"
