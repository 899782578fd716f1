#!/bin/sh
# Utility of privatized input: next-token loss and top-1 accuracy of a model
# on the dev stories when every input token goes through a mechanism, for
# each epsilon, with seeded noise (reproducible). Writes OUT.csv and OUT.png.
# usage: bench/privacy_utility.sh BUILD MODEL.tlm DEV.txt OUT
set -eu
build=$1 model=$2 dev=$3 out=$4
tlm=$build/tritlm
num() { sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p"; }
echo "mechanism,epsilon,loss,top1,unchanged_fraction" >"$out.csv"
base=$("$tlm" eval -m "$model" --text "$dev" --json)
for mech in rr dx; do
    for eps in 1 2 4 8 16 inf; do
        r=$("$tlm" eval -m "$model" --text "$dev" --privatize $mech --epsilon $eps --seed 7 --json)
        loss=$(echo "$r" | num loss) top1=$(echo "$r" | num top1)
        p=$(echo "$r" | num privatized) u=$(echo "$r" | num unchanged)
        e=$eps
        [ "$eps" = inf ] && e=32 # plotted at the right edge
        awk -v m=$mech -v e=$e -v l="$loss" -v t="$top1" -v p="$p" -v u="$u" \
            'BEGIN { printf "%s,%s,%.5f,%.5f,%.5f\n", m, e, l, t, u / p }' >>"$out.csv"
        tail -1 "$out.csv"
    done
done
bt=$(echo "$base" | num top1)
gnuplot <<GP
set terminal pngcairo size 900,560
set output "$out.png"
set datafile separator ","
set title "Top-1 next-token accuracy on privatized input ($(basename "$model"), dev stories)"
set xlabel "epsilon per token (32 = no noise)"
set ylabel "top-1 accuracy"
set logscale x 2
set key bottom right
set grid
plot "< grep '^rr' $out.csv" using 2:4 with linespoints pt 7 title "k-ary randomized response", \
     "< grep '^dx' $out.csv" using 2:4 with linespoints pt 5 title "d-chi on embeddings", \
     $bt with lines dt 2 title "no privatization"
GP
echo "wrote $out.csv and $out.png"
