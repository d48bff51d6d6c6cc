/* wire_unpack.c - decoding untrusted frames into wire_message values, within fixed limits. */
#include "wire.h"
#include "wire_internal.h"

#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- pass 2: typed access to the unpacked tree ---- */

typedef struct s_dec {
    msgpack_zone *zone; /* the decoded message's memory */
    llorch_error *err;
} s_dec;

static const char *s_kind(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "an unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "a negative integer";
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_BIN: return "binary";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    default: return "an extension value";
    }
}

static int s_wrong(s_dec *d, const char *field, const char *want, const msgpack_object *o)
{
    return llorch_error_set(d->err, "%s: expected %s, got %s", field, want, s_kind(o));
}

static void *s_alloc(s_dec *d, size_t bytes)
{
    void *p = msgpack_zone_malloc(d->zone, bytes ? bytes : 1);
    if (!p)
        llorch_error_set(d->err, "out of memory decoding a message (%zu bytes)", bytes);
    return p;
}

/* A map of at most max_keys entries whose keys are distinct strings. */
static int s_map(s_dec *d, const msgpack_object *o, const char *field, uint32_t max_keys)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return s_wrong(d, field, "a map", o);
    const msgpack_object_map *m = &o->via.map;
    if (m->size > max_keys)
        return llorch_error_set(d->err, "%s: %u keys, over the limit of %u", field, m->size,
                                max_keys);
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return s_wrong(d, "a map key", "a string", k);
        if (k->via.str.size > WIRE_MAX_KEY_BYTES)
            return llorch_error_set(d->err, "%s: a key of %u bytes (limit %u)", field,
                                    k->via.str.size, WIRE_MAX_KEY_BYTES);
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *q = &m->ptr[j].key;
            /* An empty key's ptr may be NULL: memcmp must not see it. */
            if (q->via.str.size == k->via.str.size &&
                (k->via.str.size == 0 || memcmp(q->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0))
                return llorch_error_set(d->err, "%s: the key \"%.*s\" appears twice", field,
                                        (int)k->via.str.size, k->via.str.ptr);
        }
    }
    return 0;
}

/* The value under key in a checked map, or NULL; unknown keys are simply never asked for. */
static const msgpack_object *s_find(const msgpack_object *map, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_str *k = &map->via.map.ptr[i].key.via.str;
        if (k->size == n && memcmp(k->ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int s_missing(s_dec *d, const char *key)
{
    return llorch_error_set(d->err, "%s: required field missing", key);
}

/* Object-level conversions: the value's kind and the C type's range. */
static int s_obj_u64(s_dec *d, const msgpack_object *o, const char *field, uint64_t max,
                     uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return s_wrong(d, field, "an unsigned integer", o);
    if (o->via.u64 > max)
        return llorch_error_set(d->err, "%s: %llu is over the limit of %llu", field,
                                (unsigned long long)o->via.u64, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

static int s_obj_u32(s_dec *d, const msgpack_object *o, const char *field, uint32_t *out)
{
    uint64_t v = 0;
    if (s_obj_u64(d, o, field, UINT32_MAX, &v))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int s_obj_i32(s_dec *d, const msgpack_object *o, const char *field, int32_t *out)
{
    int64_t v;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = o->via.u64 > INT32_MAX ? INT64_MAX : (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = o->via.i64;
    else
        return s_wrong(d, field, "an integer", o);
    if (v < INT32_MIN || v > INT32_MAX)
        return llorch_error_set(d->err, "%s: out of the 32-bit integer range", field);
    *out = (int32_t)v;
    return 0;
}

static int s_obj_f64(s_dec *d, const msgpack_object *o, const char *field, double *out)
{
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        *out = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *out = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = (double)o->via.i64;
    else
        return s_wrong(d, field, "a number", o);
    return 0;
}

static int s_obj_f32(s_dec *d, const msgpack_object *o, const char *field, float *out)
{
    double v = 0;
    if (s_obj_f64(d, o, field, &v))
        return -1;
    if (!(v >= -3.4e38 && v <= 3.4e38)) /* also refuses NaN */
        return llorch_error_set(d->err, "%s: %g does not fit a 32-bit float", field, v);
    *out = (float)v;
    return 0;
}

static int s_obj_bool(s_dec *d, const msgpack_object *o, const char *field, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return s_wrong(d, field, "a boolean", o);
    *out = o->via.boolean;
    return 0;
}

/* A copy of a str (or, when allow_bin, a bin) with a NUL after it. A str that will be used
 * as a C string must not hold a NUL byte itself (it would silently cut it short). */
static int s_obj_bytes(s_dec *d, const msgpack_object *o, const char *field, uint32_t max_bytes,
                       bool allow_bin, const char **out, uint32_t *out_len)
{
    const char *ptr;
    uint32_t n;
    if (o->type == MSGPACK_OBJECT_STR) {
        ptr = o->via.str.ptr, n = o->via.str.size;
        if (!allow_bin && n && memchr(ptr, 0, n))
            return llorch_error_set(d->err, "%s: the string holds a NUL byte", field);
    } else if (allow_bin && o->type == MSGPACK_OBJECT_BIN) {
        ptr = o->via.bin.ptr, n = o->via.bin.size;
    } else {
        return s_wrong(d, field, allow_bin ? "bytes (bin or str)" : "a string", o);
    }
    if (n > max_bytes)
        return llorch_error_set(d->err, "%s: %u bytes, over the limit of %u", field, n,
                                max_bytes);
    char *copy = s_alloc(d, (size_t)n + 1);
    if (!copy)
        return -1;
    if (n)
        memcpy(copy, ptr, n);
    copy[n] = 0;
    *out = copy;
    if (out_len)
        *out_len = n;
    return 0;
}

static int s_obj_str(s_dec *d, const msgpack_object *o, const char *field, uint32_t max_bytes,
                     const char **out)
{
    return s_obj_bytes(d, o, field, max_bytes, false, out, NULL);
}

/* An array of at most max entries; *n gets its size. */
static int s_obj_array(s_dec *d, const msgpack_object *o, const char *field, uint32_t max,
                       uint32_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return s_wrong(d, field, "an array", o);
    if (o->via.array.size > max)
        return llorch_error_set(d->err, "%s: %u entries, over the limit of %u", field,
                                o->via.array.size, max);
    *n = o->via.array.size;
    return 0;
}

/* Map-level getters: a missing key is an error when required, else leaves *out as is. */
#define S_GETTER(name, ctype, call)                                                         \
    static int name(s_dec *d, const msgpack_object *map, const char *key, bool required,    \
                    ctype *out)                                                             \
    {                                                                                       \
        const msgpack_object *o = s_find(map, key);                                         \
        if (!o)                                                                             \
            return required ? s_missing(d, key) : 0;                                        \
        return call;                                                                        \
    }
S_GETTER(s_u64, uint64_t, s_obj_u64(d, o, key, UINT64_MAX, out))
S_GETTER(s_u32, uint32_t, s_obj_u32(d, o, key, out))
S_GETTER(s_i32, int32_t, s_obj_i32(d, o, key, out))
S_GETTER(s_f32, float, s_obj_f32(d, o, key, out))
S_GETTER(s_f64, double, s_obj_f64(d, o, key, out))
S_GETTER(s_bool, bool, s_obj_bool(d, o, key, out))
S_GETTER(s_str_short, const char *, s_obj_str(d, o, key, WIRE_MAX_ENDPOINT_BYTES, out))
S_GETTER(s_str_text, const char *, s_obj_str(d, o, key, WIRE_MAX_TEXT_BYTES, out))
#undef S_GETTER

/* An array of strings under key (absent = none). */
static int s_strs(s_dec *d, const msgpack_object *map, const char *key, uint32_t max_count,
                  uint32_t max_bytes, const char *const **out, uint32_t *n_out)
{
    const msgpack_object *o = s_find(map, key);
    uint32_t n = 0;
    *out = NULL, *n_out = 0;
    if (!o)
        return 0;
    if (s_obj_array(d, o, key, max_count, &n))
        return -1;
    const char **strs = s_alloc(d, n * sizeof *strs);
    if (!strs)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (s_obj_str(d, &o->via.array.ptr[i], key, max_bytes, &strs[i]))
            return llorch_error_prefix(d->err, "[%u]", i);
    *out = strs, *n_out = n;
    return 0;
}

/* Bulk frame i holding exactly (rows, cols) 4-byte elements. */
static int s_frame4(s_dec *d, const wire_msg *in, size_t i, uint64_t rows, uint64_t cols,
                    const char *what, const void **out)
{
    const wire_frame *f = &in->frames[i];
    /* rows and cols are each under 2^32, so the product fits before the * 4 check. */
    uint64_t n = rows * cols;
    if (n > WIRE_MAX_FRAME_BYTES / 4 || f->n_bytes != n * 4)
        return llorch_error_set(d->err, "frame %zu (%s): %zu bytes, expected %llu x %llu x 4 "
                                "= %llu", i, what, f->n_bytes, (unsigned long long)rows,
                                (unsigned long long)cols, (unsigned long long)(n * 4));
    if (f->n_bytes && (uintptr_t)f->data % 4 != 0)
        return llorch_error_set(d->err, "frame %zu (%s): data not 4-byte aligned", i, what);
    *out = f->n_bytes ? f->data : NULL;
    return 0;
}

static int s_frames(s_dec *d, const wire_msg *in, size_t want)
{
    if (in->n_frames != want)
        return llorch_error_set(d->err, "%zu frames, expected %zu (header + %zu bulk)",
                                in->n_frames, want, want - 1);
    return 0;
}

/* ---- per-type bodies: fields into out, bulk frames attached; wire_validate follows ---- */

static int s_forward(s_dec *d, const msgpack_object *h, const wire_msg *in, wire_forward *f)
{
    const msgpack_object *rows = s_find(h, "rows");
    if (s_u64(d, h, "batch_id", true, &f->batch_id) ||
        s_u32(d, h, "pipeline_id", true, &f->pipeline_id) ||
        s_u32(d, h, "hidden_dim", true, &f->hidden_dim))
        return -1;
    if (!rows)
        return s_missing(d, "rows");
    if (s_obj_array(d, rows, "rows", WIRE_MAX_ROWS, &f->n_rows))
        return -1;
    wire_row *r = s_alloc(d, f->n_rows * sizeof *r);
    if (!r)
        return -1;
    for (uint32_t i = 0; i < f->n_rows; i++) {
        const msgpack_object *e = &rows->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4)
            return llorch_error_set(d->err, "rows[%u]: expected [session_id, pos, token, "
                                    "want_logits]", i);
        const msgpack_object *v = e->via.array.ptr;
        if (s_obj_u64(d, &v[0], "session_id", UINT64_MAX, &r[i].session_id) ||
            s_obj_u32(d, &v[1], "pos", &r[i].pos) || s_obj_i32(d, &v[2], "token", &r[i].token) ||
            s_obj_bool(d, &v[3], "want_logits", &r[i].want_logits))
            return llorch_error_prefix(d->err, "rows[%u]", i);
    }
    f->rows = r;
    if (s_strs(d, h, "route", WIRE_MAX_HOPS, WIRE_MAX_ENDPOINT_BYTES, &f->route, &f->n_hops))
        return -1;
    if (in->n_frames == 1)
        return 0;
    const void *hidden = NULL;
    if (s_frames(d, in, 2) || s_frame4(d, in, 1, f->n_rows, f->hidden_dim, "hidden", &hidden))
        return -1;
    if (!hidden)
        return llorch_error_set(d->err, "frame 1 (hidden): empty");
    f->hidden = hidden;
    return 0;
}

static int s_logits(s_dec *d, const msgpack_object *h, const wire_msg *in, wire_logits *l)
{
    const msgpack_object *rows = s_find(h, "rows");
    if (s_u64(d, h, "batch_id", true, &l->batch_id) ||
        s_u32(d, h, "pipeline_id", true, &l->pipeline_id) ||
        s_u32(d, h, "n_vocab", true, &l->n_vocab))
        return -1;
    if (!rows)
        return s_missing(d, "rows");
    if (s_obj_array(d, rows, "rows", WIRE_MAX_ROWS, &l->n_rows))
        return -1;
    wire_logit_row *r = s_alloc(d, l->n_rows * sizeof *r);
    if (!r)
        return -1;
    for (uint32_t i = 0; i < l->n_rows; i++) {
        const msgpack_object *e = &rows->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2)
            return llorch_error_set(d->err, "rows[%u]: expected [session_id, pos]", i);
        if (s_obj_u64(d, &e->via.array.ptr[0], "session_id", UINT64_MAX, &r[i].session_id) ||
            s_obj_u32(d, &e->via.array.ptr[1], "pos", &r[i].pos))
            return llorch_error_prefix(d->err, "rows[%u]", i);
    }
    l->rows = r;
    const void *logits = NULL;
    if (s_frames(d, in, 2) || s_frame4(d, in, 1, l->n_rows, l->n_vocab, "logits", &logits))
        return -1;
    l->logits = logits;
    return 0;
}

static int s_tensor(s_dec *d, const msgpack_object *o, wire_tensor_info *t)
{
    const msgpack_object *ne = s_find(o, "ne"), *digest = s_find(o, "digest");
    uint32_t n = 0;
    t->layout = 0;
    if (s_map(d, o, "tensor", WIRE_MAX_KEYS) ||
        s_str_short(d, o, "name", true, &t->name) || s_u32(d, o, "type", true, &t->type) ||
        s_u32(d, o, "n_dims", true, &t->n_dims) || s_u64(d, o, "offset", true, &t->offset) ||
        s_u64(d, o, "n_bytes", true, &t->n_bytes) || s_u32(d, o, "layout", false, &t->layout))
        return -1;
    if (t->layout > WIRE_MAX_LAYOUT)
        return llorch_error_set(d->err, "%s: layout %u is over the limit of %u (0 = GGUF rows, "
                                "1 = Q8_0 in 16-row groups): a newer loader? start it with "
                                "--layout rows", t->name, t->layout, WIRE_MAX_LAYOUT);
    if (!ne || !digest)
        return s_missing(d, ne ? "digest" : "ne");
    if (s_obj_array(d, ne, "ne", 4, &n))
        return -1;
    if (n != 4)
        return llorch_error_set(d->err, "ne: %u entries, expected 4", n);
    for (int i = 0; i < 4; i++)
        if (s_obj_u64(d, &ne->via.array.ptr[i], "ne[]", UINT64_MAX, &t->ne[i]))
            return -1;
    if (digest->type != MSGPACK_OBJECT_BIN || digest->via.bin.size != WIRE_DIGEST_BYTES)
        return llorch_error_set(d->err, "digest: expected %d bytes of binary", WIRE_DIGEST_BYTES);
    memcpy(t->digest, digest->via.bin.ptr, WIRE_DIGEST_BYTES);
    return 0;
}

static int s_manifest(s_dec *d, const msgpack_object *h, const wire_msg *in, wire_manifest *m)
{
    const msgpack_object *cfg = s_find(h, "config"), *tok = s_find(h, "tokenizer");
    const msgpack_object *tensors = s_find(h, "tensors");
    wire_model_config *c = &m->config;
    wire_tokenizer *t = &m->tokenizer;
    if (s_str_short(d, h, "model_id", true, &m->model_id) ||
        s_str_short(d, h, "host_id", true, &m->host_id) ||
        s_str_short(d, h, "segment_name", true, &m->segment_name) ||
        s_u64(d, h, "segment_bytes", true, &m->segment_bytes))
        return -1;
    if (!cfg || !tok || !tensors)
        return s_missing(d, !cfg ? "config" : !tok ? "tokenizer" : "tensors");
    if (s_map(d, cfg, "config", WIRE_MAX_KEYS) || s_str_short(d, cfg, "arch", true, &c->arch) ||
        s_u32(d, cfg, "n_vocab", true, &c->n_vocab) || s_u32(d, cfg, "n_embd", true, &c->n_embd) ||
        s_u32(d, cfg, "n_layers", true, &c->n_layers) ||
        s_u32(d, cfg, "n_heads", true, &c->n_heads) ||
        s_u32(d, cfg, "n_kv_heads", true, &c->n_kv_heads) ||
        s_u32(d, cfg, "n_ff", true, &c->n_ff) ||
        s_u32(d, cfg, "n_ctx_train", true, &c->n_ctx_train) ||
        s_u32(d, cfg, "n_rot", true, &c->n_rot) ||
        s_f32(d, cfg, "rope_freq_base", true, &c->rope_freq_base) ||
        s_f32(d, cfg, "rms_norm_eps", true, &c->rms_norm_eps))
        return llorch_error_prefix(d->err, "config");
    const msgpack_object *tokens = s_find(tok, "tokens");
    if (s_map(d, tok, "tokenizer", WIRE_MAX_KEYS) ||
        s_str_short(d, tok, "model", true, &t->model) ||
        s_i32(d, tok, "bos_id", true, &t->bos_id) || s_i32(d, tok, "eos_id", true, &t->eos_id) ||
        s_i32(d, tok, "unk_id", true, &t->unk_id) ||
        s_bool(d, tok, "add_bos", true, &t->add_bos) ||
        s_bool(d, tok, "add_eos", true, &t->add_eos) ||
        s_bool(d, tok, "add_space_prefix", true, &t->add_space_prefix) ||
        (!tokens && s_missing(d, "tokens")) ||
        s_obj_array(d, tokens, "tokens", WIRE_MAX_VOCAB, &t->n_tokens))
        return llorch_error_prefix(d->err, "tokenizer");
    const char **pieces = s_alloc(d, t->n_tokens * sizeof *pieces);
    uint32_t *lens = s_alloc(d, t->n_tokens * sizeof *lens);
    if (!pieces || !lens)
        return -1;
    for (uint32_t i = 0; i < t->n_tokens; i++)
        if (s_obj_bytes(d, &tokens->via.array.ptr[i], "token", WIRE_MAX_TOKEN_BYTES, true,
                        &pieces[i], &lens[i]))
            return llorch_error_prefix(d->err, "tokenizer.tokens[%u]", i);
    t->pieces = pieces, t->piece_lens = lens;
    if (s_obj_array(d, tensors, "tensors", WIRE_MAX_TENSORS, &m->n_tensors))
        return -1;
    wire_tensor_info *ti = s_alloc(d, m->n_tensors * sizeof *ti);
    if (!ti)
        return -1;
    for (uint32_t i = 0; i < m->n_tensors; i++)
        if (s_tensor(d, &tensors->via.array.ptr[i], &ti[i]))
            return llorch_error_prefix(d->err, "tensors[%u]", i);
    m->tensors = ti;
    const void *scores = NULL, *types = NULL;
    if (s_frames(d, in, 3) || s_frame4(d, in, 1, t->n_tokens, 1, "scores", &scores) ||
        s_frame4(d, in, 2, t->n_tokens, 1, "token types", &types))
        return -1;
    t->scores = scores, t->types = types;
    return 0;
}

static int s_submit(s_dec *d, const msgpack_object *h, const wire_msg *in, wire_submit *s)
{
    wire_sampling *p = &s->sampling;
    const msgpack_object *prompt = s_find(h, "prompt");
    *p = wire_sampling_default();
    s->max_tokens = WIRE_DEFAULT_MAX_TOKENS;
    if (s_u64(d, h, "request_id", true, &s->request_id) ||
        s_f32(d, h, "temperature", false, &p->temperature) ||
        s_i32(d, h, "top_k", false, &p->top_k) || s_f32(d, h, "top_p", false, &p->top_p) ||
        s_f32(d, h, "min_p", false, &p->min_p) ||
        s_i32(d, h, "penalty_last_n", false, &p->penalty_last_n) ||
        s_f32(d, h, "repeat_penalty", false, &p->repeat_penalty) ||
        s_f32(d, h, "frequency_penalty", false, &p->frequency_penalty) ||
        s_f32(d, h, "presence_penalty", false, &p->presence_penalty) ||
        s_u64(d, h, "seed", false, &p->seed) || s_u32(d, h, "max_tokens", false, &s->max_tokens) ||
        s_u32(d, h, "top_n_probs", false, &s->top_n_probs) ||
        s_strs(d, h, "stop", WIRE_MAX_STOP_STRINGS, WIRE_MAX_STOP_BYTES, &s->stop, &s->n_stop) ||
        s_bool(d, h, "ignore_eos", false, &s->ignore_eos))
        return -1;
    if (prompt) {
        if (s_find(h, "n_tokens"))
            return llorch_error_set(d->err, "prompt: give either text or n_tokens, not both");
        return s_obj_str(d, prompt, "prompt", WIRE_MAX_PROMPT_BYTES, &s->prompt) ||
               s_frames(d, in, 1) ? -1 : 0;
    }
    const void *tokens = NULL;
    if (s_u32(d, h, "n_tokens", true, &s->n_tokens))
        return llorch_error_prefix(d->err, "no prompt text");
    if (s->n_tokens > WIRE_MAX_PROMPT_TOKENS)
        return llorch_error_set(d->err, "n_tokens: %u, over the limit of %u", s->n_tokens,
                                WIRE_MAX_PROMPT_TOKENS);
    if (s_frames(d, in, 2) || s_frame4(d, in, 1, s->n_tokens, 1, "prompt tokens", &tokens))
        return -1;
    s->tokens = tokens;
    return 0;
}

static int s_token(s_dec *d, const msgpack_object *h, wire_token *t)
{
    const msgpack_object *piece = s_find(h, "piece"), *top = s_find(h, "top");
    if (s_u64(d, h, "request_id", true, &t->request_id) ||
        s_u32(d, h, "index", true, &t->index) || s_i32(d, h, "token", true, &t->token))
        return -1;
    if (!piece)
        return s_missing(d, "piece");
    if (s_obj_bytes(d, piece, "piece", WIRE_MAX_TOKEN_BYTES, true, &t->piece, &t->piece_bytes))
        return -1;
    if (!top)
        return 0;
    if (s_obj_array(d, top, "top", WIRE_MAX_TOP_PROBS, &t->n_top))
        return -1;
    wire_top_prob *tp = s_alloc(d, t->n_top * sizeof *tp);
    if (!tp)
        return -1;
    for (uint32_t i = 0; i < t->n_top; i++) {
        const msgpack_object *e = &top->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2)
            return llorch_error_set(d->err, "top[%u]: expected [token, prob]", i);
        if (s_obj_i32(d, &e->via.array.ptr[0], "token", &tp[i].token) ||
            s_obj_f32(d, &e->via.array.ptr[1], "prob", &tp[i].prob))
            return llorch_error_prefix(d->err, "top[%u]", i);
    }
    t->top = tp;
    return 0;
}

static int s_done(s_dec *d, const msgpack_object *h, wire_done *o)
{
    const char *reason = NULL;
    if (s_u64(d, h, "request_id", true, &o->request_id) ||
        s_str_short(d, h, "stop_reason", true, &reason) ||
        s_u32(d, h, "n_prompt_tokens", true, &o->n_prompt_tokens) ||
        s_u32(d, h, "n_generated_tokens", true, &o->n_generated_tokens) ||
        s_f64(d, h, "queue_ms", false, &o->queue_ms) ||
        s_f64(d, h, "prompt_ms", false, &o->prompt_ms) ||
        s_f64(d, h, "generate_ms", false, &o->generate_ms))
        return -1;
    for (int r = 0; r < WIRE_STOP_COUNT; r++)
        if (strcmp(reason, wire_stop_reason_name(r)) == 0) {
            o->stop_reason = (wire_stop_reason)r;
            return 0;
        }
    return llorch_error_set(d->err, "stop_reason: \"%s\" is not eos, length, stop, cancelled "
                            "or error", reason);
}

static int s_stats(s_dec *d, const msgpack_object *h, wire_stats *s)
{
    const msgpack_object *c = s_find(h, "counters");
    s->sender_id = "";
    if (s_str_short(d, h, "sender_id", false, &s->sender_id))
        return -1;
    if (!c)
        return s_missing(d, "counters");
    if (s_map(d, c, "counters", WIRE_MAX_STATS))
        return -1;
    s->n_counters = c->via.map.size;
    wire_stat *st = s_alloc(d, s->n_counters * sizeof *st);
    if (!st)
        return -1;
    for (uint32_t i = 0; i < s->n_counters; i++) {
        const msgpack_object_kv *kv = &c->via.map.ptr[i];
        if (s_obj_str(d, &kv->key, "counter name", WIRE_MAX_KEY_BYTES, &st[i].name) ||
            s_obj_f64(d, &kv->val, st[i].name, &st[i].value))
            return llorch_error_prefix(d->err, "counters");
    }
    s->counters = st;
    return 0;
}

static int s_body(s_dec *d, const msgpack_object *h, const wire_msg *in, wire_message *m)
{
    /* Types without bulk data carry exactly one frame. */
    switch (m->type) {
    case WIRE_FORWARD: return s_forward(d, h, in, &m->forward);
    case WIRE_LOGITS: return s_logits(d, h, in, &m->logits);
    case WIRE_MANIFEST: return s_manifest(d, h, in, &m->manifest);
    case WIRE_SUBMIT: return s_submit(d, h, in, &m->submit);
    case WIRE_CHUNK: {
        const wire_frame *f = &in->frames[1];
        if (s_u32(d, h, "tensor", true, &m->chunk.tensor) ||
            s_u64(d, h, "offset", true, &m->chunk.offset) ||
            s_u64(d, h, "length", true, &m->chunk.length) || s_frames(d, in, 2))
            return -1;
        if (f->n_bytes != m->chunk.length)
            return llorch_error_set(d->err, "frame 1 (data): %zu bytes but length says %llu",
                                    f->n_bytes, (unsigned long long)m->chunk.length);
        m->chunk.data = f->n_bytes ? f->data : NULL;
        return 0;
    }
    default:
        break;
    }
    if (s_frames(d, in, 1))
        return -1;
    switch (m->type) {
    case WIRE_REGISTER: {
        wire_register *r = &m->reg;
        return s_str_short(d, h, "worker_id", true, &r->worker_id) ||
               s_str_short(d, h, "model_id", true, &r->model_id) ||
               s_str_short(d, h, "endpoint", true, &r->endpoint) ||
               s_u32(d, h, "layer_first", true, &r->layer_first) ||
               s_u32(d, h, "layer_last", true, &r->layer_last) ||
               s_u32(d, h, "n_layers", true, &r->n_layers) ||
               s_u32(d, h, "threads", true, &r->threads) ||
               s_u64(d, h, "kv_budget_bytes", true, &r->kv_budget_bytes) ? -1 : 0;
    }
    case WIRE_REGISTER_ACK:
        return s_str_short(d, h, "worker_id", true, &m->reg_ack.worker_id) ||
               s_u32(d, h, "heartbeat_ms", true, &m->reg_ack.heartbeat_ms) ||
               s_u32(d, h, "liveness", true, &m->reg_ack.liveness) ? -1 : 0;
    case WIRE_HEARTBEAT: {
        wire_heartbeat *b = &m->heartbeat;
        return s_str_short(d, h, "sender_id", true, &b->sender_id) ||
               s_u64(d, h, "seq", true, &b->seq) ||
               s_u32(d, h, "n_sessions", false, &b->n_sessions) ||
               s_u32(d, h, "queue_depth", false, &b->queue_depth) ||
               s_u64(d, h, "kv_used_bytes", false, &b->kv_used_bytes) ||
               s_u64(d, h, "batches", false, &b->batches) ? -1 : 0;
    }
    case WIRE_SESSION_FREE:
        return s_u64(d, h, "session_id", true, &m->session_free.session_id);
    case WIRE_ERROR: {
        wire_error *e = &m->error;
        return s_u32(d, h, "code", true, &e->code) ||
               s_str_text(d, h, "message", true, &e->message) ||
               s_u64(d, h, "batch_id", false, &e->batch_id) ||
               s_u64(d, h, "session_id", false, &e->session_id) ||
               s_u64(d, h, "request_id", false, &e->request_id) ? -1 : 0;
    }
    case WIRE_MANIFEST_REQ:
        m->manifest_req.worker_id = "";
        return s_str_short(d, h, "worker_id", false, &m->manifest_req.worker_id);
    case WIRE_CHUNK_REQ:
        return s_u32(d, h, "tensor", true, &m->chunk_req.tensor) ||
               s_u64(d, h, "offset", true, &m->chunk_req.offset) ||
               s_u64(d, h, "length", true, &m->chunk_req.length) ? -1 : 0;
    case WIRE_TOKEN: return s_token(d, h, &m->token);
    case WIRE_DONE: return s_done(d, h, &m->done);
    case WIRE_CANCEL: return s_u64(d, h, "request_id", true, &m->cancel.request_id);
    case WIRE_STATS_REQ: return 0;
    case WIRE_STATS: return s_stats(d, h, &m->stats);
    default: return llorch_error_set(d->err, "no decoder"); /* unreachable */
    }
}

/* Frame-level checks that need no parsing. */
static int s_check_frames(const wire_msg *in, llorch_error *err)
{
    if (in->n_frames < 1 || in->n_frames > WIRE_MAX_FRAMES)
        return llorch_error_set(err, "a message has 1 to %d frames, this one %zu",
                                WIRE_MAX_FRAMES, in->n_frames);
    const wire_frame *h = &in->frames[0];
    if (h->n_bytes == 0 || !h->data)
        return llorch_error_set(err, "empty header frame");
    if (h->n_bytes > WIRE_MAX_MANIFEST_HEADER_BYTES)
        return llorch_error_set(err, "header of %zu bytes, over the limit of %u", h->n_bytes,
                                WIRE_MAX_MANIFEST_HEADER_BYTES);
    for (size_t i = 1; i < in->n_frames; i++) {
        if (in->frames[i].n_bytes > WIRE_MAX_FRAME_BYTES)
            return llorch_error_set(err, "frame %zu: %zu bytes, over the limit of %zu", i,
                                    in->frames[i].n_bytes, WIRE_MAX_FRAME_BYTES);
        if (in->frames[i].n_bytes && !in->frames[i].data)
            return llorch_error_set(err, "frame %zu: no data", i);
    }
    return 0;
}

int wire_decode(const wire_msg *in, wire_message *out, llorch_error *err)
{
    memset(out, 0, sizeof *out);
    if (!in)
        return llorch_error_set(err, "no message"), WIRE_ERR_MALFORMED;
    if (s_check_frames(in, err) ||
        wire_prescan(in->frames[0].data, in->frames[0].n_bytes, err)) {
        llorch_error_prefix(err, "malformed message");
        return WIRE_ERR_MALFORMED;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int code = WIRE_OK;
    s_dec d = {.zone = NULL, .err = err};
    const char *what = "malformed message";
    msgpack_unpack_return ur =
        msgpack_unpack_next(&up, in->frames[0].data, in->frames[0].n_bytes, &off);
    const msgpack_object *h = &up.data;
    uint64_t version = 0;
    const msgpack_object *t = NULL;
    if (ur != MSGPACK_UNPACK_SUCCESS || off != in->frames[0].n_bytes) {
        code = WIRE_ERR_MALFORMED;
        llorch_error_set(err, "the header is not one msgpack value (msgpack-c says %d)", (int)ur);
        goto done;
    }
    if (s_map(&d, h, "header", WIRE_MAX_KEYS) || s_u64(&d, h, "v", true, &version)) {
        code = WIRE_ERR_MALFORMED;
        goto done;
    }
    if (version != WIRE_PROTOCOL_VERSION) {
        code = WIRE_ERR_VERSION;
        what = "version mismatch";
        llorch_error_set(err, "protocol version %llu, this build speaks %d: run the same llorch "
                         "release on every process", (unsigned long long)version,
                         WIRE_PROTOCOL_VERSION);
        goto done;
    }
    t = s_find(h, "t");
    if (!t || t->type != MSGPACK_OBJECT_STR) {
        code = WIRE_ERR_MALFORMED;
        t ? s_wrong(&d, "t", "a string", t) : s_missing(&d, "t");
        goto done;
    }
    for (int i = 1; i < WIRE_TYPE_COUNT; i++) {
        const char *name = wire_type_name(i);
        if (strlen(name) == t->via.str.size && memcmp(name, t->via.str.ptr, t->via.str.size) == 0)
            out->type = (wire_type)i;
    }
    if (out->type == 0) {
        code = WIRE_ERR_UNSUPPORTED;
        what = "unsupported message";
        llorch_error_set(err, "unknown message type \"%.*s\"",
                         (int)(t->via.str.size > 64 ? 64 : t->via.str.size), t->via.str.ptr);
        goto done;
    }
    what = wire_type_name((int)out->type);
    if (out->type != WIRE_MANIFEST && in->frames[0].n_bytes > WIRE_MAX_HEADER_BYTES) {
        code = WIRE_ERR_MALFORMED;
        llorch_error_set(err, "header of %zu bytes, over the limit of %u", in->frames[0].n_bytes,
                         WIRE_MAX_HEADER_BYTES);
        goto done;
    }
    d.zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!d.zone) {
        code = WIRE_ERR_INTERNAL;
        llorch_error_set(err, "out of memory");
        goto done;
    }
    out->zone_ = d.zone;
    if (s_body(&d, h, in, out) != 0) {
        code = WIRE_ERR_MALFORMED;
        goto done;
    }
    if (wire_validate(out, err) != 0) {
        code = WIRE_ERR_MALFORMED;
        what = NULL; /* wire_validate names the type itself */
        goto done;
    }
done:
    msgpack_unpacked_destroy(&up);
    if (code != WIRE_OK) {
        if (what)
            llorch_error_prefix(err, "%s", what);
        wire_message_free(out);
    }
    return code;
}

void wire_message_free(wire_message *m)
{
    if (!m)
        return;
    if (m->zone_)
        msgpack_zone_free(m->zone_);
    memset(m, 0, sizeof *m);
}
