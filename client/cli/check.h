/* check.h - the pieces of `llorch check`: traced tensors, the float64 reference, llama-dump. */
#ifndef LLORCH_CHECK_H
#define LLORCH_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"
#include "model.h"

/* The layer-0 tensors the checkpoints compare, in ggml order (ne[0] fastest), for the
 * T tokens of the prompt:
 *   attn_norm [dim, T]; q [head_dim, n_heads, T]; k, v [head_dim, n_kv_heads, T]
 *   (before RoPE); q_rope, k_rope (same shapes); kq [T, T, n_heads] (raw q.k of query
 *   t and key j at (j, t, h), only j <= t meaningful); kq_softmax [T, T, n_heads]
 *   (scaled, masked: zero past t); attn_out [q_dim, T] (heads concatenated, before
 *   wo); attn_proj [dim, T] (after wo); ffn_out [dim, T]; l_out [dim, T]. */
enum check_slot {
    CHECK_ATTN_NORM,
    CHECK_Q,
    CHECK_K,
    CHECK_V,
    CHECK_Q_ROPE,
    CHECK_K_ROPE,
    CHECK_KQ,
    CHECK_KQ_SOFTMAX,
    CHECK_ATTN_OUT,
    CHECK_ATTN_PROJ,
    CHECK_FFN_OUT,
    CHECK_L_OUT,
    CHECK_SLOT_COUNT
};

/* A dense tensor of doubles; data NULL when the side did not produce it. */
typedef struct check_tensor {
    int64_t ne[4];
    double *data; /* ne[0]*ne[1]*ne[2]*ne[3] values, ne[0] fastest */
} check_tensor;

/* What one side (llorch, llama.cpp or the float64 reference) computed. */
typedef struct check_trace {
    check_tensor layer0[CHECK_SLOT_COUNT]; /* for the first n_prompt tokens */
    int n_prompt;
    int n_tokens;   /* rows of logits (the prompt, possibly with a continuation) */
    int n_vocab;
    double *logits; /* (n_tokens, n_vocab) */
} check_trace;

/* "attn_norm", "q", ... as stage.h names the traced tensors. */
const char *check_slot_name(enum check_slot slot);

/* The slot called name (stage.h's names), or -1. */
int check_slot_find(const char *name);

/* The shape (ne[0..3]) of a slot for n_prompt tokens, as listed above. */
void check_expected_shape(const model_config *cfg, enum check_slot slot, int64_t n_prompt, int64_t ne[4]);

/* Allocates t->data for shape ne (zeroed) after freeing what it held. -1 with err when
 * out of memory. */
int check_tensor_alloc(check_tensor *t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3,
                       llorch_error *err);

/* Number of values of t. */
int64_t check_tensor_count(const check_tensor *t);

/* Frees every buffer of tr and zeroes it. Safe on a zeroed struct. */
void check_trace_free(check_trace *tr);

/* The result of comparing values against a reference. */
typedef struct check_diff {
    double max_abs;   /* max |a - b| */
    double max_rel;   /* max |a - b| / max(|b|, 1e-3 * max|b|): relative to each value,
                         with a floor so that values near zero do not dominate */
    double ref_scale; /* max |b| */
    int64_t worst;    /* index of the largest |a - b| */
    int64_t n;        /* values compared */
    bool finite;      /* no NaN or infinity met on either side */
} check_diff;

/* Compares a[0..n) with the reference b[0..n). mask (NULL = all) selects the indices
 * to compare. Cannot fail. */
check_diff check_compare(const double *a, const double *b, int64_t n, const bool *mask);

/* Merges d into acc (max of the maxima, sum of the counts). */
void check_diff_merge(check_diff *acc, const check_diff *d);

/* The float64 reference: an independent forward pass over the GGUF file's weights,
 * dequantized to double, with every sum in double. Where ggml rounds activations to
 * the weight's dot-product type (F16 and BF16 weights take F16/BF16 activations, Q8_0
 * weights take activations quantized to Q8_0 per block of 32, scale max|x|/127 stored
 * as F16), the reference does the same rounding when emulate_act is true, so that it
 * computes what llama.cpp computes; everything else is exact.
 * Runs tokens[0..n_tokens) as one causal sequence from position 0, fills out->logits
 * for every position and out->layer0 for the first n_prompt positions.
 * -1 with err when a tensor is missing or misshapen, or memory runs out. */
int ref64_run(const gguf_file *f, const model_config *cfg, const int32_t *tokens, int n_tokens,
              int n_prompt, bool emulate_act, check_trace *out, llorch_error *err);

/* Finds the llama-dump binary: $LLORCH_LLAMA_DUMP when set (it must be executable),
 * else build/ref/llama-dump under the current directory, else ../ref/llama-dump beside
 * the running binary. Returns 1 with its path in path, 0 when there is none (why in
 * err: the places looked at). */
int dump_find(char *path, size_t cap, llorch_error *err);

/* Runs llama-dump on tokens[0..n_tokens) into dir (created by llama-dump), F32 KV,
 * flash attention off. match: NULL keeps llama-dump's default (layer 0 and the final
 * tensors), else its --match regex. Its output goes to dir/llama-dump.log. -1 with
 * err (the log's last line) when it fails. */
int dump_run(const char *bin, const char *model_path, const int32_t *tokens, int n_tokens,
             int threads, const char *match, const char *dir, llorch_error *err);

/* Reads what dump_run wrote into out: the logits of every position, and the layer-0
 * tensors (cut to the n_prompt tokens) when with_layer0 is true. -1 with err when a
 * file or tensor is missing or has another shape than cfg implies. */
int dump_load(const char *dir, const model_config *cfg, int n_prompt, bool with_layer0,
              check_trace *out, llorch_error *err);

/* "attn_norm-0 (MUL)": the llama.cpp graph tensor (name and op) a slot is compared
 * with. Static storage; never NULL. */
const char *dump_source_name(enum check_slot slot);

/* Removes dir and the files in it (one level, as dump_run leaves it). */
void dump_remove(const char *dir);

#endif
