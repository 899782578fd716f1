#!/bin/sh
# The main job on the default model: import stories260K (llama2.c's tiny
# TinyStories model) into a tritlm image, show what it holds, generate text,
# and evaluate it on the TinyStories dev stories.
set -eu
build=${1:-build}
data=${TLM_DATA_DIR:-$(dirname "$0")/../../shared/data}
ckpt=$data/llama2c/stories260K.bin
tok=$data/llama2c/tok512.bin
dev=$data/tinystories/dev.txt
if [ ! -r "$ckpt" ] || [ ! -r "$tok" ]; then
    cat >&2 <<MSG
The demo needs llama2.c's stories260K model, which is not shipped with tritlm:
  $ckpt
  $tok
Download stories260K.bin and tok512.bin from the karpathy/tinyllamas release
(stories260K folder), put them in a folder DIR/llama2c/, and run
  TLM_DATA_DIR=DIR make demo
MSG
    exit 1
fi
out=$build/demo
mkdir -p "$out"
tlm=$build/tritlm
set -x
"$tlm" import llama2c "$ckpt" "$tok" -o "$out/stories260K.tlm"
"$tlm" info "$out/stories260K.tlm" --ctx 256 | tail -3
"$tlm" generate -m "$out/stories260K.tlm" -n 200 -t 0
"$tlm" generate -m "$out/stories260K.tlm" -p "Once upon a time, a little robot" -n 160 -t 0.8 --top-p 0.9 --seed 42
if [ -r "$dev" ]; then
    "$tlm" eval -m "$out/stories260K.tlm" --text "$dev"
fi
