/* wire.c - names and the schema checks shared by the wire encoders and decoders. */
#include "wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

static const char *const s_type_names[WIRE_TYPE_COUNT] = {
    [WIRE_REGISTER] = "register",     [WIRE_REGISTER_ACK] = "register_ack",
    [WIRE_HEARTBEAT] = "heartbeat",   [WIRE_FORWARD] = "forward",
    [WIRE_LOGITS] = "logits",         [WIRE_SESSION_FREE] = "session_free",
    [WIRE_ERROR] = "error",           [WIRE_MANIFEST_REQ] = "manifest_req",
    [WIRE_MANIFEST] = "manifest",     [WIRE_CHUNK_REQ] = "chunk_req",
    [WIRE_CHUNK] = "chunk",           [WIRE_SUBMIT] = "submit",
    [WIRE_TOKEN] = "token",           [WIRE_DONE] = "done",
    [WIRE_CANCEL] = "cancel",         [WIRE_STATS_REQ] = "stats_req",
    [WIRE_STATS] = "stats",
};

const char *wire_type_name(int type)
{
    if (type <= 0 || type >= WIRE_TYPE_COUNT)
        return "unknown";
    return s_type_names[type];
}

const char *wire_errc_name(uint32_t code)
{
    static const char *const names[] = {
        "ok", "malformed", "version", "unsupported", "invalid", "busy", "no_memory",
        "not_found", "digest", "unavailable", "cancelled", "internal",
    };
    return code < sizeof names / sizeof names[0] ? names[code] : "unknown";
}

const char *wire_stop_reason_name(int reason)
{
    static const char *const names[WIRE_STOP_COUNT] = {"eos", "length", "stop", "cancelled",
                                                       "error"};
    return reason >= 0 && reason < WIRE_STOP_COUNT ? names[reason] : "unknown";
}

wire_sampling wire_sampling_default(void)
{
    wire_sampling s = {
        .temperature = SAMPLER_DEFAULT_TEMPERATURE,
        .top_k = SAMPLER_DEFAULT_TOP_K,
        .top_p = SAMPLER_DEFAULT_TOP_P,
        .min_p = SAMPLER_DEFAULT_MIN_P,
        .penalty_last_n = SAMPLER_DEFAULT_PENALTY_LAST_N,
        .repeat_penalty = 1.0f,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = SAMPLER_SEED_RANDOM,
    };
    return s;
}

/* ---- field checks: each returns 0 or -1 with "field: what is wrong" ---- */

static int s_str(llorch_error *err, const char *field, const char *s, size_t min_bytes,
                 size_t max_bytes)
{
    if (!s)
        return llorch_error_set(err, "%s: missing (NULL string)", field);
    size_t n = strnlen(s, max_bytes + 1);
    if (n > max_bytes)
        return llorch_error_set(err, "%s: longer than the limit of %zu bytes", field, max_bytes);
    if (n < min_bytes)
        return llorch_error_set(err, "%s: must not be empty", field);
    return 0;
}

static int s_range_u64(llorch_error *err, const char *field, uint64_t v, uint64_t lo, uint64_t hi)
{
    if (v < lo || v > hi)
        return llorch_error_set(err, "%s: %llu is outside [%llu, %llu]", field,
                                (unsigned long long)v, (unsigned long long)lo,
                                (unsigned long long)hi);
    return 0;
}

static int s_range_f(llorch_error *err, const char *field, double v, double lo, double hi)
{
    if (!isfinite(v) || v < lo || v > hi)
        return llorch_error_set(err, "%s: %g is outside [%g, %g]", field, v, lo, hi);
    return 0;
}

/* Bytes of a (rows, cols) float32 or int32 frame, or SIZE_MAX over WIRE_MAX_FRAME_BYTES. */
static size_t s_frame_bytes(uint64_t rows, uint64_t cols)
{
    if (cols != 0 && rows > WIRE_MAX_FRAME_BYTES / 4 / cols)
        return SIZE_MAX;
    return (size_t)(rows * cols * 4);
}

static int s_validate_forward(const wire_forward *f, llorch_error *err)
{
    if (s_range_u64(err, "rows", f->n_rows, 1, WIRE_MAX_ROWS) ||
        s_range_u64(err, "hidden_dim", f->hidden_dim, 1, WIRE_MAX_HIDDEN_DIM) ||
        s_range_u64(err, "route", f->n_hops, 0, WIRE_MAX_HOPS))
        return -1;
    if (!f->rows || (f->n_hops && !f->route))
        return llorch_error_set(err, "rows/route: NULL array with a non-zero count");
    for (uint32_t i = 0; i < f->n_hops; i++)
        if (s_str(err, "route[]", f->route[i], 1, WIRE_MAX_ENDPOINT_BYTES))
            return llorch_error_prefix(err, "route[%u]", i);
    for (uint32_t i = 0; i < f->n_rows; i++) {
        const wire_row *r = &f->rows[i];
        if (r->session_id == 0)
            return llorch_error_set(err, "rows[%u]: session_id 0 is reserved; use ids >= 1", i);
        if (f->hidden && r->token != -1)
            return llorch_error_set(err, "rows[%u]: token %d in a batch carrying hidden states "
                                    "(every row must have token -1)", i, (int)r->token);
        if (!f->hidden && r->token < 0)
            return llorch_error_set(err, "rows[%u]: token %d but the batch has no hidden-state "
                                    "frame (token ids must be >= 0)", i, (int)r->token);
    }
    if (f->hidden && s_frame_bytes(f->n_rows, f->hidden_dim) == SIZE_MAX)
        return llorch_error_set(err, "hidden: %u rows x %u floats exceed the frame limit of "
                                "%zu bytes", f->n_rows, f->hidden_dim, WIRE_MAX_FRAME_BYTES);
    return 0;
}

static int s_validate_logits(const wire_logits *l, llorch_error *err)
{
    if (s_range_u64(err, "rows", l->n_rows, 0, WIRE_MAX_ROWS) ||
        s_range_u64(err, "n_vocab", l->n_vocab, 1, WIRE_MAX_VOCAB))
        return -1;
    if (l->n_rows && (!l->rows || !l->logits))
        return llorch_error_set(err, "rows/logits: NULL array with %u rows", l->n_rows);
    if (s_frame_bytes(l->n_rows, l->n_vocab) == SIZE_MAX)
        return llorch_error_set(err, "logits: %u rows x %u floats exceed the frame limit of "
                                "%zu bytes", l->n_rows, l->n_vocab, WIRE_MAX_FRAME_BYTES);
    for (uint32_t i = 0; i < l->n_rows; i++)
        if (l->rows[i].session_id == 0)
            return llorch_error_set(err, "rows[%u]: session_id 0 is reserved; use ids >= 1", i);
    return 0;
}

static int s_cmp_name(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

static int s_validate_manifest(const wire_manifest *m, llorch_error *err)
{
    const wire_model_config *c = &m->config;
    const wire_tokenizer *t = &m->tokenizer;
    if (s_str(err, "model_id", m->model_id, 1, WIRE_MAX_ID_BYTES) ||
        s_str(err, "host_id", m->host_id, 0, WIRE_MAX_ENDPOINT_BYTES) ||
        s_str(err, "segment_name", m->segment_name, 0, WIRE_MAX_ENDPOINT_BYTES) ||
        s_str(err, "config.arch", c->arch, 1, WIRE_MAX_ID_BYTES) ||
        s_range_u64(err, "config.n_vocab", c->n_vocab, 1, WIRE_MAX_VOCAB) ||
        s_range_u64(err, "config.n_embd", c->n_embd, 1, WIRE_MAX_HIDDEN_DIM) ||
        s_range_u64(err, "config.n_layers", c->n_layers, 1, WIRE_MAX_LAYERS) ||
        s_range_u64(err, "config.n_heads", c->n_heads, 1, c->n_embd) ||
        s_range_u64(err, "config.n_kv_heads", c->n_kv_heads, 1, c->n_heads) ||
        s_range_u64(err, "config.n_ff", c->n_ff, 1, 1u << 20) ||
        s_range_u64(err, "config.n_ctx_train", c->n_ctx_train, 1, 1u << 24) ||
        s_range_u64(err, "config.n_rot", c->n_rot, 0, c->n_embd) ||
        s_range_f(err, "config.rope_freq_base", c->rope_freq_base, 1e-6, 1e12) ||
        s_range_f(err, "config.rms_norm_eps", c->rms_norm_eps, 1e-30, 1.0))
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return llorch_error_set(err, "config: n_heads %u is not a multiple of n_kv_heads %u",
                                c->n_heads, c->n_kv_heads);
    if (s_str(err, "tokenizer.model", t->model, 1, WIRE_MAX_ID_BYTES))
        return -1;
    if (t->n_tokens != c->n_vocab)
        return llorch_error_set(err, "tokenizer.tokens: %u entries but config.n_vocab is %u",
                                t->n_tokens, c->n_vocab);
    if (!t->pieces || !t->piece_lens || !t->scores || !t->types)
        return llorch_error_set(err, "tokenizer: NULL pieces, lengths, scores or types");
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        if (t->piece_lens[i] > WIRE_MAX_TOKEN_BYTES || (t->piece_lens[i] && !t->pieces[i]))
            return llorch_error_set(err, "tokenizer.tokens[%u]: %u bytes (limit %u)", i,
                                    t->piece_lens[i], WIRE_MAX_TOKEN_BYTES);
        if (!isfinite(t->scores[i]))
            return llorch_error_set(err, "tokenizer scores[%u]: not a finite number", i);
    }
    const int32_t ids[3] = {t->bos_id, t->eos_id, t->unk_id};
    const char *const id_names[3] = {"bos_id", "eos_id", "unk_id"};
    for (int k = 0; k < 3; k++)
        if (ids[k] < -1 || (ids[k] >= 0 && (uint32_t)ids[k] >= t->n_tokens))
            return llorch_error_set(err, "tokenizer.%s: %d is not -1 or a token id below %u",
                                    id_names[k], (int)ids[k], t->n_tokens);
    if (s_range_u64(err, "tensors", m->n_tensors, 1, WIRE_MAX_TENSORS))
        return -1;
    if (!m->tensors)
        return llorch_error_set(err, "tensors: NULL array");
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const wire_tensor_info *ti = &m->tensors[i];
        if (s_str(err, "name", ti->name, 1, WIRE_MAX_TENSOR_NAME_BYTES) ||
            s_range_u64(err, "n_dims", ti->n_dims, 1, 4) ||
            s_range_u64(err, "layout", ti->layout, 0, WIRE_MAX_LAYOUT))
            return llorch_error_prefix(err, "tensors[%u]", i);
        for (uint32_t d = 0; d < 4; d++)
            if (ti->ne[d] == 0 || ti->ne[d] > (1ull << 40) || (d >= ti->n_dims && ti->ne[d] != 1))
                return llorch_error_set(err, "tensors[%u] (%s): ne[%u] = %llu (dims in use must "
                                        "be 1..2^40, unused ones 1)", i, ti->name, d,
                                        (unsigned long long)ti->ne[d]);
        if (ti->n_bytes == 0 || ti->offset > m->segment_bytes ||
            ti->n_bytes > m->segment_bytes - ti->offset)
            return llorch_error_set(err, "tensors[%u] (%s): bytes [%llu, +%llu) do not lie "
                                    "inside the %llu-byte segment", i, ti->name,
                                    (unsigned long long)ti->offset,
                                    (unsigned long long)ti->n_bytes,
                                    (unsigned long long)m->segment_bytes);
    }
    /* Unique names, in O(n log n): the tensor table can be long. */
    const char **names = malloc(m->n_tensors * sizeof *names);
    const char ***order = malloc(m->n_tensors * sizeof *order);
    int rc = 0;
    if (!names || !order) {
        rc = llorch_error_set(err, "out of memory checking %u tensor names", m->n_tensors);
    } else {
        for (uint32_t i = 0; i < m->n_tensors; i++) {
            names[i] = m->tensors[i].name;
            order[i] = &names[i];
        }
        qsort(order, m->n_tensors, sizeof *order, s_cmp_name);
        for (uint32_t i = 1; i < m->n_tensors && rc == 0; i++)
            if (strcmp(*order[i - 1], *order[i]) == 0)
                rc = llorch_error_set(err, "tensors: the name \"%s\" appears twice", *order[i]);
    }
    free(names);
    free(order);
    return rc;
}

static int s_validate_submit(const wire_submit *s, llorch_error *err)
{
    const wire_sampling *p = &s->sampling;
    if (s_range_u64(err, "request_id", s->request_id, 1, UINT64_MAX))
        return -1;
    if (s->prompt) {
        if (s_str(err, "prompt", s->prompt, 0, WIRE_MAX_PROMPT_BYTES))
            return -1;
        if (s->n_tokens)
            return llorch_error_set(err, "prompt: give either text or token ids, not both");
    } else {
        if (s_range_u64(err, "tokens", s->n_tokens, 1, WIRE_MAX_PROMPT_TOKENS))
            return llorch_error_prefix(err, "no prompt text");
        if (!s->tokens)
            return llorch_error_set(err, "tokens: NULL array with %u tokens", s->n_tokens);
        for (uint32_t i = 0; i < s->n_tokens; i++)
            if (s->tokens[i] < 0)
                return llorch_error_set(err, "tokens[%u]: %d is not a token id", i,
                                        (int)s->tokens[i]);
    }
    if (s_range_f(err, "temperature", p->temperature, 0, 1e6) ||
        s_range_u64(err, "top_k", p->top_k < 0 ? UINT64_MAX : (uint64_t)p->top_k, 0, INT32_MAX) ||
        s_range_f(err, "top_p", p->top_p, 0, 1) || s_range_f(err, "min_p", p->min_p, 0, 1) ||
        s_range_u64(err, "penalty_last_n",
                    p->penalty_last_n < 0 ? UINT64_MAX : (uint64_t)p->penalty_last_n, 0,
                    INT32_MAX) ||
        s_range_f(err, "repeat_penalty", p->repeat_penalty, 1e-6, 1e6) ||
        s_range_f(err, "frequency_penalty", p->frequency_penalty, -2, 2) ||
        s_range_f(err, "presence_penalty", p->presence_penalty, -2, 2) ||
        s_range_u64(err, "max_tokens", s->max_tokens, 1, WIRE_MAX_GEN_TOKENS) ||
        s_range_u64(err, "top_n_probs", s->top_n_probs, 0, WIRE_MAX_TOP_PROBS) ||
        s_range_u64(err, "stop", s->n_stop, 0, WIRE_MAX_STOP_STRINGS))
        return -1;
    if (s->n_stop && !s->stop)
        return llorch_error_set(err, "stop: NULL array with %u strings", s->n_stop);
    for (uint32_t i = 0; i < s->n_stop; i++)
        if (s_str(err, "stop[]", s->stop[i], 1, WIRE_MAX_STOP_BYTES))
            return llorch_error_prefix(err, "stop[%u]", i);
    return 0;
}

static int s_validate_token(const wire_token *t, llorch_error *err)
{
    if (s_range_u64(err, "request_id", t->request_id, 1, UINT64_MAX) ||
        s_range_u64(err, "token", t->token < 0 ? UINT64_MAX : (uint64_t)t->token, 0,
                    WIRE_MAX_VOCAB - 1) ||
        s_range_u64(err, "piece", t->piece_bytes, 0, WIRE_MAX_TOKEN_BYTES) ||
        s_range_u64(err, "top", t->n_top, 0, WIRE_MAX_TOP_PROBS))
        return -1;
    if ((t->piece_bytes && !t->piece) || (t->n_top && !t->top))
        return llorch_error_set(err, "piece/top: NULL with a non-zero length");
    for (uint32_t i = 0; i < t->n_top; i++)
        if (t->top[i].token < 0 || s_range_f(err, "prob", t->top[i].prob, 0, 1))
            return llorch_error_set(err, "top[%u]: token %d, prob %g (need id >= 0, prob in "
                                    "[0, 1])", i, (int)t->top[i].token, t->top[i].prob);
    return 0;
}

static int s_validate_stats(const wire_stats *s, llorch_error *err)
{
    if (s_str(err, "sender_id", s->sender_id, 0, WIRE_MAX_ID_BYTES) ||
        s_range_u64(err, "counters", s->n_counters, 0, WIRE_MAX_STATS))
        return -1;
    if (s->n_counters && !s->counters)
        return llorch_error_set(err, "counters: NULL array with %u entries", s->n_counters);
    for (uint32_t i = 0; i < s->n_counters; i++) {
        if (s_str(err, "name", s->counters[i].name, 1, WIRE_MAX_KEY_BYTES) ||
            s_range_f(err, "value", s->counters[i].value, -1e300, 1e300))
            return llorch_error_prefix(err, "counters[%u]", i);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(s->counters[i].name, s->counters[j].name) == 0)
                return llorch_error_set(err, "counters: \"%s\" appears twice",
                                        s->counters[i].name);
    }
    return 0;
}

static int s_validate_body(const wire_message *m, llorch_error *err)
{
    switch (m->type) {
    case WIRE_REGISTER: {
        const wire_register *r = &m->reg;
        if (s_str(err, "worker_id", r->worker_id, 1, WIRE_MAX_ID_BYTES) ||
            s_str(err, "model_id", r->model_id, 1, WIRE_MAX_ID_BYTES) ||
            s_str(err, "endpoint", r->endpoint, 1, WIRE_MAX_ENDPOINT_BYTES) ||
            s_range_u64(err, "n_layers", r->n_layers, 1, WIRE_MAX_LAYERS) ||
            s_range_u64(err, "threads", r->threads, 1, 4096))
            return -1;
        if (r->layer_first >= r->layer_last || r->layer_last > r->n_layers)
            return llorch_error_set(err, "layers [%u, %u) are not a non-empty range inside the "
                                    "model's %u layers", r->layer_first, r->layer_last,
                                    r->n_layers);
        return 0;
    }
    case WIRE_REGISTER_ACK:
        return s_str(err, "worker_id", m->reg_ack.worker_id, 1, WIRE_MAX_ID_BYTES) ||
               s_range_u64(err, "heartbeat_ms", m->reg_ack.heartbeat_ms, 1, 3600000) ||
               s_range_u64(err, "liveness", m->reg_ack.liveness, 1, 1000) ? -1 : 0;
    case WIRE_HEARTBEAT:
        return s_str(err, "sender_id", m->heartbeat.sender_id, 1, WIRE_MAX_ID_BYTES);
    case WIRE_FORWARD:
        return s_validate_forward(&m->forward, err);
    case WIRE_LOGITS:
        return s_validate_logits(&m->logits, err);
    case WIRE_SESSION_FREE:
        return s_range_u64(err, "session_id", m->session_free.session_id, 1, UINT64_MAX);
    case WIRE_ERROR:
        return s_str(err, "message", m->error.message, 0, WIRE_MAX_TEXT_BYTES);
    case WIRE_MANIFEST_REQ:
        return s_str(err, "worker_id", m->manifest_req.worker_id, 0, WIRE_MAX_ID_BYTES);
    case WIRE_MANIFEST:
        return s_validate_manifest(&m->manifest, err);
    case WIRE_CHUNK_REQ:
        if (s_range_u64(err, "length", m->chunk_req.length, 1, WIRE_MAX_CHUNK_BYTES))
            return -1;
        if (m->chunk_req.offset > UINT64_MAX - m->chunk_req.length)
            return llorch_error_set(err, "offset + length overflow");
        return 0;
    case WIRE_CHUNK:
        if (s_range_u64(err, "length", m->chunk.length, 0, WIRE_MAX_CHUNK_BYTES))
            return -1;
        if (m->chunk.offset > UINT64_MAX - m->chunk.length)
            return llorch_error_set(err, "offset + length overflow");
        if (m->chunk.length && !m->chunk.data)
            return llorch_error_set(err, "data: NULL with length %llu",
                                    (unsigned long long)m->chunk.length);
        return 0;
    case WIRE_SUBMIT:
        return s_validate_submit(&m->submit, err);
    case WIRE_TOKEN:
        return s_validate_token(&m->token, err);
    case WIRE_DONE: {
        const wire_done *d = &m->done;
        return s_range_u64(err, "request_id", d->request_id, 1, UINT64_MAX) ||
               s_range_u64(err, "stop_reason", (uint64_t)d->stop_reason, 0,
                           WIRE_STOP_COUNT - 1) ||
               s_range_f(err, "queue_ms", d->queue_ms, 0, 1e15) ||
               s_range_f(err, "prompt_ms", d->prompt_ms, 0, 1e15) ||
               s_range_f(err, "generate_ms", d->generate_ms, 0, 1e15) ? -1 : 0;
    }
    case WIRE_CANCEL:
        return s_range_u64(err, "request_id", m->cancel.request_id, 1, UINT64_MAX);
    case WIRE_STATS_REQ:
        return 0;
    case WIRE_STATS:
        return s_validate_stats(&m->stats, err);
    default:
        return llorch_error_set(err, "unknown message type %d", (int)m->type);
    }
}

int wire_validate(const wire_message *m, llorch_error *err)
{
    if (!m)
        return llorch_error_set(err, "no message");
    if (s_validate_body(m, err) != 0)
        return llorch_error_prefix(err, "%s", wire_type_name((int)m->type));
    return 0;
}
