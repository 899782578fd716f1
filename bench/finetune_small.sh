#!/bin/sh
# Fine-tuning on little text, side by side in one run: each variant
# fine-tunes MODEL on TRAIN (one line a sample) for STEPS steps with the
# same batch, window, seed and thread count, validating on VAL every
# EVERY steps; prints a Markdown table (trained values, validation loss
# and top-1 at the end and at the best validation) and a CSV.
# usage: bench/finetune_small.sh BUILD_DIR MODEL.tlm TRAIN.txt VAL.txt OUT_DIR STEPS EVERY "NAME@ARGS" ...
#        ARGS: extra 'tritlm train' options, colons for spaces (e.g. "lora 4@--lora:4:--tensors:attn,ffn")
set -eu
build=$1 model=$2 train=$3 val=$4 out=$5 steps=$6 every=$7
shift 7
tlm=$build/tritlm
mkdir -p "$out"
csv=$out/finetune_small.csv
echo "variant,trained_values,val_loss_end,val_top1_end,best_val_loss,best_step,best_val_top1,seconds" >"$csv"
base=$("$tlm" eval -m "$model" --text "$val" --split lines --json)
printf '| variant | trained values | val loss, end | top-1, end | best val loss (step) | top-1 there | seconds |\n'
printf '|---|---|---|---|---|---|---|\n'
echo "$base" | sed -n 's/.*"loss":\([0-9.]*\).*"top1":\([0-9.]*\).*/\1 \2/p' |
    awk '{ printf "| the model itself | 0 | %.4f | %.4f | | | |\n", $1, $2 }'
i=0
for v in "$@"; do
    name=$(echo "${v%%@*}" | tr ',' ';') args=$(echo "${v#*@}" | tr ':' ' ')
    i=$((i + 1))
    o=$out/v$i.tlm
    # shellcheck disable=SC2086
    j=$("$tlm" train --init "$model" --data "$train" --val "$val" --split lines --steps "$steps" --eval-every "$every" \
        --ckpt-every 0 --batch 8 --ctx 32 --seed 7 --threads 2 $args -o "$o" --json 2>"$out/v$i.err")
    n=$(sed -n 's/.*: \([0-9]*\) trained values.*/\1/p; s/.*training \([0-9]*\) of .*/\1/p' "$out/v$i.err")
    [ -n "$n" ] || n=$(echo "$j" | sed -n 's/.*"params":\([0-9]*\).*/\1/p')
    secs=$(echo "$j" | sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p')
    end=$(tail -n 1 "$o.val.csv")
    best=$(tail -n +2 "$o.val.csv" | sort -t, -k2,2g | head -n 1)
    line=$(echo "$name,$n,$(echo "$end" | cut -d, -f2,3),$(echo "$best" | cut -d, -f2),$(echo "$best" | cut -d, -f1),$(echo "$best" | cut -d, -f3),$secs")
    echo "$line" >>"$csv"
    echo "$line" | awk -F, '{ printf "| %s | %s | %.4f | %.4f | %.4f (%s) | %.4f | %.0f |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
done
echo "CSV: $csv"
