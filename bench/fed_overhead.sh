#!/bin/sh
# What protection costs the server: one aggregation of N copies of a
# device's int8 update, plain; sealed and signed (--key/--devices);
# with differential privacy (--dp-noise, every parameter noised); and both.
# Each timed R times in a row, the fastest kept; sizes of the plain and the
# sealed update. Prints Markdown.
# usage: bench/fed_overhead.sh BUILD_DIR MODEL.tlm TEXT OUT_DIR [N] [R]
set -eu
build=$1 model=$2 text=$3 out=$4
n=${5:-20} reps=${6:-3}
tlm=$build/tritlm
rm -rf "$out"
mkdir -p "$out"
"$tlm" fed keygen -o "$out/server" 2>/dev/null
"$tlm" fed keygen -o "$out/dev" 2>/dev/null
printf '1 %s\n' "$(cat "$out/dev.pub")" >"$out/devices.txt"
head -c 100000 "$text" >"$out/local.txt"
common="--steps 1 --batch 2 --ctx 32 --threads 1 --client 1"
"$tlm" fed update -m "$model" --data "$out/local.txt" $common -o "$out/plain.tlmu" 2>/dev/null
"$tlm" fed update -m "$model" --data "$out/local.txt" $common -o "$out/sealed.tlmu" --key "$out/dev.key" \
    --server-key "$out/server.pub" 2>/dev/null
i=1
while [ $i -le "$n" ]; do
    cp "$out/plain.tlmu" "$out/p_$i.tlmu"
    cp "$out/sealed.tlmu" "$out/s_$i.tlmu"
    i=$((i + 1))
done
now() { date +%s.%N; }
best() { # options... : the fastest of $reps runs, in seconds
    b=""
    k=0
    while [ $k -lt "$reps" ]; do
        t0=$(now)
        "$tlm" fed aggregate -m "$model" -o "$out/new.tlm" "$@" 2>/dev/null >/dev/null
        t=$(echo "$(now) - $t0" | bc -l)
        if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
        k=$((k + 1))
    done
    echo "$b"
}
dp="--dp-noise 1 --clip 1 --dp-clients $n"
sec="--key $out/server.key --devices $out/devices.txt"
plain=$(best "$out"/p_*.tlmu)
# shellcheck disable=SC2086
sealed=$(best $sec "$out"/s_*.tlmu)
# shellcheck disable=SC2086
private=$(best $dp "$out"/p_*.tlmu)
# shellcheck disable=SC2086
both=$(best $sec $dp "$out"/s_*.tlmu)
params=$("$tlm" info "$model" --json | sed -n 's/.*"weights":\([0-9]*\).*/\1/p')
echo "Model $(basename "$model") ($params parameters), $n updates of $(wc -c <"$out/plain.tlmu") bytes (sealed: $(wc -c <"$out/sealed.tlmu")), fastest of $reps:"
echo
echo "| aggregation | seconds | vs plain |"
echo "|---|---|---|"
for row in "plain:$plain" "sealed + signed:$sealed" "differential privacy:$private" "sealed + DP:$both"; do
    name=${row%%:*} t=${row#*:}
    printf '| %s | %.3f | %.2fx |\n' "$name" "$t" "$(echo "$t / $plain" | bc -l)"
done
