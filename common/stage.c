/* stage.c - the Llama forward pass over a layer range, a batch of rows at a time. */
#include "stage.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fp16.h"
#include "kernels.h"
#include "kv_cache.h"
#include "threadpool.h"

#define DEFAULT_MAX_SEQS 64

/* Loops of fewer multiply-adds than this run on the calling thread alone: waking the
 * pool would cost more than the loop (tiny models, single short rows). */
#define PARALLEL_MIN_WORK 32768

struct stage {
    const model *m;
    model_config cfg;
    model_weights w;
    bool is_first, is_last;
    int n_ctx;
    int max_rows;
    stage_opts opts;
    threadpool *pool;
    kv_cache *kv;
    /* scratch for max_rows rows */
    float *x;     /* (max_rows, dim) residual stream */
    float *xb;    /* (max_rows, max(dim, q_dim)) normed input, then attention output */
    float *q;     /* (max_rows, q_dim) */
    float *k;     /* (max_rows, kv_dim) */
    float *v;     /* (max_rows, kv_dim) */
    float *hb;    /* (max_rows, ffn_dim) gate, then swiglu */
    float *hb2;   /* (max_rows, ffn_dim) up */
    float *proj;  /* (max_rows, dim) output of wo and ffn_down */
    void *act_buf[3]; /* prepared activations, act_bytes each */
    size_t act_bytes;
    float *scores;    /* (threads, group, n_ctx) attention scores of one (row, kv head)'s
                       * query heads (group = n_heads / n_kv_heads) */
    uint16_t *q16;    /* (threads, group, head_dim) those query heads rounded to F16 (F16
                       * cache) */
    float *rope_cs;   /* (max_rows, rope_dim) cos/sin of each row's position */
    int *row_slot;    /* (max_rows) kv cache slot of each row of the chunk */
    int *logit_rows;  /* (max_rows) rows of the chunk that want logits */
    uint64_t *res_ids; /* (max_seqs) distinct sequences of a batch */
    int32_t *res_end;  /* (max_seqs) their position end */
    int *res_slot;     /* (max_seqs) */
    /* trace buffers, only while a traced chunk runs */
    float *trace_kq, *trace_kq_soft;
    int trace_n_kv;
};

static size_t s_max(size_t a, size_t b) { return a > b ? a : b; }

/* Maps the pages of [p, p + bytes) into this process now, so that the first forward
 * pass does not take a page fault every few kilobytes of weights (llama.cpp does the
 * same with MAP_POPULATE when it maps a model). For a file mapping this reads the file
 * into the page cache once; for shared memory or heap memory it only builds page
 * table entries. Where madvise cannot do it (an old kernel), one read per page. */
static void s_populate(const void *p, size_t bytes)
{
    if (!p || bytes == 0)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t begin = (uintptr_t)p & ~(page - 1);
    const uintptr_t end = ((uintptr_t)p + bytes + page - 1) & ~(page - 1);
#ifdef MADV_POPULATE_READ
    if (madvise((void *)begin, end - begin, MADV_POPULATE_READ) == 0)
        return;
#endif
    volatile const uint8_t *bytes_p = p;
    uint8_t sink = 0;
    for (size_t off = 0; off < bytes; off += page)
        sink ^= bytes_p[off];
    (void)sink;
}

static void s_populate_weight(const weight *w)
{
    s_populate(w->data, (size_t)w->rows * w->row_bytes);
}

/* Every weight matrix the stage reads in full on every forward pass (not the token
 * embedding: only the rows of the tokens seen are read). */
static void s_populate_weights(const model_weights *w)
{
    for (uint32_t l = 0; l < w->last - w->first; l++) {
        const layer_weights *lw = &w->layers[l];
        s_populate_weight(&lw->wq);
        s_populate_weight(&lw->wk);
        s_populate_weight(&lw->wv);
        s_populate_weight(&lw->wo);
        s_populate_weight(&lw->ffn_gate);
        s_populate_weight(&lw->ffn_up);
        s_populate_weight(&lw->ffn_down);
    }
    s_populate_weight(&w->output);
}

stage *stage_new(const model *m, uint32_t first, uint32_t last, const stage_opts *opts,
                 llorch_error *err)
{
    const model_config *c = &m->config;
    if (model_config_validate(c, err) < 0)
        return NULL;
    if (opts->threads < 1 || opts->max_batch_rows < 1 || opts->max_batch_rows > (1 << 16) ||
        opts->max_seqs < 0 || opts->n_ctx < 0) {
        llorch_error_set(err, "stage options: threads %d and max batch rows %d must be >= 1 "
                              "(rows at most 65536), max_seqs %d and n_ctx %d >= 0",
                         opts->threads, opts->max_batch_rows, opts->max_seqs, opts->n_ctx);
        return NULL;
    }
    stage *s = calloc(1, sizeof *s);
    if (!s) {
        llorch_error_set(err, "out of memory for the stage");
        return NULL;
    }
    s->m = m;
    s->cfg = *c;
    s->opts = *opts;
    if (!s->opts.max_seqs)
        s->opts.max_seqs = DEFAULT_MAX_SEQS;
    s->n_ctx = opts->n_ctx ? opts->n_ctx : (int)c->context_length;
    s->max_rows = opts->max_batch_rows;
    if (model_weights_bind(&s->w, c, m->tensors, m->n_tensors, first, last, err) < 0) {
        free(s);
        return NULL;
    }
    s->is_first = first == 0;
    s->is_last = last == c->n_layers;
    s_populate_weights(&s->w);

    size_t kv_budget = opts->kv_budget_bytes;
    if (!kv_budget)
        kv_budget = kv_cache_bytes_per_position((int)(last - first), (int)c->kv_dim,
                                                opts->kv_type) *
                    (size_t)(s->n_ctx + KV_BLOCK_POSITIONS);
    s->kv = kv_cache_new((int)(last - first), (int)c->kv_dim, opts->kv_type, s->n_ctx,
                         s->opts.max_seqs, kv_budget, err);
    if (!s->kv)
        goto fail;
    s->pool = threadpool_new(opts->threads, err);
    if (!s->pool)
        goto fail;

    const size_t rows = (size_t)s->max_rows;
    s->x = malloc(rows * c->dim * sizeof(float));
    s->xb = malloc(rows * s_max(c->dim, c->q_dim) * sizeof(float));
    s->q = malloc(rows * c->q_dim * sizeof(float));
    s->k = malloc(rows * c->kv_dim * sizeof(float));
    s->v = malloc(rows * c->kv_dim * sizeof(float));
    s->hb = malloc(rows * c->ffn_dim * sizeof(float));
    s->hb2 = malloc(rows * c->ffn_dim * sizeof(float));
    s->proj = malloc(rows * c->dim * sizeof(float));
    static const enum tensor_type types[] = {TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0};
    for (size_t t = 0; t < 3; t++) {
        const int64_t widest = (int64_t)s_max(s_max(c->dim, c->q_dim), c->ffn_dim);
        s->act_bytes = s_max(s->act_bytes, kernel_act_bytes(types[t], (int64_t)rows, widest));
    }
    for (int i = 0; i < 3; i++)
        s->act_buf[i] = malloc(s->act_bytes);
    const size_t group = c->n_heads / c->n_kv_heads;
    s->scores = malloc((size_t)opts->threads * group * (size_t)s->n_ctx * sizeof(float));
    s->q16 = malloc((size_t)opts->threads * group * c->head_dim * sizeof(uint16_t));
    s->rope_cs = malloc(rows * c->rope_dim * sizeof(float));
    s->row_slot = malloc(rows * sizeof(int));
    s->logit_rows = malloc(rows * sizeof(int));
    s->res_ids = malloc((size_t)s->opts.max_seqs * sizeof(uint64_t));
    s->res_end = malloc((size_t)s->opts.max_seqs * sizeof(int32_t));
    s->res_slot = malloc((size_t)s->opts.max_seqs * sizeof(int));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->hb || !s->hb2 || !s->proj ||
        !s->act_buf[0] || !s->act_buf[1] || !s->act_buf[2] || !s->scores || !s->q16 || !s->rope_cs || !s->row_slot ||
        !s->logit_rows || !s->res_ids || !s->res_end || !s->res_slot) {
        llorch_error_set(err, "out of memory for the scratch of %d batch rows", s->max_rows);
        goto fail;
    }
    return s;
fail:
    stage_free(&s);
    return NULL;
}

void stage_free(stage **ps)
{
    if (!ps || !*ps)
        return;
    stage *s = *ps;
    threadpool_free(&s->pool);
    kv_cache_free(&s->kv);
    model_weights_free(&s->w);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->hb);
    free(s->hb2);
    free(s->proj);
    for (int i = 0; i < 3; i++)
        free(s->act_buf[i]);
    free(s->scores);
    free(s->q16);
    free(s->rope_cs);
    free(s->row_slot);
    free(s->logit_rows);
    free(s->res_ids);
    free(s->res_end);
    free(s->res_slot);
    free(s);
    *ps = NULL;
}

int stage_free_seq(stage *s, uint64_t seq_id) { return kv_cache_free_seq(s->kv, seq_id); }

int32_t stage_seq_len(const stage *s, uint64_t seq_id) { return kv_cache_seq_len(s->kv, seq_id); }

int64_t stage_out_cols(const stage *s) { return s->is_last ? s->cfg.vocab_size : s->cfg.dim; }

/* ---- tracing ---------------------------------------------------------------------- */

static void s_trace(const stage *s, const char *name, int layer, const float *data, int n_dims,
                    int64_t ne0, int64_t ne1, int64_t ne2)
{
    if (!s->opts.trace)
        return;
    stage_trace_tensor t = {.name = name, .layer = layer, .n_dims = n_dims, .ne = {ne0, ne1, ne2, 1},
                            .data = data};
    s->opts.trace(s->opts.trace_user, &t);
}

/* ---- matrix products on the pool -------------------------------------------------- */

static void s_parallel(stage *s, int64_t n, int64_t work, threadpool_fn fn, void *ctx)
{
    if (work < PARALLEL_MIN_WORK)
        fn(ctx, 0, n, 0);
    else
        threadpool_for(s->pool, n, fn, ctx);
}

/* Up to three products sharing one batch, run as one parallel loop over the
 * concatenated output rows (one barrier for q, k and v together). */
typedef struct matmul_job {
    int n;
    const weight *w[3];
    kernel_act act[3];
    float *out[3];
    int64_t total;          /* concatenated output rows */
    _Atomic int64_t next;   /* first row not yet taken */
} matmul_job;

/* Rows taken per grab: whole 8-row panels, ~140 KB of a 4096-wide Q8_0 matrix, so the
 * grabs cost nothing against the rows and the threads finish within one grab of each
 * other (a static half each waits for the slower core at every barrier). */
#define MATMUL_GRAB_ROWS 32

static void s_matmul_range(const matmul_job *job, int64_t begin, int64_t end)
{
    int64_t base = 0;
    for (int i = 0; i < job->n; i++) {
        const int64_t rows = job->w[i]->rows;
        const int64_t lo = begin > base ? begin - base : 0;
        const int64_t hi = end - base < rows ? end - base : rows;
        if (lo < hi)
            kernel_matmul(job->w[i], &job->act[i], job->out[i], rows, lo, hi);
        base += rows;
    }
}

static void s_matmul_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    matmul_job *job = ctx;
    (void)begin, (void)end, (void)thread_index;
    for (;;) {
        const int64_t lo = atomic_fetch_add_explicit(&job->next, MATMUL_GRAB_ROWS, memory_order_relaxed);
        if (lo >= job->total)
            return;
        s_matmul_range(job, lo, lo + MATMUL_GRAB_ROWS < job->total ? lo + MATMUL_GRAB_ROWS : job->total);
    }
}

/* out[i] (n_rows x w[i]->rows) = x (n_rows x cols) times each w[i]. Activations are
 * prepared once per distinct weight type. */
static void s_matmuls(stage *s, int n, const weight *const *w, float *const *out, const float *x,
                      int n_rows)
{
    matmul_job job = {.n = n};
    int64_t total = 0, work = 0;
    for (int i = 0; i < n; i++) {
        job.w[i] = w[i];
        job.out[i] = out[i];
        total += w[i]->rows;
        work += w[i]->rows * w[i]->cols * n_rows;
        int same = -1;
        for (int j = 0; j < i; j++)
            if (w[j]->type == w[i]->type)
                same = j;
        if (same >= 0) {
            job.act[i] = job.act[same];
            continue;
        }
        job.act[i] = kernel_act_init(w[i]->type, x, n_rows, w[i]->cols, s->act_buf[i]);
        kernel_act_convert(&job.act[i], x, 0, n_rows);
    }
    job.total = total;
    atomic_init(&job.next, 0);
    if (work < PARALLEL_MIN_WORK)
        s_matmul_range(&job, 0, total);
    else
        threadpool_for(s->pool, threadpool_size(s->pool), s_matmul_share, &job);
}

static void s_matmul(stage *s, const weight *w, float *out, const float *x, int n_rows)
{
    s_matmuls(s, 1, &w, &out, x, n_rows);
}

/* ---- attention -------------------------------------------------------------------- */

typedef struct attention_job {
    stage *s;
    const stage_row *rows;
    int n_rows;
    int layer; /* within the stage */
} attention_job;

/* One (row, kv head) per item: for each query head h of the kv head's group (h / (n_heads
 * / n_kv_heads) is its kv head: grouped-query and multi-query attention), scores against
 * every cached position up to the row's own (causal), softmax, weighted sum of the values
 * into xb. Each cached key and value is read once for the whole group, not once per query
 * head; every head's arithmetic is the same sequence as on its own. With an F16 cache the
 * arithmetic is ggml's for an F16 cache without flash attention: K.q is a product of F16
 * values (q rounded to F16) accumulated in float, and the softmax weights are rounded to
 * F16 before they weigh the F16 values. */
static void s_attention_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    const attention_job *job = ctx;
    stage *s = job->s;
    const model_config *c = &s->cfg;
    const int head_dim = (int)c->head_dim;
    const int group = (int)(c->n_heads / c->n_kv_heads);
    const float scale = 1.0f / sqrtf((float)head_dim);
    const bool f16 = s->kv->type == KV_TYPE_F16;
    const size_t n_ctx = (size_t)s->n_ctx;
    float *scores = s->scores + (size_t)thread_index * (size_t)group * n_ctx;
    uint16_t *q16 = s->q16 + (size_t)thread_index * (size_t)group * (size_t)head_dim;
    for (int64_t item = begin; item < end; item++) {
        const int r = (int)(item / c->n_kv_heads), kvh = (int)(item % c->n_kv_heads);
        const int h0 = kvh * group;
        const int32_t pos = job->rows[r].pos;
        const int slot = s->row_slot[r];
        const int kv_offset = kvh * head_dim;
        const float *q = s->q + (size_t)r * c->q_dim + (size_t)h0 * head_dim;
        if (f16) {
            kernel_f32_to_f16(q, q16, (int64_t)group * head_dim);
            for (int32_t t = 0; t <= pos; t++) {
                const uint16_t *k = kv_cache_k_f16(s->kv, slot, job->layer, t) + kv_offset;
                for (int g = 0; g < group; g++)
                    scores[g * n_ctx + t] = kernel_dot_f16(k, q16 + (size_t)g * head_dim, head_dim);
            }
        } else {
            for (int32_t t = 0; t <= pos; t++) {
                const float *k = kv_cache_k(s->kv, slot, job->layer, t) + kv_offset;
                kernel_dot_f32_rows(q, head_dim, group, k, head_dim, scores + t, (int64_t)n_ctx);
            }
        }
        for (int g = 0; g < group; g++) {
            float *sc = scores + g * n_ctx;
            const int h = h0 + g;
            float *trace_row = NULL;
            if (s->trace_kq) {
                trace_row = s->trace_kq + ((size_t)h * job->n_rows + r) * s->trace_n_kv;
                for (int t = 0; t < s->trace_n_kv; t++)
                    trace_row[t] = t <= pos ? sc[t] : -INFINITY;
            }
            for (int32_t t = 0; t <= pos; t++)
                sc[t] *= scale;
            kernel_softmax(sc, pos + 1);
            if (trace_row) {
                trace_row = s->trace_kq_soft + ((size_t)h * job->n_rows + r) * s->trace_n_kv;
                for (int t = 0; t < s->trace_n_kv; t++)
                    trace_row[t] = t <= pos ? sc[t] : 0.0f;
            }
            if (f16)
                for (int32_t t = 0; t <= pos; t++)
                    sc[t] = fp16_to_f32(f32_to_fp16(sc[t]));
        }
        float *out = s->xb + (size_t)r * c->q_dim + (size_t)h0 * head_dim;
        memset(out, 0, (size_t)group * head_dim * sizeof *out);
        for (int32_t t = 0; t <= pos; t++) {
            if (f16) {
                const uint16_t *v = kv_cache_v_f16(s->kv, slot, job->layer, t) + kv_offset;
                for (int g = 0; g < group; g++)
                    kernel_axpy_f16(out + (size_t)g * head_dim, scores[g * n_ctx + t], v, head_dim);
            } else {
                const float *v = kv_cache_v(s->kv, slot, job->layer, t) + kv_offset;
                kernel_axpy_rows(out, head_dim, scores + t, (int64_t)n_ctx, group, v, head_dim);
            }
        }
    }
}

/* ---- one chunk -------------------------------------------------------------------- */

typedef struct swiglu_job {
    float *gate;
    const float *up;
} swiglu_job;

static void s_swiglu_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    const swiglu_job *job = ctx;
    kernel_swiglu(job->gate + begin, job->up + begin, end - begin);
}

static void s_add(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* Runs rows[0..n) (n <= max_rows, KV already reserved) through the stage. Writes
 * hidden rows to out (row i at out + i * dim) or logits of the rows that want them to
 * out (n_out of them); returns n_out. */
static int s_forward_chunk(stage *s, const stage_row *rows, int n, const float *in_hidden,
                           float *out)
{
    const model_config *c = &s->cfg;
    const size_t dim = c->dim;
    for (int r = 0; r < n; r++)
        s->row_slot[r] = kv_cache_find(s->kv, rows[r].seq_id);
    if (s->is_first)
        for (int r = 0; r < n; r++)
            kernel_get_row(&s->w.token_embd, rows[r].token, s->x + r * dim);
    else
        memcpy(s->x, in_hidden, (size_t)n * dim * sizeof(float));
    for (int r = 0; r < n; r++)
        kernel_rope_angles(s->rope_cs + (size_t)r * c->rope_dim, (int)c->rope_dim, rows[r].pos,
                           c->rope_freq_base);

    for (uint32_t li = 0; li < s->w.last - s->w.first; li++) {
        const layer_weights *lw = &s->w.layers[li];
        const int L = (int)(s->w.first + li);
        /* attention */
        for (int r = 0; r < n; r++)
            kernel_rmsnorm(s->xb + r * dim, s->x + r * dim, lw->attn_norm, (int64_t)dim, c->norm_eps);
        s_trace(s, "attn_norm", L, s->xb, 2, c->dim, n, 1);
        const weight *qkv[3] = {&lw->wq, &lw->wk, &lw->wv};
        float *qkv_out[3] = {s->q, s->k, s->v};
        s_matmuls(s, 3, qkv, qkv_out, s->xb, n);
        s_trace(s, "q", L, s->q, 3, c->head_dim, c->n_heads, n);
        s_trace(s, "k", L, s->k, 3, c->head_dim, c->n_kv_heads, n);
        s_trace(s, "v", L, s->v, 3, c->head_dim, c->n_kv_heads, n);
        for (int r = 0; r < n; r++) {
            const float *cs = s->rope_cs + (size_t)r * c->rope_dim;
            kernel_rope_apply(s->q + (size_t)r * c->q_dim, (int)c->n_heads, (int)c->head_dim,
                              (int)c->rope_dim, cs);
            kernel_rope_apply(s->k + (size_t)r * c->kv_dim, (int)c->n_kv_heads, (int)c->head_dim,
                              (int)c->rope_dim, cs);
            const int slot = s->row_slot[r];
            if (s->kv->type == KV_TYPE_F16) {
                kernel_f32_to_f16(s->k + (size_t)r * c->kv_dim,
                                  kv_cache_k_f16(s->kv, slot, (int)li, rows[r].pos), c->kv_dim);
                kernel_f32_to_f16(s->v + (size_t)r * c->kv_dim,
                                  kv_cache_v_f16(s->kv, slot, (int)li, rows[r].pos), c->kv_dim);
            } else {
                memcpy(kv_cache_k(s->kv, slot, (int)li, rows[r].pos),
                       s->k + (size_t)r * c->kv_dim, c->kv_dim * sizeof(float));
                memcpy(kv_cache_v(s->kv, slot, (int)li, rows[r].pos),
                       s->v + (size_t)r * c->kv_dim, c->kv_dim * sizeof(float));
            }
        }
        s_trace(s, "q_rope", L, s->q, 3, c->head_dim, c->n_heads, n);
        s_trace(s, "k_rope", L, s->k, 3, c->head_dim, c->n_kv_heads, n);
        attention_job job = {s, rows, n, (int)li};
        int64_t work = 0;
        for (int r = 0; r < n; r++)
            work += 2 * (int64_t)(rows[r].pos + 1) * c->q_dim;
        s_parallel(s, (int64_t)n * c->n_kv_heads, work, s_attention_share, &job);
        if (s->trace_kq) {
            s_trace(s, "kq", L, s->trace_kq, 3, s->trace_n_kv, n, c->n_heads);
            s_trace(s, "kq_softmax", L, s->trace_kq_soft, 3, s->trace_n_kv, n, c->n_heads);
        }
        s_trace(s, "attn_out", L, s->xb, 2, c->q_dim, n, 1);
        s_matmul(s, &lw->wo, s->proj, s->xb, n);
        s_trace(s, "attn_proj", L, s->proj, 2, c->dim, n, 1);
        s_add(s->x, s->proj, (size_t)n * dim);
        s_trace(s, "ffn_inp", L, s->x, 2, c->dim, n, 1);
        /* feed-forward: down(silu(gate(x)) * up(x)) */
        for (int r = 0; r < n; r++)
            kernel_rmsnorm(s->xb + r * dim, s->x + r * dim, lw->ffn_norm, (int64_t)dim, c->norm_eps);
        s_trace(s, "ffn_norm", L, s->xb, 2, c->dim, n, 1);
        const weight *gate_up[2] = {&lw->ffn_gate, &lw->ffn_up};
        float *gate_up_out[2] = {s->hb, s->hb2};
        s_matmuls(s, 2, gate_up, gate_up_out, s->xb, n);
        swiglu_job sj = {s->hb, s->hb2};
        const int64_t n_ffn = (int64_t)n * c->ffn_dim;
        s_parallel(s, n_ffn, 16 * n_ffn, s_swiglu_share, &sj); /* ~16 multiply-adds per expf */
        s_matmul(s, &lw->ffn_down, s->proj, s->hb, n);
        s_trace(s, "ffn_out", L, s->proj, 2, c->dim, n, 1);
        s_add(s->x, s->proj, (size_t)n * dim);
        s_trace(s, "l_out", L, s->x, 2, c->dim, n, 1);
    }

    if (!s->is_last) {
        memcpy(out, s->x, (size_t)n * dim * sizeof(float));
        return n;
    }
    int n_out = 0;
    for (int r = 0; r < n; r++)
        if (rows[r].want_logits)
            s->logit_rows[n_out++] = r;
    if (n_out == 0)
        return 0;
    for (int i = 0; i < n_out; i++)
        kernel_rmsnorm(s->xb + i * dim, s->x + (size_t)s->logit_rows[i] * dim, s->w.output_norm,
                       (int64_t)dim, c->norm_eps);
    s_trace(s, "result_norm", -1, s->xb, 2, c->dim, n_out, 1);
    s_matmul(s, &s->w.output, out, s->xb, n_out);
    s_trace(s, "logits", -1, out, 2, c->vocab_size, n_out, 1);
    return n_out;
}

/* ---- the batch -------------------------------------------------------------------- */

/* Checks tokens and positions and reserves the KV cache for the whole batch (all or
 * nothing). 0, -1, or LLORCH_ERR_NO_MEMORY when the cache cannot hold the batch. */
static int s_prepare_batch(stage *s, const stage_row *rows, int n_rows, llorch_error *err)
{
    int n_seqs = 0;
    for (int i = 0; i < n_rows; i++) {
        const stage_row *row = &rows[i];
        if (s->is_first && (row->token < 0 || (uint32_t)row->token >= s->cfg.vocab_size))
            return llorch_error_set(err, "row %d: token %d is outside the vocabulary of %u", i,
                                    row->token, s->cfg.vocab_size);
        if (row->pos < 0 || row->pos >= s->n_ctx)
            return llorch_error_set(err, "sequence %llu: position %d is outside the context of "
                                         "%d positions",
                                    (unsigned long long)row->seq_id, row->pos, s->n_ctx);
        int seq = -1;
        for (int j = n_seqs - 1; j >= 0; j--)
            if (s->res_ids[j] == row->seq_id)
                seq = j;
        if (seq >= 0) {
            if (row->pos != s->res_end[seq])
                return llorch_error_set(err, "sequence %llu: row %d has position %d, expected %d "
                                             "(rows of a sequence must be consecutive positions)",
                                        (unsigned long long)row->seq_id, i, row->pos,
                                        s->res_end[seq]);
            s->res_end[seq] = row->pos + 1;
            continue;
        }
        const int32_t held = kv_cache_seq_len(s->kv, row->seq_id);
        if (row->pos > held)
            return llorch_error_set(err, "sequence %llu: position %d follows no cached position "
                                         "(the stage holds %d)",
                                    (unsigned long long)row->seq_id, row->pos, held);
        if (n_seqs == s->opts.max_seqs)
            return llorch_error_set(err, "batch has more than %d sequences", s->opts.max_seqs);
        s->res_ids[n_seqs] = row->seq_id;
        s->res_end[n_seqs] = row->pos + 1;
        n_seqs++;
    }
    return kv_cache_reserve(s->kv, s->res_ids, s->res_end, n_seqs, s->res_slot, err);
}

static int s_trace_begin(stage *s, const stage_row *rows, int n, llorch_error *err)
{
    int n_kv = 0;
    for (int r = 0; r < n; r++)
        n_kv = rows[r].pos + 1 > n_kv ? rows[r].pos + 1 : n_kv;
    size_t count = (size_t)n_kv * (size_t)n * s->cfg.n_heads;
    s->trace_kq = malloc(count * sizeof(float));
    s->trace_kq_soft = malloc(count * sizeof(float));
    s->trace_n_kv = n_kv;
    if (!s->trace_kq || !s->trace_kq_soft) {
        free(s->trace_kq);
        free(s->trace_kq_soft);
        s->trace_kq = s->trace_kq_soft = NULL;
        return llorch_error_set(err, "out of memory for the attention trace");
    }
    return 0;
}

static void s_trace_end(stage *s)
{
    free(s->trace_kq);
    free(s->trace_kq_soft);
    s->trace_kq = s->trace_kq_soft = NULL;
}

int stage_forward(stage *s, const stage_row *rows, int n_rows, const float *in_hidden, float *out,
                  llorch_error *err)
{
    if (n_rows < 1 || !rows || !out)
        return llorch_error_set(err, "stage_forward needs at least one row and an output buffer");
    if (!s->is_first && !in_hidden)
        return llorch_error_set(err, "stage [%u, %u) needs hidden states as input", s->w.first,
                                s->w.last);
    const int prepared = s_prepare_batch(s, rows, n_rows, err);
    if (prepared < 0)
        return prepared; /* -1, or LLORCH_ERR_NO_MEMORY from the KV cache */
    int n_out = 0;
    for (int begin = 0; begin < n_rows; begin += s->max_rows) {
        const int n = n_rows - begin < s->max_rows ? n_rows - begin : s->max_rows;
        if (s->opts.trace && s_trace_begin(s, rows + begin, n, err) < 0)
            return -1;
        const float *in = in_hidden ? in_hidden + (size_t)begin * s->cfg.dim : NULL;
        float *dst = s->is_last ? out + (size_t)n_out * s->cfg.vocab_size
                                : out + (size_t)begin * s->cfg.dim;
        n_out += s_forward_chunk(s, rows + begin, n, in, dst);
        if (s->opts.trace)
            s_trace_end(s);
    }
    return n_out;
}
