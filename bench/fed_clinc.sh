#!/bin/sh
# Federated fine-tuning on text the global model never saw: stories260K
# (children's stories) adapted to CLINC150's assistant requests by D devices
# that each hold the utterances of one or two intents (non-IID: sorted by
# intent, cut into equal shares), R rounds, every device in every round.
# Each variant prints the CLINC150 `val` loss (one utterance per line, the
# evaluation protocol) after every round; with --dp-noise, the privacy
# spent. Prints Markdown.
# usage: bench/fed_clinc.sh BUILD_DIR GLOBAL.tlm clinc150/train_val.json OUT_DIR [DEVICES] [ROUNDS] [VARIANT...]
#   VARIANT: NAME@UPDATE OPTIONS@AGGREGATE OPTIONS (words separated by commas, and
#   a semicolon for a comma inside a word: --tensors,attn;ffn); with
#   --secure-agg among the update options every device gets a key pair, the roster
#   lists them all, and both sides get the keys they need
# env: FED_TASK=intents: the devices hold TEXT<TAB>INTENT lines (train + oos_train,
#   sorted by intent) and each round is scored by 'tritlm classify --greedy' on val +
#   oos_val: in-scope accuracy (give --label-loss in the variants' update options)
#   FED_SPLIT=shuffled: the lines are shuffled (a fixed seed) instead of sorted, so
#   that every device holds a little of every intent, as users who each ask many things

set -eu
build=$1 global=$2 json=$3 out=$4
devices=${5:-100} rounds=${6:-5}
shift 4
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
tlm=$build/tritlm
mkdir -p "$out/data"
jq -r '.val[][0]' "$json" >"$out/val.txt"
if [ "${FED_TASK:-}" = intents ]; then
    jq -r '(.train + .oos_train)[] | .[1] + "\t" + .[0] + "\t" + .[1]' "$json" | LC_ALL=C sort -s -t "$(printf '\t')" -k1,1 |
        cut -f2- >"$out/train_sorted.txt"
    jq -r '(.val + .oos_val)[] | .[0] + "\t" + .[1]' "$json" >"$out/val.tsv"
else
    jq -r '.train[] | .[1] + "\t" + .[0]' "$json" | LC_ALL=C sort -s -t "$(printf '\t')" -k1,1 | cut -f2 >"$out/train_sorted.txt"
fi
if [ "${FED_SPLIT:-}" = shuffled ]; then
    awk 'BEGIN { srand(1) } { printf "%.9f\t%s\n", rand(), $0 }' "$out/train_sorted.txt" | LC_ALL=C sort -k1,1 | cut -f2- \
        >"$out/train_shuffled.txt"
    mv "$out/train_shuffled.txt" "$out/train_sorted.txt"
fi
lines=$(wc -l <"$out/train_sorted.txt")
per=$(((lines + devices - 1) / devices))
rm -f "$out/data/dev_"*
split -l "$per" -d -a 3 "$out/train_sorted.txt" "$out/data/dev_"
ev() { "$tlm" eval -m "$1" --text "$out/val.txt" --split lines --json 2>/dev/null | sed -n 's/.*"loss":\([0-9.]*\).*/\1/p'; }
if [ "${FED_TASK:-}" = intents ]; then
    ev() {
        "$tlm" classify -m "$1" --labels "$out/train_sorted.txt" --text "$out/val.tsv" --oos oos --greedy --json 2>/dev/null |
            sed -n 's/.*"in_scope_accuracy":\([0-9.e-]*\).*/\1/p' | awk '{ printf "%.4f", $1 }'
    }
fi
# keys for secure aggregation: device c is client c
mkdir -p "$out/keys$devices"
if [ ! -e "$out/keys$devices/server.pub" ]; then
    "$tlm" fed keygen -o "$out/keys$devices/server" 2>/dev/null
    c=0
    for f in "$out"/data/dev_*; do
        "$tlm" fed keygen -o "$out/keys$devices/d$c" 2>/dev/null
        printf '%s %s\n' $c "$(cat "$out/keys$devices/d$c.pub")" >>"$out/keys$devices/roster.txt"
        c=$((c + 1))
    done
fi
base=$(ev "$global")
what="CLINC150 val loss"
[ "${FED_TASK:-}" = intents ] && what="CLINC150 val in-scope accuracy (greedy)"
echo "Devices: $devices (about $per utterances each), rounds: $rounds; $what of the global model before: $base"
echo
head="| variant |" sep="|---|"
r=1
while [ $r -le "$rounds" ]; do head="$head round $r |" sep="$sep---|"; r=$((r + 1)); done
echo "$head epsilon at delta 1e-6 | seconds |"
echo "$sep---|---|"
if [ $# -eq 0 ]; then
    set -- "all tensors@--tensors,all@" "norms only@--tensors,norms@--tensors,norms"
fi
for v in "$@"; do
    name=${v%%@*} rest=${v#*@}
    uopts=$(echo "${rest%%@*}" | tr ',;' ' ,') aopts=$(echo "${rest#*@}" | tr ',;' ' ,')
    secure=""
    case " $uopts " in *" --secure-agg "*)
        secure=1
        uopts="$uopts --devices $out/keys$devices/roster.txt --server-key $out/keys$devices/server.pub"
        aopts="$aopts --secure-agg --key $out/keys$devices/server.key --devices $out/keys$devices/roster.txt" ;;
    esac
    cur=$out/${name%% *}_0.tlm
    cp "$global" "$cur"
    rm -f "$out/ledger.json" "$out/ledger.json.lock"
    row="| $name |"
    t0=$(date +%s)
    r=1
    while [ $r -le "$rounds" ]; do
        rm -f "$out"/u_*.tlmu "$out"/r_*.tlmr "$out"/state_*
        c=0
        for f in "$out"/data/dev_*; do
            devkey=""
            [ -n "$secure" ] && devkey="--key $out/keys$devices/d$c.key --state $out/state_$c"
            # shellcheck disable=SC2086
            "$tlm" fed update -m "$cur" --data "$f" --split lines --steps 10 --batch 8 --ctx 32 --lr 2e-3 --threads 1 \
                --client $c --round $r --seed $((r * 1000 + c)) $uopts $devkey -o "$out/u_$c.tlmu" 2>/dev/null
            c=$((c + 1))
        done
        next=$out/${name%% *}_$r.tlm
        if [ -n "$secure" ]; then # step 1: the request; each device's reveal; step 2 below
            rm -f "$out"/r_*.tlmr
            # shellcheck disable=SC2086
            "$tlm" fed aggregate -m "$cur" -o "$next" $aopts "$out"/u_*.tlmu 2>/dev/null >/dev/null
            c=0
            for f in "$out"/data/dev_*; do
                "$tlm" fed reveal --key "$out/keys$devices/d$c.key" --server-key "$out/keys$devices/server.pub" \
                    --devices "$out/keys$devices/roster.txt" --state "$out/state_$c" --request "$next.request" \
                    -o "$out/r_$c.tlmr" 2>/dev/null
                c=$((c + 1))
            done
        fi
        # shellcheck disable=SC2086,SC2046
        "$tlm" fed aggregate -m "$cur" -o "$next" $aopts "$out"/u_*.tlmu $(ls "$out"/r_*.tlmr 2>/dev/null) 2>"$out/agg.err" >/dev/null
        cur=$next
        row="$row $(ev "$cur") |"
        r=$((r + 1))
    done
    eps=$(sed -n 's/.*round(s): rho [0-9.e+-]*, epsilon \([0-9.]*\).*/\1/p' "$out/agg.err" | tail -n 1)
    echo "$row ${eps:--} | $(($(date +%s) - t0)) |"
done
