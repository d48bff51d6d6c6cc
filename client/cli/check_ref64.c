/* check_ref64.c - the float64 reference forward pass of `llorch check` (llama2.c style). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fp16.h"

/* Scratch of one run. Activations are row-major (T, features): row t is token t, which
 * is also ggml's [features, T] order. */
typedef struct ref64 {
    const gguf_file *f;
    const model_config *cfg;
    bool emulate_act;
    int n_tokens;
    double *row;  /* (max cols) one dequantized weight row */
    double *act;  /* (T, max cols) activations rounded for the weight type */
} ref64;

/* The tensor called name, which must be cols x rows (GGUF ne[0] = cols). */
static const gguf_tensor *s_tensor(const gguf_file *f, const char *name, uint64_t cols,
                                   uint64_t rows, llorch_error *err)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        llorch_error_set(err, "tensor %s is missing", name);
        return NULL;
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        llorch_error_set(err, "tensor %s is [%llu, %llu, %llu, %llu], expected [%llu, %llu]", name,
                         (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                         (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                         (unsigned long long)cols, (unsigned long long)rows);
        return NULL;
    }
    return t;
}

/* Row `row` of t as exact doubles (every supported type converts exactly). */
static void s_dequant_row(const gguf_tensor *t, uint64_t row, double *out)
{
    uint64_t n = t->ne[0];
    const uint8_t *p = (const uint8_t *)t->data + row * tensor_row_bytes(t->type, n);
    switch (t->type) {
    case TENSOR_F32:
        for (uint64_t i = 0; i < n; i++) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            out[i] = v;
        }
        break;
    case TENSOR_F16:
    case TENSOR_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->type == TENSOR_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
        }
        break;
    case TENSOR_Q8_0:
        for (uint64_t b = 0; b < n / Q8_0_BLOCK; b++) {
            const uint8_t *blk = p + b * (2 + Q8_0_BLOCK);
            uint16_t d16;
            memcpy(&d16, blk, 2);
            double d = fp16_to_f32(d16);
            for (int i = 0; i < Q8_0_BLOCK; i++)
                out[b * Q8_0_BLOCK + (uint64_t)i] = d * (double)(int8_t)blk[2 + i];
        }
        break;
    }
}

/* out = x rounded as ggml rounds a matmul's activations for weights of `type`: F32
 * as they are, F16/BF16 to that format, Q8_0 to blocks of 32 with scale max|x|/127
 * (stored as F16) and round-to-nearest quants, then expanded back to doubles. */
static void s_round_act(enum tensor_type type, bool emulate, const double *x, int64_t n, double *out)
{
    if (!emulate || type == TENSOR_F32) {
        memcpy(out, x, (size_t)n * sizeof *out);
        return;
    }
    if (type == TENSOR_F16 || type == TENSOR_BF16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = type == TENSOR_F16 ? fp16_to_f32(f32_to_fp16((float)x[i]))
                                        : bf16_to_f32(f32_to_bf16((float)x[i]));
        return;
    }
    for (int64_t b = 0; b < n; b += Q8_0_BLOCK) {
        double amax = 0;
        for (int i = 0; i < Q8_0_BLOCK; i++)
            amax = fmax(amax, fabs(x[b + i]));
        double id = amax > 0 ? 127.0 / amax : 0.0;
        double d = fp16_to_f32(f32_to_fp16((float)(amax / 127.0)));
        for (int i = 0; i < Q8_0_BLOCK; i++)
            out[b + i] = d * nearbyint(x[b + i] * id);
    }
}

/* out (T, rows) = x (T, cols) times w's rows, each dot product in double. */
static void s_matmul(ref64 *r, const gguf_tensor *w, const double *x, double *out)
{
    int64_t cols = (int64_t)w->ne[0], rows = (int64_t)w->ne[1];
    for (int t = 0; t < r->n_tokens; t++)
        s_round_act(w->type, r->emulate_act, x + (size_t)t * (size_t)cols, cols,
                    r->act + (size_t)t * (size_t)cols);
    for (int64_t i = 0; i < rows; i++) {
        s_dequant_row(w, (uint64_t)i, r->row);
        for (int t = 0; t < r->n_tokens; t++) {
            const double *a = r->act + (size_t)t * (size_t)cols;
            double sum = 0;
            for (int64_t c = 0; c < cols; c++)
                sum += r->row[c] * a[c];
            out[(size_t)t * (size_t)rows + (size_t)i] = sum;
        }
    }
}

/* out (T, n) = x / sqrt(mean(x^2) + eps) * weight, row by row. */
static void s_rmsnorm(ref64 *r, const gguf_tensor *w, const double *x, double *out, int64_t n)
{
    s_dequant_row(w, 0, r->row);
    for (int t = 0; t < r->n_tokens; t++) {
        const double *xr = x + (size_t)t * (size_t)n;
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss / (double)n + (double)r->cfg->norm_eps);
        for (int64_t i = 0; i < n; i++)
            out[(size_t)t * (size_t)n + (size_t)i] = xr[i] * inv * r->row[i];
    }
}

/* Rotates adjacent pairs (x[2i], x[2i+1]) of the first rope_dim dims of every head of
 * token t at position t by t * base^(-2i / rope_dim). x is (T, n_heads * head_dim). */
static void s_rope(const model_config *cfg, double *x, int n_tokens, uint32_t n_heads)
{
    for (int t = 0; t < n_tokens; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            double *v = x + ((size_t)t * n_heads + h) * cfg->head_dim;
            for (uint32_t i = 0; i < cfg->rope_dim / 2; i++) {
                double theta = t * pow((double)cfg->rope_freq_base, -2.0 * i / cfg->rope_dim);
                double c = cos(theta), s = sin(theta);
                double x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c - x1 * s;
                v[2 * i + 1] = x0 * s + x1 * c;
            }
        }
}

/* Copies the first n_prompt tokens of x (T, features) into slot as [features, n_prompt]
 * (or [head_dim, heads, n_prompt] when heads > 0). */
static int s_record(check_trace *out, enum check_slot slot, const double *x, int64_t features,
                    int64_t head_dim, int n_prompt, llorch_error *err)
{
    check_tensor *t = &out->layer0[slot];
    int rc = head_dim > 0 ? check_tensor_alloc(t, head_dim, features / head_dim, n_prompt, 1, err)
                          : check_tensor_alloc(t, features, n_prompt, 1, 1, err);
    if (rc != 0)
        return -1;
    memcpy(t->data, x, (size_t)features * (size_t)n_prompt * sizeof *x);
    return 0;
}

/* Causal attention of every token over the keys up to it. q (T, q_dim) and k, v
 * (T, kv_dim) after RoPE; out (T, q_dim). Query head h reads KV head h / group. When
 * kq and kq_softmax are given ([P, P, n_heads], P = n_prompt) they receive the raw
 * scores and the probabilities of the first P tokens. */
static void s_attention(const model_config *cfg, int n_tokens, const double *q, const double *k,
                        const double *v, double *out, double *scores, int n_prompt, double *kq,
                        double *kq_softmax)
{
    uint32_t hd = cfg->head_dim, group = cfg->n_heads / cfg->n_kv_heads;
    double scale = 1.0 / sqrt((double)hd);
    for (int t = 0; t < n_tokens; t++)
        for (uint32_t h = 0; h < cfg->n_heads; h++) {
            const double *qv = q + (size_t)t * cfg->q_dim + (size_t)h * hd;
            uint32_t kvh = h / group;
            double max = -INFINITY;
            for (int j = 0; j <= t; j++) {
                const double *kv = k + (size_t)j * cfg->kv_dim + (size_t)kvh * hd;
                double dot = 0;
                for (uint32_t d = 0; d < hd; d++)
                    dot += qv[d] * kv[d];
                if (kq && t < n_prompt)
                    kq[((size_t)h * (size_t)n_prompt + (size_t)t) * (size_t)n_prompt + (size_t)j] = dot;
                scores[j] = dot * scale;
                max = fmax(max, scores[j]);
            }
            double sum = 0;
            for (int j = 0; j <= t; j++) {
                scores[j] = exp(scores[j] - max);
                sum += scores[j];
            }
            double *o = out + (size_t)t * cfg->q_dim + (size_t)h * hd;
            memset(o, 0, hd * sizeof *o);
            for (int j = 0; j <= t; j++) {
                double p = scores[j] / sum;
                if (kq_softmax && t < n_prompt)
                    kq_softmax[((size_t)h * (size_t)n_prompt + (size_t)t) * (size_t)n_prompt + (size_t)j] = p;
                const double *vv = v + (size_t)j * cfg->kv_dim + (size_t)kvh * hd;
                for (uint32_t d = 0; d < hd; d++)
                    o[d] += p * vv[d];
            }
        }
}

int ref64_run(const gguf_file *f, const model_config *cfg, const int32_t *tokens, int n_tokens,
              int n_prompt, bool emulate_act, check_trace *out, llorch_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_tokens < 1 || n_prompt < 1 || n_prompt > n_tokens)
        return llorch_error_set(err, "float64 reference: %d tokens, %d in the prompt", n_tokens, n_prompt);
    size_t T = (size_t)n_tokens, dim = cfg->dim, ffn = cfg->ffn_dim, vocab = cfg->vocab_size;
    const gguf_tensor *embd = s_tensor(f, "token_embd.weight", dim, vocab, err);
    const gguf_tensor *onorm = embd ? s_tensor(f, "output_norm.weight", dim, 1, err) : NULL;
    const gguf_tensor *head = gguf_find_tensor(f, "output.weight") ? s_tensor(f, "output.weight", dim, vocab, err)
                                                                   : embd; /* tied */
    if (!embd || !onorm || !head)
        return llorch_error_prefix(err, "float64 reference");
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= cfg->vocab_size)
            return llorch_error_set(err, "float64 reference: token %d is outside the vocabulary of %u",
                                    tokens[i], cfg->vocab_size);

    size_t max_cols = dim > ffn ? dim : ffn;
    if (cfg->q_dim > max_cols)
        max_cols = cfg->q_dim;
    ref64 r = {.f = f, .cfg = cfg, .emulate_act = emulate_act, .n_tokens = n_tokens};
    r.row = malloc(max_cols * sizeof(double));
    r.act = malloc(T * max_cols * sizeof(double));
    double *x = malloc(T * dim * sizeof(double));       /* residual stream */
    double *xn = malloc(T * dim * sizeof(double));      /* normed */
    double *q = malloc(T * cfg->q_dim * sizeof(double));
    double *k = malloc(T * cfg->kv_dim * sizeof(double));
    double *v = malloc(T * cfg->kv_dim * sizeof(double));
    double *att = malloc(T * cfg->q_dim * sizeof(double));
    double *proj = malloc(T * dim * sizeof(double));
    double *gate = malloc(T * ffn * sizeof(double));
    double *up = malloc(T * ffn * sizeof(double));
    double *scores = malloc(T * sizeof(double));
    out->logits = malloc(T * vocab * sizeof(double));
    int rc = -1;
    if (!r.row || !r.act || !x || !xn || !q || !k || !v || !att || !proj || !gate || !up || !scores ||
        !out->logits) {
        llorch_error_set(err, "float64 reference: out of memory for %d tokens", n_tokens);
        goto done;
    }
    out->n_prompt = n_prompt;
    out->n_tokens = n_tokens;
    out->n_vocab = (int)vocab;

    for (size_t t = 0; t < T; t++)
        s_dequant_row(embd, (uint64_t)tokens[t], x + t * dim);

    for (uint32_t l = 0; l < cfg->n_layers; l++) {
        char name[96];
#define LAYER_TENSOR(var, suffix, cols, rows)                                         \
    snprintf(name, sizeof name, "blk.%u." suffix ".weight", l);                       \
    const gguf_tensor *var = s_tensor(f, name, cols, rows, err);                      \
    if (!var) {                                                                        \
        llorch_error_prefix(err, "float64 reference");                                \
        goto done;                                                                     \
    }
        LAYER_TENSOR(attn_norm, "attn_norm", dim, 1)
        LAYER_TENSOR(wq, "attn_q", dim, cfg->q_dim)
        LAYER_TENSOR(wk, "attn_k", dim, cfg->kv_dim)
        LAYER_TENSOR(wv, "attn_v", dim, cfg->kv_dim)
        LAYER_TENSOR(wo, "attn_output", cfg->q_dim, dim)
        LAYER_TENSOR(ffn_norm, "ffn_norm", dim, 1)
        LAYER_TENSOR(w_gate, "ffn_gate", dim, ffn)
        LAYER_TENSOR(w_up, "ffn_up", dim, ffn)
        LAYER_TENSOR(w_down, "ffn_down", ffn, dim)
#undef LAYER_TENSOR
        bool rec = l == 0;
        s_rmsnorm(&r, attn_norm, x, xn, (int64_t)dim);
        s_matmul(&r, wq, xn, q);
        s_matmul(&r, wk, xn, k);
        s_matmul(&r, wv, xn, v);
        if (rec && (s_record(out, CHECK_ATTN_NORM, xn, (int64_t)dim, 0, n_prompt, err) ||
                    s_record(out, CHECK_Q, q, cfg->q_dim, cfg->head_dim, n_prompt, err) ||
                    s_record(out, CHECK_K, k, cfg->kv_dim, cfg->head_dim, n_prompt, err) ||
                    s_record(out, CHECK_V, v, cfg->kv_dim, cfg->head_dim, n_prompt, err)))
            goto done;
        s_rope(cfg, q, n_tokens, cfg->n_heads);
        s_rope(cfg, k, n_tokens, cfg->n_kv_heads);
        double *kq = NULL, *kq_softmax = NULL;
        if (rec) {
            if (s_record(out, CHECK_Q_ROPE, q, cfg->q_dim, cfg->head_dim, n_prompt, err) ||
                s_record(out, CHECK_K_ROPE, k, cfg->kv_dim, cfg->head_dim, n_prompt, err) ||
                check_tensor_alloc(&out->layer0[CHECK_KQ], n_prompt, n_prompt, cfg->n_heads, 1, err) ||
                check_tensor_alloc(&out->layer0[CHECK_KQ_SOFTMAX], n_prompt, n_prompt, cfg->n_heads, 1, err))
                goto done;
            kq = out->layer0[CHECK_KQ].data;
            kq_softmax = out->layer0[CHECK_KQ_SOFTMAX].data;
            /* Masked scores (key after query) are -inf, as llorch's trace shows them. */
            for (int64_t i = 0; i < check_tensor_count(&out->layer0[CHECK_KQ]); i++)
                kq[i] = -INFINITY;
        }
        s_attention(cfg, n_tokens, q, k, v, att, scores, n_prompt, kq, kq_softmax);
        s_matmul(&r, wo, att, proj);
        for (size_t i = 0; i < T * dim; i++)
            x[i] += proj[i];
        if (rec && (s_record(out, CHECK_ATTN_OUT, att, cfg->q_dim, 0, n_prompt, err) ||
                    s_record(out, CHECK_ATTN_PROJ, proj, (int64_t)dim, 0, n_prompt, err)))
            goto done;

        s_rmsnorm(&r, ffn_norm, x, xn, (int64_t)dim);
        s_matmul(&r, w_gate, xn, gate);
        s_matmul(&r, w_up, xn, up);
        for (size_t i = 0; i < T * ffn; i++)
            gate[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
        s_matmul(&r, w_down, gate, proj);
        for (size_t i = 0; i < T * dim; i++)
            x[i] += proj[i];
        if (rec && (s_record(out, CHECK_FFN_OUT, proj, (int64_t)dim, 0, n_prompt, err) ||
                    s_record(out, CHECK_L_OUT, x, (int64_t)dim, 0, n_prompt, err)))
            goto done;
    }
    s_rmsnorm(&r, onorm, x, xn, (int64_t)dim);
    s_matmul(&r, head, xn, out->logits);
    rc = 0;
done:
    free(r.row);
    free(r.act);
    free(x);
    free(xn);
    free(q);
    free(k);
    free(v);
    free(att);
    free(proj);
    free(gate);
    free(up);
    free(scores);
    if (rc != 0)
        check_trace_free(out);
    return rc;
}
