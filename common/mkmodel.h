/* mkmodel.h - random-weight Llama models written as GGUF v3 (llama.cpp loads them). */
#ifndef LLORCH_MKMODEL_H
#define LLORCH_MKMODEL_H

#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* What to generate. Matrices are in `type`; norm weights are always F32 near 1.0.
 * Weights are N(0, std) (approximately normal, see rng.h), output.weight N(0, out_std):
 * a large out_std makes the next-token distribution sharp, so greedy decoding does not
 * flip on rounding noise. The same config and seed give the same bytes on every run
 * and for every thread count. */
typedef struct mkmodel_config {
    const char *name;       /* general.name */
    uint32_t dim;           /* llama.embedding_length */
    uint32_t n_layers;      /* llama.block_count */
    uint32_t n_heads;       /* llama.attention.head_count; dim / n_heads = head_dim (even) */
    uint32_t n_kv_heads;    /* llama.attention.head_count_kv; divides n_heads */
    uint32_t ffn_dim;       /* llama.feed_forward_length */
    uint32_t ctx;           /* llama.context_length */
    uint32_t vocab_size;    /* size of the built-in vocabulary (ignored with vocab_path) */
    const char *vocab_path; /* a GGUF whose tokenizer.* keys are copied; NULL: built-in */
    enum tensor_type type;  /* TENSOR_F32, TENSOR_F16 or TENSOR_Q8_0 */
    uint64_t seed;
    float std;        /* every matrix but output.weight */
    float out_std;    /* output.weight */
    float norm_std;   /* norm weights are 1 + N(0, norm_std) */
    float rope_theta; /* llama.rope.freq_base */
    float rms_eps;    /* llama.attention.layer_norm_rms_epsilon */
    int n_threads;    /* generator threads (the output is the same for any count) */
} mkmodel_config;

/* The smallest built-in vocabulary: specials, 256 byte tokens, characters and
 * common English pieces. vocab_size must be at least this; above it the vocabulary
 * is padded with letter pairs and triples (up to about 37000 entries). */
uint32_t mkmodel_builtin_vocab_min(void);
uint32_t mkmodel_builtin_vocab_max(void);

/* Fills cfg with a preset: "tiny" (the default model: dim 256, 4 layers, 8 heads,
 * 4 KV heads, ffn 704, ctx 2048, built-in 2048-token vocabulary, F32), "llama2-7b"
 * (4096/32/32/32, ffn 11008, ctx 4096, vocab 32000, Q8_0) or "tinyllama-1.1b"
 * (2048/22/32/4, ffn 5632, ctx 2048, vocab 32000, Q8_0). Presets share seed 1,
 * std 0.02, out_std 0.5, norm_std 0.1, rope_theta 10000, rms_eps 1e-5, 2 threads.
 * Returns -1 with err listing the presets for an unknown name. */
int mkmodel_preset(const char *preset, mkmodel_config *cfg, llorch_error *err);

/* Checks cfg (shapes, type, divisibility, ranges); err says which value is wrong
 * and what would be accepted. The vocabulary file is checked by mkmodel_write. */
int mkmodel_validate(const mkmodel_config *cfg, llorch_error *err);

/* Called by mkmodel_write after each chunk of data: bytes of the file written so far
 * and in all. Runs on the calling thread. */
typedef void (*mkmodel_progress_fn)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);

/* Writes the model to path (through path.part, renamed on success). Returns 0, or -1
 * with err (bad config, unreadable vocabulary, write errors such as a full disk).
 * progress may be NULL. */
int mkmodel_write(const mkmodel_config *cfg, const char *path, mkmodel_progress_fn progress,
                  void *progress_ctx, llorch_error *err);

/* The float values of row `row` of the tensor called `name` as generated, before
 * conversion to the file's type (n = the row length: dim, or ffn_dim for ffn_down).
 * Used by tests to compare a file against what was meant. Returns -1 for a name that
 * the model does not have or a row out of range. */
int mkmodel_tensor_row(const mkmodel_config *cfg, uint32_t vocab_size, const char *name,
                       uint64_t row, float *out, uint64_t n, llorch_error *err);

#endif
