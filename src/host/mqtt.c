/* MQTT over libmosquitto (mqtt.h). Every wait runs the client's network
 * loop until its acknowledgement arrives or the time is up. */
#define _POSIX_C_SOURCE 200809L
#include <mosquitto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mqtt.h"

struct tlm_mqtt {
    struct mosquitto *m;
    int connected;      /* 0 waiting, 1 connected, -1 refused */
    int wait_mid, acked; /* the publish or subscribe waited for, and whether the broker acknowledged it */
    int suback_granted;
    tlm_mqtt_fn fn;
    void *ctx;
    int stop;           /* fn asked to stop receiving */
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
    ((tlm_mqtt *)obj)->connected = rc == 0 ? 1 : -1;
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

tlm_status tlm_mqtt_connect(tlm_mqtt **out, const char *broker, const char *client_id, double timeout_s,
                            tlm_error *err)
{
    *out = NULL;
    char host[256];
    int port = 1883;
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
    int rc = mosquitto_connect(c->m, host, port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        tlm_mqtt_close(c);
        return tlm_fail(err, TLM_ERR_IO, "cannot reach the MQTT broker at %s:%d (%s)", host, port, mosquitto_strerror(rc));
    }
    const int w = loop_until(c, &c->connected, timeout_s, &rc);
    if (w || c->connected < 0) {
        tlm_mqtt_close(c);
        return tlm_fail(err, TLM_ERR_IO, "the MQTT broker at %s:%d %s", host, port,
                        w == 1 ? "did not answer in time" : (w == 2 ? mosquitto_strerror(rc) : "refused the connection"));
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

tlm_status tlm_mqtt_send(const char *broker, const char *client_id, const char *topic, const void *data, size_t n,
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
