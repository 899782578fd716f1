#!/bin/sh
# Intent classification on CLINC150 ("full": 150 intents and out-of-scope as
# a 151st label) with a language model, against the published baselines
# (in-scope accuracy on the test split: FastText 89.0, SVM 91.0, MLP 93.5,
# BERT 96.9; here on `val`, the test split not being in the data folder):
#   1. a tokenizer of VOCAB tokens (default 1024) trained on the requests
#      and a model of stories260K's shape trained on
#      the TEXT<TAB>INTENT lines of `train` + `oos_train` (language-model
#      loss on whole lines, PRE minutes),
#   2. fine-tuned with the loss on the intents only (--label-loss, FT
#      minutes),
#   3. its ternary version (QAT with --label-loss from it, QAT minutes),
# each scored on `val` + `oos_val` with 'tritlm classify' (exact and greedy
# search), rejecting requests below a confidence (--min-confidence: they
# get oos; one --sweep run per model), the ternary one's worst intents
# (--report), and on privatized text (randomized response and d_chi at a
# few epsilons), and the ternary classifier built into Cortex-M7
# firmware: instructions per classification, exact and greedy.
# Every training run uses THREADS threads (default 1, so that two runs can
# share a two-core machine). Prints Markdown.
# usage: bench/clinc_classify.sh BUILD_DIR clinc150/train_val.json OUT_DIR [PRE FT QAT THREADS]
set -eu
build=$1 json=$2 out=$3
pre=${4:-6} ft=${5:-5} qat=${6:-5} threads=${7:-1}
tlm=$build/tritlm
mkdir -p "$out"
jq -r '(.train + .oos_train)[] | "\(.[0])\t\(.[1])"' "$json" >"$out/train.tsv"
jq -r '(.val + .oos_val)[] | "\(.[0])\t\(.[1])"' "$json" >"$out/val.tsv"
common="--data $out/train.tsv --val $out/val.tsv --split lines --batch 16 --threads $threads --eval-every 1000"
[ -e "$out/tok.bin" ] || "$tlm" tokenizer train --vocab "${VOCAB:-1024}" --split lines -o "$out/tok.bin" "$out/train.tsv" 2>/dev/null
# shellcheck disable=SC2086
[ -e "$out/lm.tlm" ] || "$tlm" train $common --tokenizer "$out/tok.bin" --ctx 64 --minutes "$pre" -o "$out/lm.tlm" 2>"$out/lm.log"
# shellcheck disable=SC2086
[ -e "$out/cls.tlm" ] || "$tlm" train $common --label-loss --init "$out/lm.tlm" --lr 5e-4 --minutes "$ft" -o "$out/cls.tlm" 2>"$out/cls.log"
# shellcheck disable=SC2086
[ -e "$out/cls_t2.tlm" ] || "$tlm" quantize -m "$out/cls.tlm" -o "$out/cls_t2.tlm" --pack t2 --qat --distill --label-loss \
    $common --lr 5e-4 --minutes "$qat" 2>"$out/qat.log"

acc() { # MODEL [classify options]: "in-scope | oos recall | forward passes per line"
    m=$1
    shift
    j=$("$tlm" classify -m "$m" --labels "$out/train.tsv" --text "$out/val.tsv" --oos oos --json "$@" 2>/dev/null)
    printf '%s' "$j" | sed -n 's/.*"in_scope_accuracy":\([0-9.e-]*\).*"oos_recall":\([0-9.e-]*\).*"forwards_per_line":\([0-9.e-]*\).*/\1 \2 \3/p' |
        awk '{ printf "%.4f | %.2f | %.1f", $1, $2, $3 }'
}
echo "| model | bytes | search | in-scope accuracy | oos recall | forward passes / line |"
echo "|---|---|---|---|---|---|"
for m in lm cls cls_t2; do
    for s in exact greedy; do
        g=""
        [ $s = greedy ] && g=--greedy
        # shellcheck disable=SC2086
        echo "| $m | $(wc -c <"$out/$m.tlm") | $s | $(acc "$out/$m.tlm" $g) |"
    done
done
echo
echo "| rejecting unsure requests (exact, one --sweep run each) | --min-confidence | rejected | in-scope accuracy | oos recall |"
echo "|---|---|---|---|---|"
for m in cls cls_t2; do
    "$tlm" classify -m "$out/$m.tlm" --labels "$out/train.tsv" --text "$out/val.tsv" --oos oos --sweep --json 2>/dev/null |
        jq -r '.sweep[] | select(.min_confidence > 0 and .min_confidence < 0.6) | [.min_confidence, .rejected, .in_scope_accuracy, .oos_recall] | @tsv' |
        awk -v m="$m" '{ printf "| %s | %.1f | %d | %.4f | %.2f |\n", m, $1, $2, $3, $4 }'
done
echo
echo "Which intents fail (cls_t2, exact; --report, the ten worst by F1):"
echo
echo "| intent | lines | predicted | correct | F1 | most often given instead |"
echo "|---|---|---|---|---|---|"
"$tlm" classify -m "$out/cls_t2.tlm" --labels "$out/train.tsv" --text "$out/val.tsv" --oos oos --report --json 2>/dev/null |
    jq -r '(.per_label[:10][] | [.label, .lines, .predicted, .correct, .f1, (.most_often_given // "-"), (.times // 0)] | @tsv),
           ([.macro_f1] | @tsv)' |
    awk -F '\t' 'NF > 1 { printf "| %s | %d | %d | %d | %.4f | %s (%d) |\n", $1, $2, $3, $4, $5, $6, $7 } NF == 1 { printf "\nmacro F1 %.4f\n", $1 }'
echo
echo "| privatized text (cls_t2, exact) | epsilon per token | in-scope accuracy | oos recall | forward passes / line |"
echo "|---|---|---|---|---|"
for p in rr:4 rr:8 rr:12 dx:8 dx:16 dx:32; do
    echo "| ${p%%:*} | ${p#*:} | $(acc "$out/cls_t2.tlm" --privatize "${p%%:*}" --epsilon "${p#*:}" --seed 1) |"
done
echo
line=$(sed -n 1p "$out/val.tsv" | cut -f1)
echo "Cortex-M7 firmware (cls_t2, int8 KV cache), the first val line: '$line'"
echo
echo "| search | label | forward passes | instructions | RAM bytes | flash bytes |"
echo "|---|---|---|---|---|---|"
for s in exact greedy; do
    g=""
    [ $s = greedy ] && g=--greedy
    # shellcheck disable=SC2086
    j=$("$tlm" firmware --target cortex-m7 -m "$out/cls_t2.tlm" --kv-int8 --classify "$out/train.tsv" $g -p "$line" \
        -o "$out/fw" --run --json)
    f() { printf '%s' "$j" | sed -n "s/.*\"$1\":\"*\([^,\"]*\).*/\1/p"; }
    echo "| $s | $(f label) | $(f forwards) | $(f insns_per_classification) | $(f ram_bytes) | $(f flash_bytes) |"
done
