#!/bin/sh
# Equal memory: the best fp32, int8 and ternary models whose weights fit
# 256 KB, trained for the same time on the same data. The three trainings
# run side by side with one thread each (so each gets the same share of the
# machine), in three stages of MINUTES1/2/3 minutes; each stage after the
# first starts from the previous stage's latent weights (--init CKPT) with a
# fresh schedule. The int8 model is trained in fp32 and quantized after
# (its post-training int8 loss is within 0.003 of its fp32 weights').
# Prints one JSON line per model (tritlm eval on the dev set) and the
# weight bytes of each image.
# usage: bench/equal_memory.sh BUILD TRAIN.txt DEV.txt OUTDIR [TOKENIZER.bin]
#   MINUTES1=45 MINUTES2=33 MINUTES3=35 (the run in docs/BENCHMARKS.md)
set -eu
build=$1 train=$2 dev=$3 out=$4 tok=${5:-}
tlm=$build/tritlm
m1=${MINUTES1:-45} m2=${MINUTES2:-33} m3=${MINUTES3:-35}
mkdir -p "$out"
if [ -z "$tok" ]; then
    tok=$out/tok512.bin
    [ -f "$tok" ] || "$tlm" tokenizer train --vocab 512 --out "$tok" "$train"
fi
common="--json --data $train --val $dev --ctx 256 --batch 8 --threads 1 --ema 0.999 --eval-every 1000 --ckpt-every 0"
shape_fp32="--dim 40 --hidden 112 --layers 2 --heads 4 --kv-heads 4"   # 60,360 weights, 241,440 bytes
shape_i8="--dim 96 --hidden 208 --layers 2 --heads 6 --kv-heads 6"     # 243,168 weights, 253,824 bytes in int8
shape_tern="--dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 4"  # 791,680 weights, 238,208 bytes (t3 + int8 embedding)

# the word splitting of the shape arguments is intended
stage1() {
    "$tlm" train $common --tokenizer "$tok" --lr 2e-3 --warmup 150 --seed 3 --minutes "$m1" $shape_fp32 \
        -o "$out/s1_fp32.tlm" >"$out/s1_fp32.log" 2>&1 &
    "$tlm" train $common --tokenizer "$tok" --lr 2e-3 --warmup 150 --seed 3 --minutes "$m1" $shape_i8 \
        -o "$out/s1_i8src.tlm" >"$out/s1_i8src.log" 2>&1 &
    "$tlm" train $common --tokenizer "$tok" --lr 2e-3 --warmup 150 --seed 3 --minutes "$m1" --qat $shape_tern \
        -o "$out/s1_tern.tlm" >"$out/s1_tern.log" 2>&1 &
    wait
}
later() { # later N PREV MINUTES LR SEED
    n=$1 p=$2 min=$3 lr=$4 seed=$5
    "$tlm" train $common --init "$out/s${p}_fp32.tlm.ckpt" --lr "$lr" --warmup 50 --seed "$seed" --minutes "$min" \
        -o "$out/s${n}_fp32.tlm" >"$out/s${n}_fp32.log" 2>&1 &
    "$tlm" train $common --init "$out/s${p}_i8src.tlm.ckpt" --lr "$lr" --warmup 50 --seed "$seed" --minutes "$min" \
        -o "$out/s${n}_i8src.tlm" >"$out/s${n}_i8src.log" 2>&1 &
    "$tlm" train $common --init "$out/s${p}_tern.tlm.ckpt" --qat --lr "$lr" --warmup 50 --seed "$seed" --minutes "$min" \
        -o "$out/s${n}_tern.tlm" >"$out/s${n}_tern.log" 2>&1 &
    wait
}
stage1
later 2 1 "$m2" 1e-3 4
later 3 2 "$m3" 7e-4 5
"$tlm" quantize -m "$out/s3_i8src.tlm" -o "$out/s3_i8.tlm" --pack int8 --embed int8 2>/dev/null
for m in fp32 i8 tern; do
    printf '%s: ' "$m"
    "$tlm" eval -m "$out/s3_$m.tlm" --text "$dev" --json
    "$tlm" info "$out/s3_$m.tlm" --json |
        sed -n 's/^{.*"weights":\([0-9]*\),"bits_per_weight":\([0-9.e+-]*\),.*/\1 \2/p' |
        awk '{ printf "  %d weights, %.0f weight bytes\n", $1, $1 * $2 / 8 }'
done
for s in 1 2 3; do
    for m in fp32 i8src tern; do
        printf 'stage %s %s: %s\n' "$s" "$m" "$(grep -o '"steps":[0-9]*,"tokens":[0-9]*' "$out/s${s}_$m.log" || true)"
    done
done
