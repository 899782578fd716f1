#!/bin/sh
# The main job on the default model: the sparse ternary TinyStories model that
# ships in models/ (trained by tritlm, see models/README.md): what it holds,
# text from it, and its accuracy next to its fp32 parent, on the TinyStories
# dev stories when ../shared/data is present, else on the stories in
# models/sample_stories.txt; a protected federated round on the same text;
# then, where the Cortex-M7 toolchain and QEMU are installed, on an
# emulated microcontroller: decoding, and tuning on the device's own text. With CLINC150 in the data folder, a user's
# travel requests personalize the ternary model through a 37 KB adapter it decodes with, the model left as it is
# (on the host and in the emulated chip), and with their intents make a ternary intent classifier that the board
# image runs on typed requests. With llama2.c's stories260K in the data folder it also imports and runs that.
set -eu
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
data=${TLM_DATA_DIR:-$here/../shared/data}
tlm=$build/tritlm
ternary=$here/models/tinystories-d128-ternary.tlm
fp32=$here/models/tinystories-d128-fp32.tlm
dev=$data/tinystories/dev.txt
[ -r "$dev" ] || dev=$here/models/sample_stories.txt
set -x
"$tlm" info "$ternary" --ctx 256 | tail -4
"$tlm" generate -m "$ternary" -n 200 -t 0
"$tlm" generate -m "$ternary" -p "Once upon a time, a little robot" -n 160 -t 0.8 --top-p 0.9 --seed 42
"$tlm" eval -m "$ternary" --text "$dev"
"$tlm" eval -m "$fp32" --text "$dev"
echo "Tom is 7 and his mum's number is 555-201-3344." | \
    "$tlm" privatize -m "$ternary" --mechanism rr --epsilon 12 --redact
set +x
mkdir -p "$build/demo"
# a federated round on files: two enrolled devices fine-tune the norms of the
# fp32 model on their own stories and send signed, sealed, masked shares
# with their part of the privacy noise; the server names who dropped out
# (nobody), the devices reveal their self masks, and the server reads only
# the sum (secure aggregation) and states the round's epsilon
fed=$build/demo/fed
rm -rf "$fed"
mkdir -p "$fed"
head -c 40000 "$dev" >"$fed/device1.txt" # the two ends of the text (all of it for the small sample)
tail -c 40000 "$dev" >"$fed/device2.txt"
set -x
"$tlm" fed keygen -o "$fed/server"
"$tlm" fed keygen -o "$fed/device1"
"$tlm" fed keygen -o "$fed/device2"
set +x
printf '1 %s\n2 %s\n' "$(cat "$fed/device1.pub")" "$(cat "$fed/device2.pub")" >"$fed/devices.txt"
share="--secure-agg --devices $fed/devices.txt --update-clip 0.5 --dp-noise 1 --tensors norms --server-key $fed/server.pub"
agg="--key $fed/server.key --devices $fed/devices.txt --secure-agg --clip 0.5 --dp-noise 1 --tensors norms"
set -x
"$tlm" fed update -m "$fp32" --data "$fed/device1.txt" --steps 4 --batch 4 --ctx 64 --client 1 --key "$fed/device1.key" \
    $share --state "$fed/device1.state" -o "$fed/u1.tlmu" 2>&1 | grep '^fed'
"$tlm" fed update -m "$fp32" --data "$fed/device2.txt" --steps 4 --batch 4 --ctx 64 --client 2 --key "$fed/device2.key" \
    $share --state "$fed/device2.state" -o "$fed/u2.tlmu" 2>&1 | grep '^fed'
"$tlm" fed aggregate -m "$fp32" -o "$fed/global2.tlm" $agg "$fed/u1.tlmu" "$fed/u2.tlmu"
"$tlm" fed reveal --key "$fed/device1.key" --server-key "$fed/server.pub" --devices "$fed/devices.txt" \
    --state "$fed/device1.state" --request "$fed/global2.tlm.request" -o "$fed/r1.tlmr"
"$tlm" fed reveal --key "$fed/device2.key" --server-key "$fed/server.pub" --devices "$fed/devices.txt" \
    --state "$fed/device2.state" --request "$fed/global2.tlm.request" -o "$fed/r2.tlmr"
"$tlm" fed aggregate -m "$fp32" -o "$fed/global2.tlm" $agg "$fed/u1.tlmu" "$fed/u2.tlmu" "$fed/r1.tlmr" "$fed/r2.tlmr"
set +x
# personalization without rewriting the model: one user's travel requests
# (CLINC150's training requests of five intents) train a rank-4 adapter of
# the ternary model; decoding with it on top of the unchanged model, the
# loss on the same intents' held-out requests falls
clinc=$data/clinc150/train_val.json
if [ -r "$clinc" ]; then
    grep -o '\["[^"]*", "\(book_flight\|book_hotel\|car_rental\|flight_status\|travel_alert\)"\]' "$clinc" |
        sed 's/^\["\(.*\)", "\([a-z_]*\)"\]$/\1\t\2/' >"$fed/travel.tsv" # the train split's 500, then val's 100
    cut -f1 "$fed/travel.tsv" >"$fed/travel.txt"
    head -n 500 "$fed/travel.txt" >"$fed/travel_train.txt"
    tail -n 100 "$fed/travel.txt" >"$fed/travel_val.txt"
    head -n 500 "$fed/travel.tsv" >"$fed/travel_train.tsv"
    tail -n 100 "$fed/travel.tsv" >"$fed/travel_val.tsv"
    set -x
    "$tlm" fed update -m "$ternary" --data "$fed/travel_train.txt" --split lines --lora 4 --rank 4 --steps 150 \
        --batch 8 --ctx 32 --lr 1e-2 -o "$fed/adapter.tlmu" 2>&1 | grep '^fed'
    "$tlm" eval -m "$ternary" --text "$fed/travel_val.txt" --split lines --kv-int8
    "$tlm" eval -m "$ternary" --text "$fed/travel_val.txt" --split lines --kv-int8 --adapter "$fed/adapter.tlmu"
    "$tlm" generate -m "$ternary" -p "can you book" -n 24 -t 0 --kv-int8 --adapter "$fed/adapter.tlmu"
    # the same requests with their intents (TEXT<TAB>INTENT) make a ternary intent
    # classifier of the fp32 parent: quantization-aware, the loss on the intents only;
    # each held-out request gets the intent whose line the model finds the most probable
    "$tlm" quantize -m "$fp32" -o "$fed/travel-intents.tlm" --pack t3 --qat --label-loss --data "$fed/travel_train.tsv" \
        --split lines --steps 300 --batch 8 --ctx 32 --lr 2e-3 2>&1 | grep '^quantize: .*smaller'
    "$tlm" classify -m "$fed/travel-intents.tlm" --labels "$fed/travel_train.tsv" --text "$fed/travel_val.tsv"
    set +x
fi
# on a microcontroller (emulated): the default model as STM32F722 firmware
# and as a real STM32F405 board's image answering typed prompts;
# the same model tuning its norm gains on a device's own text in 256 KB of
# RAM and sending the update signed with device 1's key and sealed to the
# server's by the chip itself, which the server opens and folds into a
# next global model that stays ternary, signs, and the chip checks before
# running it; and the fp32 parent quantized per
# layer for an STM32H743's flash and RAM
if command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1; then
    head -c 3000 "$fed/device1.txt" >"$fed/own.txt"
    set -x
    "$tlm" firmware --device stm32f722 -m "$ternary" --kv-int8 -n 64 -o "$build/demo/fw-stm32f722" --run |
        grep -E '^(TEXT|FLASH|RAM|INSNS_PER_TOKEN|ESTIMATE)'
    # a real STM32F405 board's image (fw.bin), prompts typed on its console
    # (here QEMU's netduinoplus2, the same bytes), in its 128 KB of RAM
    printf 'The little dog\nTom and Sue\n' >"$build/demo/typed.txt"
    "$tlm" firmware --device stm32f405 -m "$ternary" --kv-int8 --ctx 128 -n 48 --interactive \
        --input "$build/demo/typed.txt" -o "$build/demo/fw-stm32f405" --run | grep -E '^(> |TEXT|BIN|RAM)'
    # the intent classifier on the same board: typed requests get their intents
    if [ -r "$fed/travel-intents.tlm" ]; then
        printf 'i need a car in boston next week\nis my flight to paris on time\n' >"$build/demo/requests.txt"
        "$tlm" firmware --device stm32f405 -m "$fed/travel-intents.tlm" --kv-int8 --ctx 64 --classify "$fed/travel_train.tsv" \
            -p "book me a room in rome" --interactive --input "$build/demo/requests.txt" \
            -o "$build/demo/fw-intents" --run | grep -E '^(> |CLASS|RAM|ESTIMATE)'
    fi
    "$tlm" firmware --target cortex-m7 -m "$ternary" --tune "$fed/own.txt" --tune-steps 2 --encode int8 \
        --client 1 --key "$fed/device1.key" --server-key "$fed/server.pub" \
        -o "$build/demo/fw-tune" --run --update "$fed/device1-on-chip.tlmu" |
        grep -E '^(TUNE_TOKENS|UPDATE_BYTES|RAM|LOSS|ESTIMATE)'
    "$tlm" fed info "$fed/device1-on-chip.tlmu" | head -1
    # the personal adapter in the chip, beside the model in flash
    [ -r "$fed/adapter.tlmu" ] && "$tlm" firmware --target cortex-m7 -m "$ternary" --kv-int8 --adapter "$fed/adapter.tlmu" \
        -p "can you book" -n 24 -o "$build/demo/fw-adapter" --run | grep -E '^(ADAPTER|TEXT|RAM|FLASH)' 
    # the server folds it into the next global model, still ternary (same size)
    "$tlm" fed aggregate -m "$ternary" -o "$build/demo/ternary-round1.tlm" --key "$fed/server.key" \
        --devices "$fed/devices.txt" "$fed/device1-on-chip.tlmu"
    wc -c "$ternary" "$build/demo/ternary-round1.tlm"
    # the server signs it; the chip checks the signature before it runs the model
    "$tlm" fed sign --key "$fed/server.key" -m "$build/demo/ternary-round1.tlm" --round 1 -o "$build/demo/ternary-round1.tlmg"
    "$tlm" firmware --target cortex-m7 -m "$build/demo/ternary-round1.tlmg" --server-key "$fed/server.pub" --kv-int8 -n 32 \
        -o "$build/demo/fw-signed" --run | grep -E '^(SIGNED|TEXT)'
    "$tlm" quantize -m "$fp32" -o "$build/demo/d128-stm32h743.tlm" --device stm32h743 --calib "$dev" --calib-stories 50
    set +x
fi
ckpt=$data/llama2c/stories260K.bin tok=$data/llama2c/tok512.bin
if [ -r "$ckpt" ] && [ -r "$tok" ]; then
    set -x
    "$tlm" import llama2c "$ckpt" "$tok" -o "$build/demo/stories260K.tlm"
    "$tlm" generate -m "$build/demo/stories260K.tlm" -n 120 -t 0
fi
