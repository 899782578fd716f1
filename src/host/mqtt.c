/* MQTT over libmosquitto (mqtt.h). Every wait runs the client's network
 * loop until its acknowledgement arrives or the time is up. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <mosquitto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fedsec.h"
#include "fileio.h"
#include "mqtt.h"

struct tlm_mqtt {
    struct mosquitto *m;
    int connected;      /* 0 waiting, 1 connected, -1 refused */
    int wait_mid, acked; /* the publish or subscribe waited for, and whether the broker acknowledged it */
    int suback_granted;
    tlm_mqtt_fn fn;
    void *ctx;
    int stop;           /* fn asked to stop receiving */
    int connack;        /* the broker's answer to the connection (0 accepted) */
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    tlm_mqtt *c = obj;
    c->connected = rc == 0 ? 1 : -1;
    c->connack = rc;
}
static void on_publish(struct mosquitto *m, void *obj, int mid)
{
    (void)m;
    tlm_mqtt *c = obj;
    if (mid == c->wait_mid) c->acked = 1;
}
static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    (void)m;
    tlm_mqtt *c = obj;
    if (mid != c->wait_mid) return;
    c->suback_granted = n > 0 ? granted[0] : 128;
    c->acked = 1;
}
static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m;
    tlm_mqtt *c = obj;
    if (c->fn && !c->stop && c->fn(c->ctx, msg->topic, msg->payload, (size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0)))
        c->stop = 1;
}

/* Runs the client's network loop (where the callbacks run) until *flag
 * is set: 0, or 1 when timeout_s passed first, or 2 on a network error
 * (*rc says which). */
static int loop_until(tlm_mqtt *c, const int *flag, double timeout_s, int *rc)
{
    const double deadline = now_s() + timeout_s;
    while (!*flag) {
        if (now_s() > deadline) return 1;
        *rc = mosquitto_loop(c->m, 100, 1);
        if (*rc != MOSQ_ERR_SUCCESS) return 2;
    }
    return 0;
}

tlm_status tlm_mqtt_read_password(tlm_mqtt_broker *b, const char *path, tlm_error *err)
{
    uint8_t *text = NULL;
    size_t n = 0;
    tlm_status st = tlm_require_private(path, "a password", err);
    if (!st) st = tlm_read_text(path, &text, &n, err);
    if (st) return st;
    size_t len = strcspn((const char *)text, "\r\n");
    if (len == 0 || len >= sizeof b->password)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: the password is its first line, 1 to %zu bytes", path,
                      sizeof b->password - 1);
    else {
        memcpy(b->password, text, len);
        b->password[len] = 0;
    }
    tlm_secret_wipe(text, n); /* the file's copy of the password */
    free(text);
    return st;
}

/* What a refused CONNACK means (MQTT 3.1.1 return codes). */
static const char *connack_str(int rc)
{
    switch (rc) {
    case 1: return "refused the connection: protocol version";
    case 2: return "refused the connection: client identifier";
    case 3: return "refused the connection: server unavailable";
    case 4: return "refused the user name or password";
    case 5: return "refused the connection: not authorised (a user name and password, or the right ones, needed)";
    default: return "refused the connection";
    }
}

/* Why a connection failed, with a hint at the likely cause: w from
 * loop_until (2: network or TLS error rc), or the refusing CONNACK. */
static tlm_status connect_failed(tlm_error *err, const char *host, int port, const tlm_mqtt_broker *b, int w, int rc,
                                 int connack, int errno_then)
{
    /* a TLS peer that gives up on the handshake: an alert, or EPROTO from the socket */
    const int tls_broke = rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_PROTOCOL ||
                          (rc == MOSQ_ERR_ERRNO && errno_then == EPROTO);
    if (connack) return tlm_fail(err, TLM_ERR_IO, "the MQTT broker at %s:%d %s", host, port, connack_str(connack));
    if (w == 1)
        return tlm_fail(err, TLM_ERR_IO, "the MQTT broker at %s:%d did not answer in time%s", host, port,
                        b->ca_file ? "" : "; if it speaks TLS, give its CA with --tls-ca");
    const char *hint = "";
    if (!b->ca_file)
        hint = tls_broke ? "; if it speaks TLS, give its CA with --tls-ca" : "";
    else if (rc == MOSQ_ERR_TLS)
        hint = ": the TLS handshake failed: is the broker's certificate signed by the CA given, for this host name?";
    if (b->ca_file && !b->cert_file && tls_broke)
        return tlm_fail(err, TLM_ERR_IO, "cannot reach the MQTT broker at %s:%d (%s)%s; if it asks for a client "
                        "certificate, give --tls-cert and --tls-key", host, port, mosquitto_strerror(rc), hint);
    return tlm_fail(err, TLM_ERR_IO, "cannot reach the MQTT broker at %s:%d (%s)%s", host, port, mosquitto_strerror(rc),
                    hint);
}

tlm_status tlm_mqtt_connect(tlm_mqtt **out, const tlm_mqtt_broker *b, const char *client_id, double timeout_s,
                            tlm_error *err)
{
    *out = NULL;
    const char *broker = b->addr;
    char host[256];
    int port = b->ca_file ? 8883 : 1883;
    const char *colon = strrchr(broker, ':');
    size_t hl = colon ? (size_t)(colon - broker) : strlen(broker);
    if (hl == 0 || hl >= sizeof host) return tlm_fail(err, TLM_ERR_ARG, "broker '%s': expected HOST or HOST:PORT", broker);
    memcpy(host, broker, hl);
    host[hl] = 0;
    if (colon) {
        char *end;
        const long p = strtol(colon + 1, &end, 10);
        if (*end || p < 1 || p > 65535) return tlm_fail(err, TLM_ERR_ARG, "broker '%s': bad port", broker);
        port = (int)p;
    }
    if (!b->cert_file != !b->key_file)
        return tlm_fail(err, TLM_ERR_ARG, "a TLS client certificate needs both its certificate and its key file");
    if (b->cert_file && !b->ca_file) return tlm_fail(err, TLM_ERR_ARG, "a TLS client certificate needs the broker's CA");
    if (b->password[0] && !b->username) return tlm_fail(err, TLM_ERR_ARG, "a broker password needs a user name");
    mosquitto_lib_init();
    tlm_mqtt *c = calloc(1, sizeof *c);
    if (!c) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    c->m = mosquitto_new(client_id, true, c);
    if (!c->m) {
        free(c);
        return tlm_fail(err, TLM_ERR_NOMEM, "cannot make an MQTT client");
    }
    mosquitto_connect_callback_set(c->m, on_connect);
    mosquitto_publish_callback_set(c->m, on_publish);
    mosquitto_subscribe_callback_set(c->m, on_subscribe);
    mosquitto_message_callback_set(c->m, on_message);
    int rc = MOSQ_ERR_SUCCESS;
    if (b->ca_file) {
        rc = mosquitto_tls_set(c->m, b->ca_file, NULL, b->cert_file, b->key_file, NULL);
        if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_tls_opts_set(c->m, 1, "tlsv1.2", NULL); /* 1: verify the broker */
        if (rc != MOSQ_ERR_SUCCESS) {
            tlm_mqtt_close(c);
            return tlm_fail(err, TLM_ERR_ARG, "TLS with CA %s%s%s: %s", b->ca_file, b->cert_file ? " and certificate " : "",
                            b->cert_file ? b->cert_file : "", mosquitto_strerror(rc));
        }
    }
    if (b->username) {
        rc = mosquitto_username_pw_set(c->m, b->username, b->password[0] ? b->password : NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            tlm_mqtt_close(c);
            return tlm_fail(err, TLM_ERR_ARG, "MQTT user name: %s", mosquitto_strerror(rc));
        }
    }
    rc = mosquitto_connect(c->m, host, port, 60);
    const int w = rc != MOSQ_ERR_SUCCESS ? 2 : loop_until(c, &c->connected, timeout_s, &rc);
    if (w || c->connected < 0) {
        const int connack = c->connected < 0 ? c->connack : 0, errno_then = errno;
        tlm_mqtt_close(c);
        return connect_failed(err, host, port, b, w, rc, connack, errno_then);
    }
    *out = c;
    return TLM_OK;
}

void tlm_mqtt_close(tlm_mqtt *c)
{
    if (!c) return;
    if (c->connected > 0) mosquitto_disconnect(c->m);
    mosquitto_destroy(c->m);
    free(c);
    mosquitto_lib_cleanup();
}

tlm_status tlm_mqtt_publish(tlm_mqtt *c, const char *topic, const void *data, size_t n, int retain, double timeout_s,
                            tlm_error *err)
{
    if (n > 256u * 1024u * 1024u) return tlm_fail(err, TLM_ERR_ARG, "MQTT: %zu bytes is more than a message holds", n);
    int mid = 0, rc;
    rc = mosquitto_publish(c->m, &mid, topic, (int)n, data, 1, retain != 0);
    if (rc != MOSQ_ERR_SUCCESS) return tlm_fail(err, TLM_ERR_IO, "MQTT publish to %s: %s", topic, mosquitto_strerror(rc));
    c->wait_mid = mid; /* acknowledgements arrive only inside the loop */
    c->acked = 0;
    const int w = loop_until(c, &c->acked, timeout_s, &rc);
    if (w == 1) return tlm_fail(err, TLM_ERR_IO, "MQTT publish to %s: the broker did not acknowledge it in time", topic);
    if (w == 2) return tlm_fail(err, TLM_ERR_IO, "MQTT publish to %s: %s", topic, mosquitto_strerror(rc));
    return TLM_OK;
}

tlm_status tlm_mqtt_send(const tlm_mqtt_broker *broker, const char *client_id, const char *topic, const void *data, size_t n,
                         int retain, tlm_error *err)
{
    tlm_mqtt *c = NULL;
    tlm_status st = tlm_mqtt_connect(&c, broker, client_id, 30.0, err);
    if (!st) st = tlm_mqtt_publish(c, topic, data, n, retain, 60.0, err);
    tlm_mqtt_close(c);
    return st;
}

tlm_status tlm_mqtt_subscribe(tlm_mqtt *c, const char *topic, double timeout_s, tlm_error *err)
{
    int mid = 0, rc;
    rc = mosquitto_subscribe(c->m, &mid, topic, 1);
    if (rc != MOSQ_ERR_SUCCESS) return tlm_fail(err, TLM_ERR_IO, "MQTT subscribe to %s: %s", topic, mosquitto_strerror(rc));
    c->wait_mid = mid;
    c->acked = 0;
    const int w = loop_until(c, &c->acked, timeout_s, &rc);
    if (w == 1) return tlm_fail(err, TLM_ERR_IO, "MQTT subscribe to %s: no acknowledgement in time", topic);
    if (w == 2) return tlm_fail(err, TLM_ERR_IO, "MQTT subscribe to %s: %s", topic, mosquitto_strerror(rc));
    if (c->suback_granted > 2) return tlm_fail(err, TLM_ERR_IO, "MQTT subscribe to %s: the broker refused it", topic);
    return TLM_OK;
}

tlm_status tlm_mqtt_receive(tlm_mqtt *c, double timeout_s, tlm_mqtt_fn fn, void *ctx, int *timed_out, tlm_error *err)
{
    c->fn = fn;
    c->ctx = ctx;
    c->stop = 0;
    int rc = MOSQ_ERR_SUCCESS;
    const int w = loop_until(c, &c->stop, timeout_s, &rc);
    c->fn = NULL;
    *timed_out = w == 1;
    if (w == 2) return tlm_fail(err, TLM_ERR_IO, "MQTT: %s", mosquitto_strerror(rc));
    return TLM_OK;
}
