#!/bin/sh
# Fuzzes the device core with untrusted model images (tests/fuzz_image.c)
# under libFuzzer, ASan and UBSan. The seeds are small models of every weight
# type, made with the tritlm built in BUILD; crashes are written to OUT.
# usage: scripts/fuzz.sh BUILD OUT [SECONDS]   (needs clang; default 60 s)
set -eu
build=$1 out=$2 secs=${3:-60}
src=$(cd "$(dirname "$0")/.." && pwd)
tlm=$build/tritlm
data=${TLM_DATA_DIR:-$src/../shared/data}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
mkdir -p "$out/seeds" "$out/corpus" "$out/crashes"
clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$src/include" "$src"/tests/fuzz_image.c "$src"/src/host/image_build.c "$src"/src/core/*.c -lm \
    -o "$out/fuzz_image"

# seeds: a tiny fp32 model and its quantized forms (separate classifier too)
if [ ! -f "$out/seeds.done" ]; then
    t=$out/tmp
    mkdir -p "$t"
    head -c 60000 "$data/tinystories/train.txt" >"$t/text.txt"
    "$tlm" tokenizer train --vocab 300 -o "$t/tok.bin" "$t/text.txt" 2>/dev/null
    for cls in shared separate; do
        extra=""
        [ "$cls" = separate ] && extra=--separate-classifier
        "$tlm" train --data "$t/text.txt" --tokenizer "$t/tok.bin" --dim 16 --hidden 24 --layers 2 --heads 4 \
            --kv-heads 2 --ctx 16 --batch 2 --steps 3 --eval-every 0 --ckpt-every 0 $extra -o "$t/$cls.tlm" >/dev/null 2>&1
        cp "$t/$cls.tlm" "$out/seeds/f32_$cls.tlm"
        for pack in t2 t3 ts int8; do
            for emb in int8 ternary; do
                "$tlm" quantize -m "$t/$cls.tlm" -o "$out/seeds/${pack}_${emb}_$cls.tlm" --pack "$pack" --embed "$emb" \
                    --group 8 >/dev/null 2>&1
            done
        done
    done
    touch "$out/seeds.done"
    rm -rf "$t"
fi
cd "$out"
./fuzz_image -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=crashes/ \
    -print_final_stats=1 corpus seeds
