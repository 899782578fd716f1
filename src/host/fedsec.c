/* Protected federated messages with libsodium (fedsec.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/stat.h>

#include "fedsec.h"
#include "fileio.h"
#include "tritlm/fed.h"

#define SECRET_TAG "tritlm-fed-secret-1"
#define PUBLIC_TAG "tritlm-fed-public-1"
#define FORMAT_VERSION TLM_SEAL_VERSION
/* Domain strings: a signature made for one kind of message never verifies
 * as another. */
static const char update_domain[] = TLM_SEAL_UPDATE_DOMAIN;
static const char reveal_domain[] = "tritlm federated reveal v1";

/* What a device signs: an update (TLMU) or a secure aggregation reveal
 * (TLMR), each under its own domain; NULL for anything else. */
static const char *domain_of(const uint8_t *msg, size_t n)
{
    if (n >= 4 && !memcmp(msg, TLM_FED_MAGIC, 4)) return update_domain;
    if (n >= 4 && !memcmp(msg, "TLMR", 4)) return reveal_domain;
    return NULL;
}
static const char model_domain[] = TLM_SEAL_MODEL_DOMAIN;

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static tlm_status need_sodium(tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    return TLM_OK;
}

tlm_status tlm_fed_keygen(tlm_fed_keys *k, tlm_error *err)
{
    tlm_status st = need_sodium(err);
    if (st) return st;
    if (crypto_sign_keypair(k->pub.sign_pk, k->sign_sk) != 0 || crypto_box_keypair(k->pub.box_pk, k->box_sk) != 0)
        return tlm_fail(err, TLM_ERR_RNG, "key generation failed");
    return TLM_OK;
}

void tlm_secret_wipe(void *p, size_t n)
{
    sodium_memzero(p, n);
}

void tlm_fed_keys_wipe(tlm_fed_keys *k)
{
    tlm_secret_wipe(k, sizeof *k);
}

/* The 4 check bytes a public key line ends with (typos in a copied key). */
static void pub_check(const tlm_fed_pub *p, uint8_t out[4])
{
    uint8_t h[crypto_generichash_BYTES_MIN];
    uint8_t both[64];
    memcpy(both, p->sign_pk, 32);
    memcpy(both + 32, p->box_pk, 32);
    crypto_generichash(h, sizeof h, both, sizeof both, NULL, 0);
    memcpy(out, h, 4);
}

void tlm_fed_pub_text(const tlm_fed_pub *p, char out[TLM_FED_PUB_TEXT])
{
    uint8_t raw[68];
    memcpy(raw, p->sign_pk, 32);
    memcpy(raw + 32, p->box_pk, 32);
    pub_check(p, raw + 64);
    char hex[2 * sizeof raw + 1];
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    snprintf(out, TLM_FED_PUB_TEXT, "%s %s", PUBLIC_TAG, hex);
}

tlm_status tlm_fed_keys_write(const char *base, const tlm_fed_keys *k, tlm_error *err)
{
    const size_t bl = strlen(base);
    char *path = malloc(bl + 5);
    if (!path) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    /* secret: the Ed25519 seed (its first 32 bytes) and the X25519 secret */
    uint8_t raw[64];
    memcpy(raw, k->sign_sk, 32);
    memcpy(raw + 32, k->box_sk, 32);
    char line[sizeof SECRET_TAG + 2 * sizeof raw + 2];
    char hex[2 * sizeof raw + 1];
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    const int len = snprintf(line, sizeof line, "%s %s\n", SECRET_TAG, hex);
    memcpy(path, base, bl);
    memcpy(path + bl, ".key", 5);
    tlm_status st = tlm_write_secret_atomic(path, line, (size_t)len, err);
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(hex, sizeof hex);
    sodium_memzero(line, sizeof line);
    if (!st) {
        char pub[TLM_FED_PUB_TEXT + 1];
        tlm_fed_pub_text(&k->pub, pub);
        strcat(pub, "\n");
        memcpy(path + bl, ".pub", 5);
        st = tlm_write_file_atomic(path, pub, strlen(pub), err);
    }
    free(path);
    return st;
}

/* The hex word after tag at the start of s (after blanks): exactly n bytes. */
static int parse_tagged(const char *s, const char *tag, uint8_t *out, size_t n, const char **end)
{
    while (*s == ' ' || *s == '\t') s++;
    const size_t tl = strlen(tag);
    if (strncmp(s, tag, tl) != 0 || (s[tl] != ' ' && s[tl] != '\t')) return 0;
    s += tl;
    while (*s == ' ' || *s == '\t') s++;
    size_t hl = 0;
    while (isxdigit((unsigned char)s[hl])) hl++;
    size_t got = 0;
    if (hl != 2 * n || sodium_hex2bin(out, n, s, hl, NULL, &got, NULL) != 0 || got != n) return 0;
    if (end) *end = s + hl;
    return 1;
}

static int parse_pub(const char *s, tlm_fed_pub *p, const char **end)
{
    uint8_t raw[68], chk[4];
    if (!parse_tagged(s, PUBLIC_TAG, raw, sizeof raw, end)) return 0;
    memcpy(p->sign_pk, raw, 32);
    memcpy(p->box_pk, raw + 32, 32);
    pub_check(p, chk);
    return memcmp(chk, raw + 64, 4) == 0;
}

/* A key or roster file's text, with libsodium started. */
static tlm_status read_key_text(const char *path, uint8_t **text, size_t *n, tlm_error *err)
{
    *text = NULL;
    tlm_status st = need_sodium(err);
    return st ? st : tlm_read_text(path, text, n, err);
}

tlm_status tlm_fed_keys_read(const char *path, tlm_fed_keys *k, tlm_error *err)
{
    uint8_t *text;
    size_t n = 0;
    tlm_status st = tlm_require_private(path, "a secret key", err);
    if (!st) st = read_key_text(path, &text, &n, err);
    if (st) return st;
    uint8_t raw[64];
    const int ok = parse_tagged((const char *)text, SECRET_TAG, raw, sizeof raw, NULL);
    sodium_memzero(text, n);
    free(text);
    if (!ok) return tlm_fail(err, TLM_ERR_FORMAT, "%s is not a tritlm secret key ('%s' and 128 hex digits)", path, SECRET_TAG);
    crypto_sign_seed_keypair(k->pub.sign_pk, k->sign_sk, raw);
    memcpy(k->box_sk, raw + 32, 32);
    crypto_scalarmult_base(k->pub.box_pk, k->box_sk);
    sodium_memzero(raw, sizeof raw);
    return TLM_OK;
}

tlm_status tlm_fed_pub_read(const char *path, tlm_fed_pub *p, tlm_error *err)
{
    uint8_t *text;
    size_t n = 0;
    tlm_status st = read_key_text(path, &text, &n, err);
    if (st) return st;
    if (!strncmp((const char *)text, SECRET_TAG, strlen(SECRET_TAG)))
        st = tlm_fail(err, TLM_ERR_ARG, "%s is a secret key: give the .pub file (never share the .key)", path);
    else if (!parse_pub((const char *)text, p, NULL))
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s is not a tritlm public key ('%s' and 136 hex digits, checked)", path,
                      PUBLIC_TAG);
    free(text);
    return st;
}

void tlm_fed_roster_free(tlm_fed_roster *r)
{
    free(r->client);
    free(r->pub);
    memset(r, 0, sizeof *r);
}

tlm_status tlm_fed_roster_read(const char *path, tlm_fed_roster *r, tlm_error *err)
{
    memset(r, 0, sizeof *r);
    uint8_t *text;
    size_t n = 0;
    tlm_status st = read_key_text(path, &text, &n, err);
    if (st) return st;
    size_t lines = 1;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    r->client = malloc(lines * sizeof *r->client);
    r->pub = malloc(lines * sizeof *r->pub);
    if (!r->client || !r->pub) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    char *s = (char *)text;
    for (size_t ln = 1; !st && *s; ln++) {
        char *eol = strchr(s, '\n');
        if (eol) *eol = 0;
        char *p = s;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p && *p != '#') {
            char *after = NULL;
            errno = 0;
            const unsigned long id = strtoul(p, &after, 10);
            const char *end = NULL;
            tlm_fed_pub pub;
            if (!isdigit((unsigned char)*p) || errno || id > 0xFFFFFFFFul || after == p || !parse_pub(after, &pub, &end)) {
                st = tlm_fail(err, TLM_ERR_FORMAT, "%s:%zu: expected 'CLIENT_ID %s HEX' (a device's .pub after its id)",
                              path, ln, PUBLIC_TAG);
                break;
            }
            while (*end == ' ' || *end == '\t' || *end == '\r') end++;
            if (*end && *end != '#') {
                st = tlm_fail(err, TLM_ERR_FORMAT, "%s:%zu: unexpected text after the key", path, ln);
                break;
            }
            for (uint32_t i = 0; i < r->n && !st; i++) {
                if (r->client[i] == (uint32_t)id)
                    st = tlm_fail(err, TLM_ERR_FORMAT, "%s:%zu: client %lu is enrolled twice", path, ln, id);
                else if (!memcmp(&r->pub[i], &pub, sizeof pub))
                    st = tlm_fail(err, TLM_ERR_FORMAT, "%s:%zu: that key is already client %u's", path, ln, r->client[i]);
            }
            if (st) break;
            r->client[r->n] = (uint32_t)id;
            r->pub[r->n++] = pub;
        }
        if (!eol) break;
        s = eol + 1;
    }
    free(text);
    if (!st && r->n == 0) st = tlm_fail(err, TLM_ERR_FORMAT, "%s enrolls no device", path);
    if (st) tlm_fed_roster_free(r);
    return st;
}

/* domain (with its NUL) followed by the message: what a signature covers. */
static uint8_t *with_domain(const char *domain, const uint8_t *head, size_t head_n, const uint8_t *msg, size_t n,
                            size_t *total)
{
    const size_t dl = strlen(domain) + 1;
    uint8_t *b = malloc(dl + head_n + n + 1);
    if (!b) return NULL;
    memcpy(b, domain, dl);
    if (head_n) memcpy(b + dl, head, head_n);
    if (n) memcpy(b + dl + head_n, msg, n);
    *total = dl + head_n + n;
    return b;
}

int tlm_fed_looks_sealed(const uint8_t *in, size_t n)
{
    return n >= 4 && !memcmp(in, TLM_FED_SEALED_MAGIC, 4);
}

tlm_status tlm_fed_seal(const tlm_fed_keys *device, const tlm_fed_pub *server, const uint8_t *msg, size_t n,
                        uint8_t **out, size_t *out_n, tlm_error *err)
{
    *out = NULL;
    *out_n = 0;
    tlm_status st = need_sodium(err);
    if (st) return st;
    /* inside the box: the sender's signing key, the signature, the message */
    const size_t inner_n = 32 + crypto_sign_BYTES + n;
    if (n > SIZE_MAX / 2) return tlm_fail(err, TLM_ERR_OVERFLOW, "update too large");
    const char *domain = domain_of(msg, n);
    if (!domain) return tlm_fail(err, TLM_ERR_ARG, "only updates and reveals are sealed");
    uint8_t *inner = malloc(inner_n);
    size_t signed_n = 0;
    uint8_t *covered = with_domain(domain, NULL, 0, msg, n, &signed_n);
    const size_t total = 8 + crypto_box_SEALBYTES + inner_n;
    uint8_t *o = malloc(total);
    if (!inner || !covered || !o) {
        free(inner);
        free(covered);
        free(o);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    memcpy(inner, device->pub.sign_pk, 32);
    crypto_sign_detached(inner + 32, NULL, covered, signed_n, device->sign_sk);
    memcpy(inner + 32 + crypto_sign_BYTES, msg, n);
    memcpy(o, TLM_FED_SEALED_MAGIC, 4);
    put_u32(o + 4, FORMAT_VERSION);
    const int rc = crypto_box_seal(o + 8, inner, inner_n, server->box_pk);
    sodium_memzero(inner, inner_n);
    free(inner);
    free(covered);
    if (rc != 0) {
        free(o);
        return tlm_fail(err, TLM_ERR_ARG, "sealing failed (is the server's key valid?)");
    }
    *out = o;
    *out_n = total;
    return TLM_OK;
}

tlm_status tlm_fed_unseal(const tlm_fed_keys *server, const tlm_fed_roster *r, const uint8_t *in, size_t n,
                          uint8_t **msg, size_t *msg_n, uint32_t *client, tlm_error *err)
{
    *msg = NULL;
    *msg_n = 0;
    tlm_status st = need_sodium(err);
    if (st) return st;
    if (!tlm_fed_looks_sealed(in, n))
        return tlm_fail(err, TLM_ERR_MAGIC, "not a sealed update (this server takes sealed updates only: "
                                            "the device needs --key and --server-key)");
    if (n < 8 + crypto_box_SEALBYTES + 32 + crypto_sign_BYTES)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "sealed update: %zu bytes, too short", n);
    if (get_u32(in + 4) != FORMAT_VERSION)
        return tlm_fail(err, TLM_ERR_VERSION, "sealed update: version %u, this build reads %u", get_u32(in + 4),
                        FORMAT_VERSION);
    const size_t inner_n = n - 8 - crypto_box_SEALBYTES;
    uint8_t *inner = malloc(inner_n);
    if (!inner) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    if (crypto_box_seal_open(inner, in + 8, n - 8, server->pub.box_pk, server->box_sk) != 0) {
        free(inner);
        return tlm_fail(err, TLM_ERR_CHECKSUM, "sealed update: cannot be opened with this server's key (sealed to "
                                               "another key, or damaged)");
    }
    long who = -1;
    for (uint32_t i = 0; i < r->n && who < 0; i++)
        if (!memcmp(r->pub[i].sign_pk, inner, 32)) who = (long)i;
    if (who < 0) {
        free(inner);
        return tlm_fail(err, TLM_ERR_ARG, "sealed update: signed by a key that is not enrolled");
    }
    const uint8_t *body = inner + 32 + crypto_sign_BYTES;
    const size_t body_n = inner_n - 32 - crypto_sign_BYTES;
    size_t signed_n = 0;
    const char *domain = domain_of(body, body_n);
    if (!domain) {
        free(inner);
        return tlm_fail(err, TLM_ERR_MAGIC, "sealed message: neither an update nor a reveal");
    }
    uint8_t *covered = with_domain(domain, NULL, 0, body, body_n, &signed_n);
    if (!covered) {
        free(inner);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    const int bad = crypto_sign_verify_detached(inner + 32, covered, signed_n, r->pub[who].sign_pk);
    free(covered);
    uint32_t named = 0;
    if (bad) {
        st = tlm_fail(err, TLM_ERR_CHECKSUM, "sealed update: client %u's signature does not verify", r->client[who]);
    } else if (domain == update_domain) {
        tlm_fed_info info;
        st = tlm_fed_validate(body, body_n, NULL, &info, err);
        named = info.h.client;
    } else if (body_n < 16) {
        st = tlm_fail(err, TLM_ERR_TRUNCATED, "sealed reveal: too short");
    } else {
        named = (uint32_t)body[12] | (uint32_t)body[13] << 8 | (uint32_t)body[14] << 16 | (uint32_t)body[15] << 24;
    }
    if (!st && named != r->client[who])
        st = tlm_fail(err, TLM_ERR_ARG, "sealed update: signed by client %u's key but names client %u", r->client[who],
                      named);
    if (st) {
        free(inner);
        return st;
    }
    memmove(inner, body, body_n);
    *msg = inner;
    *msg_n = body_n;
    *client = r->client[who];
    return TLM_OK;
}

tlm_status tlm_fed_sign_model(const tlm_fed_keys *server, uint32_t round, const uint8_t *img, size_t n, uint8_t **out,
                              size_t *out_n, tlm_error *err)
{
    *out = NULL;
    *out_n = 0;
    tlm_status st = need_sodium(err);
    if (st) return st;
    uint8_t head[8];
    put_u32(head, FORMAT_VERSION);
    put_u32(head + 4, round);
    size_t signed_n = 0;
    uint8_t *covered = with_domain(model_domain, head, sizeof head, img, n, &signed_n);
    uint8_t *o = malloc(12 + crypto_sign_BYTES + n);
    if (!covered || !o) {
        free(covered);
        free(o);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    memcpy(o, TLM_FED_SIGNED_MAGIC, 4);
    memcpy(o + 4, head, 8);
    crypto_sign_detached(o + 12, NULL, covered, signed_n, server->sign_sk);
    memcpy(o + 12 + crypto_sign_BYTES, img, n);
    free(covered);
    *out = o;
    *out_n = 12 + crypto_sign_BYTES + n;
    return TLM_OK;
}

tlm_status tlm_fed_verify_model(const tlm_fed_pub *server, const uint8_t *in, size_t n, const uint8_t **img,
                                size_t *img_n, uint32_t *round, tlm_error *err)
{
    tlm_status st = need_sodium(err);
    if (st) return st;
    if (n < 4 || memcmp(in, TLM_FED_SIGNED_MAGIC, 4))
        return tlm_fail(err, TLM_ERR_MAGIC, "not a signed model (the server publishes signed models when it has --key)");
    if (n < 12 + crypto_sign_BYTES) return tlm_fail(err, TLM_ERR_TRUNCATED, "signed model: %zu bytes, too short", n);
    if (get_u32(in + 4) != FORMAT_VERSION)
        return tlm_fail(err, TLM_ERR_VERSION, "signed model: version %u, this build reads %u", get_u32(in + 4),
                        FORMAT_VERSION);
    const uint8_t *body = in + 12 + crypto_sign_BYTES;
    const size_t body_n = n - 12 - crypto_sign_BYTES;
    size_t signed_n = 0;
    uint8_t *covered = with_domain(model_domain, in + 4, 8, body, body_n, &signed_n);
    if (!covered) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    const int bad = crypto_sign_verify_detached(in + 12, covered, signed_n, server->sign_pk);
    free(covered);
    if (bad) return tlm_fail(err, TLM_ERR_CHECKSUM, "signed model: the server's signature does not verify");
    *img = body;
    *img_n = body_n;
    *round = get_u32(in + 8);
    return TLM_OK;
}
