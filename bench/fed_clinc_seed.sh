#!/bin/sh
# Federated improvement of a small intent classifier: the vendor holds SEED
# requests of each CLINC150 intent (the first SEED lines of each label in
# train + oos_train) and trains a classifier on them alone (a 1,024-token
# tokenizer on those lines, 2,000 steps of language model, 1,500 of
# --label-loss, one thread); the other lines stay on DEVICES devices, and
# bench/fed_clinc.sh runs ROUNDS rounds of 'fed update --label-loss' from
# that classifier, scored by in-scope accuracy on val after each round.
# FED_SPLIT=shuffled (default here) gives every device a little of every
# intent; FED_SPLIT=sorted one or two intents each. Prints Markdown.
# usage: bench/fed_clinc_seed.sh BUILD_DIR clinc150/train_val.json OUT_DIR [SEED] [DEVICES] [ROUNDS] [VARIANT...]
#   VARIANT as in bench/fed_clinc.sh (default: "label loss, lr 2e-3@--label-loss@")
set -eu
build=$1 json=$2 out=$3
seed=${4:-20} devices=${5:-100} rounds=${6:-20}
shift 3
for _ in 1 2 3; do [ $# -gt 0 ] && shift; done
[ $# -eq 0 ] && set -- "label loss, lr 2e-3@--label-loss@"
tlm=$build/tritlm
here=$(dirname "$0")
mkdir -p "$out"
jq -r '(.train + .oos_train)[] | "\(.[0])\t\(.[1])"' "$json" |
    awk -F '\t' -v s="$seed" -v a="$out/seed.tsv" -v b="$out/rest.tsv" '{ if (++n[$2] <= s) print > a; else print > b }'
# the devices' lines as bench/fed_clinc.sh reads them: its "train", with val and oos_val as they are
jq -R -s 'split("\n") | map(select(length > 0) | split("\t"))' "$out/rest.tsv" >"$out/rest.json"
jq --slurpfile r "$out/rest.json" '{train: $r[0], oos_train: [], val: .val, oos_val: .oos_val}' "$json" >"$out/devices.json"
jq -r '(.val + .oos_val)[] | "\(.[0])\t\(.[1])"' "$json" >"$out/val.tsv"
common="--data $out/seed.tsv --val $out/val.tsv --split lines --batch 16 --threads 1 --eval-every 500"
[ -e "$out/tok.bin" ] || "$tlm" tokenizer train --vocab 1024 --split lines -o "$out/tok.bin" "$out/seed.tsv" 2>/dev/null
# shellcheck disable=SC2086
[ -e "$out/seed_lm.tlm" ] || "$tlm" train $common --tokenizer "$out/tok.bin" --ctx 64 --steps 2000 -o "$out/seed_lm.tlm" 2>"$out/seed_lm.log"
# shellcheck disable=SC2086
[ -e "$out/seed_cls.tlm" ] || "$tlm" train $common --label-loss --init "$out/seed_lm.tlm" --lr 5e-4 --steps 1500 \
    -o "$out/seed_cls.tlm" 2>"$out/seed_cls.log"
echo "Seed: $(wc -l <"$out/seed.tsv") lines ($seed per intent); on the devices: $(wc -l <"$out/rest.tsv")"
echo
FED_SPLIT=${FED_SPLIT:-shuffled} FED_TASK=intents "$here/fed_clinc.sh" "$build" "$out/seed_cls.tlm" "$out/devices.json" "$out/fed" \
    "$devices" "$rounds" "$@"
