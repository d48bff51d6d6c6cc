/* weights.c - a worker's weights: the manifest from the loader, then the shared segment mapped
 * read-only, or the range's tensors fetched in chunks with every digest checked. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "hugemem.h"
#include "log.h"
#include "proc.h"

/* How long a request to the loader waits before it is sent again (start-up), and how long
 * a fetch waits for the next chunk before giving up. */
#define WORKER_LOADER_RETRY_MS 5000
#define WORKER_FETCH_TIMEOUT_MS 60000
/* Bytes of a fetched matrix converted to another layout at a time (whole 16-row groups). */
#define WORKER_UNPACK_STEP_BYTES (4u << 20)

_Static_assert(WIRE_MAX_LAYOUT < WEIGHT_LAYOUT_COUNT,
               "every layout the wire carries is one the kernels compute");

static int s_config(const wire_model_config *c, model_config *cfg, llorch_error *err)
{
    if (strcmp(c->arch, "llama") != 0)
        return llorch_error_set(err, "the loader serves a '%s' model; workers run 'llama' only",
                                c->arch);
    if (c->n_heads == 0 || c->n_embd % c->n_heads)
        return llorch_error_set(err, "manifest: n_embd %u is not a multiple of n_heads %u",
                                c->n_embd, c->n_heads);
    *cfg = (model_config){.dim = c->n_embd, .n_layers = c->n_layers, .n_heads = c->n_heads,
                          .n_kv_heads = c->n_kv_heads, .head_dim = c->n_embd / c->n_heads,
                          .ffn_dim = c->n_ff, .vocab_size = c->n_vocab,
                          .context_length = c->n_ctx_train, .rope_dim = c->n_rot,
                          .rope_freq_base = c->rope_freq_base, .norm_eps = c->rms_norm_eps};
    cfg->q_dim = cfg->n_heads * cfg->head_dim;
    cfg->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    if (model_config_validate(cfg, err) < 0)
        return llorch_error_prefix(err, "manifest");
    return 0;
}

/* Whether the stage for [first, last) reads the tensor called name. */
static bool s_needed(const char *name, uint32_t first, uint32_t last, uint32_t n_layers,
                     bool has_output)
{
    unsigned layer;
    int used = 0;
    if (sscanf(name, "blk.%u.%n", &layer, &used) == 1 && used > 0)
        return layer >= first && layer < last;
    if (!strcmp(name, "token_embd.weight"))
        return first == 0 || (last == n_layers && !has_output);
    if (!strcmp(name, "output_norm.weight") || !strcmp(name, "output.weight"))
        return last == n_layers;
    return false;
}

/* Sends m to the loader and waits for the reply of the wanted type (others are dropped:
 * answers to requests sent before a retry). 0, or -1 with err (EINTR on a stop signal). */
static int s_ask(void *sock, const wire_message *m, wire_type want, wire_msg *raw,
                 wire_message *reply, int timeout_ms, const char *loader_ep, llorch_error *err)
{
    for (int attempt = 0;; attempt++) {
        if (wire_send_message(sock, NULL, 0, m, 0, err) < 0)
            return -1;
        int64_t deadline = proc_now_ms() + timeout_ms;
        while (proc_now_ms() < deadline) {
            if (proc_stop_signal()) {
                errno = EINTR;
                return llorch_error_set(err, "stopped by signal %d", proc_stop_signal());
            }
            zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
            if (zmq_poll(&item, 1, 250) <= 0)
                continue;
            int rc = wire_recv_message(sock, raw, reply, ZMQ_DONTWAIT, err);
            if (rc < 0)
                continue;
            if (rc > 0) {
                log_warn("unreadable reply from the loader: %s", err->msg);
                continue;
            }
            if (reply->type == want)
                return 0;
            if (reply->type == WIRE_ERROR) {
                llorch_error_set(err, "the loader refused: %s (%s)", reply->error.message,
                                 wire_errc_name(reply->error.code));
                wire_message_free(reply);
                wire_msg_free(raw);
                errno = EPROTO;
                return -1;
            }
            wire_message_free(reply);
            wire_msg_free(raw);
        }
        if (attempt == 0 || attempt % 6 == 0)
            log_info("waiting for the loader at %s (no answer for %d ms)", loader_ep,
                     timeout_ms);
    }
}

static int s_map_segment(worker_weights *w, const wire_manifest *mf, llorch_error *err)
{
    int fd = shm_open(mf->segment_name, O_RDONLY, 0);
    if (fd < 0)
        return llorch_error_set(err, "cannot open segment %s: %s", mf->segment_name,
                                strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < mf->segment_bytes) {
        close(fd);
        return llorch_error_set(err, "segment %s holds %lld bytes, the manifest says %" PRIu64,
                                mf->segment_name, (long long)st.st_size, mf->segment_bytes);
    }
    /* 2 MiB-aligned: the loader's huge pages are mapped as such */
    void *map = hugemem_map(fd, mf->segment_bytes, PROT_READ);
    close(fd);
    if (!map)
        return llorch_error_set(err, "cannot map segment %s: %s", mf->segment_name,
                                strerror(errno));
    w->map = map;
    w->map_bytes = mf->segment_bytes;
    w->zero_copy = true;
    return 0;
}

/* Every record's bytes (records[i].data) against the manifest's BLAKE2b-256 digest;
 * `what` names the bytes and `cause` the likely reason in the message of a mismatch
 * (errno EBADMSG). A stop signal ends the check (errno EINTR). 0, or -1 with err. */
static int s_check_digests(const worker_weights *w, const uint8_t (*digests)[WIRE_DIGEST_BYTES],
                           const char *what, const char *cause, llorch_error *err)
{
    for (size_t i = 0; i < w->n_records; i++) {
        if (proc_stop_signal()) {
            errno = EINTR;
            return llorch_error_set(err, "stopped by signal %d while checking digests",
                                    proc_stop_signal());
        }
        uint8_t d[WIRE_DIGEST_BYTES];
        crypto_generichash(d, sizeof d, w->records[i].data, w->records[i].n_bytes, NULL, 0);
        if (sodium_memcmp(d, digests[i], sizeof d) != 0) {
            errno = EBADMSG;
            return llorch_error_set(err, "tensor %s: %s do not match the manifest's BLAKE2b-256 "
                                    "digest (%s); refusing to serve", w->records[i].name, what,
                                    cause);
        }
    }
    return 0;
}

/* Puts the fetched matrices (record i's bytes at buf + offsets[i]) into the layout this
 * CPU's kernels prefer, in place: R16 back into GGUF rows on a CPU without AVX-512 (it
 * would run the slow scalar R16 kernel), GGUF rows into R16 on one with it (a loader
 * without AVX-512 sends rows). Call after the digest check, which is of the bytes as the
 * loader sent them. A group occupies the same bytes in both layouts, so each step of
 * whole groups goes through a small buffer. 0, or -1 with err. */
static int s_relayout_fetched(worker_weights *w, uint8_t *buf, const uint64_t *offsets,
                              llorch_error *err)
{
    uint8_t *tmp = NULL;
    size_t tmp_bytes = 0, n_converted = 0;
    enum weight_layout from = WEIGHT_LAYOUT_ROWS, to = WEIGHT_LAYOUT_ROWS;
    for (size_t i = 0; i < w->n_records; i++) {
        gguf_tensor *g = &w->records[i];
        if (g->n_dims != 2)
            continue;
        const int64_t rows = (int64_t)g->ne[1];
        const int64_t cols = (int64_t)g->ne[0];
        const enum weight_layout layout = (enum weight_layout)g->layout;
        const enum weight_layout want = kernel_preferred_layout(g->type, rows, cols);
        if (want == layout)
            continue;
        const size_t group_bytes = (size_t)(g->n_bytes / (uint64_t)rows) * KERNEL_R16_ROWS;
        const size_t groups_per_step = WORKER_UNPACK_STEP_BYTES / group_bytes;
        const size_t step = (groups_per_step ? groups_per_step : 1) * group_bytes;
        if (tmp_bytes < step) {
            free(tmp);
            tmp_bytes = step;
            tmp = malloc(tmp_bytes);
            if (!tmp)
                return llorch_error_set(err, "out of memory converting tensor %s to layout %s",
                                        g->name, weight_layout_name(want));
        }
        uint8_t *data = buf + offsets[i];
        for (size_t at = 0; at < (size_t)g->n_bytes; at += step) {
            const size_t n = (size_t)g->n_bytes - at < step ? (size_t)g->n_bytes - at : step;
            const int64_t n_rows = (int64_t)(n / group_bytes) * KERNEL_R16_ROWS;
            if (layout == WEIGHT_LAYOUT_ROWS)
                kernel_repack_rows(want, data + at, tmp, n_rows, cols);
            else
                kernel_unpack_rows(layout, data + at, tmp, n_rows, cols);
            memcpy(data + at, tmp, n);
        }
        g->layout = (uint32_t)want;
        from = layout;
        to = want;
        n_converted++;
    }
    free(tmp);
    if (n_converted)
        log_info("converted %zu fetched matrices from %s to %s: this CPU's %s kernels compute "
                 "those faster", n_converted, weight_layout_name(from), weight_layout_name(to),
                 kernel_isa_name(kernel_isa_active()));
    return 0;
}

/* A mapped segment keeps the loader's layouts: warns once when this CPU's kernels prefer
 * another one for some matrices (they compute correctly, only slower). */
static void s_warn_mapped_layouts(const worker_weights *w, const char *segment)
{
    size_t n = 0;
    enum weight_layout have = WEIGHT_LAYOUT_ROWS, want = WEIGHT_LAYOUT_ROWS;
    for (size_t i = 0; i < w->n_records; i++) {
        const gguf_tensor *g = &w->records[i];
        if (g->n_dims != 2)
            continue;
        const enum weight_layout pref =
            kernel_preferred_layout(g->type, (int64_t)g->ne[1], (int64_t)g->ne[0]);
        if (pref != (enum weight_layout)g->layout) {
            n++;
            have = (enum weight_layout)g->layout;
            want = pref;
        }
    }
    if (n)
        log_warn("segment %s: %zu matrices are in layout %s, but this CPU's %s kernels are "
                 "faster on %s; they compute correctly, only slower (%s)", segment, n,
                 weight_layout_name(have), kernel_isa_name(kernel_isa_active()),
                 weight_layout_name(want),
                 have != WEIGHT_LAYOUT_ROWS ? "start the loader with --layout rows, or this "
                                              "worker with --fetch"
                                            : "the loader kept GGUF rows: --layout rows, or "
                                              "a CPU without AVX-512");
}

typedef struct fetch_req {
    uint32_t tensor;  /* manifest index */
    size_t record;
    uint64_t offset, length;
    bool sent, done;
} fetch_req;

/* Fetches every record's bytes into one private mapping and checks the digests. */
static int s_fetch(worker_weights *w, void *sock, const uint32_t *index,
                   const uint8_t (*digests)[WIRE_DIGEST_BYTES], llorch_error *err)
{
    uint64_t total = 0, n_reqs = 0;
    uint64_t *offsets = calloc(w->n_records, sizeof *offsets);
    if (!offsets)
        return llorch_error_set(err, "out of memory");
    for (size_t i = 0; i < w->n_records; i++) {
        offsets[i] = total;
        total += (w->records[i].n_bytes + 63) / 64 * 64;
        n_reqs += (w->records[i].n_bytes + WORKER_CHUNK_BYTES - 1) / WORKER_CHUNK_BYTES;
    }
    fetch_req *reqs = calloc(n_reqs ? n_reqs : 1, sizeof *reqs);
    void *buf = reqs ? hugemem_alloc(total ? total : 1, err) : NULL;
    if (!buf) {
        const bool no_table = !reqs;
        free(offsets);
        free(reqs);
        return no_table ? llorch_error_set(err, "out of memory for the fetch table")
                        : llorch_error_prefix(err, "%.1f MB of weights", total / 1e6);
    }
    w->map = buf;
    w->map_bytes = total ? total : 1;
    size_t k = 0;
    for (size_t i = 0; i < w->n_records; i++)
        for (uint64_t off = 0; off < w->records[i].n_bytes; off += WORKER_CHUNK_BYTES) {
            uint64_t left = w->records[i].n_bytes - off;
            reqs[k++] = (fetch_req){.tensor = index[i], .record = i, .offset = off,
                                    .length = left < WORKER_CHUNK_BYTES ? left
                                                                        : WORKER_CHUNK_BYTES};
        }
    int rc = -1;
    size_t next = 0, done = 0, in_flight = 0;
    uint64_t got_bytes = 0;
    int64_t last_reply = proc_now_ms(), t0 = last_reply;
    int last_decile = 0;
    while (done < n_reqs) {
        while (in_flight < WORKER_FETCH_WINDOW && next < n_reqs) {
            wire_message m = {.type = WIRE_CHUNK_REQ,
                              .chunk_req = {.tensor = reqs[next].tensor,
                                            .offset = reqs[next].offset,
                                            .length = reqs[next].length}};
            if (wire_send_message(sock, NULL, 0, &m, 0, err) < 0)
                goto out;
            reqs[next++].sent = true;
            in_flight++;
        }
        if (proc_stop_signal()) {
            errno = EINTR;
            llorch_error_set(err, "stopped by signal %d while fetching", proc_stop_signal());
            goto out;
        }
        if (proc_now_ms() - last_reply > WORKER_FETCH_TIMEOUT_MS) {
            errno = ETIMEDOUT;
            llorch_error_set(err, "the loader sent no chunk for %d s; is it still running?",
                             WORKER_FETCH_TIMEOUT_MS / 1000);
            goto out;
        }
        zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 250) <= 0)
            continue;
        wire_msg raw = {0};
        wire_message m = {0};
        int r = wire_recv_message(sock, &raw, &m, ZMQ_DONTWAIT, err);
        if (r < 0)
            continue;
        if (r > 0) {
            log_warn("unreadable message from the loader: %s", err->msg);
            continue;
        }
        if (m.type == WIRE_ERROR) {
            errno = EPROTO;
            llorch_error_set(err, "the loader refused a chunk: %s", m.error.message);
            wire_message_free(&m);
            wire_msg_free(&raw);
            goto out;
        }
        if (m.type == WIRE_CHUNK) {
            /* Match the reply to an outstanding request; anything else is stale. */
            for (size_t q = done; q < next; q++) {
                fetch_req *fr = &reqs[q];
                if (fr->done || fr->tensor != m.chunk.tensor || fr->offset != m.chunk.offset)
                    continue;
                if (m.chunk.length != fr->length) {
                    errno = EPROTO;
                    llorch_error_set(err, "the loader sent %" PRIu64 " bytes of %s at %" PRIu64
                                     ", %" PRIu64 " asked", m.chunk.length,
                                     w->records[fr->record].name, fr->offset, fr->length);
                    wire_message_free(&m);
                    wire_msg_free(&raw);
                    goto out;
                }
                memcpy((uint8_t *)buf + offsets[fr->record] + fr->offset, m.chunk.data,
                       fr->length);
                fr->done = true;
                in_flight--;
                got_bytes += fr->length;
                last_reply = proc_now_ms();
                break;
            }
            while (done < next && reqs[done].done)
                done++;
        }
        wire_message_free(&m);
        wire_msg_free(&raw);
        int decile = total ? (int)(10 * got_bytes / total) : 10;
        if (total >= (256u << 20) && decile > last_decile) {
            double secs = (proc_now_ms() - t0) / 1000.0;
            log_info("fetch: %d%% of %.0f MB, %.0f MB/s", decile * 10, total / 1e6,
                     secs > 0 ? got_bytes / 1e6 / secs : 0.0);
            last_decile = decile;
        }
    }
    for (size_t i = 0; i < w->n_records; i++)
        w->records[i].data = (const uint8_t *)buf + offsets[i];
    if (s_check_digests(w, digests, "the fetched bytes", "corrupted in transit or by the loader",
                        err) < 0 ||
        s_relayout_fetched(w, buf, offsets, err) < 0)
        goto out;
    log_info("fetched and verified %zu tensors, %.1f MB in %.0f ms", w->n_records,
             got_bytes / 1e6, (double)(proc_now_ms() - t0));
    rc = 0;
out:
    free(offsets);
    free(reqs);
    return rc;
}

/* The tensor records of the range, from the manifest, each checked for a type llorch
 * computes, a byte count matching its shape and a layout the kernels know for it. */
static int s_records(worker_weights *w, const wire_manifest *mf, const worker_config *cfg,
                     uint32_t **index, uint8_t (**digests)[WIRE_DIGEST_BYTES], llorch_error *err)
{
    bool has_output = false;
    for (uint32_t i = 0; i < mf->n_tensors; i++)
        has_output |= !strcmp(mf->tensors[i].name, "output.weight");
    w->records = calloc(mf->n_tensors, sizeof *w->records);
    w->names = calloc(mf->n_tensors, sizeof *w->names);
    *index = calloc(mf->n_tensors, sizeof **index);
    *digests = calloc(mf->n_tensors, sizeof **digests);
    if (!w->records || !w->names || !*index || !*digests)
        return llorch_error_set(err, "out of memory for the tensor table");
    for (uint32_t i = 0; i < mf->n_tensors; i++) {
        const wire_tensor_info *t = &mf->tensors[i];
        if (!s_needed(t->name, cfg->first, cfg->last, w->cfg.n_layers, has_output))
            continue;
        if (!tensor_type_supported((int)t->type))
            return llorch_error_set(err, "tensor %s has type %u, which this worker does not "
                                    "compute", t->name, t->type);
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        uint64_t row_bytes = tensor_row_bytes((enum tensor_type)t->type, t->ne[0]);
        if (!row_bytes || t->ne[1] == 0 || rows / t->ne[1] != t->ne[2] * t->ne[3] ||
            rows > UINT64_MAX / row_bytes || rows * row_bytes != t->n_bytes)
            return llorch_error_set(err, "tensor %s: %" PRIu64 " bytes do not match its shape "
                                    "and type %s", t->name, t->n_bytes,
                                    tensor_type_name((int)t->type));
        if (t->layout >= WEIGHT_LAYOUT_COUNT ||
            !weight_layout_fits((enum weight_layout)t->layout, (enum tensor_type)t->type,
                                (int64_t)rows, (int64_t)t->ne[0]))
            return llorch_error_set(err, "tensor %s: layout %u (%s) is not one this worker "
                                    "computes for a %s tensor of %" PRIu64 " x %" PRIu64
                                    "; refusing the manifest (start the loader with --layout "
                                    "rows)", t->name, t->layout,
                                    weight_layout_name((enum weight_layout)t->layout),
                                    tensor_type_name((int)t->type), rows, t->ne[0]);
        size_t r = w->n_records++;
        snprintf(w->names[r], sizeof w->names[r], "%s", t->name);
        gguf_tensor *g = &w->records[r];
        g->name = w->names[r];
        g->type = (enum tensor_type)t->type;
        g->n_dims = t->n_dims;
        memcpy(g->ne, t->ne, sizeof g->ne);
        g->offset = t->offset;
        g->n_bytes = t->n_bytes;
        g->layout = t->layout;
        (*index)[r] = i;
        memcpy((*digests)[r], t->digest, WIRE_DIGEST_BYTES);
    }
    return 0;
}

/* --verify on the loader's host: every record's bytes in the mapped segment against the
 * manifest's digest, so that a segment changed after loading is refused too. */
static int s_verify_mapped(const worker_weights *w, const uint8_t (*digests)[WIRE_DIGEST_BYTES],
                           const char *segment, llorch_error *err)
{
    const int64_t t0 = proc_now_ms();
    char where[WIRE_MAX_ENDPOINT_BYTES + 32];
    snprintf(where, sizeof where, "its bytes in segment %s", segment);
    if (s_check_digests(w, digests, where, "the segment changed after loading", err) < 0)
        return -1;
    uint64_t bytes = 0;
    for (size_t i = 0; i < w->n_records; i++)
        bytes += w->records[i].n_bytes;
    log_info("verified %zu tensors in the segment, %.1f MB in %lld ms", w->n_records,
             bytes / 1e6, (long long)(proc_now_ms() - t0));
    return 0;
}

int worker_weights_acquire(worker_weights *w, void *ctx, const worker_config *cfg,
                           llorch_error *err)
{
    memset(w, 0, sizeof *w);
    if (sodium_init() < 0)
        return llorch_error_set(err, "libsodium cannot initialise");
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (!sock)
        return llorch_error_set(err, "cannot create a socket: %s", zmq_strerror(errno));
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    int rc = -1;
    uint32_t *index = NULL;
    uint8_t (*digests)[WIRE_DIGEST_BYTES] = NULL;
    wire_msg raw = {0};
    wire_message reply = {0};
    if (wire_socket_limits(sock, err) < 0)
        goto out;
    if (cfg->has_curve && cfg->loader_public[0] &&
        security_client_setup(sock, &cfg->keys, cfg->loader_public, err) < 0)
        goto out;
    if (zmq_connect(sock, cfg->loader_ep) != 0) {
        llorch_error_set(err, "cannot connect to the loader at %s: %s", cfg->loader_ep,
                         zmq_strerror(errno));
        goto out;
    }
    wire_message req = {.type = WIRE_MANIFEST_REQ, .manifest_req = {.worker_id = cfg->id}};
    if (s_ask(sock, &req, WIRE_MANIFEST, &raw, &reply, WORKER_LOADER_RETRY_MS, cfg->loader_ep,
              err) < 0)
        goto out;
    const wire_manifest *mf = &reply.manifest;
    if (s_config(&mf->config, &w->cfg, err) < 0)
        goto out;
    if (cfg->last > w->cfg.n_layers) {
        errno = ERANGE;
        llorch_error_set(err, "--layers %u:%u: the model has %u layers (give a range within "
                         "0:%u)", cfg->first, cfg->last, w->cfg.n_layers, w->cfg.n_layers);
        goto out;
    }
    snprintf(w->model_id, sizeof w->model_id, "%s", mf->model_id);
    if (s_records(w, mf, cfg, &index, &digests, err) < 0)
        goto out;

    char host[WIRE_MAX_ENDPOINT_BYTES];
    bool same_host = proc_host_id(host, sizeof host, NULL) == 0 && !strcmp(host, mf->host_id) &&
                     mf->segment_name[0];
    if (same_host && !cfg->fetch) {
        if (s_map_segment(w, mf, err) == 0) {
            for (size_t i = 0; i < w->n_records; i++)
                w->records[i].data = (const uint8_t *)w->map + w->records[i].offset;
            log_info("mapped segment %s read-only (zero copy): %zu tensors of model %s",
                     mf->segment_name, w->n_records, w->model_id);
            s_warn_mapped_layouts(w, mf->segment_name);
            if (cfg->verify && s_verify_mapped(w, digests, mf->segment_name, err) < 0)
                goto out;
        } else {
            log_warn("%s; fetching the tensors instead", err->msg);
        }
    }
    if (!w->zero_copy) {
        log_info("fetching %zu tensors of model %s from %s%s", w->n_records, w->model_id,
                 cfg->loader_ep, same_host ? "" : " (the loader is on another host)");
        if (s_fetch(w, sock, index, digests, err) < 0)
            goto out;
    }
    w->m = model_from_tensors(&w->cfg, w->records, w->n_records, err);
    if (!w->m)
        goto out;
    rc = 0;
out:
    free(index);
    free(digests);
    wire_message_free(&reply);
    wire_msg_free(&raw);
    zmq_close(sock);
    if (rc < 0) {
        int e = errno;
        worker_weights_free(w);
        errno = e;
    }
    return rc;
}

void worker_weights_free(worker_weights *w)
{
    model_free(&w->m);
    if (w->map)
        hugemem_unmap(w->map, w->map_bytes);
    free(w->records);
    free(w->names);
    memset(w, 0, sizeof *w);
}
