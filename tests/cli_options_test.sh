#!/bin/sh
# Every long option of every command, as its --help lists it, given odd
# values (empty, negative, zero, not a number, out of range, a path that
# does not exist) and given without one at the end of the line: the
# command must end with exit 1 or 2 and a message, never crash, hang or
# trip the sanitizers. Each base command names inputs that do not exist,
# so that anything the options let through fails fast afterwards.
# usage: cli_options_test.sh BUILD_DIR
set -u
tlm=$1/tritlm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a sanitizer report must not pass for an ordinary failure (exit 1)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=99"
UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=98"
export ASAN_OPTIONS UBSAN_OPTIONS
n=/nonexistent/tritlm
o=$tmp/out
fail=0 runs=0
# command|help command|base arguments
cases="generate|generate|-m $n.tlm -n 8
eval|eval|-m $n.tlm --text $n.txt
classify|classify|-m $n.tlm --labels $n.txt --text $n.txt
info|info|$n.tlm
quantize|quantize|-m $n.tlm -o $o.tlm
train|train|--data $n.txt --tokenizer $n.bin --steps 1 -o $o.tlm
privatize|privatize|-m $n.tlm --mechanism dx --epsilon 1
export c|export|$n.tlm -o $o.c
export llama2c|export|$n.tlm -o $o.bin
import llama2c|import|$n.bin $n.bin -o $o.tlm
tokenizer train|tokenizer|--vocab 300 -o $o.bin $n.txt
firmware|firmware|--target cortex-m7 -m $n.tlm
fed update|fed|-m $n.tlm --data $n.txt --steps 1 -o $o.tlmu
fed aggregate|fed|-m $n.tlm -o $o.tlm $n.tlmu
fed reveal|fed|--key $n.key --server-key $n.pub --devices $n.txt --state $n.st --request $n.req -o $o.rev
fed info|fed|$n.tlmu
fed keygen|fed|-o $n/key
fed sign|fed|--key $n.key -m $n.tlm --round 1 -o $o.tlmg
fed acl|fed|--devices $n.txt -o $o.acl"
# runs "$@" with a time limit; checks how it ended
check() {
    runs=$((runs + 1))
    st=0
    timeout 60 "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr" || st=$?
    case $st in
    0) ;; # --help, --device list and the like
    1 | 2)
        if [ ! -s "$tmp/stderr" ]; then
            echo "FAIL: exit $st without a message: $*"
            fail=1
        fi
        ;;
    124) echo "FAIL: still running after 60 s: $*"; fail=1 ;;
    *) echo "FAIL: exit $st: $*"; head -c 2000 "$tmp/stderr"; fail=1 ;;
    esac
}
echo "$cases" | while IFS='|' read -r cmd helpcmd base; do
    runs=0
    # shellcheck disable=SC2086
    opts=$("$tlm" $helpcmd --help | grep -o -- '--[a-z0-9][a-z0-9-]*' | sort -u)
    [ -n "$opts" ] || { echo "FAIL: no options in '$helpcmd --help'"; echo 1 >"$tmp/failed"; continue; }
    for opt in $opts; do
        [ "$opt" = --help ] && continue
        for v in "" -1 0 abc 1e999 99999999999999999999 "$n/x"; do
            # shellcheck disable=SC2086
            check "$tlm" $cmd $base "$opt" "$v"
        done
        # shellcheck disable=SC2086
        check "$tlm" $cmd $base "$opt"
    done
    [ $fail = 0 ] || echo 1 >"$tmp/failed"
    echo "ok $cmd: $(echo "$opts" | wc -l) options, $runs runs"
done
[ -e "$tmp/failed" ] && exit 1
exit 0
