/* model.h - a Llama model's configuration and its weights bound as kernel views. */
#ifndef LLORCH_MODEL_H
#define LLORCH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"
#include "kernels.h"

/* The shape of a Llama model, from the llama.* keys of a GGUF file. */
typedef struct model_config {
    uint32_t dim;            /* llama.embedding_length */
    uint32_t n_layers;       /* llama.block_count */
    uint32_t n_heads;        /* llama.attention.head_count */
    uint32_t n_kv_heads;     /* llama.attention.head_count_kv; default n_heads */
    uint32_t head_dim;       /* llama.attention.key_length; default dim / n_heads */
    uint32_t q_dim;          /* n_heads * head_dim: rows of wq, columns of wo */
    uint32_t kv_dim;         /* n_kv_heads * head_dim: rows of wk and wv */
    uint32_t ffn_dim;        /* llama.feed_forward_length */
    uint32_t vocab_size;     /* length of tokenizer.ggml.tokens, else token_embd's rows */
    uint32_t context_length; /* llama.context_length; default 2048 */
    uint32_t rope_dim;       /* llama.rope.dimension_count; default head_dim; even */
    float rope_freq_base;    /* llama.rope.freq_base; default 10000 */
    float norm_eps;          /* llama.attention.layer_norm_rms_epsilon; default 1e-5 */
} model_config;

/* Reads the configuration of a GGUF file (general.architecture must be "llama"),
 * applying the defaults above, and checks it (model_config_validate). The vocabulary
 * size comes from tokenizer.ggml.tokens, or from token_embd.weight when the file has
 * no tokenizer. Returns 0, or -1 with err naming the key and what is wrong. */
int model_config_from_gguf(const gguf_file *f, model_config *cfg, llorch_error *err);

/* Checks that the fields are consistent (non-zero sizes, n_kv_heads dividing n_heads,
 * even rope_dim <= head_dim, q_dim and kv_dim matching, positive eps and base).
 * Returns 0 or -1 with err. */
int model_config_validate(const model_config *cfg, llorch_error *err);

/* One transformer block's weights. Norm weights are F32 vectors (dim). */
typedef struct layer_weights {
    const float *attn_norm; /* (dim) */
    weight wq;              /* (q_dim rows, dim cols) */
    weight wk;              /* (kv_dim, dim) */
    weight wv;              /* (kv_dim, dim) */
    weight wo;              /* (dim, q_dim) */
    const float *ffn_norm;  /* (dim) */
    weight ffn_gate;        /* (ffn_dim, dim) */
    weight ffn_up;          /* (ffn_dim, dim) */
    weight ffn_down;        /* (dim, ffn_dim) */
} layer_weights;

/* The weights a stage over layers [first, last) needs, viewing memory it does not
 * own: token_embd when first == 0; output_norm and output when last == n_layers
 * (output is token_embd's memory when the file has no output.weight: tied). */
typedef struct model_weights {
    uint32_t first, last;
    weight token_embd;         /* (vocab_size, dim); data NULL when not needed */
    layer_weights *layers;     /* (last - first): layers[i] is block first + i */
    const float *output_norm;  /* (dim); NULL when last < n_layers */
    weight output;             /* (vocab_size, dim); data NULL when last < n_layers */
} model_weights;

/* Binds the weights of layers [first, last) from an array of tensor records (name,
 * type, shape, data pointer: a GGUF file's tensors, or records pointing into shared
 * memory). Every tensor the range needs must be present with the shape cfg implies
 * (blk.N.attn_norm/attn_q/attn_k/attn_v/attn_output/ffn_norm/ffn_gate/ffn_up/
 * ffn_down.weight, token_embd.weight, output_norm.weight, output.weight optional);
 * err names the first missing or misshapen tensor and the shape expected. Only
 * w->layers is allocated: free with model_weights_free. */
int model_weights_bind(model_weights *w, const model_config *cfg, const gguf_tensor *tensors,
                       size_t n_tensors, uint32_t first, uint32_t last, llorch_error *err);

/* Frees what model_weights_bind allocated and zeroes *w. Safe on a zeroed struct. */
void model_weights_free(model_weights *w);

/* A model: its configuration and the tensor records the weights are bound from. */
typedef struct model {
    model_config config;
    const gguf_tensor *tensors; /* (n_tensors) */
    size_t n_tensors;
    gguf_file *file; /* owned when opened from a path, else NULL */
    /* after model_place_weights: the records, their data in `arena` */
    gguf_tensor *placed;
    void *arena;
    size_t arena_bytes;
} model;

/* Opens a GGUF file, reads its configuration and checks every tensor of every layer
 * (by binding the whole range once). Returns NULL with err (naming the path) on any
 * problem. The file's tokenizer is read separately (tokenizer_from_gguf on m->file).
 * Free with model_free. */
model *model_open(const char *path, llorch_error *err);

/* A model over tensor records the caller keeps alive (shared memory, tests): cfg and
 * the array are copied by reference, nothing is validated until a stage binds.
 * NULL only when out of memory. Free with model_free (which leaves the records). */
model *model_from_tensors(const model_config *cfg, const gguf_tensor *tensors, size_t n_tensors,
                          llorch_error *err);

/* Copies the bytes of every tensor from the mapped file into memory of the process's own
 * on 2 MiB pages (hugemem.h) and points m->tensors at the copies, so that a stage
 * streams its weights through huge pages instead of the page cache's 4 KiB ones (the
 * file's pages are dropped from this process as they are copied: its resident size
 * stays the model's). Matrices the active kernels compute faster in another layout
 * (kernel_preferred_layout: Q8_0 in 16-row groups for AVX-512 VNNI) are repacked on the
 * way, and their records say so. Call before stage_new. Returns 0, or -1 with err when the memory
 * cannot be had (the copy and 512 MB beside it must fit in the memory the kernel calls
 * available); the model then still reads from the mapping and works as before. */
int model_place_weights(model *m, llorch_error *err);

/* Frees the model (and closes its file when it owns one); sets *m to NULL. */
void model_free(model **m);

#endif
