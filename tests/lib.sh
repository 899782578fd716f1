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
