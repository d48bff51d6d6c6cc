/* router_sessions.c - client requests as sessions: admission, continuous batching, sampling, stats. */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "log.h"

/* Milliseconds with sub-millisecond resolution, for the DONE timings. */
static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static router_session *s_find(router *r, uint64_t session_id, int *index)
{
    for (int i = 0; i < r->n_sessions; i++)
        if (r->sessions[i]->id == session_id) {
            if (index)
                *index = i;
            return r->sessions[i];
        }
    return NULL;
}

static void s_session_free(router_session *s)
{
    free(s->tokens);
    for (uint32_t i = 0; i < s->n_stop; i++)
        free(s->stop[i]);
    free(s->stop);
    free(s->text);
    sampler_free(&s->smp);
    tokenizer_stream_free(&s->stream);
    free(s);
}

/* Sends m to the session's client; a client that is gone (ROUTER_MANDATORY says the
 * peer is unknown) marks the session cancelled so that it ends at the next chance. */
static void s_to_client(router *r, router_session *s, const wire_message *m)
{
    if (s->client_gone)
        return;
    llorch_error err = {0};
    if (wire_send_message(r->clients, s->client, s->client_bytes, m, ZMQ_DONTWAIT, &err) != 0) {
        log_info("request %llu: the client is gone (%s): cancelling",
                 (unsigned long long)s->request_id, err.msg);
        s->client_gone = true;
        s->cancelled = true;
    }
}

static void s_error_to(router *r, const uint8_t *id, size_t id_bytes, uint32_t code,
                       const char *msg, uint64_t request_id)
{
    wire_message m = {.type = WIRE_ERROR};
    m.error = (wire_error){.code = code, .message = msg, .request_id = request_id};
    wire_send_message(r->clients, id, id_bytes, &m, ZMQ_DONTWAIT, NULL);
}

/* A refusal of a request that never became a session: ERROR, then DONE("error"), so
 * that a client always sees DONE for a request id it sent. */
static void s_refuse(router *r, const wire_msg *raw, uint32_t code, const char *msg,
                     uint64_t request_id)
{
    r->stats.refused++;
    s_error_to(r, raw->identity, raw->identity_bytes, code, msg, request_id);
    if (request_id) {
        wire_message d = {.type = WIRE_DONE};
        d.done = (wire_done){.request_id = request_id, .stop_reason = WIRE_STOP_ERROR};
        wire_send_message(r->clients, raw->identity, raw->identity_bytes, &d, ZMQ_DONTWAIT, NULL);
    }
}

/* A session of pipeline p finished, freeing KV room there: the preempted session of p
 * that has waited longest may send again. Only a finish lets one back, one per finish:
 * were a preemption to let another back, the sessions running would never get fewer
 * and they would take turns evicting each other (on 4 sessions of 120 tokens in a
 * budget for 1.5 of them, a thousand preemptions instead of a handful). */
static void s_departed(router *r, int p)
{
    router_pipeline *pl = &r->pipelines[p];
    pl->departures++;
    router_session *oldest = NULL;
    for (int i = 0; i < r->n_sessions; i++) {
        router_session *s = r->sessions[i];
        if (s->state == SESSION_ACTIVE && s->pipeline == p && s->preempted &&
            s->resume_after < pl->departures &&
            (!oldest || s->preempt_seq < oldest->preempt_seq))
            oldest = s;
    }
    if (oldest) {
        oldest->preempted = false;
        log_debug("session %llu (request %llu) resumes on pipeline %u: %u positions to "
                  "recompute", (unsigned long long)oldest->id,
                  (unsigned long long)oldest->request_id, pl->id, oldest->n_tokens);
    }
}

/* Ends session i: ERROR (when msg) and DONE to the client, SESSION_FREE to its
 * pipeline's workers, and frees it. */
static void s_finish(router *r, int i, wire_stop_reason reason, uint32_t code, const char *msg)
{
    router_session *s = r->sessions[i];
    if (msg) {
        r->stats.errors++;
        if (!s->client_gone) {
            wire_message e = {.type = WIRE_ERROR};
            e.error = (wire_error){.code = code, .message = msg, .session_id = s->id,
                                   .request_id = s->request_id};
            s_to_client(r, s, &e);
        }
    }
    const double now = s_now();
    const double start = s->start_ms ? s->start_ms : now;
    const double prompt_done = s->prompt_done_ms ? s->prompt_done_ms : now;
    wire_message d = {.type = WIRE_DONE};
    d.done = (wire_done){.request_id = s->request_id, .stop_reason = reason,
                         .n_prompt_tokens = s->n_prompt, .n_generated_tokens = s->n_generated,
                         .queue_ms = start - s->submit_ms, .prompt_ms = prompt_done - start,
                         .generate_ms = now - prompt_done};
    s_to_client(r, s, &d);
    if (s->state == SESSION_ACTIVE) {
        if (s->pipeline >= 0 && r->pipelines[s->pipeline].used) {
            router_free_session_on_workers(r, s->pipeline, s->id);
            r->pipelines[s->pipeline].n_sessions--;
            s->preempted = false; /* a waiting session that ends lets another back */
            s_departed(r, s->pipeline);
        }
        r->n_active--;
    }
    log_debug("session %llu done: %s, %u prompt + %u generated tokens",
              (unsigned long long)s->id, wire_stop_reason_name((int)reason), s->n_prompt,
              s->n_generated);
    r->stats.sessions_done++;
    s_session_free(s);
    memmove(&r->sessions[i], &r->sessions[i + 1],
            (size_t)(r->n_sessions - i - 1) * sizeof *r->sessions);
    r->n_sessions--;
}

static int s_append_token(router_session *s, int32_t token)
{
    if (s->n_tokens == s->cap_tokens) {
        uint32_t cap = s->cap_tokens ? s->cap_tokens * 2 : 64;
        int32_t *t = realloc(s->tokens, cap * sizeof *t);
        if (!t)
            return -1;
        s->tokens = t;
        s->cap_tokens = cap;
    }
    s->tokens[s->n_tokens++] = token;
    return 0;
}

static int s_append_text(router_session *s, const char *text, size_t len)
{
    if (s->text_len + len + 1 > s->text_cap) {
        size_t cap = (s->text_cap ? s->text_cap * 2 : 256) + len;
        char *t = realloc(s->text, cap);
        if (!t)
            return -1;
        s->text = t;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, text, len);
    s->text_len += len;
    s->text[s->text_len] = '\0';
    return 0;
}

/* Builds a session from a SUBMIT, or refuses it. */
static void s_submit(router *r, const wire_msg *raw, const wire_submit *q)
{
    r->stats.requests++;
    for (int i = 0; i < r->n_sessions; i++) {
        router_session *o = r->sessions[i];
        if (o->request_id == q->request_id && o->client_bytes == raw->identity_bytes &&
            !memcmp(o->client, raw->identity, raw->identity_bytes)) {
            s_refuse(r, raw, WIRE_ERR_INVALID, "request_id is already in use on this "
                     "connection: use a new id per request", q->request_id);
            return;
        }
    }
    if (r->n_sessions - r->n_active >= r->opts.max_queue) {
        char msg[160];
        snprintf(msg, sizeof msg, "the router is busy: %d requests are queued (--max-queue %d); "
                 "retry later", r->n_sessions - r->n_active, r->opts.max_queue);
        s_refuse(r, raw, WIRE_ERR_BUSY, msg, q->request_id);
        return;
    }
    llorch_error err = {0};
    router_session *s = calloc(1, sizeof *s);
    if (!s) {
        s_refuse(r, raw, WIRE_ERR_NO_MEMORY, "the router is out of memory", q->request_id);
        return;
    }
    s->pipeline = -1;
    s->request_id = q->request_id;
    memcpy(s->client, raw->identity, raw->identity_bytes);
    s->client_bytes = raw->identity_bytes;
    s->max_tokens = q->max_tokens;
    s->ignore_eos = q->ignore_eos;
    s->top_n_probs = q->top_n_probs;
    s->submit_ms = s_now();
    const char *problem = NULL;
    char msg[WIRE_MAX_TEXT_BYTES];
    if (q->prompt) {
        size_t n = 0;
        if (tokenizer_encode(r->tok, q->prompt, strlen(q->prompt), TOKENIZE_ADD_SPECIAL,
                             &s->tokens, &n, &err) != 0) {
            snprintf(msg, sizeof msg, "cannot tokenize the prompt: %s", err.msg);
            problem = msg;
        }
        s->n_tokens = s->cap_tokens = (uint32_t)n;
    } else {
        s->tokens = malloc((q->n_tokens ? q->n_tokens : 1) * sizeof *s->tokens);
        if (s->tokens) {
            memcpy(s->tokens, q->tokens, q->n_tokens * sizeof *s->tokens);
            s->n_tokens = s->cap_tokens = q->n_tokens;
        }
        for (uint32_t i = 0; s->tokens && i < q->n_tokens && !problem; i++)
            if ((uint32_t)q->tokens[i] >= r->n_vocab) {
                snprintf(msg, sizeof msg, "prompt token %u is %d; the vocabulary has %u tokens",
                         i, q->tokens[i], r->n_vocab);
                problem = msg;
            }
    }
    s->n_prompt = s->n_tokens;
    if (!problem && !s->tokens)
        problem = "the router is out of memory";
    if (!problem && s->n_prompt == 0)
        problem = "the prompt is empty and the vocabulary adds no BOS: give a prompt";
    if (!problem && s->n_prompt >= r->n_ctx) {
        snprintf(msg, sizeof msg, "the prompt has %u tokens; the model's context holds %u",
                 s->n_prompt, r->n_ctx);
        problem = msg;
    }
    if (!problem) {
        const wire_sampling *w = &q->sampling;
        sampler_params sp = {.temperature = w->temperature, .top_k = w->top_k,
                             .top_p = w->top_p, .min_p = w->min_p,
                             .penalty_last_n = w->penalty_last_n,
                             .repeat_penalty = w->repeat_penalty,
                             .frequency_penalty = w->frequency_penalty,
                             .presence_penalty = w->presence_penalty, .seed = w->seed};
        s->smp = sampler_new(&sp, (int)r->n_vocab, &err);
        if (!s->smp || tokenizer_stream_init(&s->stream, r->tok, TOKENIZER_DECODE_CONTINUE,
                                             &err) != 0) {
            snprintf(msg, sizeof msg, "%s", err.msg);
            problem = msg;
        }
    }
    if (!problem && q->n_stop) {
        s->stop = calloc(q->n_stop, sizeof *s->stop);
        for (uint32_t i = 0; s->stop && i < q->n_stop; i++)
            if ((s->stop[i] = strdup(q->stop[i])))
                s->n_stop++;
        if (s->n_stop != q->n_stop)
            problem = "the router is out of memory";
    }
    if (!problem && r->n_sessions == r->cap_sessions) {
        int cap = r->cap_sessions ? r->cap_sessions * 2 : 64;
        router_session **grown = realloc(r->sessions, (size_t)cap * sizeof *grown);
        if (!grown)
            problem = "the router is out of memory";
        else {
            r->sessions = grown;
            r->cap_sessions = cap;
        }
    }
    if (problem) {
        s_refuse(r, raw, WIRE_ERR_INVALID, problem, q->request_id);
        s_session_free(s);
        return;
    }
    for (uint32_t i = 0; i < s->n_prompt; i++)
        sampler_accept(s->smp, s->tokens[i]);
    s->id = ++r->next_session_id;
    r->stats.tokens_in += s->n_prompt;
    r->sessions[r->n_sessions++] = s;
    log_debug("request %llu -> session %llu: %u prompt tokens",
              (unsigned long long)s->request_id, (unsigned long long)s->id, s->n_prompt);
}

void router_client_message(router *r, const wire_msg *raw, const wire_message *m)
{
    switch (m->type) {
    case WIRE_SUBMIT:
        s_submit(r, raw, &m->submit);
        break;
    case WIRE_CANCEL:
        /* Unknown ids are ignored: the request may just have ended. */
        for (int i = 0; i < r->n_sessions; i++) {
            router_session *s = r->sessions[i];
            if (s->request_id == m->cancel.request_id && s->client_bytes == raw->identity_bytes &&
                !memcmp(s->client, raw->identity, raw->identity_bytes))
                s->cancelled = true;
        }
        break;
    case WIRE_STATS_REQ:
        router_stats_reply(r, r->clients, raw);
        break;
    default: {
        char msg[160];
        snprintf(msg, sizeof msg, "the router's client socket takes submit, cancel and "
                 "stats_req, not %s", wire_type_name(m->type));
        r->stats.malformed++;
        s_error_to(r, raw->identity, raw->identity_bytes, WIRE_ERR_UNSUPPORTED, msg, 0);
    }
    }
}

/* Queued sessions go to the least-loaded pipeline while slots are free. */
static void s_admit(router *r)
{
    for (int i = 0; i < r->n_sessions && r->n_active < r->opts.max_sessions; i++) {
        router_session *s = r->sessions[i];
        if (s->state != SESSION_QUEUED || s->cancelled)
            continue;
        int best = -1;
        for (int p = 0; p < ROUTER_MAX_PIPELINES; p++)
            if (r->pipelines[p].used &&
                (best < 0 || r->pipelines[p].n_sessions < r->pipelines[best].n_sessions))
                best = p;
        if (best < 0)
            return;
        s->state = SESSION_ACTIVE;
        s->pipeline = best;
        s->start_ms = s_now();
        r->pipelines[best].n_sessions++;
        r->n_active++;
    }
}

/* One FORWARD for pipeline p (which has a free batch slot) with the rows of at most
 * max_parts of its ready sessions. Returns the rows sent (0: none ready, or not sent). */
static int s_send_batch(router *r, int p, int max_parts)
{
    router_pipeline *pl = &r->pipelines[p];
    router_batch *bt = NULL;
    for (int b = 0; b < ROUTER_MAX_INFLIGHT && !bt; b++)
        if (!pl->batches[b].batch_id && pl->batches[b].parts)
            bt = &pl->batches[b];
    if (!bt)
        return 0;
    const int max_rows = r->opts.max_batch_rows;
    int n_rows = 0;
    bt->n_parts = 0;
    const int n = r->n_sessions;
    const int64_t now = router_now_ms();
    for (int k = 0; k < n && n_rows < max_rows && bt->n_parts < max_parts; k++) {
        router_session *s = r->sessions[(r->rr + k) % n];
        if (s->state != SESSION_ACTIVE || s->pipeline != p || s->n_in_flight || s->cancelled ||
            s->preempted || s->retry_at_ms > now)
            continue;
        uint32_t remaining = s->n_tokens - s->n_done;
        if (remaining == 0)
            continue;
        /* A prompt, or the tokens of a preempted session being recomputed, go in chunks. */
        uint32_t take = remaining;
        if (take > (uint32_t)r->opts.prompt_chunk_rows)
            take = (uint32_t)r->opts.prompt_chunk_rows;
        if (take > (uint32_t)(max_rows - n_rows))
            take = (uint32_t)(max_rows - n_rows);
        for (uint32_t j = 0; j < take; j++) {
            uint32_t pos = s->n_done + j;
            r->rows[n_rows++] = (wire_row){.session_id = s->id, .pos = pos,
                                           .token = s->tokens[pos],
                                           .want_logits = pos + 1 == s->n_tokens};
        }
        s->n_in_flight = take;
        s->retry_at_ms = 0;
        bt->parts[bt->n_parts++] = (router_batch_part){.session_id = s->id, .n_rows = take};
    }
    if (n_rows == 0)
        return 0;
    if (n > 0)
        r->rr = (r->rr + 1) % n;
    const char *route[WIRE_MAX_HOPS + 1];
    int n_hops = 0;
    for (int k = 1; k < pl->n_workers; k++)
        route[n_hops++] = r->workers[pl->workers[k]].endpoint;
    route[n_hops++] = r->opts.results_connect;
    wire_message m = {.type = WIRE_FORWARD};
    m.forward = (wire_forward){.batch_id = ++r->next_batch_id, .pipeline_id = pl->id,
                               .hidden_dim = r->n_embd, .n_rows = (uint32_t)n_rows,
                               .rows = r->rows, .n_hops = (uint32_t)n_hops, .route = route};
    llorch_error err = {0};
    if (wire_send_message(pl->push, NULL, 0, &m, ZMQ_DONTWAIT, &err) != 0) {
        /* The worker's queue is full or it is unreachable: retry at the next step. */
        log_warn("pipeline %u: forward not sent: %s", pl->id, err.msg);
        for (int i = 0; i < bt->n_parts; i++) {
            router_session *s = s_find(r, bt->parts[i].session_id, NULL);
            if (s)
                s->n_in_flight = 0;
        }
        bt->n_parts = 0;
        return 0;
    }
    bt->batch_id = m.forward.batch_id;
    pl->n_inflight++;
    r->stats.batches++;
    r->stats.rows += (uint64_t)n_rows;
    if ((uint64_t)n_rows > r->stats.max_rows_in_batch)
        r->stats.max_rows_in_batch = (uint64_t)n_rows;
    if ((uint64_t)pl->n_inflight > r->stats.max_batches_in_flight)
        r->stats.max_batches_in_flight = (uint64_t)pl->n_inflight;
    return n_rows;
}

/* Fills pipeline p's free in-flight slots. Each new batch takes at most
 * ceil(sessions / max_inflight) ready sessions, so that the sessions split into groups
 * that keep every stage busy in turn (with one session, or one slot, it takes all). */
static void s_fill_pipeline(router *r, int p)
{
    router_pipeline *pl = &r->pipelines[p];
    const int slots = router_max_inflight(r, p);
    const int group = (pl->n_sessions + slots - 1) / slots;
    while (pl->used && pl->n_inflight < slots && s_send_batch(r, p, group > 0 ? group : 1) > 0) {
    }
}

void router_step(router *r)
{
    /* Cancelled sessions end once nothing of theirs is in flight. */
    for (int i = 0; i < r->n_sessions; i++) {
        router_session *s = r->sessions[i];
        if (s->cancelled && s->n_in_flight == 0) {
            s_finish(r, i, WIRE_STOP_CANCELLED, 0, NULL);
            i--;
        }
    }
    s_admit(r);
    for (int p = 0; p < ROUTER_MAX_PIPELINES; p++)
        if (r->pipelines[p].used && r->pipelines[p].n_sessions)
            s_fill_pipeline(r, p);
    r->wake_ms = 0;
    const int64_t now = router_now_ms();
    for (int i = 0; i < r->n_sessions; i++) {
        const int64_t at = r->sessions[i]->retry_at_ms;
        if (at > now && (!r->wake_ms || at < r->wake_ms))
            r->wake_ms = at;
    }
}

/* The n most probable entries of probs[0..n_vocab) into top, descending. */
static void s_top(const float *probs, uint32_t n_vocab, uint32_t n, wire_top_prob *top)
{
    uint32_t have = 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (have == n && probs[i] <= top[n - 1].prob)
            continue;
        uint32_t j = have < n ? have++ : n - 1;
        while (j > 0 && top[j - 1].prob < probs[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (wire_top_prob){.token = (int32_t)i, .prob = probs[i]};
    }
}

static bool s_hit_stop(const router_session *s, size_t piece_len)
{
    for (uint32_t k = 0; k < s->n_stop; k++) {
        size_t sl = strlen(s->stop[k]);
        if (sl > s->text_len)
            continue;
        /* Only the region the new piece could have completed is searched. */
        size_t from = s->text_len > piece_len + sl ? s->text_len - piece_len - sl : 0;
        if (memmem(s->text + from, s->text_len - from, s->stop[k], sl))
            return true;
    }
    return false;
}

/* Samples the next token of session i from one logits row; may finish the session. */
static void s_sample(router *r, int i, const float *logits)
{
    router_session *s = r->sessions[i];
    if (!s->prompt_done_ms)
        s->prompt_done_ms = s_now();
    if (s->cancelled) {
        s_finish(r, i, WIRE_STOP_CANCELLED, 0, NULL);
        return;
    }
    memcpy(r->scratch, logits, r->n_vocab * sizeof *r->scratch);
    wire_top_prob top[WIRE_MAX_TOP_PROBS];
    uint32_t n_top = s->top_n_probs < r->n_vocab ? s->top_n_probs : r->n_vocab;
    if (n_top) {
        softmax_probs(r->scratch, (int)r->n_vocab, r->probs);
        s_top(r->probs, r->n_vocab, n_top, top);
    }
    const int token = sampler_sample(s->smp, r->scratch);
    if (token == r->tok->eos_id && !s->ignore_eos) {
        s_finish(r, i, WIRE_STOP_EOS, 0, NULL);
        return;
    }
    sampler_accept(s->smp, token);
    const char *piece = "";
    size_t piece_len = 0;
    llorch_error err = {0};
    if (s_append_token(s, token) != 0 ||
        tokenizer_stream_push(&s->stream, token, &piece, &piece_len, &err) != 0 ||
        s_append_text(s, piece, piece_len) != 0) {
        s_finish(r, i, WIRE_STOP_ERROR, WIRE_ERR_INTERNAL,
                 err.msg[0] ? err.msg : "the router is out of memory");
        return;
    }
    wire_message t = {.type = WIRE_TOKEN};
    t.token = (wire_token){.request_id = s->request_id, .index = s->n_generated, .token = token,
                           .piece = piece, .piece_bytes = (uint32_t)piece_len, .n_top = n_top,
                           .top = top};
    s->n_generated++;
    r->stats.tokens_out++;
    s_to_client(r, s, &t);
    if (s->cancelled)
        s_finish(r, i, WIRE_STOP_CANCELLED, 0, NULL);
    else if (s_hit_stop(s, piece_len))
        s_finish(r, i, WIRE_STOP_STRING, 0, NULL);
    else if (s->n_generated >= s->max_tokens || s->n_done >= r->n_ctx)
        s_finish(r, i, WIRE_STOP_LENGTH, 0, NULL);
}

/* The pipeline with batch_id in flight (and its slot in *slot), or -1. */
static int s_pipeline_of_batch(router *r, uint64_t batch_id, int *slot)
{
    if (!batch_id)
        return -1;
    for (int p = 0; p < ROUTER_MAX_PIPELINES; p++)
        for (int b = 0; r->pipelines[p].used && b < ROUTER_MAX_INFLIGHT; b++)
            if (r->pipelines[p].batches[b].batch_id == batch_id) {
                *slot = b;
                return p;
            }
    return -1;
}

/* Frees slot b of pipeline p; its parts stay readable until the next send. */
static void s_batch_done(router_pipeline *pl, int b)
{
    pl->batches[b].batch_id = 0;
    pl->n_inflight--;
}

static void s_logits(router *r, const wire_logits *lg)
{
    int b = 0;
    int p = s_pipeline_of_batch(r, lg->batch_id, &b);
    if (p < 0 || r->pipelines[p].id != lg->pipeline_id) {
        log_debug("logits of batch %llu: no pipeline waits for it (lost?): dropped",
                  (unsigned long long)lg->batch_id);
        return;
    }
    router_pipeline *pl = &r->pipelines[p];
    if (lg->n_rows && lg->n_vocab != r->n_vocab) {
        log_error("pipeline %u returned %u logits per row, the model has %u", pl->id,
                  lg->n_vocab, r->n_vocab);
        router_pipeline_lost(r, p, "returned logits of the wrong size");
        return;
    }
    /* Every part advances by its rows; the ones whose last row wanted logits must have a
     * logits row, in batch order. */
    router_batch *bt = &pl->batches[b];
    s_batch_done(pl, b);
    uint32_t next_row = 0;
    for (int k = 0; k < bt->n_parts; k++) {
        int i;
        router_session *s = s_find(r, bt->parts[k].session_id, &i);
        if (!s)
            continue;
        s->n_done += s->n_in_flight;
        s->n_in_flight = 0;
        if (s->n_done < s->n_tokens)
            continue; /* a prompt chunk: more to come */
        if (next_row < lg->n_rows && lg->rows[next_row].session_id == s->id &&
            lg->rows[next_row].pos + 1 == s->n_done) {
            s_sample(r, i, lg->logits + (size_t)next_row * r->n_vocab);
            next_row++;
        } else {
            s_finish(r, i, WIRE_STOP_ERROR, WIRE_ERR_INTERNAL,
                     "the pipeline returned no logits for this session's last row");
        }
    }
    bt->n_parts = 0;
}

/* Whether session s, which a worker's full KV budget stopped, may be preempted: only
 * when another session of its pipeline runs, whose end will free room. A session alone
 * there has nothing to wait for and must get the error. */
static bool s_can_preempt(const router *r, const router_session *s)
{
    for (int i = 0; i < r->n_sessions; i++) {
        const router_session *o = r->sessions[i];
        if (o != s && o->state == SESSION_ACTIVE && o->pipeline == s->pipeline &&
            !o->preempted)
            return true;
    }
    return false;
}

/* Preempts session s (nothing of it in flight): its KV is freed on the pipeline's
 * workers and it waits, to recompute every token it has (prompt and generated, already
 * streamed) from position 0 once another session of the pipeline has finished. Its sampler
 * is untouched: the recomputed KV is the same, so it continues where it was. It takes a
 * new wire session id, so that a SESSION_FREE of the old one that reaches a worker late
 * (it travels on another socket than the FORWARDs) cannot free the recomputed cache. */
static void s_preempt(router *r, router_session *s)
{
    const int p = s->pipeline;
    router_pipeline *pl = &r->pipelines[p];
    router_free_session_on_workers(r, p, s->id);
    const uint64_t old_id = s->id;
    s->id = ++r->next_session_id;
    s->n_done = 0;
    s->n_in_flight = 0;
    s->preempted = true;
    s->preempt_seq = ++r->next_preempt_seq;
    r->stats.preemptions++;
    log_info("session %llu (request %llu) preempted on pipeline %u: its KV does not fit "
             "beside the others'; its %u tokens are recomputed (as session %llu) once another "
             "session there has finished", (unsigned long long)old_id,
             (unsigned long long)s->request_id, pl->id, s->n_tokens,
             (unsigned long long)s->id);
    s->resume_after = pl->departures;
}

/* An ERROR from a worker about a batch: the batch is lost. The session it names (or,
 * when it names none, every session of the batch) ends with the error, unless the
 * error is a full KV budget and the session can be preempted; the others send their
 * rows again (the workers rewind to the position). */
static void s_worker_error(router *r, const wire_error *e)
{
    int b = 0;
    int p = s_pipeline_of_batch(r, e->batch_id, &b);
    log_warn("worker error%s: %s (%s)", p < 0 ? " (no batch waits for it)" : "", e->message,
             wire_errc_name(e->code));
    if (p < 0)
        return;
    router_pipeline *pl = &r->pipelines[p];
    router_batch *bt = &pl->batches[b];
    s_batch_done(pl, b);
    char msg[WIRE_MAX_TEXT_BYTES];
    snprintf(msg, sizeof msg, "worker: %s", e->message);
    const int64_t now = router_now_ms();
    for (int k = 0; k < bt->n_parts; k++) {
        int i;
        router_session *s = s_find(r, bt->parts[k].session_id, &i);
        if (!s)
            continue;
        s->n_in_flight = 0;
        const bool named = !e->session_id || e->session_id == s->id;
        if (named && e->session_id && e->code == WIRE_ERR_NO_MEMORY) {
            if (s_can_preempt(r, s)) {
                s_preempt(r, s);
                continue;
            }
            if (now - pl->last_free_ms < ROUTER_FREE_SETTLE_MS) {
                log_debug("session %llu: the KV budget was full just after a free on "
                          "pipeline %u: retrying in %d ms", (unsigned long long)s->id, pl->id,
                          ROUTER_RETRY_MS);
                s->retry_at_ms = now + ROUTER_RETRY_MS;
                continue;
            }
        }
        if (named)
            s_finish(r, i, WIRE_STOP_ERROR, e->code, msg);
    }
    bt->n_parts = 0;
}

void router_results_message(router *r, const wire_message *m)
{
    if (m->type == WIRE_LOGITS)
        s_logits(r, &m->logits);
    else if (m->type == WIRE_ERROR)
        s_worker_error(r, &m->error);
    else
        log_warn("results socket: unexpected %s: dropped", wire_type_name(m->type));
}

void router_pipeline_lost(router *r, int p, const char *why)
{
    router_pipeline *pl = &r->pipelines[p];
    log_warn("pipeline %u out of service: %s", pl->id, why);
    char msg[WIRE_MAX_TEXT_BYTES];
    snprintf(msg, sizeof msg, "pipeline %u lost: %s", pl->id, why);
    for (int i = 0; i < r->n_sessions; i++) {
        router_session *s = r->sessions[i];
        if (s->state == SESSION_ACTIVE && s->pipeline == p) {
            s_finish(r, i, WIRE_STOP_ERROR, WIRE_ERR_UNAVAILABLE, msg);
            i--;
        }
    }
    /* Every batch in flight ended with its sessions above; late LOGITS find no slot. */
    pl->used = false;
    for (int b = 0; b < ROUTER_MAX_INFLIGHT; b++) {
        pl->batches[b].batch_id = 0;
        pl->batches[b].n_parts = 0;
    }
    pl->n_inflight = 0;
    pl->n_sessions = 0;
}

int router_stats_fill(router *r, wire_stat *c, int cap)
{
    const router_stats *st = &r->stats;
    const double mean = st->batches ? (double)st->rows / (double)st->batches : 0;
    const wire_stat all[] = {
        {"requests", (double)st->requests},
        {"refused", (double)st->refused},
        {"tokens_in", (double)st->tokens_in},
        {"tokens_out", (double)st->tokens_out},
        {"batches", (double)st->batches},
        {"rows", (double)st->rows},
        {"max_rows_in_batch", (double)st->max_rows_in_batch},
        {"max_batches_in_flight", (double)st->max_batches_in_flight},
        {"mean_rows_per_batch", mean},
        {"sessions_active", (double)r->n_active},
        {"sessions_done", (double)st->sessions_done},
        {"queue_depth", (double)(r->n_sessions - r->n_active)},
        {"workers_alive", (double)router_workers_alive(r)},
        {"pipelines_ready", (double)router_pipelines_ready(r)},
        {"errors", (double)st->errors},
        {"malformed", (double)st->malformed},
        {"preemptions", (double)st->preemptions},
        {"n_layers", (double)r->n_layers},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && n < cap; i++)
        c[n++] = all[i];
    /* Per worker "worker_alive:<id>" (1 alive, 0 dead), so /metrics can label each. */
    for (int i = 0; i < ROUTER_MAX_WORKERS && n < cap; i++) {
        const router_worker *w = &r->workers[i];
        if (!w->used)
            continue;
        char *name = r->stat_names[i];
        const size_t prefix = sizeof "worker_alive:" - 1;
        const size_t id_len = strnlen(w->id, sizeof r->stat_names[i] - 1 - prefix);
        memcpy(name, "worker_alive:", prefix);
        memcpy(name + prefix, w->id, id_len);
        name[prefix + id_len] = '\0';
        c[n++] = (wire_stat){name, w->alive ? 1.0 : 0.0};
    }
    return n;
}

void router_stats_reply(router *r, void *socket, const wire_msg *raw)
{
    wire_stat counters[WIRE_MAX_STATS];
    wire_message s = {.type = WIRE_STATS};
    s.stats = (wire_stats){.sender_id = "router", .counters = counters};
    s.stats.n_counters = (uint32_t)router_stats_fill(r, counters, WIRE_MAX_STATS);
    wire_send_message(socket, raw->identity, raw->identity_bytes, &s, ZMQ_DONTWAIT, NULL);
}

void router_sessions_shutdown(router *r)
{
    while (r->n_sessions > 0)
        s_finish(r, r->n_sessions - 1, WIRE_STOP_ERROR, WIRE_ERR_UNAVAILABLE,
                 "the router is stopping");
    free(r->sessions);
    r->sessions = NULL;
    r->cap_sessions = 0;
}
