/* serve.c - the loader's answers: MANIFEST, bounded CHUNKs of tensor bytes, STATS, ERROR. */
#include "loader.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

static int s_reply_error(void *socket, const wire_msg *req, uint32_t code, const char *message,
                         loader_stats *st)
{
    llorch_error err;
    st->errors++;
    log_warn("request refused (%s): %s", wire_errc_name(code), message);
    if (wire_reply_error(socket, req, code, message, 0, 0, 0, &err) < 0)
        log_warn("cannot send ERROR: %s", err.msg);
    return 1;
}

static int s_manifest(loader_model *lm, void *socket, const wire_msg *req,
                      const wire_manifest_req *mr, loader_stats *st)
{
    llorch_error err;
    wire_msg out = lm->manifest_msg; /* shares the encoded frames; not freed here */
    memcpy(out.identity, req->identity, req->identity_bytes);
    out.identity_bytes = req->identity_bytes;
    if (wire_send(socket, &out, 0, &err) < 0) {
        log_warn("cannot send the manifest: %s", err.msg);
        return 1;
    }
    st->manifests++;
    log_info("manifest sent to %s", mr->worker_id && mr->worker_id[0] ? mr->worker_id
                                                                      : "(unnamed peer)");
    return 1;
}

static int s_chunk(loader_model *lm, void *socket, const wire_msg *req, const wire_chunk_req *cr,
                   int tamper, loader_stats *st)
{
    char msg[256];
    if (cr->tensor >= lm->manifest.n_tensors) {
        snprintf(msg, sizeof msg, "chunk_req: tensor %u does not exist (the manifest has %u)",
                 cr->tensor, lm->manifest.n_tensors);
        return s_reply_error(socket, req, WIRE_ERR_NOT_FOUND, msg, st);
    }
    const wire_tensor_info *t = &lm->tensors[cr->tensor];
    if (cr->offset > t->n_bytes) {
        snprintf(msg, sizeof msg, "chunk_req: offset %" PRIu64 " is past the end of tensor %s "
                 "(%" PRIu64 " bytes)", cr->offset, t->name, t->n_bytes);
        return s_reply_error(socket, req, WIRE_ERR_INVALID, msg, st);
    }
    uint64_t length = cr->length;
    if (length > t->n_bytes - cr->offset)
        length = t->n_bytes - cr->offset;
    const uint8_t *data = lm->segment + t->offset + cr->offset;
    uint8_t *copy = NULL;
    if ((int)cr->tensor == tamper && length > 0) {
        copy = malloc(length);
        if (!copy)
            return s_reply_error(socket, req, WIRE_ERR_NO_MEMORY, "out of memory", st);
        memcpy(copy, data, length);
        copy[0] ^= 0xff;
        data = copy;
    }
    wire_message m = {.type = WIRE_CHUNK,
                      .chunk = {.tensor = cr->tensor, .offset = cr->offset, .length = length,
                                .data = data}};
    llorch_error err;
    if (wire_send_message(socket, req->identity, req->identity_bytes, &m, 0, &err) < 0)
        log_warn("cannot send a chunk of %s: %s", t->name, err.msg);
    else {
        st->chunks++;
        st->chunk_bytes += length;
    }
    free(copy);
    return 1;
}

static int s_stats(loader_model *lm, void *socket, const wire_msg *req, loader_stats *st)
{
    const wire_stat counters[] = {
        {"manifests", (double)st->manifests},
        {"chunks", (double)st->chunks},
        {"chunk_bytes", (double)st->chunk_bytes},
        {"errors", (double)st->errors},
        {"segment_bytes", (double)lm->segment_bytes},
        {"tensors", (double)lm->manifest.n_tensors},
        {"load_ms", lm->load_ms},
    };
    wire_message m = {.type = WIRE_STATS,
                      .stats = {.sender_id = "loader",
                                .n_counters = sizeof counters / sizeof counters[0],
                                .counters = counters}};
    llorch_error err;
    if (wire_send_message(socket, req->identity, req->identity_bytes, &m, 0, &err) < 0)
        log_warn("cannot send stats: %s", err.msg);
    return 1;
}

int loader_serve_one(loader_model *lm, void *socket, int tamper, loader_stats *st,
                     llorch_error *err)
{
    wire_msg raw = {0};
    wire_message m = {0};
    int rc = wire_recv_message(socket, &raw, &m, ZMQ_DONTWAIT, err);
    if (rc < 0) {
        if (errno == EAGAIN)
            return 0;
        return -1;
    }
    if (rc > 0) {
        /* Malformed, wrong version, unknown type: say so to the sender and go on. */
        char msg[WIRE_MAX_TEXT_BYTES];
        snprintf(msg, sizeof msg, "%s", err->msg);
        s_reply_error(socket, &raw, (uint32_t)rc, msg, st);
        wire_msg_free(&raw);
        return 1;
    }
    switch (m.type) {
    case WIRE_MANIFEST_REQ:
        s_manifest(lm, socket, &raw, &m.manifest_req, st);
        break;
    case WIRE_CHUNK_REQ:
        s_chunk(lm, socket, &raw, &m.chunk_req, tamper, st);
        break;
    case WIRE_STATS_REQ:
        s_stats(lm, socket, &raw, st);
        break;
    default: {
        char msg[128];
        snprintf(msg, sizeof msg, "the loader does not serve '%s' (it answers manifest_req, "
                 "chunk_req and stats_req)", wire_type_name(m.type));
        s_reply_error(socket, &raw, WIRE_ERR_UNSUPPORTED, msg, st);
    }
    }
    wire_message_free(&m);
    wire_msg_free(&raw);
    return 1;
}
