/* stage.h - runs a model's layer range [first, last) over a batch of rows. */
#ifndef LLORCH_STAGE_H
#define LLORCH_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "kv_cache.h"
#include "model.h"

/* One row of a batch: a token of a sequence at a position. Rows of one sequence in a
 * batch must be consecutive positions in order, the first one at most the number of
 * positions the stage already holds for that sequence (a lower one rewinds it). */
typedef struct stage_row {
    uint64_t seq_id;  /* the session */
    int32_t pos;      /* 0-based position in the sequence */
    int32_t token;    /* input token id (used when the stage starts at layer 0) */
    bool want_logits; /* the last stage returns logits for this row */
} stage_row;

/* An intermediate tensor shown to the trace hook. Shapes in ggml order (ne[0] varies
 * fastest), named like llama.cpp's graph tensors without the "-L" suffix:
 *   per layer: attn_norm [dim, n] (after the norm weight), q [head_dim, n_heads, n],
 *   k and v [head_dim, n_kv_heads, n] (before RoPE), q_rope, k_rope (same shapes),
 *   kq [n_kv, n, n_heads] (raw q.k, before scale; masked entries -inf),
 *   kq_softmax [n_kv, n, n_heads] (masked entries 0), attn_out [q_dim, n] (before wo),
 *   attn_proj [dim, n] (after wo), ffn_inp [dim, n] (residual after attention),
 *   ffn_norm [dim, n], ffn_out [dim, n] (after ffn_down), l_out [dim, n];
 *   final (layer -1): result_norm [dim, n_out], logits [vocab, n_out];
 * n is the rows of the batch (or of a chunk of it, see max_batch_rows) and n_kv the
 * highest position in it plus one. Data is valid during the call only. */
typedef struct stage_trace_tensor {
    const char *name;
    int layer; /* model layer index, -1 for the final norm and logits */
    int n_dims;
    int64_t ne[4];
    const float *data;
} stage_trace_tensor;

typedef void (*stage_trace_fn)(void *user, const stage_trace_tensor *t);

typedef struct stage_opts {
    int threads;            /* threads of the stage's pool (>= 1) */
    size_t kv_budget_bytes; /* memory for keys and values of all sequences (0: one
                               sequence of n_ctx positions) */
    kv_type kv_type;        /* KV_TYPE_F32 (0, exact) or KV_TYPE_F16: half the bytes, and
                               attention with llama.cpp's arithmetic for an F16 cache (q
                               and the softmax weights rounded to F16 for the products) */
    int max_batch_rows;     /* scratch is sized for this many rows; larger batches are run
                               in chunks of this many */
    int max_seqs;           /* sequences held at once (0: 64) */
    int n_ctx;              /* positions per sequence (0: the model's context_length) */
    stage_trace_fn trace;   /* NULL: no tracing (and no cost) */
    void *trace_user;
} stage_opts;

typedef struct stage stage;

/* Binds layers [first, last) of m (plus the embedding when first == 0, the final norm
 * and output head when last == n_layers), allocates all scratch for max_batch_rows
 * rows, the KV cache within the budget, and starts the thread pool. m must outlive the
 * stage. NULL with err on a bad range, a missing or misshapen tensor, or a budget that
 * does not hold one KV block. Free with stage_free. */
stage *stage_new(const model *m, uint32_t first, uint32_t last, const stage_opts *opts,
                 llorch_error *err);

/* Stops the pool, frees the stage and sets *s to NULL. Safe on NULL. */
void stage_free(stage **s);

/* Runs the batch rows[0..n_rows) through the stage's layers.
 *   in_hidden: n_rows x dim floats when first > 0 (NULL when first == 0: the tokens are
 *              embedded).
 *   out:       when last < n_layers, n_rows x dim hidden states; else n_out x vocab_size
 *              logits, one row per row with want_logits, in batch order.
 * Returns n_out (the rows written to out). On failure err is set and the cache is
 * unchanged: LLORCH_ERR_NO_MEMORY when the KV cache cannot hold the batch (its budget's
 * blocks or its max_seqs slots are taken; the message names the sequence), -1 when a
 * token is out of range, positions do not follow each other, a position passes n_ctx
 * or the batch has more than max_seqs sequences. Allocates nothing unless a trace hook
 * is set. */
int stage_forward(stage *s, const stage_row *rows, int n_rows, const float *in_hidden, float *out,
                  llorch_error *err);

/* Drops a sequence's keys and values. Returns 1 when the stage held it, 0 when not. */
int stage_free_seq(stage *s, uint64_t seq_id);

/* Positions the stage holds for seq_id (0 when none). */
int32_t stage_seq_len(const stage *s, uint64_t seq_id);

/* Floats per output row: vocab_size for the last stage, dim otherwise. */
int64_t stage_out_cols(const stage *s);

#endif
