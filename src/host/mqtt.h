/* MQTT for federated rounds, over libmosquitto: connect to a broker,
 * publish a message and wait for the broker to acknowledge it (QoS 1),
 * subscribe and wait for the acknowledgement, receive messages. */
#ifndef TLM_HOST_MQTT_H
#define TLM_HOST_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/status.h"

typedef struct tlm_mqtt tlm_mqtt;

/* Where and how to reach the broker. addr is "host" or "host:port" (port
 * 1883, or 8883 with TLS). With ca_file the connection is TLS (1.2 or
 * later): the broker's certificate must chain to that CA and name the
 * host; cert_file and key_file (both or neither) are this client's own
 * certificate for brokers that ask for one. username and password (empty:
 * none) log in to brokers that require it. */
typedef struct tlm_mqtt_broker {
    const char *addr;
    const char *ca_file, *cert_file, *key_file;
    const char *username;
    char password[256];
} tlm_mqtt_broker;

/* Reads the broker password from the first line of path (the file must not
 * be readable by others, like a key; at most 255 bytes). */
tlm_status tlm_mqtt_read_password(tlm_mqtt_broker *b, const char *path, tlm_error *err);

tlm_status tlm_mqtt_connect(tlm_mqtt **out, const tlm_mqtt_broker *broker, const char *client_id, double timeout_s,
                            tlm_error *err);
void tlm_mqtt_close(tlm_mqtt *c);
tlm_status tlm_mqtt_publish(tlm_mqtt *c, const char *topic, const void *data, size_t n, int retain, double timeout_s,
                            tlm_error *err);
/* Connect, publish one message (QoS 1, acknowledged), disconnect. */
tlm_status tlm_mqtt_send(const tlm_mqtt_broker *broker, const char *client_id, const char *topic, const void *data, size_t n,
                         int retain, tlm_error *err);
tlm_status tlm_mqtt_subscribe(tlm_mqtt *c, const char *topic, double timeout_s, tlm_error *err);

/* Calls fn for each message until fn returns non-zero or timeout_s pass;
 * *timed_out says which. */
typedef int (*tlm_mqtt_fn)(void *ctx, const char *topic, const uint8_t *data, size_t n);
tlm_status tlm_mqtt_receive(tlm_mqtt *c, double timeout_s, tlm_mqtt_fn fn, void *ctx, int *timed_out, tlm_error *err);

#endif
