#!/bin/sh
# Builds a model image into firmware for TARGET and, with --run, runs it in
# QEMU and prints a KEY VALUE summary (see fw_main.c for the firmware's own
# lines; INSNS_PER_TOKEN comes from the instruction-counting plugin).
# usage: firmware/build.sh TARGET MODEL.tlm OUTDIR [--ctx N] [--ram-kb K] [--stack-kb S] [--kv-int8] [-p PROMPT] [-n STEPS] [--run]
#        (TARGET: cortex-m7, cortex-m4, cortex-m0plus, esp32c3 or lx106, emulated boards; or stm32f405,
#         a real STM32F405/F407 image, OUTDIR/fw.bin, that QEMU's netduinoplus2 runs unchanged)
#        (--ctx: positions the arena holds, default the model's seq_len but at most 256)
#        (--ram-kb: default 256, or all the target has if less: 128 on the stm32f405)
#        [--uart 1|2|3|6]   (stm32f405: the console's USART, default 1 on PA9/PA10; 2 PA2/PA3,
#                            3 PB10/PB11, 6 PC6/PC7; 115200 8N1)
#        [-t TEMP [--top-p P] [--seed S]]   (sampled decoding as 'tritlm generate -t TEMP --top-p P
#                            --seed S' (default seed 1); typed prompts: seed S + k for the k-th)
#        [--interactive [--input FILE]]   (stm32f405: after the fixed prompt, prompts typed on the
#                            console, each decoded as a TEXT line, until Ctrl-D; with --run, QEMU's
#                            console is typed FILE's lines, then Ctrl-D)
#        (exit 3: the model does not fit the RAM budget; 4: the firmware does not fit the
#         board's flash, 4 MB on the emulated boards, 1 MB on the stm32f405; 2: any other error)
#        (--stack-kb: the stack's region within the RAM budget, default 8; the firmware exits 98 if it used all of it)
#        [--privatize 1|2 --epsilon E --seed S [--count priv] [--priv-index]]   (privatize the prompt: 1 dx, 2 rr;
#        --priv-index: d_chi with its search index in static RAM)
#        [--classify LABELS [--greedy] [--reject UNATS I]]   (instead of decoding, give the prompt (and
#                            typed lines) the label of LABELS (one a line, or after the last TAB of
#                            each line) as 'tritlm classify' does; INSNS_PER_CLASSIFICATION counts
#                            each one; --reject: label I (from 0) instead when minus the log of the
#                            confidence exceeds UNATS millionths of a nat, 'classify --min-confidence')
#        [--fault-test ADDR]   (tests: read unmapped memory before anything else)
#        [--adapter UPDATE]   (decode with a low-rank update on top of the model, linked into flash
#                              next to it: 'tritlm fed update --lora R --rank R'; exit 7 if refused)
#        [--no-stop]   (decode all STEPS positions, past the end-of-text token: benchmarks that
#                       compare two builds at the same positions)
#        [--embed asm|c]   (how the image gets into flash: model.S's .incbin, the default, or the C
#                           array of `tritlm export c`, whose header then also sizes the arena)
#        [--tune TEXT [--tune-steps N] [--tune-window W] [--lr LR] [--encode fp32|int8|t2] [--tune-lora R]]
#                          (on-device tuning instead of decoding: fw_tune.c tunes the norm gains on
#                           TEXT, linked into flash, for N steps (default 8) of W positions (default
#                           16) and prints the update, coded as --encode (default fp32; --seed seeds
#                           the stochastic rounding of int8 and t2); --tune-lora R: adapters of rank R
#                           on wq, wk, wv, wo instead of the gains (alpha R/2, A from --seed; the update in
#                           int8 low-rank factors); --lr defaults to tritlm/tune.h's TLM_TUNE_LR or
#                           TLM_TUNE_LORA_LR)
#        [--client ID] [--round R]   (with --tune: the update's client id and round, default 0)
#        [--key DEVICE.key --server-key SERVER.pub]   (with --tune: the update leaves signed with the
#                          device's key and sealed to the server's, by the core (tritlm/seal.h); the
#                          keys and 32 bytes of build-time entropy go into OUTDIR/tlm_fw_keys.h)
#        [--server-key SERVER.pub]   (MODEL is a signed model, 'tritlm fed sign': the firmware checks
#                          the server's signature on it before it opens the image; exit 10 if it fails)
# env: TLM_BIN (tritlm, for the arena size), TLM_PLUGIN (libinsncount.so; optional),
#      TLM_FW_ARENA (arena bytes, instead of asking tritlm info),
#      TLM_PROFILE=N (the N functions that ran the most instructions, in OUTDIR/run.err),
#      TLM_FW_CACHE (where the compiled core, and on lx106 the libgcc routines built from GCC's
#      source, are kept for later builds; default OUTDIR)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target=$1 model=$2 out=$3
shift 3
ctx="" ram_kb="" uart=1 interactive=0 input="" temp="" top_p=1 prompt="Once upon a time" steps=128 run=0 stack_kb=8 priv="" fault="" kv8=0 priv_eps=8 priv_seed=1 count=token priv_index=0
classify="" cls_mode=0 reject_unats="" reject_label="" seal_key="" seal_pub="" adapter="" embed=asm tune="" tune_steps=8 tune_window=16 tune_lr="" tune_enc="" tune_lora=0 tune_client=0 tune_round=0
while [ $# -gt 0 ]; do
    case $1 in
    --ctx) ctx=$2; shift 2 ;;
    --ram-kb) ram_kb=$2; shift 2 ;;
    --uart) uart=$2; shift 2 ;;
    --interactive) interactive=1; shift ;;
    -t) temp=$2; shift 2 ;;
    --top-p) top_p=$2; shift 2 ;;
    --input) input=$2; shift 2 ;;
    --stack-kb) stack_kb=$2; shift 2 ;;
    -p) prompt=$2; shift 2 ;;
    -n) steps=$2; shift 2 ;;
    --run) run=1; shift ;;
    --privatize) priv="-DTLM_FW_PRIV_MECH=$2"; shift 2 ;; # 1 dx, 2 rr (tlm_mech)
    --epsilon) priv_eps=$2; shift 2 ;;
    --seed) priv_seed=$2; shift 2 ;;
    --count) count=$2; shift 2 ;; # token (default) or priv: which markers the plugin counts between
    --priv-index) priv_index=1; shift ;; # d_chi: build the search index in a static array
    --kv-int8) kv8=1; shift ;;
    --classify) classify=$2; shift 2 ;;
    --greedy) cls_mode=1; shift ;;
    --reject) reject_unats=$2 reject_label=$3; shift 3 ;;
    --embed) embed=$2; shift 2 ;;
    --adapter) adapter=$2; shift 2 ;;
    --no-stop) nostop=-DTLM_FW_NO_STOP; shift ;;
    --tune) tune=$2; shift 2 ;;
    --key) seal_key=$2; shift 2 ;;
    --server-key) seal_pub=$2; shift 2 ;;
    --tune-steps) tune_steps=$2; shift 2 ;;
    --tune-window) tune_window=$2; shift 2 ;;
    --tune-lora) tune_lora=$2; shift 2 ;;
    --client) tune_client=$2; shift 2 ;;
    --round) tune_round=$2; shift 2 ;;
    --lr) tune_lr=$2; shift 2 ;;
    --encode)
        case $2 in fp32) tune_enc=0 ;; int8) tune_enc=1 ;; t2) tune_enc=2 ;;
        *) echo "build.sh: --encode takes fp32, int8 or t2, not $2" >&2; exit 2 ;; esac
        shift 2 ;;
    --fault-test) fault="-DTLM_FW_FAULT_TEST=$2"; shift 2 ;; # tests: load from this unmapped address first
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
tlm=${TLM_BIN:-tritlm}
mkdir -p "$out"
out=$(cd "$out" && pwd) # absolute: the compiler runs in it (below)
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
if [ -n "$adapter" ]; then
    [ -z "$tune" ] || { echo "build.sh: --adapter decodes; not with --tune" >&2; exit 2; }
    [ -f "$adapter" ] || { echo "build.sh: no adapter file $adapter" >&2; exit 2; }
    adapter=$(cd "$(dirname "$adapter")" && pwd)/$(basename "$adapter")
fi
img=$model # the image tritlm info reads: a signed model's, taken out of it
if [ "$(head -c 4 "$model" 2>/dev/null)" = TLMG ]; then # a signed model (tritlm fed sign): checked on the device
    [ -n "$seal_pub" ] && [ -z "$seal_key" ] && [ -z "$tune" ] ||
        { echo "build.sh: $model is a signed model: decode it with --server-key SERVER.pub (no --key, no --tune)" >&2; exit 2; }
    [ "$embed" = asm ] || { echo "build.sh: a signed model is linked by .incbin (--embed asm)" >&2; exit 2; }
    img=$out/tlm_fw_model_image.tlm
    tail -c +77 "$model" >"$img" # past magic, version, round and signature (FORMAT.md)
    signed=1
elif [ -n "$seal_pub" ] && [ -z "$tune" ]; then
    echo "build.sh: --server-key checks a signed model (tritlm fed sign) or, with --tune and --key, seals the update; $model is not signed" >&2
    exit 2
fi
if [ -z "$ctx" ]; then # the model's own context, at most 256 positions
    sl=$("$tlm" info "$img" --json 2>"$out/info.err" | sed -n 's/.*"seq_len":\([0-9]*\).*/\1/p')
    [ -n "$sl" ] || { echo "build.sh: $(head -n 1 "$out/info.err" | sed 's/^tritlm info: //')" >&2; exit 2; }
    ctx=256
    [ "$sl" -lt 256 ] && ctx=$sl
fi
echo "CTX $ctx"
bytes_of() { printf '%s' "$1" | sed 's/\(..\)/0x\1,/g; s/,$//'; }
if [ -n "$seal_pub" ]; then
    pk=$(sed -n 's/^[[:space:]]*tritlm-fed-public-1[[:space:]][[:space:]]*\([0-9a-fA-F]\{136\}\)[[:space:]]*$/\1/p' "$seal_pub" 2>/dev/null | head -n 1)
    [ -n "$pk" ] || { echo "build.sh: $seal_pub is not a tritlm public key ('tritlm fed keygen')" >&2; exit 2; }
fi
if [ -n "${signed:-}" ]; then # the server's Ed25519 key
    echo "#define TLM_FW_SIGNED_BY {$(bytes_of "$(printf '%s' "$pk" | cut -c1-64)")}" >"$out/tlm_fw_keys.h"
    seal_def="-DTLM_FW_SIGNED -I."
elif [ -n "$seal_key$seal_pub" ]; then # the device's Ed25519 seed and the server's X25519 key, as C byte lists
    [ -n "$tune" ] && [ -n "$seal_key" ] && [ -n "$seal_pub" ] ||
        { echo "build.sh: --key and --server-key go together, with --tune" >&2; exit 2; }
    sk=$(sed -n 's/^[[:space:]]*tritlm-fed-secret-1[[:space:]][[:space:]]*\([0-9a-fA-F]\{128\}\)[[:space:]]*$/\1/p' "$seal_key" 2>/dev/null | head -n 1)
    [ -n "$sk" ] || { echo "build.sh: $seal_key is not a tritlm secret key ('tritlm fed keygen')" >&2; exit 2; }
    ent=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    [ ${#ent} = 64 ] || { echo "build.sh: could not read 32 bytes from /dev/urandom" >&2; exit 2; }
    umask_was=$(umask)
    umask 077 # the device's secret seed is in it
    {
        echo "/* written by firmware/build.sh from $(basename "$seal_key") and $(basename "$seal_pub"): secret */"
        echo "#define TLM_FW_SEAL_SEED {$(bytes_of "$(printf '%s' "$sk" | cut -c1-64)")}"
        echo "#define TLM_FW_SEAL_SERVER {$(bytes_of "$(printf '%s' "$pk" | cut -c65-128)")}"
        echo "#define TLM_FW_SEAL_ENTROPY {$(bytes_of "$ent")}"
    } >"$out/tlm_fw_keys.h"
    umask "$umask_was"
    seal_def="-DTLM_FW_SEAL -I."
fi
if [ -n "$tune" ]; then
    [ "$embed" = asm ] || { echo "build.sh: --tune takes the model by .incbin (--embed asm)" >&2; exit 2; }
    [ -f "$tune" ] || { echo "build.sh: no text file $tune" >&2; exit 2; }
    case "$tune_steps$tune_window$tune_lora$tune_client$tune_round" in *[!0-9]*) echo "build.sh: --tune-steps, --tune-window, --tune-lora, --client and --round take integers" >&2; exit 2 ;; esac
    lora_opt=""
    if [ "$tune_lora" -gt 0 ]; then
        [ "${tune_enc:-1}" = 1 ] || { echo "build.sh: --tune-lora sends int8 factors: not --encode fp32 or t2" >&2; exit 2; }
        tune_enc=1 lora_opt="--tune-lora $tune_lora"
    fi
    [ -n "$tune_enc" ] || tune_enc=0
    # shellcheck disable=SC2086
    info=$("$tlm" info "$img" --tune-window "$tune_window" $lora_opt --json 2>"$out/info.err") || {
        echo "build.sh: $(head -n 1 "$out/info.err" | sed 's/^tritlm info: //')" >&2
        exit 2
    }
    arena=$(echo "$info" | sed -n 's/.*"tune_arena_bytes":\([0-9]*\).*/\1/p')
    tune=$(cd "$(dirname "$tune")" && pwd)/$(basename "$tune")
    tbytes=$(wc -c <"$tune")
    tlines=$(wc -l <"$tune")
    # room for the tokens: at most one per byte, plus BOS and the dummy prefix per line
    tune_defs="-DTLM_FW_TUNE_STEPS=${tune_steps}u -DTLM_FW_TUNE_WINDOW=${tune_window}u"
    [ -n "$tune_lr" ] && tune_defs="$tune_defs -DTLM_FW_TUNE_LR=((float)$tune_lr)" # (else the core's default: fw_tune.c)
    tune_defs="$tune_defs -DTLM_FW_TEXT_IDS=$((tbytes + 3 * (tlines + 1)))u -DTLM_FW_TUNE_ENC=${tune_enc}u -DTLM_FW_SEED=${priv_seed}u"
    tune_defs="$tune_defs -DTLM_FW_TUNE_LORA=${tune_lora}u -DTLM_FW_CLIENT=${tune_client}u -DTLM_FW_ROUND=${tune_round}u"
elif [ -n "${TLM_FW_ARENA:-}" ]; then
    arena=$TLM_FW_ARENA # tests: build an image the host would refuse, to see the firmware refuse it
else
    info=$("$tlm" info "$img" --ctx "$ctx" --json 2>"$out/info.err") || {
        echo "build.sh: $(head -n 1 "$out/info.err" | sed 's/^tritlm info: //')" >&2 # why: unreadable, or --ctx too long
        exit 2
    }
    key=arena_bytes
    [ "$kv8" = 1 ] && key=arena_bytes_kv_int8
    [ -n "$adapter" ] && key=${key}_adapter
    arena=$(echo "$info" | sed -n "s/.*\"$key\":\([0-9]*\).*/\1/p")
fi
plen=$(printf '%s' "$prompt" | wc -c)
# stdin's bytes as a C list of their values ("1,2,3"): any bytes (quotes,
# newlines, UTF-8, NUL) reach the firmware unchanged
byte_list() { od -An -v -tu1 | tr -s ' \n' ' ' | sed 's/^ *//; s/ *$//; s/ /,/g'; }
# the prompt's, each followed by a comma (an initializer that ends with its NUL)
prompt_bytes=$(printf '%s' "$prompt" | byte_list | sed 's/$/,/; s/^,$//')
[ -n "$priv" ] && priv="$priv -DTLM_FW_PRIV_EPS=((float)$priv_eps) -DTLM_FW_PRIV_SEED=${priv_seed}u"
if [ -n "$temp" ]; then # sampled decoding: numbers only (they become C constants)
    for v in "$temp" "$top_p"; do
        case $v in '' | *[!0-9.eE+-]*) echo "build.sh: -t and --top-p take numbers, not '$v'" >&2; exit 2 ;; esac
    done
    case $priv_seed in '' | *[!0-9]*) echo "build.sh: --seed takes a whole number, not '$priv_seed'" >&2; exit 2 ;; esac
    [ -z "$tune" ] || { echo "build.sh: -t samples the decoder's text; not with --tune" >&2; exit 2; }
    sample_defs="-DTLM_FW_TEMP=((float)$temp) -DTLM_FW_TOP_P=((float)$top_p) -DTLM_FW_SEED=${priv_seed}ull"
fi
if [ "$priv_index" = 1 ]; then
    [ -n "${info:-}" ] || info=$("$tlm" info "$img" --ctx "$ctx" --json) || { echo "build.sh: cannot read $model" >&2; exit 2; }
    ib=$(echo "$info" | sed -n 's/.*"dx_index_bytes":\([0-9]*\).*/\1/p')
    priv="$priv -DTLM_FW_PRIV_INDEX_BYTES=${ib:-0}u"
fi
if [ -n "$classify" ]; then # the labels as NUL-terminated byte strings (any bytes pass)
    [ -z "$tune" ] && [ -z "$temp" ] || { echo "build.sh: --classify neither tunes nor samples" >&2; exit 2; }
    [ -f "$classify" ] || { echo "build.sh: no labels file $classify" >&2; exit 2; }
    # each line's part after its last TAB, trimmed, the first of each label kept
    awk '{ sub(/\r$/, ""); n = split($0, f, "\t"); l = f[n]; gsub(/^[ \t]+|[ \t]+$/, "", l)
           if (l != "" && !(l in seen)) { seen[l] = 1; print l } }' "$classify" >"$out/labels.txt"
    nl=$(wc -l <"$out/labels.txt")
    [ "$nl" -ge 2 ] || { echo "build.sh: $classify holds $nl distinct label(s); at least 2 are needed" >&2; exit 2; }
    lmax=$(LC_ALL=C awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$out/labels.txt")
    {
        echo "/* written by firmware/build.sh from $(basename "$classify") */"
        echo "#define TLM_FW_N_LABELS ${nl}u"
        echo "#define TLM_FW_LABEL_BYTES $(wc -c <"$out/labels.txt")u"
        echo "#define TLM_FW_LABEL_MAX ${lmax}u"
        printf 'static const unsigned char tlm_fw_label_text[] = {'
        tr '\n' '\000' <"$out/labels.txt" | byte_list
        echo '};'
    } >"$out/tlm_fw_labels.h"
    cls_defs="-DTLM_FW_CLASSIFY=$cls_mode -I."
    if [ -n "$reject_unats" ]; then
        case "$reject_unats$reject_label" in *[!0-9]* | "") echo "build.sh: --reject takes two whole numbers" >&2; exit 2 ;; esac
        [ "$reject_label" -lt "$nl" ] || { echo "build.sh: --reject's label $reject_label is not one of the $nl" >&2; exit 2; }
        cls_defs="$cls_defs -DTLM_FW_REJECT_UNATS=${reject_unats}u -DTLM_FW_REJECT_LABEL=${reject_label}u"
    fi
    [ "$count" = token ] && count=classify
fi
arena_def=$arena
case $embed in
asm) ;;
c) # the image as C source; its header's arena figure (for --ctx) sizes the arena
    "$tlm" export c "$model" -o "$out/tlm_fw_model_c.c" --name tlm_fw_model_c --ctx "$ctx" 2>"$out/export.err" || {
        echo "build.sh: $(head -n 1 "$out/export.err")" >&2
        exit 2
    }
    arena_def=tlm_fw_model_c_ARENA_BYTES
    [ "$kv8" = 1 ] && arena_def=tlm_fw_model_c_ARENA_BYTES_KV_INT8
    [ -n "${TLM_FW_ARENA:-}" ] || [ -n "$adapter" ] && arena_def=$arena # (the header's figures have no adapter)
    ;;
*) echo "build.sh: --embed takes asm or c, not $embed" >&2; exit 2 ;;
esac
rt_flags=$kv8
[ -n "$adapter" ] && rt_flags=$((kv8 + 2)) && defs_adapter=-DTLM_FW_ADAPTER # TLM_RT_KV_INT8 = 1, TLM_RT_ADAPTER = 2
defs="${tune_defs:-} ${cls_defs:-} ${seal_def:-} ${defs_adapter:-} ${nostop:-} ${sample_defs:-} $priv $fault -DTLM_FW_RT_FLAGS=${rt_flags}u -DTLM_FW_CTX=$ctx -DTLM_FW_STEPS=$steps -DTLM_FW_ARENA_BYTES=$arena_def -DTLM_FW_PROMPT_CAP=$((plen + 3))"
port=$here/$target
case $target in
cortex-m7 | cortex-m4 | cortex-m0plus)
    port=$here/cortex-m # one startup and linker script for the three MPS2 boards
    CC=arm-none-eabi-gcc
    case $target in
    cortex-m7) float="-mfpu=fpv5-d16 -mfloat-abi=hard" ;;    # the M7's double-precision FPv5
    cortex-m4) float="-mfpu=fpv4-sp-d16 -mfloat-abi=hard" ;; # the M4F's single-precision FPv4
    *) # Armv6-M, no FPU, no DSP (run on mps2-an385's Cortex-M3: startup.c); faster float routines than libgcc's
        float="-mfloat-abi=soft" FLOAT_SRCS="softfloat.c" ;;
    esac
    CF="-mcpu=$target $float -mthumb -O2 -ffunction-sections -fdata-sections"
    LDF="-nostartfiles --specs=nano.specs -T link.ld -Wl,--gc-sections"
    LIBS="-lm -lc -lgcc"
    SRCS="startup.c" # in $port
    max_ram=4096
    ;;
stm32f405)
    CC=arm-none-eabi-gcc
    case $uart in 1 | 2 | 3 | 6) ;; *) echo "build.sh: --uart takes 1, 2, 3 or 6, not $uart" >&2; exit 2 ;; esac
    CF="-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb -O2 -ffunction-sections -fdata-sections"
    LDF="-nostartfiles --specs=nano.specs -T link.ld -Wl,--gc-sections"
    LIBS="-lm -lc -lgcc"
    SRCS="startup.c"
    defs="$defs -DTLM_FW_UART=$uart -DTLM_FW_CYCLES -DTLM_FW_STREAM"
    [ "$interactive" = 1 ] && defs="$defs -DTLM_FW_INTERACTIVE"
    max_ram=128 flash_desc="the STM32F405's 1 MB of flash"
    ;;
esp32c3)
    CC=riscv64-unknown-elf-gcc
    CF="-march=rv32imc -mabi=ilp32 -O2 -ffunction-sections -fdata-sections --specs=picolibc.specs"
    LDF="-nostartfiles -T link.ld -Wl,--gc-sections"
    LIBS="-lc -lgcc"
    SRCS="start.S startup.c"
    FLOAT_SRCS="softfloat.c" # in common: faster float routines than libgcc's
    max_ram=400 # the chip's SRAM
    ;;
lx106)
    CC=xtensa-lx106-elf-gcc
    CF="-O2 -ffunction-sections -fdata-sections -mtext-section-literals --specs=/usr/lib/xtensa-lx106-elf/picolibc.specs"
    LDF="-nostartfiles -T link.ld -Wl,--gc-sections"
    # Debian's lx106 libgcc lacks division and most soft-float routines (the
    # ESP8266 has them in ROM): built from GCC's own source by libgcc-extra.sh
    LIBS="-lc -lgcc-lx106-extra -lgcc -lgcc-lx106-extra"
    SRCS="start.S startup.c int64.c"
    # (softfloat.c is slower here: its 24 x 24-bit products become __muldi3 calls on this core)
    max_ram=512 # dataram1 + dataram0 of the sim machine
    ;;
*) echo "build.sh: unknown target $target (cortex-m7, cortex-m4, cortex-m0plus, esp32c3, lx106, stm32f405)" >&2; exit 2 ;;
esac
[ -n "$ram_kb" ] || ram_kb=$((max_ram < 256 ? max_ram : 256))
if [ "$interactive" = 1 ]; then
    [ "$target" = stm32f405 ] || { echo "build.sh: --interactive needs a console to type on: the stm32f405 target" >&2; exit 2; }
    [ -z "$tune" ] || { echo "build.sh: --interactive decodes; not with --tune" >&2; exit 2; }
    if [ "$run" = 1 ] && [ -z "$input" ]; then
        echo "build.sh: --interactive --run types the lines of --input FILE; to type yourself, build without --run and start 'qemu-system-arm -M netduinoplus2 -nographic -kernel $out/fw.elf' (Ctrl-A X quits)" >&2
        exit 2
    fi
    if [ -n "$input" ]; then
        [ -f "$input" ] || { echo "build.sh: no input file $input" >&2; exit 2; }
        input=$(cd "$(dirname "$input")" && pwd)/$(basename "$input")
    fi
elif [ -n "$input" ]; then
    echo "build.sh: --input goes with --interactive" >&2
    exit 2
fi
case "$ram_kb" in *[!0-9]* | 0) echo "build.sh: --ram-kb takes a whole number of KB" >&2; exit 2 ;; esac
case "$stack_kb" in '' | *[!0-9]* | 0) echo "build.sh: --stack-kb takes a whole number of KB, at least 1" >&2; exit 2 ;; esac
if [ "$ram_kb" -gt "$max_ram" ]; then
    echo "build.sh: --ram-kb $ram_kb exceeds the $target's $max_ram KB" >&2
    exit 2
fi
sed "s/@RAM_KB@/$ram_kb/; s/@STACK_KB@/$stack_kb/" "$port/link.ld.in" >"$out/link.ld"
cache=${TLM_FW_CACHE:-$out} # what builds for the same target can share
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
if [ "$target" = lx106 ] && [ ! -f "$cache/libgcc-lx106-extra.a" ]; then
    "$here/lx106/libgcc-extra.sh" "$cache" || exit 2
fi
command -v "$CC" >/dev/null || { echo "build.sh: $CC not installed" >&2; exit 2; }
# The core compiled once into an archive for this compiler, its flags and
# the core's sources as they are (their checksum names it), so that each
# build compiles only the firmware's own files; written under a temporary
# name and renamed, so that builds running at once never see half of one.
# shellcheck disable=SC2086
key=$({ echo "$CC $CF"; "$CC" --version | head -n 1; cat "$root"/include/tritlm/*.h "$root"/src/core/*.h "$root"/src/core/*.c; } |
    cksum | tr ' ' '-')
corelib=$cache/libtritlm-core-$target-$key.a
if [ ! -f "$corelib" ]; then
    rm -f "$cache/libtritlm-core-$target-"*.a # an older core's
    objs=$(mktemp -d "$cache/core.XXXXXX")
    # shellcheck disable=SC2086
    (cd "$objs" && "$CC" $CF -std=c11 -Wall -Wextra -Werror "-I$root/include" -c "$root"/src/core/*.c &&
        ar rcs core.a ./*.o && mv core.a "$corelib") 2>"$out/core.err" || {
        cat "$out/core.err" >&2
        rm -rf "$objs"
        echo "build.sh: compiling the core for $target failed" >&2
        exit 2
    }
    rm -rf "$objs"
fi
# Every path is an argument of its own, so that any characters in them
# (spaces, quotes) pass; the compiler runs in $out, where the model, the
# linker script and the exported C array have plain relative names.
set -- -std=c11 -Wall -Wextra -Werror "-I$root/include" "-I$here/common" "-I$port" \
    "-DTLM_FW_PROMPT_BYTES=$prompt_bytes" "-DTLM_FW_PROMPT_LEN=${plen}u"
main_c=$here/common/fw_main.c
[ -n "$tune" ] && main_c=$here/common/fw_tune.c
for f in "$main_c" "$here/common/fw_start.c" "$here/common/fw_io.c" "$here/common/fw_decode.c"; do
    set -- "$@" "$f"
done
if [ -n "$tune" ]; then # the text under a fixed name, as the model
    [ "$tune" -ef "$out/tlm_fw_text.txt" ] || ln -sf "$tune" "$out/tlm_fw_text.txt"
    set -- "$@" "$here/common/text.S" '-DTLM_FW_TEXT_PATH="tlm_fw_text.txt"'
fi
for f in $SRCS; do set -- "$@" "$port/$f"; done
for f in ${FLOAT_SRCS:-}; do set -- "$@" "$here/common/$f"; done
if [ "$embed" = c ]; then
    set -- "$@" tlm_fw_model_c.c -DTLM_FW_MODEL_C -I.
else
    # a link to the model under a fixed name (unless the model is that file)
    [ "$model" -ef "$out/tlm_fw_model.tlm" ] || ln -sf "$model" "$out/tlm_fw_model.tlm"
    set -- "$@" "$here/common/model.S" '-DTLM_FW_MODEL_PATH="tlm_fw_model.tlm"'
fi
if [ -n "$adapter" ]; then
    [ "$adapter" -ef "$out/tlm_fw_adapter.tlmu" ] || ln -sf "$adapter" "$out/tlm_fw_adapter.tlmu"
    set -- "$@" "$here/common/adapter.S" '-DTLM_FW_ADAPTER_PATH="tlm_fw_adapter.tlmu"'
fi
set -- "$@" "$corelib" # after the files that call the core
[ "$target" = lx106 ] && set -- "$@" "-L$cache"
# shellcheck disable=SC2086
(cd "$out" && "$CC" $CF "$@" $defs $LDF $LIBS -o fw.elf) 2>"$out/link.err" || {
    missing=$(sed -n "s/.*region .RAM' overflowed by \([0-9]*\) bytes.*/\1/p" "$out/link.err" | head -1)
    if [ -n "$missing" ]; then
        if [ -n "$tune" ]; then
            echo "build.sh: tuning does not fit: RAM budget ${ram_kb} KB, tuning arena $arena bytes for windows of $tune_window, stack ${stack_kb} KB, and room for the text's tokens; $missing bytes missing (a smaller --tune-window or text helps)" >&2
            exit 3
        fi
        echo "build.sh: the model does not fit: RAM budget ${ram_kb} KB, arena $arena bytes at context $ctx, stack ${stack_kb} KB; $missing bytes missing" >&2
        if [ "$kv8" = 0 ] && [ -n "${info:-}" ]; then # what the int8 KV cache would need instead
            a8=$(echo "$info" | sed -n 's/.*"arena_bytes_kv_int8":\([0-9]*\).*/\1/p')
            [ -n "$a8" ] && [ "$a8" -lt "$arena" ] &&
                echo "build.sh: with --kv-int8 the arena would be $a8 bytes ($((arena - a8)) fewer); a smaller --ctx also helps" >&2
        fi
        # the longest context that fits with the int8 KV cache: the arena may
        # lose the missing bytes (static RAM and stack stay), and it grows with
        # the context (tritlm info's figure for each, found by bisection)
        if [ -n "${info:-}" ] && [ "$arena" -gt "$missing" ]; then
            room=$((arena - missing)) k8=arena_bytes_kv_int8${adapter:+_adapter} lo=0 hi=$ctx
            while [ $((hi - lo)) -gt 1 ]; do
                mid=$(((lo + hi) / 2))
                a=$("$tlm" info "$img" --ctx $mid --json 2>/dev/null | sed -n "s/.*\"$k8\":\([0-9]*\).*/\1/p")
                if [ -n "$a" ] && [ "$a" -le $room ]; then lo=$mid; else hi=$mid; fi
            done
            [ $lo -gt 0 ] && echo "build.sh: with the int8 KV cache, contexts up to $lo positions fit (--kv-int8 --ctx $lo)" >&2
        fi
        # the decoder's stack peaks near 1.3 KB: a smaller stack region may be all that is missing
        if [ "$stack_kb" -gt 2 ] && [ "$missing" -le $(((stack_kb - 2) * 1024)) ]; then
            echo "build.sh: --stack-kb $((stack_kb - (missing + 1023) / 1024)) would make room (the decoder's stack peaks near 1.3 KB; the firmware reports STACK and exits 98 if it runs out)" >&2
        fi
        exit 3
    fi
    over=$(sed -n "s/.*region .FLASH' overflowed by \([0-9]*\) bytes.*/\1/p" "$out/link.err" | head -1)
    if [ -n "$over" ]; then # every emulated board maps 4 MB for code and model
        echo "build.sh: the firmware does not fit ${flash_desc:-the emulated board's 4 MB of flash}: $over bytes over (model $(wc -c <"$img") bytes); a smaller weight type helps ('tritlm quantize -m MODEL -o SMALLER --pack t2', or int8)" >&2
        exit 4
    fi
    cat "$out/link.err" >&2
    exit 2
}
echo "ELF $out/fw.elf"
if [ "$target" = stm32f405 ]; then # what a flasher takes (st-flash write fw.bin 0x08000000, dfu-util -s 0x08000000)
    arm-none-eabi-objcopy -O binary "$out/fw.elf" "$out/fw.bin.tmp" ||
        { echo "build.sh: arm-none-eabi-objcopy failed" >&2; exit 2; }
    mv "$out/fw.bin.tmp" "$out/fw.bin"
    echo "BIN $out/fw.bin"
fi
[ "$run" = 1 ] || exit 0
case $target in
cortex-m7 | cortex-m4 | cortex-m0plus)
    board=mps2-an500
    [ "$target" = cortex-m4 ] && board=mps2-an386
    [ "$target" = cortex-m0plus ] && board=mps2-an385 # a Cortex-M3: runs Armv6-M code unchanged
    set -- qemu-system-arm -M $board -display none -chardev stdio,id=sh0 \
        -semihosting-config enable=on,target=native,chardev=sh0 -kernel "$out/fw.elf"
    ;;
stm32f405) # the console's USART is QEMU's serial port number uart - 1; the others go nowhere
    set -- qemu-system-arm -M netduinoplus2 -display none -monitor none
    i=1
    while [ $i -lt "$uart" ]; do set -- "$@" -serial null; i=$((i + 1)); done
    rm -f "$out/uart.out" "$out/uart.pipe.in" "$out/uart.pipe.out"
    if [ -n "$input" ]; then # a console both ways: QEMU's pipe backend, path.in and path.out
        mkfifo "$out/uart.pipe.in" "$out/uart.pipe.out"
        set -- "$@" -chardev "pipe,id=con,path=$out/uart.pipe" -serial chardev:con -kernel "$out/fw.elf"
    else
        set -- "$@" -serial "file:$out/uart.out" -kernel "$out/fw.elf"
    fi
    ;;
esp32c3)
    set -- qemu-system-riscv32 -M virt -bios none -display none -serial stdio -monitor none -kernel "$out/fw.elf"
    ;;
lx106)
    set -- qemu-system-xtensa -M sim -cpu lx106 -semihosting -display none -monitor none -serial none \
        -kernel "$out/fw.elf"
    ;;
esac
if [ -n "${TLM_PLUGIN:-}" ]; then
    set -- "$@" -plugin "$TLM_PLUGIN,start=tlm_fw_${count}_begin,stop=tlm_fw_${count}_end${TLM_PROFILE:+,profile=$TLM_PROFILE}"
fi
status=0
if [ "$target" = stm32f405 ]; then
    # A board's firmware never exits: it prints "EXIT n" and sleeps. QEMU
    # is stopped once that line is out (or after TLM_FW_TIMEOUT seconds).
    "$@" >"$out/run.qemu" 2>"$out/run.err" </dev/null &
    qpid=$!
    # await_line RE: 0 once the console has a line matching RE, 1 if QEMU
    # ended or TLM_FW_TIMEOUT seconds passed first (polled every 0.2 s)
    await_line() {
        i=0
        while kill -0 $qpid 2>/dev/null && [ $i -lt $((${TLM_FW_TIMEOUT:-900} * 5)) ]; do
            grep -q "$1" "$out/uart.out" 2>/dev/null && return 0
            sleep 0.2
            i=$((i + 1))
        done
        return 1
    }
    if [ -n "$input" ]; then
        # (QEMU opens both FIFOs read-write, so neither side waits for the
        # other.) The lines are typed once the firmware says READY: QEMU's
        # USART drops what arrives before the firmware enables its receiver,
        # and holds the rest until the firmware reads each byte.
        cat "$out/uart.pipe.out" >"$out/uart.out" &
        rpid=$!
        (await_line '^READY' && { cat "$input"; printf '\n\004'; } >"$out/uart.pipe.in") &
        wpid=$!
    fi
    # the whole line: its CR comes after the last digit (the file grows a byte at a time)
    await_line "$(printf '^EXIT -*[0-9][0-9]*\r')" || true
    kill $qpid 2>/dev/null || true
    wait $qpid 2>/dev/null || true
    if [ -n "$input" ]; then # the reader ends with QEMU; the writer, if QEMU never read, would not
        kill "$wpid" 2>/dev/null || true
        wait "$rpid" "$wpid" 2>/dev/null || true
        rm -f "$out/uart.pipe.in" "$out/uart.pipe.out"
    fi
    tr -d '\r' <"$out/uart.out" 2>/dev/null | sed '/^EXIT /,$d' >"$out/run.out"
    status=$(tr -d '\r' <"$out/uart.out" 2>/dev/null | sed -n 's/^EXIT \(-*[0-9]*\)$/\1/p' | head -n 1)
    if [ -z "$status" ]; then
        echo "build.sh: the firmware printed no EXIT line within ${TLM_FW_TIMEOUT:-900} s (QEMU: $(head -n 1 "$out/run.err"))" >&2
        status=124
    fi
else
    "$@" >"$out/run.out" 2>"$out/run.err" </dev/null || status=$?
fi
cat "$out/run.out"
echo "EXIT $status"
counts=$(grep '^insncount:' "$out/run.err" || true)
if [ -n "$counts" ]; then
    region=$(echo "$counts" | sed -n 's/.*region=\([0-9]*\).*/\1/p')
    calls=$(echo "$counts" | sed -n 's/.*region_calls=\([0-9]*\).*/\1/p')
    echo "INSNS_REGION $region"
    echo "INSNS_CALLS $calls"
    per=INSNS_PER_TOKEN
    [ -n "$classify" ] && per=INSNS_PER_CLASSIFICATION
    [ "$calls" -gt 0 ] && echo "$per $((region / calls))"
fi
exit 0
