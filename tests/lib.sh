# What the shell tests share; sourced (. "$src/tests/lib.sh").

# Under CI (or TLM_REQUIRE_DATA=1) a missing tool or data set fails the
# test; elsewhere it skips (exit 77, ctest's SKIP_RETURN_CODE).
tlm_required() { case "${CI:-}${TLM_REQUIRE_DATA:-}" in "" | 0 | false) return 1 ;; *) return 0 ;; esac; }
tlm_missing()
{
    if tlm_required; then echo "FAIL: $1"; exit 1; fi
    echo "SKIP: $1"
    exit 77
}
tlm_need_tools() { for t in "$@"; do command -v "$t" >/dev/null 2>&1 || tlm_missing "$t not installed"; done; }
tlm_need_stories() { [ -r "$1/llama2c/stories260K.bin" ] || tlm_missing "no stories260K in $1"; }

# Text as the firmware's TEXT line writes it (a newline as \n, a backslash
# as \\; fw_main.c), and as JSON does (quotes escaped too); the "text" of a
# JSON line, escaped.
esc() { sed 's/\\/\\\\/g' | sed ':a;N;$!ba;s/\n/\\n/g'; }
esc_json() { sed 's/\\/\\\\/g; s/"/\\"/g' | sed ':a;N;$!ba;s/\n/\\n/g'; }
json_text() { printf '%s\n' "$1" | sed -nE 's/.*"text":"(([^"\\]|\\.)*)".*/\1/p'; }

# tlm_keyword_model TLM DIR: DIR/kw.tlm, a small model trained with
# --label-loss on DIR/kw.tsv, lines of filler words around one keyword
# whose label they carry (lamp: lights, song: music, rain: weather, alarm:
# timer), for tests that need labels that differ from line to line.
tlm_keyword_model()
{
    awk 'BEGIN { srand(5); split("please now the my could you today a quick for me again", f, " ")
        split("lamp song rain alarm", k, " "); split("lights music weather timer", l, " ")
        for (i = 0; i < 640; i++) {
            c = 1 + int(rand() * 4); n = 2 + int(rand() * 4); at = int(rand() * n); s = ""
            for (w = 0; w < n; w++) { if (w == at) s = s k[c] " "; s = s f[1 + int(rand() * 12)] " " }
            sub(/ $/, "", s); printf "%s\t%s\n", s, l[c] } }' >"$2/kw.tsv"
    "$1" tokenizer train --vocab 300 --split lines -o "$2/kw_tok.bin" "$2/kw.tsv" >/dev/null 2>&1 &&
        "$1" train --data "$2/kw.tsv" --split lines --label-loss --tokenizer "$2/kw_tok.bin" --dim 32 --hidden 64 \
            --layers 2 --heads 4 --ctx 32 --batch 16 --steps 300 --lr 3e-3 --eval-every 0 --threads 2 \
            -o "$2/kw.tlm" >/dev/null 2>&1
}
