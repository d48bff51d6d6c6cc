/* wire_zmq.c - sending and receiving wire messages as bounded ZeroMQ multipart messages. */
#include "wire.h"
#include "wire_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

wire_store *wire_store_new_header(char *header)
{
    wire_store *st = calloc(1, sizeof *st);
    if (st)
        st->header = header;
    return st;
}

void wire_msg_free(wire_msg *msg)
{
    if (!msg)
        return;
    wire_store *st = msg->store_;
    if (st) {
        free(st->header);
        for (size_t i = 0; i < st->n_parts; i++) {
            zmq_msg_close(&st->parts[i]);
            free(st->copies[i]);
        }
        free(st);
    }
    memset(msg, 0, sizeof *msg);
}

static int s_socket_type(void *socket)
{
    int type = -1;
    size_t size = sizeof type;
    if (zmq_getsockopt(socket, ZMQ_TYPE, &type, &size) != 0)
        return -1;
    return type;
}

int wire_socket_limits(void *socket, llorch_error *err)
{
    int64_t max = (int64_t)WIRE_MAX_FRAME_BYTES;
    if (zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0)
        return llorch_error_set(err, "cannot set ZMQ_MAXMSGSIZE: %s", zmq_strerror(errno));
    return 0;
}

void *wire_monitor_open(void *ctx, void *socket, const char *name, int events)
{
    char ep[128];
    snprintf(ep, sizeof ep, "inproc://%s", name);
    if (zmq_socket_monitor(socket, ep, events) != 0)
        return NULL;
    void *monitor = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    if (!monitor || zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(monitor, ep) != 0) {
        wire_monitor_close(socket, monitor);
        return NULL;
    }
    return monitor;
}

int wire_monitor_next(void *monitor)
{
    if (!monitor)
        return 0;
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return 0;
    }
    /* Two frames: the event number (16 bits) and value, then the endpoint. */
    uint16_t event = 0;
    if (zmq_msg_size(&ev) >= sizeof event)
        memcpy(&event, zmq_msg_data(&ev), sizeof event);
    if (zmq_msg_more(&ev)) {
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, monitor, 0);
        zmq_msg_close(&addr);
    }
    zmq_msg_close(&ev);
    return event;
}

void wire_monitor_close(void *socket, void *monitor)
{
    if (socket)
        zmq_socket_monitor(socket, NULL, 0);
    if (monitor)
        zmq_close(monitor);
}

int wire_send(void *socket, const wire_msg *msg, int flags, llorch_error *err)
{
    if (!msg || msg->n_frames < 1 || msg->n_frames > WIRE_MAX_FRAMES)
        return llorch_error_set(err, "send: a message has 1 to %d frames", WIRE_MAX_FRAMES);
    int type = s_socket_type(socket);
    if (type < 0)
        return llorch_error_set(err, "send: not a socket: %s", zmq_strerror(errno));
    if (type == ZMQ_ROUTER) {
        if (msg->identity_bytes == 0 || msg->identity_bytes > sizeof msg->identity)
            return llorch_error_set(err, "send: a ROUTER socket needs the peer's identity");
        if (zmq_send(socket, msg->identity, msg->identity_bytes, flags | ZMQ_SNDMORE) < 0)
            return llorch_error_set(err, "send: %s", zmq_strerror(errno));
    }
    for (size_t i = 0; i < msg->n_frames; i++) {
        int more = i + 1 < msg->n_frames ? ZMQ_SNDMORE : 0;
        const wire_frame *f = &msg->frames[i];
        if (zmq_send(socket, f->n_bytes ? f->data : "", f->n_bytes, flags | more) < 0) {
            int e = errno;
            llorch_error_set(err, "send: frame %zu: %s", i, zmq_strerror(e));
            errno = e;
            return -1;
        }
    }
    return 0;
}

/* Points frame i at part i's bytes, through an aligned copy when zmq's are not 8-byte
 * aligned (small parts live inside the zmq_msg_t), so that float frames are safe to read. */
static int s_attach(wire_msg *out, wire_store *st, size_t i)
{
    void *data = zmq_msg_data(&st->parts[i]);
    size_t n = zmq_msg_size(&st->parts[i]);
    if (n && (uintptr_t)data % 8 != 0) {
        st->copies[i] = malloc(n);
        if (!st->copies[i])
            return -1;
        memcpy(st->copies[i], data, n);
        data = st->copies[i];
    }
    out->frames[i] = (wire_frame){n ? data : NULL, n};
    return 0;
}

int wire_recv(void *socket, wire_msg *out, int flags, llorch_error *err)
{
    memset(out, 0, sizeof *out);
    int type = s_socket_type(socket);
    if (type < 0)
        return llorch_error_set(err, "receive: not a socket: %s", zmq_strerror(errno));
    wire_store *st = calloc(1, sizeof *st);
    if (!st)
        return llorch_error_set(err, "receive: out of memory");
    out->store_ = st;
    const char *problem = NULL;
    size_t n_seen = 0, header_bytes = 0;
    for (int index = 0, more = 1; more; index++) {
        /* Receive straight into the store's next slot (a zmq_msg_t must not be copied);
         * once the slots are full, into a scratch message that is dropped. */
        zmq_msg_t scratch;
        zmq_msg_t *part = st->n_parts < WIRE_MAX_FRAMES ? &st->parts[st->n_parts] : &scratch;
        zmq_msg_init(part);
        if (zmq_msg_recv(part, socket, index == 0 ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(part);
            wire_msg_free(out);
            llorch_error_set(err, "receive: %s", zmq_strerror(e));
            errno = e;
            return -1;
        }
        more = zmq_msg_more(part);
        size_t n = zmq_msg_size(part);
        if (index == 0 && type == ZMQ_ROUTER) {
            if (n > sizeof out->identity)
                n = sizeof out->identity; /* libzmq never makes longer ids */
            memcpy(out->identity, zmq_msg_data(part), n);
            out->identity_bytes = n;
            zmq_msg_close(part);
            continue;
        }
        n_seen++;
        if (n_seen == 1)
            header_bytes = n;
        if (!problem && part == &scratch)
            problem = "more frames than the protocol allows";
        if (!problem && n_seen == 1 && n > WIRE_MAX_MANIFEST_HEADER_BYTES)
            problem = "a header frame over the size limit";
        if (!problem && n_seen > 1 && n > WIRE_MAX_FRAME_BYTES)
            problem = "a bulk frame over the size limit";
        if (problem) {
            zmq_msg_close(part); /* read to the end of the message, keep nothing more */
            continue;
        }
        st->n_parts++;
    }
    if (!problem && st->n_parts == 0)
        problem = "no header frame";
    if (problem) {
        uint8_t id[sizeof out->identity];
        size_t id_bytes = out->identity_bytes;
        memcpy(id, out->identity, id_bytes);
        wire_msg_free(out);
        memcpy(out->identity, id, id_bytes);
        out->identity_bytes = id_bytes;
        llorch_error_set(err, "malformed message: %zu frames (header %zu bytes) with %s "
                         "(at most %d frames, header %u bytes, bulk frames %zu bytes)",
                         n_seen, header_bytes, problem, WIRE_MAX_FRAMES,
                         WIRE_MAX_MANIFEST_HEADER_BYTES, WIRE_MAX_FRAME_BYTES);
        return WIRE_ERR_MALFORMED;
    }
    for (size_t i = 0; i < st->n_parts; i++)
        if (s_attach(out, st, i) != 0) {
            wire_msg_free(out);
            return llorch_error_set(err, "receive: out of memory");
        }
    out->n_frames = st->n_parts;
    return 0;
}

int wire_send_message(void *socket, const void *identity, size_t identity_bytes,
                      const wire_message *m, int flags, llorch_error *err)
{
    wire_msg msg = {0};
    if (identity_bytes > sizeof msg.identity)
        return llorch_error_set(err, "send: identity of %zu bytes (at most %zu)", identity_bytes,
                                sizeof msg.identity);
    if (wire_encode(m, &msg, err) != 0)
        return -1;
    if (identity_bytes)
        memcpy(msg.identity, identity, identity_bytes);
    msg.identity_bytes = identity_bytes;
    int rc = wire_send(socket, &msg, flags, err);
    int e = errno;
    wire_msg_free(&msg);
    errno = e;
    return rc;
}

int wire_recv_message(void *socket, wire_msg *raw, wire_message *msg, int flags,
                      llorch_error *err)
{
    memset(msg, 0, sizeof *msg);
    int rc = wire_recv(socket, raw, flags, err);
    if (rc != 0)
        return rc;
    rc = wire_decode(raw, msg, err);
    if (rc != WIRE_OK) {
        /* Keep only the identity, for the ERROR reply. */
        uint8_t id[sizeof raw->identity];
        size_t id_bytes = raw->identity_bytes;
        memcpy(id, raw->identity, id_bytes);
        wire_msg_free(raw);
        memcpy(raw->identity, id, id_bytes);
        raw->identity_bytes = id_bytes;
    }
    return rc;
}

int wire_reply_error(void *socket, const wire_msg *request, uint32_t code, const char *message,
                     uint64_t batch_id, uint64_t session_id, uint64_t request_id,
                     llorch_error *err)
{
    char text[WIRE_MAX_TEXT_BYTES + 1];
    snprintf(text, sizeof text, "%s", message ? message : "");
    wire_message m = {.type = WIRE_ERROR};
    m.error = (wire_error){.code = code, .message = text, .batch_id = batch_id,
                           .session_id = session_id, .request_id = request_id};
    return wire_send_message(socket, request ? request->identity : NULL,
                             request ? request->identity_bytes : 0, &m, 0, err);
}
