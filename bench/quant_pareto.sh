#!/bin/sh
# Top-1 retention against bits per weight for quantization settings of one
# fp32 model: post-training quantization for every method x sparsity x
# packing below, and (QAT_MINUTES > 0) quantization-aware training for the
# settings in QAT_SETS. Writes OUT.csv and OUT.png (gnuplot).
# usage: bench/quant_pareto.sh BUILD FP32.tlm DEV.txt OUT [TRAIN.txt]
#   QAT_MINUTES=M  minutes of QAT per setting (default 0: PTQ only)
#   QAT_SETS="method:sparsity:pack ..."  (default below)
set -eu
build=$1 model=$2 dev=$3 out=$4 train=${5:-}
tlm=$build/tritlm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
num() { sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p"; }

base=$("$tlm" eval -m "$model" --text "$dev" --json)
base_top1=$(echo "$base" | num top1)
base_loss=$(echo "$base" | num loss)
base_bytes=$("$tlm" info "$model" --json | num image_bytes)
echo "kind,method,sparsity,pack,embed,bits_per_weight,image_bytes,size_ratio,loss,top1,top1_retention,loss_increase" >"$out.csv"
base_bpw=$("$tlm" info "$model" --json | num image_bits_per_weight)
echo "fp32,-,-,f32,f32,$base_bpw,$base_bytes,1,$base_loss,$base_top1,1,0" >>"$out.csv"

row() { # kind method sparsity pack embed model
    info=$("$tlm" info "$6" --json)
    ev=$("$tlm" eval -m "$6" --text "$dev" --json)
    bpw=$(echo "$info" | num image_bits_per_weight) # the whole image: tokenizer, norms, scales included
    bytes=$(echo "$info" | num image_bytes)
    top1=$(echo "$ev" | num top1)
    loss=$(echo "$ev" | num loss)
    awk -v k="$1" -v m="$2" -v s="$3" -v p="$4" -v e="$5" -v bpw="$bpw" -v b="$bytes" -v bb="$base_bytes" \
        -v t="$top1" -v l="$loss" -v bt="$base_top1" -v bl="$base_loss" \
        'BEGIN { printf "%s,%s,%s,%s,%s,%.4f,%d,%.3f,%.5f,%.5f,%.4f,%.4f\n", k, m, s, p, e, bpw, b, bb / b, l, t, t / bt, l / bl - 1 }' >>"$out.csv"
    tail -1 "$out.csv"
}

for method in absmean threshold; do
    for sp in natural 0.3 0.5 0.7 0.85; do
        for pack in t2 t3 ts; do
            spflag=""
            [ "$sp" = natural ] || spflag="--sparsity $sp"
            "$tlm" quantize -m "$model" -o "$tmp/q.tlm" --method "$method" $spflag --pack "$pack" 2>/dev/null
            row ptq "$method" "$sp" "$pack" int8 "$tmp/q.tlm"
        done
    done
done
"$tlm" quantize -m "$model" -o "$tmp/q.tlm" --embed int8 --pack t3 --scale tensor 2>/dev/null
row ptq-tensor-scale absmean natural t3 int8 "$tmp/q.tlm"

if [ "${QAT_MINUTES:-0}" != 0 ] && [ -n "$train" ]; then
    for set in ${QAT_SETS:-absmean:natural:t3 absmean:0.5:ts threshold:0.7:ts absmean:natural:t2}; do
        method=${set%%:*} rest=${set#*:} sp=${rest%%:*} pack=${rest#*:}
        spflag=""
        [ "$sp" = natural ] || spflag="--sparsity $sp"
        "$tlm" quantize -m "$model" -o "$tmp/qat.tlm" --method "$method" $spflag --pack "$pack" --qat --distill \
            --data "$train" --minutes "$QAT_MINUTES" --lr 1e-3 --eval-every 0 --ckpt-every 0 2>/dev/null >/dev/null
        row "qat-${QAT_MINUTES}min" "$method" "$sp" "$pack" int8 "$tmp/qat.tlm"
    done
fi

gnuplot <<GP
set terminal pngcairo size 900,600
set output "$out.png"
set datafile separator ","
set title "Top-1 retention vs bits per weight ($(basename "$model"))"
set xlabel "bits per weight (whole image: tokenizer, norms and scales included)"
set ylabel "top-1 / fp32 top-1"
set key bottom right
set grid
plot "< grep '^ptq,absmean' $out.csv" using 6:11 with points pt 7 title "PTQ absmean", \
     "< grep '^ptq,threshold' $out.csv" using 6:11 with points pt 5 title "PTQ threshold", \
     "< grep '^qat' $out.csv" using 6:11 with points pt 9 ps 2 title "QAT (distilled)", \
     0.97 with lines dt 2 title "97%"
GP
echo "wrote $out.csv and $out.png"
