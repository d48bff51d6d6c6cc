/* test_stage.c - the forward pass of a tiny random model built in memory: against a
 * naive float64 forward, batching, layer splits, chunking, the KV budget (F32 and F16
 * caches), tracing. */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "fp16.h"
#include "kernels.h"
#include "kv_cache.h"
#include "model.h"
#include "quant.h"
#include "stage.h"

static uint64_t s_rng;

static double s_uniform(void) /* [-1, 1) */
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (double)(s_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

/* A model in memory: tensor records over malloc'd data, and every weight as the
 * float values the engine sees (after conversion to the tensor type). */
typedef struct toy_model {
    model_config cfg;
    gguf_tensor tensors[64];
    size_t n_tensors;
    double *values[64]; /* float64 copy of each tensor */
    model *m;
} toy_model;

static void s_add_tensor(toy_model *t, const char *name, enum tensor_type type, uint64_t rows,
                         uint64_t cols, double scale, double offset)
{
    gguf_tensor *g = &t->tensors[t->n_tensors];
    double *vals = malloc(rows * cols * sizeof *vals);
    float *f = malloc(cols * sizeof *f);
    size_t row_bytes = (size_t)tensor_row_bytes(type, cols);
    uint8_t *data = malloc(rows * row_bytes);
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < cols; c++)
            f[c] = (float)(offset + scale * s_uniform());
        uint8_t *dst = data + r * row_bytes;
        for (uint64_t c = 0; c < cols; c++) {
            if (type == TENSOR_F32) ((float *)dst)[c] = f[c];
            if (type == TENSOR_F16) ((uint16_t *)dst)[c] = f32_to_fp16(f[c]);
            if (type == TENSOR_BF16) ((uint16_t *)dst)[c] = f32_to_bf16(f[c]);
        }
        if (type == TENSOR_Q8_0)
            q8_0_quantize_row(f, (q8_0_block *)dst, (int64_t)cols);
        weight w = {.type = type, .rows = 1, .cols = (int64_t)cols, .row_bytes = row_bytes, .data = dst};
        kernel_get_row(&w, 0, f);
        for (uint64_t c = 0; c < cols; c++)
            vals[r * cols + c] = f[c];
    }
    free(f);
    *g = (gguf_tensor){.name = strdup(name), .type = type, .n_dims = rows == 1 ? 1 : 2,
                       .ne = {cols, rows, 1, 1}, .n_bytes = rows * row_bytes, .data = data};
    t->values[t->n_tensors++] = vals;
}

static const double *s_values(const toy_model *t, const char *name)
{
    for (size_t i = 0; i < t->n_tensors; i++)
        if (!strcmp(t->tensors[i].name, name))
            return t->values[i];
    return NULL;
}

/* dim 64, 3 layers, 8 heads of 8, n_kv_heads as given, ffn 96, vocab 50; rope over
 * rope_dim of each head; output tied when `tied`. */
static toy_model *s_toy_new(enum tensor_type type, uint32_t n_kv_heads, uint32_t rope_dim, int tied,
                            uint64_t seed)
{
    toy_model *t = calloc(1, sizeof *t);
    s_rng = seed;
    t->cfg = (model_config){.dim = 64, .n_layers = 3, .n_heads = 8, .n_kv_heads = n_kv_heads,
                            .head_dim = 8, .q_dim = 64, .kv_dim = n_kv_heads * 8, .ffn_dim = 96,
                            .vocab_size = 50, .context_length = 128, .rope_dim = rope_dim,
                            .rope_freq_base = 10000.0f, .norm_eps = 1e-5f};
    const model_config *c = &t->cfg;
    char name[64];
    s_add_tensor(t, "token_embd.weight", type, c->vocab_size, c->dim, 1.0, 0);
    for (uint32_t l = 0; l < c->n_layers; l++) {
#define N(s) (snprintf(name, sizeof name, "blk.%u.%s", l, s), name)
        s_add_tensor(t, N("attn_norm.weight"), TENSOR_F32, 1, c->dim, 0.2, 1.0);
        s_add_tensor(t, N("attn_q.weight"), type, c->q_dim, c->dim, 0.3, 0);
        s_add_tensor(t, N("attn_k.weight"), type, c->kv_dim, c->dim, 0.3, 0);
        s_add_tensor(t, N("attn_v.weight"), type, c->kv_dim, c->dim, 0.3, 0);
        s_add_tensor(t, N("attn_output.weight"), type, c->dim, c->q_dim, 0.2, 0);
        s_add_tensor(t, N("ffn_norm.weight"), TENSOR_F32, 1, c->dim, 0.2, 1.0);
        s_add_tensor(t, N("ffn_gate.weight"), type, c->ffn_dim, c->dim, 0.2, 0);
        s_add_tensor(t, N("ffn_up.weight"), type, c->ffn_dim, c->dim, 0.2, 0);
        s_add_tensor(t, N("ffn_down.weight"), type, c->dim, c->ffn_dim, 0.2, 0);
#undef N
    }
    s_add_tensor(t, "output_norm.weight", TENSOR_F32, 1, c->dim, 0.2, 1.0);
    if (!tied)
        s_add_tensor(t, "output.weight", type, c->vocab_size, c->dim, 0.5, 0);
    t->m = model_from_tensors(&t->cfg, t->tensors, t->n_tensors, NULL);
    return t;
}

static void s_toy_free(toy_model *t)
{
    model_free(&t->m);
    for (size_t i = 0; i < t->n_tensors; i++) {
        free(t->tensors[i].name);
        free((void *)t->tensors[i].data);
        free(t->values[i]);
    }
    free(t);
}

/* ---- the float64 reference -------------------------------------------------------- */

static void s_ref_matvec(const double *w, const double *x, int rows, int cols, double *out)
{
    for (int i = 0; i < rows; i++) {
        double sum = 0;
        for (int j = 0; j < cols; j++)
            sum += w[(size_t)i * cols + j] * x[j];
        out[i] = sum;
    }
}

static void s_ref_rmsnorm(const double *x, const double *w, int n, double eps, double *out)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double scale = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

static void s_ref_rope(double *x, int n_heads, int head_dim, int rope_dim, int pos, double base)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < rope_dim; i += 2) {
            double theta = pos * pow(base, -(double)i / rope_dim);
            double *v = x + h * head_dim + i, a = v[0], b = v[1];
            v[0] = a * cos(theta) - b * sin(theta);
            v[1] = a * sin(theta) + b * cos(theta);
        }
}

/* When set, the reference rounds as an F16 KV cache does (ggml's arithmetic): keys,
 * values and the query to F16 before the products, and the softmax weights to F16
 * before they weigh the values. */
static bool s_ref_f16;

static double s_r16(double x)
{
    return s_ref_f16 ? (double)fp16_to_f32(f32_to_fp16((float)x)) : x;
}

/* Logits (n_tokens x vocab) of every position of one sequence, F32 weights only. */
static double *s_ref_forward(const toy_model *t, const int *tokens, int n_tokens)
{
    const model_config *c = &t->cfg;
    const int dim = (int)c->dim, kv_dim = (int)c->kv_dim, hd = (int)c->head_dim, ffn = (int)c->ffn_dim;
    double *kc = calloc((size_t)c->n_layers * n_tokens * kv_dim, sizeof(double));
    double *vc = calloc((size_t)c->n_layers * n_tokens * kv_dim, sizeof(double));
    double *logits = malloc((size_t)n_tokens * c->vocab_size * sizeof(double));
    double x[64], xb[64], q[64], k[64], v[64], att[64], proj[64], g[96], u[96], sc[128];
    char name[64];
    const double *out_w = s_values(t, "output.weight");
    if (!out_w)
        out_w = s_values(t, "token_embd.weight");
    for (int p = 0; p < n_tokens; p++) {
        memcpy(x, s_values(t, "token_embd.weight") + (size_t)tokens[p] * dim, sizeof x);
        for (uint32_t l = 0; l < c->n_layers; l++) {
#define W(s) (snprintf(name, sizeof name, "blk.%u.%s", l, s), s_values(t, name))
            s_ref_rmsnorm(x, W("attn_norm.weight"), dim, c->norm_eps, xb);
            s_ref_matvec(W("attn_q.weight"), xb, (int)c->q_dim, dim, q);
            s_ref_matvec(W("attn_k.weight"), xb, kv_dim, dim, k);
            s_ref_matvec(W("attn_v.weight"), xb, kv_dim, dim, v);
            s_ref_rope(q, (int)c->n_heads, hd, (int)c->rope_dim, p, c->rope_freq_base);
            s_ref_rope(k, (int)c->n_kv_heads, hd, (int)c->rope_dim, p, c->rope_freq_base);
            for (int i = 0; i < kv_dim; i++)
                k[i] = s_r16(k[i]), v[i] = s_r16(v[i]);
            memcpy(kc + ((size_t)l * n_tokens + p) * kv_dim, k, kv_dim * sizeof(double));
            memcpy(vc + ((size_t)l * n_tokens + p) * kv_dim, v, kv_dim * sizeof(double));
            int group = (int)(c->n_heads / c->n_kv_heads);
            for (int h = 0; h < (int)c->n_heads; h++) {
                int kvh = h / group;
                double mx = -1e300, sum = 0;
                for (int s = 0; s <= p; s++) {
                    const double *ks = kc + ((size_t)l * n_tokens + s) * kv_dim + kvh * hd;
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += s_r16(q[h * hd + i]) * ks[i];
                    sc[s] = d / sqrt(hd);
                    mx = sc[s] > mx ? sc[s] : mx;
                }
                for (int s = 0; s <= p; s++)
                    sum += (sc[s] = exp(sc[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int s = 0; s <= p; s++)
                        a += s_r16(sc[s] / sum) * vc[((size_t)l * n_tokens + s) * kv_dim + kvh * hd + i];
                    att[h * hd + i] = a;
                }
            }
            s_ref_matvec(W("attn_output.weight"), att, dim, (int)c->q_dim, proj);
            for (int i = 0; i < dim; i++)
                x[i] += proj[i];
            s_ref_rmsnorm(x, W("ffn_norm.weight"), dim, c->norm_eps, xb);
            s_ref_matvec(W("ffn_gate.weight"), xb, ffn, dim, g);
            s_ref_matvec(W("ffn_up.weight"), xb, ffn, dim, u);
            for (int i = 0; i < ffn; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            s_ref_matvec(W("ffn_down.weight"), g, dim, ffn, proj);
            for (int i = 0; i < dim; i++)
                x[i] += proj[i];
#undef W
        }
        s_ref_rmsnorm(x, s_values(t, "output_norm.weight"), dim, c->norm_eps, xb);
        s_ref_matvec(out_w, xb, (int)c->vocab_size, dim, logits + (size_t)p * c->vocab_size);
    }
    free(kc);
    free(vc);
    return logits;
}

/* ---- helpers ---------------------------------------------------------------------- */

/* The cache type of the stages s_stage makes. */
static kv_type s_kv = KV_TYPE_F32;

static stage *s_stage(const toy_model *t, uint32_t first, uint32_t last, int threads, int max_rows,
                      size_t budget)
{
    stage_opts opts = {.threads = threads, .kv_budget_bytes = budget, .max_batch_rows = max_rows,
                       .kv_type = s_kv};
    llorch_error err = {0};
    stage *s = stage_new(t->m, first, last, &opts, &err);
    if (!s)
        fail_msg("stage_new: %s", err.msg);
    return s;
}

static int s_forward(stage *s, const stage_row *rows, int n, const float *in, float *out)
{
    llorch_error err = {0};
    int n_out = stage_forward(s, rows, n, in, out, &err);
    if (n_out < 0)
        fail_msg("stage_forward: %s", err.msg);
    return n_out;
}

static const int s_tokens[] = {1, 7, 23, 49, 3, 3, 18, 40, 11, 0, 29, 5};
#define N_TOKENS 12

/* ---- tests ------------------------------------------------------------------------ */

/* The stage against the float64 reference (rounding as an F16 cache does when kv is
 * F16), in every kernel variant: every logit within tol relative, and at least
 * min_close of the 600 within 1e-4. */
static void s_check_reference(kv_type kv, double tol, int min_close)
{
    s_kv = kv;
    s_ref_f16 = kv == KV_TYPE_F16;
    static const struct { uint32_t kv_heads, rope_dim; int tied; } shapes[] = {
        {2, 8, 0}, /* GQA */ {1, 8, 1}, /* MQA, tied output */ {8, 6, 0}, /* plain, partial rope */
    };
    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
        if (kernel_isa_select((kernel_isa)isa, NULL) < 0)
            continue;
        for (size_t sh = 0; sh < 3; sh++) {
            toy_model *t = s_toy_new(TENSOR_F32, shapes[sh].kv_heads, shapes[sh].rope_dim,
                                     shapes[sh].tied, 11 + sh);
            double *want = s_ref_forward(t, s_tokens, N_TOKENS);
            stage *s = s_stage(t, 0, 3, 2, 16, 0);
            stage_row rows[N_TOKENS];
            for (int i = 0; i < N_TOKENS; i++)
                rows[i] = (stage_row){.seq_id = 5, .pos = i, .token = s_tokens[i], .want_logits = true};
            /* the prompt as one batch of 8, then one row per step */
            float logits[N_TOKENS * 50];
            assert_int_equal(s_forward(s, rows, 8, NULL, logits), 8);
            for (int i = 8; i < N_TOKENS; i++)
                assert_int_equal(s_forward(s, &rows[i], 1, NULL, logits + i * 50), 1);
            int close = 0;
            for (int i = 0; i < N_TOKENS * 50; i++) {
                const double diff = fabs(logits[i] - want[i]) / (1 + fabs(want[i]));
                if (diff > tol)
                    fail_msg("%s kv %s shape %zu: logit %d got %.7g want %.7g", kernel_isa_name(isa),
                             kv_type_name(kv), sh, i, logits[i], want[i]);
                close += diff <= 1e-4;
            }
            if (close < min_close)
                fail_msg("%s kv %s shape %zu: %d logits within 1e-4 of the reference, want %d",
                         kernel_isa_name(isa), kv_type_name(kv), sh, close, min_close);
            assert_int_equal(stage_seq_len(s, 5), N_TOKENS);
            stage_free(&s);
            free(want);
            s_toy_free(t);
        }
    }
    kernel_isa_select(kernel_isa_available(KERNEL_ISA_AVX2) ? KERNEL_ISA_AVX2 : KERNEL_ISA_SCALAR,
                      NULL);
    s_kv = KV_TYPE_F32;
    s_ref_f16 = false;
}

static void test_forward_matches_float64_reference(void **state)
{
    (void)state;
    s_check_reference(KV_TYPE_F32, 1e-4, N_TOKENS * 50);
}

/* An F16 cache rounds where ggml rounds for one: against the float64 reference that
 * rounds keys, values, queries and softmax weights to F16 at those points, most logits
 * agree to 1e-4 (seen: 392 to 600 of 600; against the unrounded reference, 105 to
 * 132). The rest differ where float noise moved a
 * value across an F16 rounding boundary (seen up to 1e-3 relative). */
static void test_f16_kv_matches_float64_reference_rounding_as_ggml(void **state)
{
    (void)state;
    s_check_reference(KV_TYPE_F16, 3e-3, 300);
}

/* Three sequences with different prompt lengths, interleaved in one batch and then
 * stepped together, give bit-identical logits to each run alone, with an F32 or an F16
 * cache. */
static void test_batched_sequences_equal_separate_runs(void **state)
{
    (void)state;
    static const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0};
    static const int prompt_len[3] = {5, 2, 7};
    for (size_t run = 0; run < 8; run++) {
        const size_t ti = run % 4;
        s_kv = run < 4 ? KV_TYPE_F32 : KV_TYPE_F16;
        toy_model *t = s_toy_new(types[ti], 2, 8, 0, 99 + ti);
        float alone[3][10][50], together[3][10][50];
        for (int q = 0; q < 3; q++) {
            stage *s = s_stage(t, 0, 3, 1, 16, 0);
            stage_row rows[10];
            for (int i = 0; i < 10; i++)
                rows[i] = (stage_row){.seq_id = 100 + q, .pos = i, .token = s_tokens[i + q],
                                      .want_logits = true};
            s_forward(s, rows, prompt_len[q], NULL, &alone[q][0][0]);
            for (int i = prompt_len[q]; i < 10; i++)
                s_forward(s, &rows[i], 1, NULL, &alone[q][i][0]);
            stage_free(&s);
        }
        stage *s = s_stage(t, 0, 3, 2, 16, 0);
        /* prompts interleaved: row order q0 p0, q1 p0, q2 p0, q0 p1, ... */
        stage_row rows[30];
        int where[30][2], n = 0;
        for (int i = 0; i < 7; i++)
            for (int q = 0; q < 3; q++)
                if (i < prompt_len[q]) {
                    rows[n] = (stage_row){100 + q, i, s_tokens[i + q], true};
                    where[n][0] = q, where[n][1] = i, n++;
                }
        float out[30 * 50];
        assert_int_equal(s_forward(s, rows, n, NULL, out), n);
        for (int r = 0; r < n; r++)
            memcpy(together[where[r][0]][where[r][1]], out + r * 50, sizeof(float) * 50);
        /* then steps with every sequence that still has tokens left, one row each */
        for (int step = 2; step < 10; step++) {
            n = 0;
            for (int q = 0; q < 3; q++)
                if (step >= prompt_len[q]) {
                    rows[n] = (stage_row){100 + q, step, s_tokens[step + q], true};
                    where[n][0] = q, where[n][1] = step, n++;
                }
            if (n == 0)
                continue;
            assert_int_equal(s_forward(s, rows, n, NULL, out), n);
            for (int r = 0; r < n; r++)
                memcpy(together[where[r][0]][where[r][1]], out + r * 50, sizeof(float) * 50);
        }
        assert_memory_equal(alone, together, sizeof alone);
        stage_free(&s);
        s_toy_free(t);
    }
    s_kv = KV_TYPE_F32;
}

/* [0, a) then [a, 3) passing hidden states equals one stage [0, 3), for every a, with
 * an F32 or an F16 cache. */
static void test_layer_split_equals_one_stage(void **state)
{
    (void)state;
    static const enum tensor_type types[] = {TENSOR_F32, TENSOR_Q8_0};
    for (size_t run = 0; run < 4; run++) {
        const size_t ti = run % 2;
        s_kv = run < 2 ? KV_TYPE_F32 : KV_TYPE_F16;
        toy_model *t = s_toy_new(types[ti], 2, 8, 1, 7 + ti);
        stage *whole = s_stage(t, 0, 3, 2, 16, 0);
        stage_row rows[N_TOKENS];
        for (int i = 0; i < N_TOKENS; i++)
            rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = s_tokens[i], .want_logits = i >= 6};
        float want[N_TOKENS * 50];
        assert_int_equal(s_forward(whole, rows, N_TOKENS, NULL, want), 6);
        for (uint32_t a = 1; a < 3; a++) {
            stage *s1 = s_stage(t, 0, a, 1, 16, 0);
            stage *s2 = s_stage(t, a, 3, 2, 16, 0);
            assert_int_equal(stage_out_cols(s1), 64);
            assert_int_equal(stage_out_cols(s2), 50);
            float hidden[N_TOKENS * 64], got[N_TOKENS * 50];
            /* prompt of 6 rows, then single steps */
            assert_int_equal(s_forward(s1, rows, 6, NULL, hidden), 6);
            assert_int_equal(s_forward(s2, rows, 6, hidden, got), 0);
            int n_out = 0;
            for (int i = 6; i < N_TOKENS; i++) {
                s_forward(s1, &rows[i], 1, NULL, hidden);
                n_out += s_forward(s2, &rows[i], 1, hidden, got + n_out * 50);
            }
            assert_int_equal(n_out, 6);
            assert_memory_equal(want, got, sizeof(float) * 6 * 50);
            stage_free(&s1);
            stage_free(&s2);
        }
        stage_free(&whole);
        s_toy_free(t);
    }
    s_kv = KV_TYPE_F32;
}

static void test_batches_larger_than_scratch_run_in_chunks(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 3);
    stage *big = s_stage(t, 0, 3, 2, 16, 0), *small = s_stage(t, 0, 3, 2, 5, 0);
    stage_row rows[N_TOKENS];
    for (int i = 0; i < N_TOKENS; i++)
        rows[i] = (stage_row){.seq_id = 9, .pos = i, .token = s_tokens[i], .want_logits = i % 3 == 0};
    float a[N_TOKENS * 50], b[N_TOKENS * 50];
    assert_int_equal(s_forward(big, rows, N_TOKENS, NULL, a), 4);
    assert_int_equal(s_forward(small, rows, N_TOKENS, NULL, b), 4);
    assert_memory_equal(a, b, sizeof(float) * 4 * 50);
    stage_free(&big);
    stage_free(&small);
    s_toy_free(t);
}

static void test_kv_budget_overflow_is_an_error_not_an_abort(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 5);
    /* room for exactly 2 blocks of 32 positions over 3 layers */
    const size_t block = kv_cache_bytes_per_position(3, 16, KV_TYPE_F32) * KV_BLOCK_POSITIONS;
    stage *s = s_stage(t, 0, 3, 1, 64, 2 * block);
    stage_row rows[64];
    float *out = malloc(64 * 50 * sizeof(float));
    for (int i = 0; i < 64; i++)
        rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = i % 50, .want_logits = false};
    rows[63].want_logits = true;
    assert_int_equal(s_forward(s, rows, 40, NULL, out), 0); /* 2 blocks */
    for (int i = 0; i < 3; i++)
        rows[i] = (stage_row){.seq_id = 2, .pos = i, .token = 4, .want_logits = true};
    llorch_error err = {0};
    /* A full budget is its own kind of failure, not a bad batch: the caller (a worker)
     * answers no_memory on the value, whatever the message says. */
    assert_int_equal(stage_forward(s, rows, 3, NULL, out, &err), LLORCH_ERR_NO_MEMORY);
    assert_non_null(strstr(err.msg, "budget"));
    assert_non_null(strstr(err.msg, "sequence 2"));
    assert_int_equal(stage_seq_len(s, 2), 0);  /* nothing reserved */
    assert_int_equal(stage_seq_len(s, 1), 40); /* the other sequence untouched */
    assert_int_equal(stage_free_seq(s, 1), 1);
    assert_int_equal(stage_free_seq(s, 1), 0);
    assert_int_equal(stage_forward(s, rows, 3, NULL, out, &err), 3);
    /* a budget below one block is refused at creation */
    stage_opts opts = {.threads = 1, .kv_budget_bytes = block - 1, .max_batch_rows = 4};
    assert_null(stage_new(t->m, 0, 3, &opts, &err));
    assert_non_null(strstr(err.msg, "does not hold one block"));
    stage_free(&s);
    free(out);
    s_toy_free(t);
}

/* An F16 position costs half an F32 one, and a budget holds twice the positions. */
static void test_f16_kv_budget_counts_half_the_bytes(void **state)
{
    (void)state;
    s_kv = KV_TYPE_F32;
    const size_t f32 = kv_cache_bytes_per_position(3, 16, KV_TYPE_F32);
    assert_int_equal(f32, 3 * 2 * 16 * sizeof(float));
    assert_int_equal(kv_cache_bytes_per_position(3, 16, KV_TYPE_F16), f32 / 2);
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 5);
    stage_row rows[64];
    float *out = malloc(64 * 50 * sizeof(float));
    for (int i = 0; i < 64; i++)
        rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = i % 50, .want_logits = i == 63};
    llorch_error err = {0};
    /* one F32 block of bytes: 32 positions of F32, 64 of F16 */
    stage *s32 = s_stage(t, 0, 3, 1, 64, f32 * KV_BLOCK_POSITIONS);
    assert_int_equal(stage_forward(s32, rows, 64, NULL, out, &err), LLORCH_ERR_NO_MEMORY);
    assert_int_equal(s_forward(s32, rows, 32, NULL, out), 0);
    s_kv = KV_TYPE_F16;
    stage *s16 = s_stage(t, 0, 3, 1, 64, f32 * KV_BLOCK_POSITIONS);
    assert_int_equal(s_forward(s16, rows, 64, NULL, out), 1);
    rows[0] = (stage_row){.seq_id = 2, .pos = 0, .token = 1, .want_logits = true};
    assert_int_equal(stage_forward(s16, rows, 1, NULL, out, &err), LLORCH_ERR_NO_MEMORY);
    s_kv = KV_TYPE_F32;
    kv_type parsed;
    assert_int_equal(kv_type_parse("F16", &parsed, &err), 0);
    assert_int_equal(parsed, KV_TYPE_F16);
    assert_int_equal(kv_type_parse("f32", &parsed, &err), 0);
    assert_int_equal(parsed, KV_TYPE_F32);
    assert_int_equal(kv_type_parse("q8_0", &parsed, &err), -1);
    assert_non_null(strstr(err.msg, "f32 or f16"));
    stage_free(&s32);
    stage_free(&s16);
    free(out);
    s_toy_free(t);
}

static void test_full_sequence_slots_are_no_memory_too_many_in_a_batch_is_not(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 6);
    stage_opts opts = {.threads = 1, .max_batch_rows = 8, .max_seqs = 2};
    llorch_error err = {0};
    stage *s = stage_new(t->m, 0, 3, &opts, &err);
    if (!s)
        fail_msg("stage_new: %s", err.msg);
    float out[8 * 50];
    stage_row one = {1, 0, 2, true}, two = {2, 0, 3, true}, three = {3, 0, 4, true};
    assert_int_equal(stage_forward(s, &one, 1, NULL, out, &err), 1);
    assert_int_equal(stage_forward(s, &two, 1, NULL, out, &err), 1);
    /* Both slots hold a sequence: a third one is a full cache (retry after a free). */
    assert_int_equal(stage_forward(s, &three, 1, NULL, out, &err), LLORCH_ERR_NO_MEMORY);
    assert_non_null(strstr(err.msg, "at most 2 sequences"));
    assert_int_equal(stage_seq_len(s, 3), 0);
    assert_int_equal(stage_free_seq(s, 1), 1);
    assert_int_equal(stage_forward(s, &three, 1, NULL, out, &err), 1);
    /* One batch of more sequences than the stage ever holds is a bad batch: -1. */
    stage_row many[3] = {{4, 0, 2, true}, {5, 0, 2, true}, {6, 0, 2, true}};
    assert_int_equal(stage_forward(s, many, 3, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "more than 2 sequences"));
    stage_free(&s);
    s_toy_free(t);
}

static void test_bad_rows_are_refused_and_change_nothing(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 6);
    stage *s = s_stage(t, 0, 3, 1, 8, 0);
    float out[8 * 50];
    llorch_error err = {0};
    stage_row bad_token = {1, 0, 50, true};
    assert_int_equal(stage_forward(s, &bad_token, 1, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    stage_row gap = {1, 3, 2, true};
    assert_int_equal(stage_forward(s, &gap, 1, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "follows no cached position"));
    stage_row skip[2] = {{1, 0, 2, true}, {1, 2, 2, true}};
    assert_int_equal(stage_forward(s, skip, 2, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "consecutive"));
    stage_row far = {1, 128, 2, true};
    assert_int_equal(stage_forward(s, &far, 1, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "context"));
    assert_int_equal(stage_seq_len(s, 1), 0);
    /* a later stage without hidden input */
    stage *s2 = s_stage(t, 1, 3, 1, 8, 0);
    stage_row ok = {1, 0, 2, true};
    assert_int_equal(stage_forward(s2, &ok, 1, NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "hidden"));
    stage_free(&s2);
    stage_free(&s);
    s_toy_free(t);
}

static void test_missing_or_misshapen_tensors_are_named(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 8);
    llorch_error err = {0};
    model_weights w;
    gguf_tensor *k = &t->tensors[3]; /* blk.0.attn_k.weight */
    assert_string_equal(k->name, "blk.0.attn_k.weight");
    k->ne[1] = 32;
    assert_int_equal(model_weights_bind(&w, &t->cfg, t->tensors, t->n_tensors, 0, 3, &err), -1);
    assert_non_null(strstr(err.msg, "blk.0.attn_k.weight has shape [64, 32"));
    assert_non_null(strstr(err.msg, "expected [64, 16]"));
    k->ne[1] = 16;
    k->name[0] = 'x';
    assert_int_equal(model_weights_bind(&w, &t->cfg, t->tensors, t->n_tensors, 0, 3, &err), -1);
    assert_non_null(strstr(err.msg, "blk.0.attn_k.weight is missing"));
    /* a stage over layers 1..2 does not need layer 0 */
    assert_int_equal(model_weights_bind(&w, &t->cfg, t->tensors, t->n_tensors, 1, 3, &err), 0);
    assert_null(w.token_embd.data);
    assert_non_null(w.output.data);
    model_weights_free(&w);
    assert_int_equal(model_weights_bind(&w, &t->cfg, t->tensors, t->n_tensors, 2, 2, &err), -1);
    k->name[0] = 'b';
    s_toy_free(t);
}

typedef struct trace_log {
    int calls;
    int saw_kq_softmax;
    float logits_copy[50];
    double softmax_row_sum;
} trace_log;

static void s_trace(void *user, const stage_trace_tensor *t)
{
    trace_log *log = user;
    log->calls++;
    if (!strcmp(t->name, "kq_softmax") && t->layer == 1) {
        /* [n_kv, n, n_heads]: row 2 of head 3 sums to 1 over positions 0..2 */
        log->saw_kq_softmax = t->ne[0] == 4 && t->ne[1] == 4 && t->ne[2] == 8;
        const float *row = t->data + (3 * t->ne[1] + 2) * t->ne[0];
        log->softmax_row_sum = row[0] + row[1] + row[2] + row[3];
    }
    if (!strcmp(t->name, "logits"))
        memcpy(log->logits_copy, t->data + (t->ne[1] - 1) * 50, sizeof log->logits_copy);
}

static void test_vocabulary_only_file_is_refused_clearly(void **state)
{
    (void)state;
    llorch_error err = {0};
    model *m = model_open(test_shared_path("vocab/ggml-vocab-llama-spm.gguf"), &err);
    assert_null(m);
    assert_non_null(strstr(err.msg, "has no tensors"));
}

static void test_trace_hook_sees_named_tensors(void **state)
{
    (void)state;
    toy_model *t = s_toy_new(TENSOR_F32, 2, 8, 0, 10);
    trace_log log = {0};
    stage_opts opts = {.threads = 2, .max_batch_rows = 8, .trace = s_trace, .trace_user = &log};
    stage *s = stage_new(t->m, 0, 3, &opts, NULL);
    assert_non_null(s);
    stage_row rows[4];
    for (int i = 0; i < 4; i++)
        rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = s_tokens[i], .want_logits = i == 3};
    float out[50];
    assert_int_equal(s_forward(s, rows, 4, NULL, out), 1);
    assert_int_equal(log.calls, 3 * 14 + 2);
    assert_true(log.saw_kq_softmax);
    assert_true(fabs(log.softmax_row_sum - 1.0) < 1e-6);
    assert_memory_equal(log.logits_copy, out, sizeof out);
    stage_free(&s);
    s_toy_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_float64_reference),
        cmocka_unit_test(test_f16_kv_matches_float64_reference_rounding_as_ggml),
        cmocka_unit_test(test_f16_kv_budget_counts_half_the_bytes),
        cmocka_unit_test(test_batched_sequences_equal_separate_runs),
        cmocka_unit_test(test_layer_split_equals_one_stage),
        cmocka_unit_test(test_batches_larger_than_scratch_run_in_chunks),
        cmocka_unit_test(test_kv_budget_overflow_is_an_error_not_an_abort),
        cmocka_unit_test(test_full_sequence_slots_are_no_memory_too_many_in_a_batch_is_not),
        cmocka_unit_test(test_bad_rows_are_refused_and_change_nothing),
        cmocka_unit_test(test_missing_or_misshapen_tensors_are_named),
        cmocka_unit_test(test_trace_hook_sees_named_tensors),
        cmocka_unit_test(test_vocabulary_only_file_is_refused_clearly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
