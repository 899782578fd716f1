#!/bin/sh
# The stm32f405 target: a real STM32F405/F407 image (fw.bin for the board's
# flash at 0x08000000, console on a USART, no semihosting) run unchanged on
# QEMU's netduinoplus2. Its greedy text must equal `tritlm generate`'s for
# the same model and path (bit-exact integer path), through each USART it
# offers; stories260K's size as t2 must run at context 256 within the
# part's 128 KB of SRAM; fw.bin must hold the vector table and the model
# image at their addresses; prompts typed on its console must be answered
# as the host answers them; a fault must end in FAULT and exit 99 over the
# UART; a model larger than the part's 1 MB of flash or its RAM must fail
# to build with a message that says so.
# usage: firmware_stm32f405_test.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1 build=$2
tlm=$build/tritlm
data=${TLM_DATA_DIR:-$src/../shared/data}
. "$src/tests/lib.sh"
tlm_need_tools arm-none-eabi-gcc arm-none-eabi-objcopy arm-none-eabi-nm qemu-system-arm
tlm_need_stories "$data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TLM_FW_CACHE=$tmp
export TLM_FW_TIMEOUT=120 # a firmware that never prints its EXIT line fails in 2 minutes, not 15
"$tlm" import llama2c "$data/llama2c/stories260K.bin" "$data/llama2c/tok512.bin" -o "$tmp/s.tlm" 2>/dev/null
"$tlm" quantize -m "$tmp/s.tlm" -o "$tmp/t.tlm" --pack t2 2>/dev/null
"$tlm" quantize -m "$tmp/s.tlm" -o "$tmp/ts.tlm" --pack ts --sparsity 0.5 --scale group --group 16 2>/dev/null
fail=0
num() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; } # a whole number from a JSON line
# MODEL[:kv8][:c][:uN]: the int8 KV cache; the image as `tritlm export c`'s
# C array; the console on USART N (QEMU's serial port N - 1)
for case in t:kv8 ts t:c t:kv8:u2 t:kv8:u3 t:kv8:u6; do
    m=${case%%:*} kv="" embed=asm uart=1
    case $case in *:kv8*) kv=--kv-int8 ;; esac
    case $case in *:c) embed=c ;; esac
    case $case in *:u*) uart=${case##*:u} ;; esac
    want=$("$tlm" generate -m "$tmp/$m.tlm" -p "Once upon a time" -n 24 -t 0 $kv 2>/dev/null | esc)
    out=$(TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/$m.tlm" "$tmp/fw_$m" --ctx 64 -n 24 $kv --embed $embed \
        --uart $uart --run)
    got=$(printf '%s\n' "$out" | sed -n 's/^TEXT //p')
    status=$(echo "$out" | sed -n 's/^EXIT //p')
    if [ "$status" != 0 ] || [ "$got" != "$want" ] || ! echo "$out" | grep -q '^CLOCK '; then
        echo "FAIL $case: exit $status"; echo " host:     $want"; echo " firmware: $got"; fail=1
    else
        echo "ok $case: the host's text over USART$uart; $(echo "$out" | grep -E '^(STATIC|FLASH)' | tr '\n' ' ')"
    fi
done
# prompts typed on the console after the fixed one (--interactive): each
# decoded from position 0 as the host decodes it alone; a Backspace takes
# back the byte before it, a blank line is skipped, and the JSON lists the
# replies in order
printf 'The little dogs\010\nLily saw a big\n\nOnce upon a time\n' >"$tmp/typed.txt"
out=$(TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/t.tlm" "$tmp/fw_chat" --ctx 64 -n 24 --kv-int8 --interactive \
    --input "$tmp/typed.txt" --run)
got=$(printf '%s\n' "$out" | sed -n 's/^TEXT //p' | tail -n +2)
want=$(for p in "The little dog" "Lily saw a big" "Once upon a time"; do
    "$tlm" generate -m "$tmp/t.tlm" -p "$p" -n 24 -t 0 --kv-int8 2>/dev/null | esc
done)
status=$(echo "$out" | sed -n 's/^EXIT //p')
j=$("$tlm" firmware --target stm32f405 -m "$tmp/t.tlm" --ctx 64 -n 24 --kv-int8 --interactive --input "$tmp/typed.txt" \
    -o "$tmp/fw_chat_json" --run --json || true)
n_replies=$(printf '%s\n' "$j" | grep -o '{"text":' | wc -l)
if [ "$status" != 0 ] || [ "$got" != "$want" ] || [ "$n_replies" != 3 ]; then
    echo "FAIL interactive: exit $status, $n_replies replies in the JSON"; echo " host:"; echo "$want"; echo " firmware:"; echo "$got"; fail=1
else
    echo "ok interactive: three typed prompts, the host's text for each"
fi
# lines typed to a classifying board (--classify): each gets the host's
# label (a keyword model, so that the labels differ from line to line)
tlm_keyword_model "$tlm" "$tmp"
printf 'my lamp now\nset the alarm please\na song for me\nrain today\n' >"$tmp/typed3.txt"
want=$("$tlm" classify -m "$tmp/kw.tlm" --labels "$tmp/kw.tsv" --text "$tmp/typed3.txt" 2>/dev/null | tr '\n' ' ')
j=$("$tlm" firmware --target stm32f405 -m "$tmp/kw.tlm" --classify "$tmp/kw.tsv" -p "the lamp" \
    --interactive --input "$tmp/typed3.txt" -o "$tmp/fw_cls" --run --json || true)
got=$(printf '%s' "$j" | sed 's/.*"replies":\[\([^]]*\)\].*/\1/' | grep -o '"label":"[^"]*"' | sed 's/"label":"//; s/"$//' | tr '\n' ' ')
distinct=$(printf '%s' "$want" | tr ' ' '\n' | sort -u | grep -c .)
if [ -z "$want" ] || [ "$got" != "$want" ] || [ "$distinct" -lt 3 ]; then
    echo "FAIL interactive classify: host '$want', board '$got'"; fail=1
else
    echo "ok interactive classify: four typed lines, the host's labels ($got)"
fi
# sampled: the fixed prompt with seed 5, the k-th typed one with seed 5 + k
printf 'The little dog\nLily saw a big\n' >"$tmp/typed2.txt"
out=$(TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/t.tlm" "$tmp/fw_chat2" --ctx 64 -n 24 --kv-int8 --interactive \
    --input "$tmp/typed2.txt" -t 0.9 --top-p 0.95 --seed 5 --run)
got=$(printf '%s\n' "$out" | sed -n 's/^TEXT //p')
want=$(k=5; for p in "Once upon a time" "The little dog" "Lily saw a big"; do
    "$tlm" generate -m "$tmp/t.tlm" -p "$p" -n 24 -t 0.9 --top-p 0.95 --seed $k --kv-int8 2>/dev/null | esc
    k=$((k + 1))
done)
if [ "$got" != "$want" ]; then
    echo "FAIL interactive, sampled:"; echo " host:"; echo "$want"; echo " firmware:"; echo "$got"; fail=1
else
    echo "ok interactive, sampled: seeds 5, 6, 7 as the host samples them"
fi
# stories260K's size as t2 at context 256 with the int8 KV cache, in the
# part's 128 KB (a 4 KB stack region), through tritlm firmware --json
st=0
j=$("$tlm" firmware --target stm32f405 -m "$tmp/t.tlm" --kv-int8 --stack-kb 4 -n 24 -o "$tmp/fw_256" --run --json) || st=$?
want=$("$tlm" generate -m "$tmp/t.tlm" -p "Once upon a time" -n 24 -t 0 --kv-int8 2>/dev/null | esc_json)
got=$(json_text "$j")
ram=$(num "$j" ram_bytes) ctx=$(num "$j" ctx) flash=$(num "$j" flash_bytes) insns=$(num "$j" insns_per_token)
if [ $st != 0 ] || [ "$got" != "$want" ] || [ "$ctx" != 256 ] || [ -z "$ram" ] || [ "$ram" -gt 131072 ] || [ -z "$insns" ]; then
    echo "FAIL context 256: exit $st, ctx ${ctx:-?}, RAM ${ram:-?}, text '$got' vs host '$want'"; fail=1
else
    echo "ok context 256: $ram bytes of RAM of 131072, $insns instructions per token, the host's text"
fi
# --device stm32f405 builds the same board image (and quantize --device
# plans on the cortex-m4 target, whose counts are the same)
j2=$("$tlm" firmware --device stm32f405 -m "$tmp/t.tlm" --kv-int8 --stack-kb 4 -n 24 -o "$tmp/fw_dev" --run --json) || true
if [ "$(printf '%s\n' "$j2" | sed -n 's/.*"target":"\([a-z0-9-]*\)".*/\1/p')" != stm32f405 ] || [ "$(json_text "$j2")" != "$want" ] ||
    [ "$(num "$j2" insns_per_token)" != "$insns" ] || ! printf '%s\n' "$j2" | grep -q '"bin":"[^"]*fw_dev/fw.bin"'; then
    echo "FAIL --device stm32f405: $j2"; fail=1
else
    echo "ok --device stm32f405: the board image, the same text and counts"
fi
# fw.bin: what the flasher writes at 0x08000000. Its first words are the
# vector table (the stack top inside the 128 KB of SRAM, the reset handler
# a Thumb address inside the image), and the model image sits at its
# symbol's offset, byte for byte
bin=$tmp/fw_256/fw.bin
if [ ! -f "$bin" ] || [ "$(wc -c <"$bin")" != "$flash" ]; then
    echo "FAIL fw.bin: $(wc -c <"$bin" 2>/dev/null || echo none) bytes, the firmware reports $flash"; fail=1
else
    sp=$(od -An -t u4 -N 4 "$bin" | tr -d ' ') rv=$(od -An -t u4 -j 4 -N 4 "$bin" | tr -d ' ')
    base=134217728 # 0x08000000
    at=$(arm-none-eabi-nm "$tmp/fw_256/fw.elf" | sed -n 's/^\([0-9a-f]*\) . tlm_fw_model$/\1/p')
    off=$(($(printf '%d' "0x$at") - base))
    if [ "$sp" -le 536870912 ] || [ "$sp" -gt $((536870912 + 131072)) ] || [ $((rv % 2)) != 1 ] ||
        [ "$rv" -lt $base ] || [ "$rv" -ge $((base + flash)) ]; then
        echo "FAIL fw.bin vector table: stack top $sp, reset $rv"; fail=1
    elif ! tail -c +$((off + 1)) "$bin" | head -c "$(wc -c <"$tmp/t.tlm")" | cmp -s - "$tmp/t.tlm"; then
        echo "FAIL fw.bin: the model image is not at offset $off"; fail=1
    else
        echo "ok fw.bin: $flash bytes, vector table and the model at 0x$at"
    fi
fi
# a load from unmapped memory: FAULT and exit 99, over the UART
out=$(TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/t.tlm" "$tmp/fw_fault" --ctx 16 -n 2 --fault-test 0x60000000u --run 2>&1 || true)
status=$(echo "$out" | sed -n 's/^EXIT //p')
if [ "$status" != 99 ] || ! echo "$out" | grep -q '^FAULT$'; then
    echo "FAIL: an unmapped load gave exit '$status'"; echo "$out"; fail=1
else
    echo "ok fault: FAULT, exit 99"
fi
# too large: the fp32 model (1,068,608 bytes) for the 1 MB of flash; t2 at
# context 256 with the default 8 KB stack region for the 128 KB of RAM
for c in s:4:"1 MB of flash" t:3:"bytes missing"; do
    m=${c%%:*} rest=${c#*:}
    want_st=${rest%%:*} msg=${rest#*:}
    st=0
    TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/$m.tlm" "$tmp/fw_big" --ctx 256 --kv-int8 >/dev/null 2>"$tmp/big.err" || st=$?
    if [ $st != "$want_st" ] || ! grep -q "$msg" "$tmp/big.err"; then
        echo "FAIL $m too large: exit $st"; cat "$tmp/big.err"; fail=1
    else
        echo "ok $m too large: exit $st, $(head -n 1 "$tmp/big.err")"
    fi
done
# the shipped default model (dim 128) at its default context needs far more
# than 128 KB: the build names the longest context that fits with the int8
# KV cache, which must link and decode the host's text, one more must not
cp "$src/models/tinystories-d128-ternary.tlm" "$tmp/d.tlm"
st=0
TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/d.tlm" "$tmp/fw_d" >/dev/null 2>"$tmp/d.err" || st=$?
best=$(sed -n 's/.*contexts up to \([0-9]*\) positions fit.*/\1/p' "$tmp/d.err")
if [ $st != 3 ] || [ -z "$best" ]; then
    echo "FAIL the default model: exit $st, no context named"; cat "$tmp/d.err"; fail=1
else
    out=$(TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/d.tlm" "$tmp/fw_d" --kv-int8 --ctx "$best" -n 24 --run 2>&1 || true)
    want=$("$tlm" generate -m "$tmp/d.tlm" -p "Once upon a time" -n 24 -t 0 --kv-int8 2>/dev/null | esc)
    st2=0
    TLM_BIN=$tlm "$src/firmware/build.sh" stm32f405 "$tmp/d.tlm" "$tmp/fw_d2" --kv-int8 --ctx $((best + 1)) >/dev/null 2>&1 || st2=$?
    if [ "$(echo "$out" | sed -n 's/^EXIT //p')" != 0 ] || [ "$(printf '%s\n' "$out" | sed -n 's/^TEXT //p')" != "$want" ] ||
        [ $st2 != 3 ]; then
        echo "FAIL the default model at the context named ($best): exit $(echo "$out" | sed -n 's/^EXIT //p'), one more: exit $st2"
        fail=1
    else
        echo "ok the default model: up to $best positions fit 128 KB, as the build said; the host's text"
    fi
fi
# --uart and --interactive belong to this target; --uart takes its four
# USARTs only; --interactive --run needs the lines to type
for bad in "--target stm32f405 --uart 4:--uart" "--target cortex-m7 --uart 2:--uart" \
    "--target esp32c3 --interactive:--interactive" "--target stm32f405 --interactive --run:--input"; do
    st=0
    # shellcheck disable=SC2086
    "$tlm" firmware ${bad%%:*} -m "$tmp/t.tlm" -o "$tmp/fw_bad" >/dev/null 2>"$tmp/bad.err" || st=$?
    if [ $st != 2 ] || ! grep -q -- "${bad##*:}" "$tmp/bad.err"; then
        echo "FAIL 'firmware $bad': exit $st"; cat "$tmp/bad.err"; fail=1
    fi
done
exit $fail
