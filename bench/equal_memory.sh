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
#   SEEDS="3 4 5" (one per stage), MODELS="fp32 i8src tern" (a subset, e.g.
#   for a replicate of two of them with other seeds; i8deepsrc is a second
#   int8 shape, 4 layers of dim 64, for the question whether depth suits int8)
#   STEPS_fp32/STEPS_i8src/STEPS_tern="N1 N2 N3": that model's stages run
#   exactly these step counts instead of the minutes (to repeat a run's
#   schedule whatever the machine's load; the time each took is reported)
set -eu
build=$1 train=$2 dev=$3 out=$4 tok=${5:-}
tlm=$build/tritlm
m1=${MINUTES1:-45} m2=${MINUTES2:-33} m3=${MINUTES3:-35}
models=${MODELS:-fp32 i8src tern}
set -- ${SEEDS:-3 4 5}
seed1=$1 seed2=$2 seed3=$3
has() { case " $models " in *" $1 "*) return 0 ;; esac; return 1; }
# budget STAGE MODEL MINUTES: --steps from STEPS_<model> if given, else --minutes
budget() {
    eval "plan=\${STEPS_$2:-}"
    if [ -n "$plan" ]; then
        set -- "$1" $plan
        shift "$1"
        echo "--steps $1"
    else
        echo "--minutes $3"
    fi
}
mkdir -p "$out"
if [ -z "$tok" ]; then
    tok=$out/tok512.bin
    [ -f "$tok" ] || "$tlm" tokenizer train --vocab 512 --out "$tok" "$train"
fi
common="--json --data $train --val $dev --ctx 256 --batch 8 --threads 1 --ema 0.999 --eval-every 1000 --ckpt-every 0"
shape_fp32="--dim 40 --hidden 112 --layers 2 --heads 4 --kv-heads 4"   # 60,360 weights, 241,440 bytes
shape_i8="--dim 96 --hidden 208 --layers 2 --heads 6 --kv-heads 6"     # 243,168 weights, 253,824 bytes in int8
shape_i8deep="--dim 64 --hidden 208 --layers 4 --heads 8 --kv-heads 4" # 242,240 weights, 256,768 bytes in int8
shape_tern="--dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 4"  # 791,680 weights, 238,208 bytes (t3 + int8 embedding)

# the word splitting of the shape arguments is intended
shape_of() { case $1 in fp32) echo "$shape_fp32" ;; i8src) echo "$shape_i8" ;; i8deepsrc) echo "$shape_i8deep" ;; tern) echo "--qat $shape_tern" ;; esac; }
stage1() {
    for m in $models; do
        "$tlm" train $common --tokenizer "$tok" --lr 2e-3 --warmup 150 --seed "$seed1" $(budget 1 $m "$m1") $(shape_of $m) \
            -o "$out/s1_$m.tlm" >"$out/s1_$m.log" 2>&1 &
    done
    wait
}
later() { # later N PREV MINUTES LR SEED
    n=$1 p=$2 min=$3 lr=$4 seed=$5
    for m in $models; do
        q=""
        [ "$m" = tern ] && q=--qat
        "$tlm" train $common --init "$out/s${p}_$m.tlm.ckpt" $q --lr "$lr" --warmup 50 --seed "$seed" $(budget "$n" $m "$min") \
            -o "$out/s${n}_$m.tlm" >"$out/s${n}_$m.log" 2>&1 &
    done
    wait
}
stage1
later 2 1 "$m2" 1e-3 "$seed2"
later 3 2 "$m3" 7e-4 "$seed3"
for m in $models; do
    case $m in *src) "$tlm" quantize -m "$out/s3_$m.tlm" -o "$out/s3_${m%src}.tlm" --pack int8 --embed int8 2>/dev/null ;; esac
done
for m in $models; do
    m=${m%src}
    printf '%s: ' "$m"
    "$tlm" eval -m "$out/s3_$m.tlm" --text "$dev" --json
    "$tlm" info "$out/s3_$m.tlm" --json |
        sed -n 's/^{.*"weights":\([0-9]*\),"bits_per_weight":\([0-9.e+-]*\),.*/\1 \2/p' |
        awk '{ printf "  %d weights, %.0f weight bytes\n", $1, $1 * $2 / 8 }'
done
for s in 1 2 3; do
    for m in $models; do
        printf 'stage %s %s: %s\n' "$s" "$m" "$(grep -o '"steps":[0-9]*,"tokens":[0-9]*\|"seconds":[0-9.]*' "$out/s${s}_$m.log" | tr '\n' ' ' || true)"
    done
done
