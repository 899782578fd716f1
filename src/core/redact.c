/* Deterministic redaction of obvious identifiers (digit runs, e-mail
 * addresses, phone-like sequences) before tokenization. */
#include <string.h>

#include "tritlm/dp.h"

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_local(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }
static int is_host(char c) { return is_alnum(c) || c == '.' || c == '-'; }
static int is_phone_sep(char c) { return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '+'; }

/* The first e-mail address local@host.tld that starts at or after `from`:
 * each '@' takes the whole run of local-part characters before it (back
 * to `from`), so that no digit rule can claim the front of an address.
 * Sets *start and returns its length (0 and *start = n if none). */
static size_t next_email(const char *s, size_t n, size_t from, size_t *start)
{
    for (size_t at = from; at < n; at++) {
        if (s[at] != '@') continue;
        size_t l = at;
        while (l > from && is_local(s[l - 1])) l--;
        if (l == at) continue;
        size_t h = at + 1, k = h, dot = 0;
        while (k < n && is_host(s[k])) k++;
        while (k > h && (s[k - 1] == '.' || s[k - 1] == '-')) k--; /* a sentence's full stop */
        for (size_t d = h + 1; d + 1 < k; d++) /* a dot inside the host, after the stop is trimmed */
            if (s[d] == '.') dot = d;
        if (!dot) continue;
        *start = l;
        return k - l;
    }
    *start = n;
    return 0;
}

/* Length of a phone-like run at i (7+ digits, separators between, never
 * three separators in a row), or 0. The limit on separators also keeps the
 * scan short where it starts at every character of a long run such as
 * "((((", which made redaction quadratic in the text's length. */
static size_t phone_at(const char *s, size_t n, size_t i)
{
    if (!is_digit(s[i]) && !(s[i] == '+' || s[i] == '(')) return 0;
    size_t j = i, digits = 0, last = i, seps = 0;
    while (j < n && (is_digit(s[j]) || is_phone_sep(s[j]))) {
        if (is_digit(s[j])) {
            digits++;
            last = j + 1;
            seps = 0;
        } else if (++seps > 2 || (j + 1 < n && s[j] == ' ' && is_phone_sep(s[j + 1]) && s[j + 1] != '(')) {
            break; /* a space before a separator (but "+1 (555)"), or three in a row: the sentence goes on */
        }
        j++;
    }
    return digits >= 7 ? last - i : 0;
}

static int put(char *out, size_t cap, size_t *o, const char *s, size_t k)
{
    if (*o + k > cap) return 0;
    memcpy(out + *o, s, k);
    *o += k;
    return 1;
}

size_t tlm_redact(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0, e_start, e_len = next_email(s, n, 0, &e_start);
    while (i < n) {
        size_t k;
        if (i == e_start) {
            if (!put(out, cap, &o, "[email]", 7)) return (size_t)-1;
            i += e_len;
            e_len = next_email(s, n, i, &e_start);
            continue;
        }
        /* phones and numbers end where the next address begins */
        const size_t end = e_start;
        if ((i == 0 || !is_alnum(s[i - 1])) && (k = phone_at(s, end, i)) != 0) {
            if (!put(out, cap, &o, "[phone]", 7)) return (size_t)-1;
            i += k;
        } else if (is_digit(s[i]) && (i == 0 || !is_digit(s[i - 1])) && i + 1 < end && is_digit(s[i + 1])) {
            while (i < end && is_digit(s[i])) i++;
            if (!put(out, cap, &o, "[number]", 8)) return (size_t)-1;
        } else {
            if (!put(out, cap, &o, s + i, 1)) return (size_t)-1;
            i++;
        }
    }
    return o;
}
