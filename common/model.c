/* model.c - Llama configuration from GGUF metadata and weight binding by tensor name. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hugemem.h"
#include "proc.h"

/* An optional u32 key: *out keeps its default when the key is absent. */
static int s_get_u32_opt(const gguf_file *f, const char *key, uint32_t *out, llorch_error *err)
{
    if (!gguf_find(f, key))
        return 0;
    return gguf_get_u32(f, key, out, err);
}

static int s_get_f32_opt(const gguf_file *f, const char *key, float *out, llorch_error *err)
{
    if (!gguf_find(f, key))
        return 0;
    return gguf_get_f32(f, key, out, err);
}

int model_config_from_gguf(const gguf_file *f, model_config *cfg, llorch_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    char *arch = NULL;
    if (gguf_get_string(f, "general.architecture", &arch, err) < 0)
        return llorch_error_prefix(err, "not a Llama model");
    int is_llama = !strcmp(arch, "llama");
    if (!is_llama) {
        llorch_error_set(err, "general.architecture is \"%s\"; llorch runs \"llama\" models only",
                         arch);
        free(arch);
        return -1;
    }
    free(arch);
    if (gguf_get_u32(f, "llama.embedding_length", &cfg->dim, err) < 0 ||
        gguf_get_u32(f, "llama.block_count", &cfg->n_layers, err) < 0 ||
        gguf_get_u32(f, "llama.attention.head_count", &cfg->n_heads, err) < 0 ||
        gguf_get_u32(f, "llama.feed_forward_length", &cfg->ffn_dim, err) < 0)
        return -1;
    if (cfg->n_heads == 0)
        return llorch_error_set(err, "llama.attention.head_count is 0");
    cfg->n_kv_heads = cfg->n_heads;
    cfg->head_dim = cfg->dim / cfg->n_heads;
    cfg->context_length = 2048;
    cfg->rope_freq_base = 10000.0f;
    cfg->norm_eps = 1e-5f;
    if (s_get_u32_opt(f, "llama.attention.head_count_kv", &cfg->n_kv_heads, err) < 0 ||
        s_get_u32_opt(f, "llama.attention.key_length", &cfg->head_dim, err) < 0 ||
        s_get_u32_opt(f, "llama.context_length", &cfg->context_length, err) < 0 ||
        s_get_f32_opt(f, "llama.rope.freq_base", &cfg->rope_freq_base, err) < 0 ||
        s_get_f32_opt(f, "llama.attention.layer_norm_rms_epsilon", &cfg->norm_eps, err) < 0)
        return -1;
    uint32_t value_length = cfg->head_dim;
    if (s_get_u32_opt(f, "llama.attention.value_length", &value_length, err) < 0)
        return -1;
    if (value_length != cfg->head_dim)
        return llorch_error_set(err, "llama.attention.value_length %u differs from key_length %u; "
                                     "llorch needs them equal", value_length, cfg->head_dim);
    cfg->rope_dim = cfg->head_dim;
    if (s_get_u32_opt(f, "llama.rope.dimension_count", &cfg->rope_dim, err) < 0)
        return -1;
    cfg->q_dim = cfg->n_heads * cfg->head_dim;
    cfg->kv_dim = cfg->n_kv_heads * cfg->head_dim;

    const gguf_value *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (tokens) {
        if (tokens->type != GGUF_TYPE_ARRAY)
            return llorch_error_set(err, "tokenizer.ggml.tokens is not an array");
        if (tokens->arr->n == 0 || tokens->arr->n > UINT32_MAX)
            return llorch_error_set(err, "tokenizer.ggml.tokens has %" PRIu64 " entries",
                                    tokens->arr->n);
        cfg->vocab_size = (uint32_t)tokens->arr->n;
    } else if (embd && embd->n_dims == 2 && embd->ne[1] <= UINT32_MAX) {
        cfg->vocab_size = (uint32_t)embd->ne[1];
    } else {
        return llorch_error_set(err, "no tokenizer.ggml.tokens and no 2-D token_embd.weight: "
                                     "cannot tell the vocabulary size");
    }
    return model_config_validate(cfg, err);
}

int model_config_validate(const model_config *c, llorch_error *err)
{
    if (!c->dim || !c->n_layers || !c->n_heads || !c->n_kv_heads || !c->head_dim || !c->ffn_dim ||
        !c->vocab_size || !c->context_length)
        return llorch_error_set(err, "model config has a zero size (dim %u, layers %u, heads %u, "
                                     "kv heads %u, head dim %u, ffn %u, vocab %u, context %u)",
                                c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                                c->ffn_dim, c->vocab_size, c->context_length);
    if (c->n_heads % c->n_kv_heads)
        return llorch_error_set(err, "head_count %u is not a multiple of head_count_kv %u",
                                c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 || c->rope_dim % 2 || c->rope_dim == 0 || c->rope_dim > c->head_dim)
        return llorch_error_set(err, "head dim %u and rope dimension count %u: both must be even "
                                     "and rope <= head dim", c->head_dim, c->rope_dim);
    if ((uint64_t)c->q_dim != (uint64_t)c->n_heads * c->head_dim ||
        (uint64_t)c->kv_dim != (uint64_t)c->n_kv_heads * c->head_dim)
        return llorch_error_set(err, "q_dim %u / kv_dim %u do not match heads x head dim",
                                c->q_dim, c->kv_dim);
    if (c->context_length > (1u << 24))
        return llorch_error_set(err, "context length %u is above the supported 16M",
                                c->context_length);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps) || !(c->rope_freq_base > 0.0f) ||
        !isfinite(c->rope_freq_base))
        return llorch_error_set(err, "rms epsilon %g and rope freq base %g must be positive",
                                c->norm_eps, c->rope_freq_base);
    return 0;
}

static const gguf_tensor *s_find(const gguf_tensor *tensors, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (tensors[i].name && !strcmp(tensors[i].name, name))
            return &tensors[i];
    return NULL;
}

/* A matrix named `name` of rows x cols (GGUF ne = {cols, rows}). */
static int s_bind_matrix(weight *w, const gguf_tensor *tensors, size_t n, const char *name,
                         uint64_t rows, uint64_t cols, const char *what, llorch_error *err)
{
    const gguf_tensor *t = s_find(tensors, n, name);
    if (!t)
        return llorch_error_set(err, "tensor %s is missing", name);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return llorch_error_set(err, "tensor %s has shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64
                                     "]; expected [%" PRIu64 ", %" PRIu64 "] (%s)",
                                name, t->ne[0], t->ne[1], t->ne[2], cols, rows, what);
    if (!tensor_type_supported(t->type))
        return llorch_error_set(err, "tensor %s has type %s, which llorch does not compute with",
                                name, tensor_type_name(t->type));
    size_t row_bytes = (size_t)tensor_row_bytes(t->type, cols);
    if (row_bytes == 0)
        return llorch_error_set(err, "tensor %s: rows of %" PRIu64 " are not whole %s blocks", name,
                                cols, tensor_type_name(t->type));
    if (!t->data)
        return llorch_error_set(err, "tensor %s has no data", name);
    if (t->layout >= WEIGHT_LAYOUT_COUNT ||
        !weight_layout_fits((enum weight_layout)t->layout, t->type, (int64_t)rows, (int64_t)cols))
        return llorch_error_set(err, "tensor %s: layout %u does not fit a %s matrix of %" PRIu64
                                     " x %" PRIu64, name, t->layout, tensor_type_name(t->type),
                                rows, cols);
    *w = (weight){.type = t->type, .layout = (enum weight_layout)t->layout, .rows = (int64_t)rows,
                  .cols = (int64_t)cols, .row_bytes = row_bytes, .data = t->data};
    return 0;
}

static int s_bind_norm(const float **out, const gguf_tensor *tensors, size_t n, const char *name,
                       uint64_t dim, llorch_error *err)
{
    const gguf_tensor *t = s_find(tensors, n, name);
    if (!t)
        return llorch_error_set(err, "tensor %s is missing", name);
    if (t->n_dims != 1 || t->ne[0] != dim)
        return llorch_error_set(err, "tensor %s has %u dims and %" PRIu64 " elements; expected "
                                     "a vector of %" PRIu64 " (dim)", name, t->n_dims, t->ne[0], dim);
    if (t->type != TENSOR_F32)
        return llorch_error_set(err, "norm tensor %s is %s; llorch needs norm weights in F32", name,
                                tensor_type_name(t->type));
    if (!t->data)
        return llorch_error_set(err, "tensor %s has no data", name);
    *out = t->data;
    return 0;
}

int model_weights_bind(model_weights *w, const model_config *c, const gguf_tensor *tensors,
                       size_t n, uint32_t first, uint32_t last, llorch_error *err)
{
    memset(w, 0, sizeof *w);
    if (first >= last || last > c->n_layers)
        return llorch_error_set(err, "layer range [%u, %u) is not inside [0, %u)", first, last,
                                c->n_layers);
    w->first = first;
    w->last = last;
    w->layers = calloc(last - first, sizeof *w->layers);
    if (!w->layers)
        return llorch_error_set(err, "out of memory binding %u layers", last - first);
    char name[96];
    for (uint32_t l = first; l < last; l++) {
        layer_weights *lw = &w->layers[l - first];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%u.%s", l, suffix), name)
        if (s_bind_norm(&lw->attn_norm, tensors, n, NAME("attn_norm.weight"), c->dim, err) < 0 ||
            s_bind_matrix(&lw->wq, tensors, n, NAME("attn_q.weight"), c->q_dim, c->dim,
                          "dim x n_heads*head_dim", err) < 0 ||
            s_bind_matrix(&lw->wk, tensors, n, NAME("attn_k.weight"), c->kv_dim, c->dim,
                          "dim x n_kv_heads*head_dim", err) < 0 ||
            s_bind_matrix(&lw->wv, tensors, n, NAME("attn_v.weight"), c->kv_dim, c->dim,
                          "dim x n_kv_heads*head_dim", err) < 0 ||
            s_bind_matrix(&lw->wo, tensors, n, NAME("attn_output.weight"), c->dim, c->q_dim,
                          "n_heads*head_dim x dim", err) < 0 ||
            s_bind_norm(&lw->ffn_norm, tensors, n, NAME("ffn_norm.weight"), c->dim, err) < 0 ||
            s_bind_matrix(&lw->ffn_gate, tensors, n, NAME("ffn_gate.weight"), c->ffn_dim, c->dim,
                          "dim x ffn", err) < 0 ||
            s_bind_matrix(&lw->ffn_up, tensors, n, NAME("ffn_up.weight"), c->ffn_dim, c->dim,
                          "dim x ffn", err) < 0 ||
            s_bind_matrix(&lw->ffn_down, tensors, n, NAME("ffn_down.weight"), c->dim, c->ffn_dim,
                          "ffn x dim", err) < 0) {
            model_weights_free(w);
            return -1;
        }
#undef NAME
    }
    const int need_output = last == c->n_layers;
    const int tied = need_output && !s_find(tensors, n, "output.weight");
    if (first == 0 || tied) {
        if (s_bind_matrix(&w->token_embd, tensors, n, "token_embd.weight", c->vocab_size, c->dim,
                          "dim x vocab", err) < 0) {
            model_weights_free(w);
            return -1;
        }
    }
    if (need_output) {
        if (s_bind_norm(&w->output_norm, tensors, n, "output_norm.weight", c->dim, err) < 0) {
            model_weights_free(w);
            return -1;
        }
        if (tied) {
            w->output = w->token_embd;
        } else if (s_bind_matrix(&w->output, tensors, n, "output.weight", c->vocab_size, c->dim,
                                 "dim x vocab", err) < 0) {
            model_weights_free(w);
            return -1;
        }
    }
    if (first != 0)
        w->token_embd = (weight){0};
    return 0;
}

void model_weights_free(model_weights *w)
{
    free(w->layers);
    memset(w, 0, sizeof *w);
}

model *model_open(const char *path, llorch_error *err)
{
    model *m = calloc(1, sizeof *m);
    if (!m) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    m->file = gguf_open(path, err);
    if (!m->file) {
        free(m);
        return NULL;
    }
    m->tensors = m->file->tensors;
    m->n_tensors = m->file->n_tensors;
    if (m->n_tensors == 0) {
        llorch_error_set(err, "%s has no tensors: a vocabulary-only file cannot generate "
                              "(tokenize and inspect read it)", path);
        model_free(&m);
        return NULL;
    }
    model_weights check;
    if (model_config_from_gguf(m->file, &m->config, err) < 0 ||
        model_weights_bind(&check, &m->config, m->tensors, m->n_tensors, 0, m->config.n_layers,
                           err) < 0) {
        llorch_error_prefix(err, "%s", path);
        model_free(&m);
        return NULL;
    }
    model_weights_free(&check);
    return m;
}

model *model_from_tensors(const model_config *cfg, const gguf_tensor *tensors, size_t n_tensors,
                          llorch_error *err)
{
    model *m = calloc(1, sizeof *m);
    if (!m) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    m->config = *cfg;
    m->tensors = tensors;
    m->n_tensors = n_tensors;
    return m;
}

/* Memory left to the rest of the process (KV cache, scratch) and the system when the
 * weights are copied. */
#define PLACE_RESERVE_BYTES ((size_t)512 << 20)

/* Bytes of GGUF rows read at a time before they are repacked into the arena. */
#define PLACE_REPACK_STEP_BYTES ((size_t)4 << 20)

/* Tensor t (GGUF rows, from the file at fd or, when fd < 0, from memory) into dst in
 * `layout`, a few MB of whole 16-row groups at a time. */
static int s_place_repacked(const gguf_tensor *t, enum weight_layout layout, int fd,
                            const gguf_file *f, uint8_t *dst, llorch_error *err)
{
    const int64_t rows = (int64_t)t->ne[1], cols = (int64_t)t->ne[0];
    const size_t group_bytes = (size_t)(t->n_bytes / (uint64_t)rows) * KERNEL_R16_ROWS;
    const size_t step_groups = PLACE_REPACK_STEP_BYTES / group_bytes ? PLACE_REPACK_STEP_BYTES / group_bytes : 1;
    uint8_t *buf = fd >= 0 ? malloc(step_groups * group_bytes) : NULL;
    if (fd >= 0 && !buf)
        return llorch_error_set(err, "out of memory repacking tensor %s", t->name);
    const uint8_t *src = t->data;
    for (size_t at = 0; at < (size_t)t->n_bytes; at += step_groups * group_bytes) {
        const size_t n = (size_t)t->n_bytes - at < step_groups * group_bytes ? (size_t)t->n_bytes - at
                                                                             : step_groups * group_bytes;
        const uint8_t *from = src + at;
        if (fd >= 0) {
            if (proc_pread_all(fd, buf, n, (uint64_t)(src - f->base) + at) < 0) {
                llorch_error_set(err, "cannot read tensor %s from %s: %s", t->name, f->path,
                                 strerror(errno));
                free(buf);
                return -1;
            }
            from = buf;
        }
        kernel_repack_rows(layout, from, dst + at, (int64_t)(n / group_bytes) * KERNEL_R16_ROWS, cols);
    }
    free(buf);
    return 0;
}

int model_place_weights(model *m, llorch_error *err)
{
    if (m->placed)
        return 0;
    size_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        total += ((size_t)m->tensors[i].n_bytes + 63) & ~(size_t)63;
    if (total == 0)
        return 0;
    /* The copy must fit beside everything else: the page cache of the file it is read
     * from can be dropped (MemAvailable counts it), but a copy that does not fit would
     * bring the OOM killer instead of an error. */
    const long long avail = hugemem_available();
    if (avail >= 0 && (long long)total > avail - (long long)(PLACE_RESERVE_BYTES))
        return llorch_error_set(err, "%.1f MB of weights but %.1f MB of memory available",
                                total / 1e6, avail / 1e6);
    gguf_tensor *placed = malloc(m->n_tensors * sizeof *placed);
    if (!placed)
        return llorch_error_set(err, "out of memory for the tensor table");
    uint8_t *arena = hugemem_alloc(total, err);
    if (!arena) {
        free(placed);
        return -1;
    }
    /* From the file with pread (the kernel copies from the page cache; the mapping's
     * pages are never touched, so they do not count in this process), else (a model in
     * a buffer, or a file replaced since it was opened) from the mapping. */
    const gguf_file *f = m->file;
    int fd = f && f->map ? open(f->path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || (uint64_t)st.st_size != f->size)) {
        close(fd);
        fd = -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        placed[i] = m->tensors[i];
        const size_t n = (size_t)m->tensors[i].n_bytes;
        const uint8_t *src = m->tensors[i].data;
        const gguf_tensor *t = &m->tensors[i];
        const enum weight_layout layout =
            t->n_dims == 2 && t->layout == WEIGHT_LAYOUT_ROWS
                ? kernel_preferred_layout(t->type, (int64_t)t->ne[1], (int64_t)t->ne[0])
                : (enum weight_layout)t->layout;
        if (layout != t->layout) {
            if (s_place_repacked(t, layout, fd, f, arena + at, err) < 0) {
                if (fd >= 0)
                    close(fd);
                hugemem_unmap(arena, total);
                free(placed);
                return -1;
            }
            placed[i].layout = layout;
        } else if (fd < 0) {
            memcpy(arena + at, src, n);
        } else if (proc_pread_all(fd, arena + at, n, (uint64_t)(src - f->base)) < 0) {
            /* not the mapping instead: a file that shrank would fault on it */
            llorch_error_set(err, "cannot read tensor %s from %s: %s", m->tensors[i].name,
                             f->path, strerror(errno));
            close(fd);
            hugemem_unmap(arena, total);
            free(placed);
            return -1;
        }
        placed[i].data = arena + at;
        at += (n + 63) & ~(size_t)63;
    }
    if (fd >= 0)
        close(fd);
    m->placed = placed;
    m->arena = arena;
    m->arena_bytes = total;
    m->tensors = placed;
    return 0;
}

void model_free(model **pm)
{
    if (!pm || !*pm)
        return;
    hugemem_unmap((*pm)->arena, (*pm)->arena_bytes);
    free((*pm)->placed);
    gguf_close(&(*pm)->file);
    free(*pm);
    *pm = NULL;
}
