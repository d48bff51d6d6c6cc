/* wire_pack.c - encoding wire_message values into a msgpack header and bulk frames. */
#include "wire.h"
#include "wire_internal.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* A packer that remembers whether any write failed (out of memory), so the encoders
 * can pack straight through and check once at the end. */
typedef struct s_pk {
    msgpack_packer pk;
    msgpack_sbuffer sb;
    int bad;
} s_pk;

static void s_str(s_pk *p, const char *s, size_t n)
{
    p->bad |= msgpack_pack_str_with_body(&p->pk, s, n);
}

static void s_key(s_pk *p, const char *key)
{
    s_str(p, key, strlen(key));
}

static void s_u64(s_pk *p, uint64_t v)
{
    p->bad |= msgpack_pack_uint64(&p->pk, v);
}

static void s_i64(s_pk *p, int64_t v)
{
    p->bad |= msgpack_pack_int64(&p->pk, v);
}

static void s_f64(s_pk *p, double v)
{
    p->bad |= msgpack_pack_double(&p->pk, v);
}

static void s_bool(s_pk *p, bool v)
{
    p->bad |= v ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk);
}

static void s_bin(s_pk *p, const void *data, size_t n)
{
    p->bad |= msgpack_pack_bin_with_body(&p->pk, data, n);
}

static void s_array(s_pk *p, size_t n)
{
    p->bad |= msgpack_pack_array(&p->pk, n);
}

static void s_map(s_pk *p, size_t n)
{
    p->bad |= msgpack_pack_map(&p->pk, n);
}

static void s_kv_u64(s_pk *p, const char *key, uint64_t v)
{
    s_key(p, key);
    s_u64(p, v);
}

static void s_kv_i64(s_pk *p, const char *key, int64_t v)
{
    s_key(p, key);
    s_i64(p, v);
}

static void s_kv_f64(s_pk *p, const char *key, double v)
{
    s_key(p, key);
    s_f64(p, v);
}

static void s_kv_bool(s_pk *p, const char *key, bool v)
{
    s_key(p, key);
    s_bool(p, v);
}

static void s_kv_str(s_pk *p, const char *key, const char *s)
{
    s_key(p, key);
    s_str(p, s, strlen(s));
}

static void s_kv_strs(s_pk *p, const char *key, const char *const *strs, uint32_t n)
{
    s_key(p, key);
    s_array(p, n);
    for (uint32_t i = 0; i < n; i++)
        s_str(p, strs[i], strlen(strs[i]));
}

/* The map header of a message with n_fields fields besides "v" and "t", then those two. */
static void s_head(s_pk *p, wire_type type, size_t n_fields)
{
    s_map(p, 2 + n_fields);
    s_kv_u64(p, "v", WIRE_PROTOCOL_VERSION);
    s_kv_str(p, "t", wire_type_name((int)type));
}

/* The fields of each type after "v" and "t"; returns the bulk frames to attach. */
static size_t s_pack_body(s_pk *p, const wire_message *m, wire_frame *bulk)
{
    switch (m->type) {
    case WIRE_REGISTER: {
        const wire_register *r = &m->reg;
        s_head(p, m->type, 8);
        s_kv_str(p, "worker_id", r->worker_id);
        s_kv_str(p, "model_id", r->model_id);
        s_kv_str(p, "endpoint", r->endpoint);
        s_kv_u64(p, "layer_first", r->layer_first);
        s_kv_u64(p, "layer_last", r->layer_last);
        s_kv_u64(p, "n_layers", r->n_layers);
        s_kv_u64(p, "threads", r->threads);
        s_kv_u64(p, "kv_budget_bytes", r->kv_budget_bytes);
        return 0;
    }
    case WIRE_REGISTER_ACK:
        s_head(p, m->type, 3);
        s_kv_str(p, "worker_id", m->reg_ack.worker_id);
        s_kv_u64(p, "heartbeat_ms", m->reg_ack.heartbeat_ms);
        s_kv_u64(p, "liveness", m->reg_ack.liveness);
        return 0;
    case WIRE_HEARTBEAT: {
        const wire_heartbeat *h = &m->heartbeat;
        s_head(p, m->type, 6);
        s_kv_str(p, "sender_id", h->sender_id);
        s_kv_u64(p, "seq", h->seq);
        s_kv_u64(p, "n_sessions", h->n_sessions);
        s_kv_u64(p, "queue_depth", h->queue_depth);
        s_kv_u64(p, "kv_used_bytes", h->kv_used_bytes);
        s_kv_u64(p, "batches", h->batches);
        return 0;
    }
    case WIRE_FORWARD: {
        const wire_forward *f = &m->forward;
        s_head(p, m->type, 5);
        s_kv_u64(p, "batch_id", f->batch_id);
        s_kv_u64(p, "pipeline_id", f->pipeline_id);
        s_kv_u64(p, "hidden_dim", f->hidden_dim);
        s_key(p, "rows");
        s_array(p, f->n_rows);
        for (uint32_t i = 0; i < f->n_rows; i++) {
            s_array(p, 4);
            s_u64(p, f->rows[i].session_id);
            s_u64(p, f->rows[i].pos);
            s_i64(p, f->rows[i].token);
            s_bool(p, f->rows[i].want_logits);
        }
        s_kv_strs(p, "route", f->route, f->n_hops);
        if (!f->hidden)
            return 0;
        bulk[0] = (wire_frame){f->hidden, (size_t)f->n_rows * f->hidden_dim * sizeof(float)};
        return 1;
    }
    case WIRE_LOGITS: {
        const wire_logits *l = &m->logits;
        s_head(p, m->type, 4);
        s_kv_u64(p, "batch_id", l->batch_id);
        s_kv_u64(p, "pipeline_id", l->pipeline_id);
        s_kv_u64(p, "n_vocab", l->n_vocab);
        s_key(p, "rows");
        s_array(p, l->n_rows);
        for (uint32_t i = 0; i < l->n_rows; i++) {
            s_array(p, 2);
            s_u64(p, l->rows[i].session_id);
            s_u64(p, l->rows[i].pos);
        }
        bulk[0] = (wire_frame){l->n_rows ? (const void *)l->logits : "",
                               (size_t)l->n_rows * l->n_vocab * sizeof(float)};
        return 1;
    }
    case WIRE_SESSION_FREE:
        s_head(p, m->type, 1);
        s_kv_u64(p, "session_id", m->session_free.session_id);
        return 0;
    case WIRE_ERROR: {
        const wire_error *e = &m->error;
        s_head(p, m->type, 5);
        s_kv_u64(p, "code", e->code);
        s_kv_str(p, "message", e->message);
        s_kv_u64(p, "batch_id", e->batch_id);
        s_kv_u64(p, "session_id", e->session_id);
        s_kv_u64(p, "request_id", e->request_id);
        return 0;
    }
    case WIRE_MANIFEST_REQ:
        s_head(p, m->type, 1);
        s_kv_str(p, "worker_id", m->manifest_req.worker_id);
        return 0;
    case WIRE_MANIFEST: {
        const wire_manifest *mf = &m->manifest;
        const wire_model_config *c = &mf->config;
        const wire_tokenizer *t = &mf->tokenizer;
        s_head(p, m->type, 7);
        s_kv_str(p, "model_id", mf->model_id);
        s_kv_str(p, "host_id", mf->host_id);
        s_kv_str(p, "segment_name", mf->segment_name);
        s_kv_u64(p, "segment_bytes", mf->segment_bytes);
        s_key(p, "config");
        s_map(p, 11);
        s_kv_str(p, "arch", c->arch);
        s_kv_u64(p, "n_vocab", c->n_vocab);
        s_kv_u64(p, "n_embd", c->n_embd);
        s_kv_u64(p, "n_layers", c->n_layers);
        s_kv_u64(p, "n_heads", c->n_heads);
        s_kv_u64(p, "n_kv_heads", c->n_kv_heads);
        s_kv_u64(p, "n_ff", c->n_ff);
        s_kv_u64(p, "n_ctx_train", c->n_ctx_train);
        s_kv_u64(p, "n_rot", c->n_rot);
        s_kv_f64(p, "rope_freq_base", c->rope_freq_base);
        s_kv_f64(p, "rms_norm_eps", c->rms_norm_eps);
        s_key(p, "tokenizer");
        s_map(p, 8);
        s_kv_str(p, "model", t->model);
        s_key(p, "tokens");
        s_array(p, t->n_tokens);
        for (uint32_t i = 0; i < t->n_tokens; i++)
            s_bin(p, t->piece_lens[i] ? t->pieces[i] : "", t->piece_lens[i]);
        s_kv_i64(p, "bos_id", t->bos_id);
        s_kv_i64(p, "eos_id", t->eos_id);
        s_kv_i64(p, "unk_id", t->unk_id);
        s_kv_bool(p, "add_bos", t->add_bos);
        s_kv_bool(p, "add_eos", t->add_eos);
        s_kv_bool(p, "add_space_prefix", t->add_space_prefix);
        s_key(p, "tensors");
        s_array(p, mf->n_tensors);
        for (uint32_t i = 0; i < mf->n_tensors; i++) {
            const wire_tensor_info *ti = &mf->tensors[i];
            s_map(p, 8);
            s_kv_str(p, "name", ti->name);
            s_kv_u64(p, "type", ti->type);
            s_kv_u64(p, "n_dims", ti->n_dims);
            s_key(p, "ne");
            s_array(p, 4);
            for (int d = 0; d < 4; d++)
                s_u64(p, ti->ne[d]);
            s_kv_u64(p, "offset", ti->offset);
            s_kv_u64(p, "n_bytes", ti->n_bytes);
            s_key(p, "digest");
            s_bin(p, ti->digest, WIRE_DIGEST_BYTES);
            s_kv_u64(p, "layout", ti->layout);
        }
        bulk[0] = (wire_frame){t->scores, (size_t)t->n_tokens * sizeof(float)};
        bulk[1] = (wire_frame){t->types, (size_t)t->n_tokens * sizeof(int32_t)};
        return 2;
    }
    case WIRE_CHUNK_REQ:
    case WIRE_CHUNK: {
        bool req = m->type == WIRE_CHUNK_REQ;
        s_head(p, m->type, 3);
        s_kv_u64(p, "tensor", req ? m->chunk_req.tensor : m->chunk.tensor);
        s_kv_u64(p, "offset", req ? m->chunk_req.offset : m->chunk.offset);
        s_kv_u64(p, "length", req ? m->chunk_req.length : m->chunk.length);
        if (req)
            return 0;
        bulk[0] = (wire_frame){m->chunk.length ? m->chunk.data : "", (size_t)m->chunk.length};
        return 1;
    }
    case WIRE_SUBMIT: {
        const wire_submit *s = &m->submit;
        const wire_sampling *sp = &s->sampling;
        s_head(p, m->type, 14 + (s->ignore_eos ? 1 : 0));
        s_kv_u64(p, "request_id", s->request_id);
        if (s->prompt)
            s_kv_str(p, "prompt", s->prompt);
        else
            s_kv_u64(p, "n_tokens", s->n_tokens);
        s_kv_f64(p, "temperature", sp->temperature);
        s_kv_i64(p, "top_k", sp->top_k);
        s_kv_f64(p, "top_p", sp->top_p);
        s_kv_f64(p, "min_p", sp->min_p);
        s_kv_i64(p, "penalty_last_n", sp->penalty_last_n);
        s_kv_f64(p, "repeat_penalty", sp->repeat_penalty);
        s_kv_f64(p, "frequency_penalty", sp->frequency_penalty);
        s_kv_f64(p, "presence_penalty", sp->presence_penalty);
        s_kv_u64(p, "seed", sp->seed);
        s_kv_u64(p, "max_tokens", s->max_tokens);
        s_kv_u64(p, "top_n_probs", s->top_n_probs);
        s_kv_strs(p, "stop", s->stop, s->n_stop);
        if (s->ignore_eos)
            s_kv_bool(p, "ignore_eos", true);
        if (s->prompt)
            return 0;
        bulk[0] = (wire_frame){s->tokens, (size_t)s->n_tokens * sizeof(int32_t)};
        return 1;
    }
    case WIRE_TOKEN: {
        const wire_token *t = &m->token;
        s_head(p, m->type, 5);
        s_kv_u64(p, "request_id", t->request_id);
        s_kv_u64(p, "index", t->index);
        s_kv_i64(p, "token", t->token);
        s_key(p, "piece");
        s_bin(p, t->piece_bytes ? t->piece : "", t->piece_bytes);
        s_key(p, "top");
        s_array(p, t->n_top);
        for (uint32_t i = 0; i < t->n_top; i++) {
            s_array(p, 2);
            s_i64(p, t->top[i].token);
            s_f64(p, t->top[i].prob);
        }
        return 0;
    }
    case WIRE_DONE: {
        const wire_done *d = &m->done;
        s_head(p, m->type, 7);
        s_kv_u64(p, "request_id", d->request_id);
        s_kv_str(p, "stop_reason", wire_stop_reason_name((int)d->stop_reason));
        s_kv_u64(p, "n_prompt_tokens", d->n_prompt_tokens);
        s_kv_u64(p, "n_generated_tokens", d->n_generated_tokens);
        s_kv_f64(p, "queue_ms", d->queue_ms);
        s_kv_f64(p, "prompt_ms", d->prompt_ms);
        s_kv_f64(p, "generate_ms", d->generate_ms);
        return 0;
    }
    case WIRE_CANCEL:
        s_head(p, m->type, 1);
        s_kv_u64(p, "request_id", m->cancel.request_id);
        return 0;
    case WIRE_STATS_REQ:
        s_head(p, m->type, 0);
        return 0;
    case WIRE_STATS: {
        const wire_stats *st = &m->stats;
        s_head(p, m->type, 2);
        s_kv_str(p, "sender_id", st->sender_id);
        s_key(p, "counters");
        s_map(p, st->n_counters);
        for (uint32_t i = 0; i < st->n_counters; i++) {
            s_key(p, st->counters[i].name);
            s_f64(p, st->counters[i].value);
        }
        return 0;
    }
    default:
        return 0; /* unreachable: wire_validate refused the type */
    }
}

int wire_encode(const wire_message *m, wire_msg *out, llorch_error *err)
{
    if (wire_validate(m, err) != 0)
        return llorch_error_prefix(err, "cannot encode");
    s_pk p = {.bad = 0};
    msgpack_sbuffer_init(&p.sb);
    msgpack_packer_init(&p.pk, &p.sb, msgpack_sbuffer_write);
    wire_frame bulk[WIRE_MAX_FRAMES - 1] = {{0}};
    size_t n_bulk = s_pack_body(&p, m, bulk);
    msgpack_sbuffer body = p.sb;
    size_t limit = m->type == WIRE_MANIFEST ? WIRE_MAX_MANIFEST_HEADER_BYTES
                                            : WIRE_MAX_HEADER_BYTES;
    if (p.bad) {
        msgpack_sbuffer_destroy(&body);
        return llorch_error_set(err, "cannot encode %s: out of memory",
                                wire_type_name((int)m->type));
    }
    if (body.size > limit) {
        size_t n = body.size;
        msgpack_sbuffer_destroy(&body);
        return llorch_error_set(err, "cannot encode %s: its header would be %zu bytes, over "
                                "the limit of %zu", wire_type_name((int)m->type), n, limit);
    }
    memset(out, 0, sizeof *out);
    out->store_ = wire_store_new_header(body.data); /* takes the buffer */
    if (!out->store_) {
        msgpack_sbuffer_destroy(&body);
        return llorch_error_set(err, "cannot encode: out of memory");
    }
    out->frames[0] = (wire_frame){body.data, body.size};
    for (size_t i = 0; i < n_bulk; i++)
        out->frames[1 + i] = bulk[i];
    out->n_frames = 1 + n_bulk;
    return 0;
}
