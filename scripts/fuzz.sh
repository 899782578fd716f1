#!/bin/sh
# Fuzzes tritlm's readers of untrusted files under libFuzzer, ASan and UBSan.
#   image: the device core with model images (tests/fuzz_image.c)
#   host:  the host tool's readers: training checkpoints, llama2.c
#          checkpoints and tokenizers, images expanded for training,
#          text through the tokenizer, tokenizer training and redaction,
#          federated updates, key files and rosters, sealed updates
#          (tests/fuzz_host.c)
# The seeds are small models, checkpoints and tokenizers of every kind, made
# with the tritlm built in BUILD; crashes are written to OUT/crashes.
# usage: scripts/fuzz.sh BUILD OUT [SECONDS [image|host]]   (needs clang; default 60 s, image)
set -eu
build=$1 out=$2 secs=${3:-60} harness=${4:-image}
src=$(cd "$(dirname "$0")/.." && pwd)
tlm=$build/tritlm
data=${TLM_DATA_DIR:-$src/../shared/data}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
flags="-std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
mkdir -p "$out/seeds" "$out/corpus" "$out/crashes"
case $harness in
image)
    clang $flags -I"$src/include" "$src"/tests/fuzz_image.c "$src"/src/host/image_build.c "$src"/src/core/*.c -lm \
        -o "$out/fuzz_image" ;;
host)
    clang $flags -mavx2 -mfma -I"$src/include" "$src"/tests/fuzz_host.c "$src"/src/host/*.c "$src"/src/host/train/*.c \
        "$src"/src/host/nn/*.c "$src"/src/core/*.c -lsodium -lmosquitto -lpthread -lm -o "$out/fuzz_host" ;;
*) echo "fuzz.sh: the harness is image or host, not '$harness'" >&2; exit 2 ;;
esac

# seeds: a tiny fp32 model and its quantized forms (separate classifier too);
# for the host harness also training checkpoints (plain, QAT, with a weight
# average), llama2.c exports and tokenizers, each behind its reader's byte
prefix() { # BYTE FILE OUT: OUT = the byte, then FILE
    printf "\\$(printf %03o "$1")" >"$3"
    cat "$2" >>"$3"
}
if [ ! -f "$out/seeds.done" ]; then
    t=$out/tmp
    mkdir -p "$t"
    head -c 60000 "$data/tinystories/train.txt" >"$t/text.txt"
    "$tlm" tokenizer train --vocab 300 -o "$t/tok.bin" "$t/text.txt" 2>/dev/null
    tiny="--data $t/text.txt --tokenizer $t/tok.bin --dim 16 --hidden 24 --layers 2 --heads 4 --kv-heads 2 --ctx 16
          --batch 2 --steps 3 --eval-every 0"
    for cls in shared separate; do
        extra=""
        [ "$cls" = separate ] && extra=--separate-classifier
        "$tlm" train $tiny --ckpt-every 0 $extra -o "$t/$cls.tlm" >/dev/null 2>&1
        cp "$t/$cls.tlm" "$t/f32_$cls.tlm"
        for pack in t2 t3 ts int8; do
            for emb in int8 ternary; do
                "$tlm" quantize -m "$t/$cls.tlm" -o "$t/${pack}_${emb}_$cls.tlm" --pack "$pack" --embed "$emb" \
                    --group 8 >/dev/null 2>&1
            done
        done
    done
    if [ "$harness" = image ]; then
        cp "$t"/f32_*.tlm "$t"/t2_*.tlm "$t"/t3_*.tlm "$t"/ts_*.tlm "$t"/int8_*.tlm "$out/seeds/"
    else
        "$tlm" train $tiny --ckpt-every 2 --ema 0.9 -o "$t/ema.tlm" >/dev/null 2>&1
        "$tlm" quantize -m "$t/shared.tlm" -o "$t/qat.tlm" --qat --data "$t/text.txt" --steps 2 --ctx 16 --batch 2 \
            --eval-every 0 >/dev/null 2>&1
        # a run with adapters on a selection: the checkpoint's selection text and adapters' state
        "$tlm" train --init "$t/shared.tlm" --data "$t/text.txt" --ctx 16 --batch 2 --steps 4 --eval-every 0 \
            --ckpt-every 2 --lora 2 --tensors attn,norms -o "$t/lora.tlm" >/dev/null 2>&1
        for f in "$t"/shared.tlm.ckpt "$t"/ema.tlm.ckpt "$t"/qat.tlm.ckpt "$t"/lora.tlm.ckpt; do
            prefix 0 "$f" "$out/seeds/ckpt_$(basename "$f")"
        done
        for f in shared separate; do
            "$tlm" export llama2c "$t/$f.tlm" -o "$t/$f.bin" --tokenizer-out "$t/${f}_tok.bin" >/dev/null 2>&1
            # [u32 checkpoint length][checkpoint][tokenizer]
            python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<I", int(sys.argv[1])))' \
                "$(wc -c <"$t/$f.bin")" >"$t/$f.l2c"
            cat "$t/$f.bin" "$t/${f}_tok.bin" >>"$t/$f.l2c"
            prefix 1 "$t/$f.l2c" "$out/seeds/llama2c_$f"
        done
        # text for the shipped model's tokenizer (4) and for tokenizer training (5)
        head -c 3000 "$data/tinystories/dev.txt" >"$t/story.txt"
        printf ' caf\303\251 \000\377\376 <0x41> <s>\r\n\t  x' >>"$t/story.txt"
        prefix 4 "$t/story.txt" "$out/seeds/text"
        head -c 6000 "$data/tinystories/train.txt" >"$t/stories.txt"
        prefix 5 "$t/stories.txt" "$out/seeds/train_tokenizer"
        printf 'Call +1 (555) 123-4567 or mail bob.smith@example.com. Room 42, 7 cats, x@y.z' >"$t/pii.txt"
        prefix 6 "$t/pii.txt" "$out/seeds/redact"
        prefix 2 "$t/tok.bin" "$out/seeds/tokenizer"
        # a federated update (7): fp32, int8, ternary and low-rank entries (the harness reseals the checksum)
        python3 -c '
import struct, sys
def entry(role, layer, enc, count, scale, payload):
    payload += b"\0" * (-len(payload) % 4)
    return struct.pack("<HHB3xIf", role, layer, enc, count, scale) + payload
body = entry(3, 0, 0, 2, 0.0, struct.pack("<2f", 1.0, -0.5)) + entry(1, 0, 1, 3, 0.01, bytes([1, 0x81, 127])) \
     + entry(9, 1, 2, 5, 0.2, bytes([0b10010001, 0b01]))
lr = struct.pack("<f", 0.5) + bytes([1, 2, 0xFF, 4, 5, 6, 7, 8]) + bytes([9, 0xF0, 11, 12, 13, 14])
lr += b"\0" * (-len(lr) % 4)
body += struct.pack("<HHBBHIf", 4, 1, 4, 2, 4, 12, 0.25) + lr
head = b"TLMU" + struct.pack("<HHIIIIIIII", 1, 40, 40 + len(body), 0, 3, 77, 0, 10, 4, 0)
sys.stdout.buffer.write(b"\x07" + head + body)' >"$out/seeds/fed_update"
        # ... and a low-rank update of the shipped model, which the harness also decodes with as an adapter
        printf 'what is my balance\nbook a flight to paris\n' >"$t/own.txt"
        "$tlm" fed update -m "$src/models/tinystories-d128-ternary.tlm" --data "$t/own.txt" --split lines --lora 2 \
            --rank 2 --tensors attn --steps 1 --ctx 8 --batch 1 -o "$t/adapter.tlmu" 2>/dev/null
        prefix 7 "$t/adapter.tlmu" "$out/seeds/fed_adapter"
        # keys and rosters (8) and sealed updates and signed models as a forger would send them (9)
        "$tlm" fed keygen -o "$t/k1" 2>/dev/null
        "$tlm" fed keygen -o "$t/k2" 2>/dev/null
        printf '# roster\n3 %s\n9 %s  # second\n' "$(cat "$t/k1.pub")" "$(cat "$t/k2.pub")" >"$t/roster.txt"
        prefix 8 "$t/roster.txt" "$out/seeds/roster"
        prefix 8 "$t/k1.pub" "$out/seeds/pub"
        prefix 8 "$t/k1.key" "$out/seeds/key"
        printf 'TLMS\001\000\000\000' >"$t/sealed"
        head -c 400 /dev/urandom >>"$t/sealed"
        prefix 9 "$t/sealed" "$out/seeds/sealed"
        printf 'TLMG\001\000\000\000\005\000\000\000' >"$t/signed"
        head -c 400 /dev/urandom >>"$t/signed"
        prefix 9 "$t/signed" "$out/seeds/signed"
        printf 'TLMR\001\000\000\000\005\000\000\000\007\000\000\000\001\002\003\004\001\000\000\000' >"$t/reveal"
        head -c 68 /dev/urandom >>"$t/reveal"
        prefix 9 "$t/reveal" "$out/seeds/reveal"
        prefix 2 "$data/llama2c/tok512.bin" "$out/seeds/tokenizer512"
        for f in "$t"/f32_shared.tlm "$t"/t3_ternary_separate.tlm "$t"/ts_int8_shared.tlm "$t"/int8_int8_separate.tlm; do
            prefix 3 "$f" "$out/seeds/image_$(basename "$f")"
        done
    fi
    touch "$out/seeds.done"
    rm -rf "$t"
fi
cd "$out"
export TLM_FUZZ_MODEL="$src/models/tinystories-d128-ternary.tlm"
"./fuzz_$harness" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=crashes/ \
    -print_final_stats=1 corpus seeds
