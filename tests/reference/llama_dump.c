/* llama_dump.c - runs llama.cpp on a token batch and writes its named graph tensors and logits as float32 files. */

/* Usage: llama-dump -m MODEL -t TOKENS_CSV -o OUTDIR [--kv f32|f16] [--threads N]
 *                   [--all | --match REGEX] [--flash-attn on|off] [--lib-dir DIR] [-v]
 *
 * Loads MODEL on the CPU, evaluates the tokens (positions 0..n-1, sequence 0) as one
 * batch with outputs for every position, and writes:
 *   OUTDIR/<file>.bin   one per graph tensor kept by the filter: float32, dense, ne0
 *                       fastest (element (i0,i1,i2,i3) at ((i3*ne2+i2)*ne1+i1)*ne0+i0),
 *                       converted from F16/BF16/I32 and gathered from strided views;
 *   OUTDIR/logits.bin   n_tokens x n_vocab float32, row = position;
 *   OUTDIR/index.json   what ran, and for each tensor its graph name, occurrence (a
 *                       name can label several nodes, e.g. Qcur-0 before and after
 *                       RoPE), op, source type, ne0..ne3, nb0..nb3 of the graph tensor
 *                       and whether it was contiguous there.
 * The default filter keeps layer 0 ("name-0") and tensors without a layer number;
 * --all keeps everything, --match keeps names matching an extended regex.
 * Exit status 0 on success, 1 on a usage error, 2 when llama.cpp fails. */

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#ifndef LLAMA_DUMP_LIB_DIR
#define LLAMA_DUMP_LIB_DIR "."
#endif

/* One tensor written so far (for occurrences and the index). */
typedef struct dump_entry {
    char name[GGML_MAX_NAME];
    int occurrence;            /* 0 for the first node with this name */
    char file[GGML_MAX_NAME + 16];
    char op[32];
    char type[16];
    int64_t ne[4];
    size_t nb[4];
    bool contiguous;
    bool written;              /* false: type not convertible, listed with a reason */
} dump_entry;

typedef struct dump_state {
    const char *outdir;
    bool all;
    bool use_regex;
    regex_t regex;
    dump_entry *entries;
    int n_entries, cap_entries;
    uint8_t *raw;               /* scratch for a tensor's bytes */
    size_t raw_cap;
    float *dense;               /* scratch for the float32 copy */
    size_t dense_cap;
    int failed;                 /* a write failed: stop the graph */
} dump_state;

static void s_usage(void)
{
    fprintf(stderr,
            "usage: llama-dump -m MODEL -t TOKENS_CSV -o OUTDIR [--kv f32|f16] [--threads N]\n"
            "                  [--all | --match REGEX] [--flash-attn on|off] [--lib-dir DIR] [-v]\n"
            "  -t      token ids, comma separated (e.g. 1,9038,2501,263,931)\n"
            "  --kv    KV cache type (default f32)\n"
            "  --all   dump every graph tensor (default: layer 0 and unnumbered ones)\n"
            "  --match dump the tensors whose name matches this extended regex\n");
}

static bool s_verbose;

static void s_log(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (s_verbose || level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

/* True for names ending in "-<digits>" (a layer number), with the number in *layer. */
static bool s_layer_of(const char *name, int *layer)
{
    const char *dash = strrchr(name, '-');
    if (!dash || !dash[1])
        return false;
    for (const char *p = dash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    *layer = atoi(dash + 1);
    return true;
}

static bool s_wanted(const dump_state *st, const struct ggml_tensor *t)
{
    if (st->all)
        return true;
    if (st->use_regex)
        return regexec(&st->regex, t->name, 0, NULL, 0) == 0;
    int layer;
    if (s_layer_of(t->name, &layer))
        return layer == 0;
    /* Unnamed nodes and views of the KV cache belong to no layer we can name. */
    return t->name[0] && strncmp(t->name, "node_", 5) != 0 && !strstr(t->name, "cache_") &&
           !strchr(t->name, ' ');
}

static void *s_grow(void *p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return p;
    void *q = realloc(p, need);
    if (!q) {
        fprintf(stderr, "llama-dump: out of memory (%zu bytes)\n", need);
        exit(2);
    }
    *cap = need;
    return q;
}

static float s_element(const uint8_t *p, enum ggml_type type)
{
    switch (type) {
    case GGML_TYPE_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case GGML_TYPE_F16: {
        float f;
        ggml_fp16_to_fp32_row((const ggml_fp16_t *)p, &f, 1);
        return f;
    }
    case GGML_TYPE_BF16: {
        float f;
        ggml_bf16_to_fp32_row((const ggml_bf16_t *)p, &f, 1);
        return f;
    }
    case GGML_TYPE_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return (float)v;
    }
    default:
        return 0.0f;
    }
}

/* Writes "<name>[.<occurrence>]" with characters unsafe in file names replaced. */
static void s_file_name(char *out, size_t cap, const char *name, int occurrence)
{
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < cap; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        out[n++] = ok ? c : '_';
    }
    out[n] = '\0';
    if (occurrence > 0)
        snprintf(out + n, cap - n, ".%d", occurrence);
    size_t len = strlen(out);
    snprintf(out + len, cap - len, ".bin");
}

static int s_write_file(const char *dir, const char *file, const void *data, size_t bytes)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "llama-dump: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t w = fwrite(data, 1, bytes, f);
    if (fclose(f) != 0 || w != bytes) {
        fprintf(stderr, "llama-dump: short write to %s\n", path);
        return -1;
    }
    return 0;
}

/* cb_eval: asked once with ask=true for each node (answer: do we want it?), then
 * called with ask=false, data computed, for the nodes we wanted. Returning false from
 * the second call stops the graph. */
static bool s_eval_cb(struct ggml_tensor *t, bool ask, void *user)
{
    dump_state *st = user;
    if (ask)
        return s_wanted(st, t);

    int occurrence = 0;
    for (int i = 0; i < st->n_entries; i++)
        occurrence += strcmp(st->entries[i].name, t->name) == 0;
    if (st->n_entries == st->cap_entries) {
        size_t cap = (size_t)st->cap_entries * sizeof *st->entries;
        st->cap_entries = st->cap_entries ? st->cap_entries * 2 : 64;
        st->entries = s_grow(st->entries, &cap, (size_t)st->cap_entries * sizeof *st->entries);
    }
    dump_entry *e = &st->entries[st->n_entries++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", t->name);
    e->occurrence = occurrence;
    snprintf(e->op, sizeof e->op, "%s", ggml_op_desc(t));
    snprintf(e->type, sizeof e->type, "%s", ggml_type_name(t->type));
    for (int d = 0; d < 4; d++) {
        e->ne[d] = t->ne[d];
        e->nb[d] = t->nb[d];
    }
    e->contiguous = ggml_is_contiguous(t);
    s_file_name(e->file, sizeof e->file, t->name, occurrence);

    bool convertible = t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 ||
                       t->type == GGML_TYPE_BF16 || t->type == GGML_TYPE_I32;
    if (!convertible)
        return true;  /* listed in the index without a file */

    /* The bytes spanned by the (possibly strided) tensor, then a dense gather. */
    size_t span = ggml_nbytes(t);
    const uint8_t *base;
    if (t->buffer && !ggml_backend_buffer_is_host(t->buffer)) {
        st->raw = s_grow(st->raw, &st->raw_cap, span);
        ggml_backend_tensor_get(t, st->raw, 0, span);
        base = st->raw;
    } else {
        base = t->data;
    }
    size_t n = (size_t)ggml_nelements(t);
    st->dense = s_grow(st->dense, &st->dense_cap, n * sizeof(float));
    size_t k = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++)
                    st->dense[k++] = s_element(base + i0 * t->nb[0] + i1 * t->nb[1] +
                                                   i2 * t->nb[2] + i3 * t->nb[3], t->type);
    if (s_write_file(st->outdir, e->file, st->dense, n * sizeof(float)) != 0) {
        st->failed = 1;
        return false;
    }
    e->written = true;
    return true;
}

static void s_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* mkdir -p: creates dir and its missing parents. Returns 0 or -1 with errno set. */
static int s_mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Parses "1,2,3" into a new array; returns the count, or -1 on a malformed list. */
static int s_parse_tokens(const char *csv, llama_token **out)
{
    int cap = 16, n = 0;
    llama_token *v = malloc((size_t)cap * sizeof *v);
    const char *p = csv;
    while (v && *p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            llama_token *w = realloc(v, (size_t)cap * sizeof *v);
            if (!w) {
                free(v);
                return -1;
            }
            v = w;
        }
        v[n++] = (llama_token)x;
        p = end;
        while (*p == ',' || *p == ' ')
            p++;
    }
    *out = v;
    return v && n > 0 ? n : -1;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *tokens_csv = NULL, *outdir = NULL, *match = NULL;
    const char *kv = "f32", *lib_dir = LLAMA_DUMP_LIB_DIR;
    int threads = 2;
    bool all = false, flash_attn = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--all")) { all = true; continue; }
        if (!strcmp(a, "-v")) { s_verbose = true; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { s_usage(); return 0; }
        if (!val) { fprintf(stderr, "llama-dump: %s needs a value\n", a); s_usage(); return 1; }
        i++;
        if (!strcmp(a, "-m")) model_path = val;
        else if (!strcmp(a, "-t")) tokens_csv = val;
        else if (!strcmp(a, "-o")) outdir = val;
        else if (!strcmp(a, "--kv")) kv = val;
        else if (!strcmp(a, "--threads")) threads = atoi(val);
        else if (!strcmp(a, "--match")) match = val;
        else if (!strcmp(a, "--lib-dir")) lib_dir = val;
        else if (!strcmp(a, "--flash-attn")) flash_attn = !strcmp(val, "on");
        else { fprintf(stderr, "llama-dump: unknown option %s\n", a); s_usage(); return 1; }
    }
    if (!model_path || !tokens_csv || !outdir) {
        fprintf(stderr, "llama-dump: -m, -t and -o are required\n");
        s_usage();
        return 1;
    }
    enum ggml_type kv_type;
    if (!strcmp(kv, "f32")) kv_type = GGML_TYPE_F32;
    else if (!strcmp(kv, "f16")) kv_type = GGML_TYPE_F16;
    else { fprintf(stderr, "llama-dump: --kv %s: use f32 or f16\n", kv); return 1; }
    if (threads < 1) { fprintf(stderr, "llama-dump: --threads must be >= 1\n"); return 1; }
    llama_token *tokens = NULL;
    int n_tokens = s_parse_tokens(tokens_csv, &tokens);
    if (n_tokens < 0) {
        fprintf(stderr, "llama-dump: -t '%s' is not a comma-separated list of token ids\n", tokens_csv);
        return 1;
    }
    if (s_mkdir_p(outdir) != 0) {
        fprintf(stderr, "llama-dump: cannot create %s: %s\n", outdir, strerror(errno));
        return 1;
    }

    dump_state st = {.outdir = outdir, .all = all};
    if (match) {
        if (regcomp(&st.regex, match, REG_EXTENDED | REG_NOSUB) != 0) {
            fprintf(stderr, "llama-dump: --match '%s' is not a valid extended regex\n", match);
            return 1;
        }
        st.use_regex = true;
    }

    llama_log_set(s_log, NULL);
    /* The CPU backend is a set of per-ISA plug-ins; ggml picks the best for this CPU. */
    ggml_backend_load_all_from_path(lib_dir);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "llama-dump: llama.cpp could not load %s (-v shows why)\n", model_path);
        return 2;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] >= n_vocab) {
            fprintf(stderr, "llama-dump: token %d is outside the vocabulary of %d\n", tokens[i], n_vocab);
            return 1;
        }

    struct llama_context_params cp = llama_context_default_params();
    uint32_t n_ctx = ((uint32_t)n_tokens + 255u) / 256u * 256u;
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;    /* the whole prompt in one graph */
    cp.n_ubatch = n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = kv_type;
    cp.type_v = kv_type;
    /* Off by default: flash attention fuses kq and kq_soft_max away. */
    cp.flash_attn_type = flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = s_eval_cb;
    cp.cb_eval_user_data = &st;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama-dump: llama.cpp could not create a context (-v shows why)\n");
        return 2;
    }

    struct llama_batch batch = llama_batch_init(n_tokens, 0, 1);
    batch.n_tokens = n_tokens;
    for (int i = 0; i < n_tokens; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    int rc = llama_decode(ctx, batch);
    if (rc != 0 || st.failed) {
        fprintf(stderr, "llama-dump: llama_decode failed (%d)\n", rc);
        return 2;
    }

    float *logits = malloc((size_t)n_tokens * (size_t)n_vocab * sizeof *logits);
    if (!logits) {
        fprintf(stderr, "llama-dump: out of memory\n");
        return 2;
    }
    for (int i = 0; i < n_tokens; i++) {
        const float *row = llama_get_logits_ith(ctx, i);
        if (!row) {
            fprintf(stderr, "llama-dump: no logits for position %d\n", i);
            return 2;
        }
        memcpy(logits + (size_t)i * (size_t)n_vocab, row, (size_t)n_vocab * sizeof *logits);
    }
    if (s_write_file(outdir, "logits.bin", logits, (size_t)n_tokens * (size_t)n_vocab * sizeof *logits) != 0)
        return 2;

    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.json", outdir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "llama-dump: cannot write %s: %s\n", path, strerror(errno));
        return 2;
    }
    fprintf(f, "{\n  \"model\": ");
    s_json_string(f, model_path);
    fprintf(f, ",\n  \"llama_cpp\": \"v0.4.0 (node-llama-cpp 3.21.1)\",\n");
    fprintf(f, "  \"kv_type\": \"%s\",\n  \"flash_attn\": %s,\n  \"n_ctx\": %u,\n",
            kv, flash_attn ? "true" : "false", n_ctx);
    fprintf(f, "  \"n_tokens\": %d,\n  \"n_vocab\": %d,\n  \"tokens\": [", n_tokens, n_vocab);
    for (int i = 0; i < n_tokens; i++)
        fprintf(f, "%s%d", i ? ", " : "", tokens[i]);
    fprintf(f, "],\n  \"logits\": {\"file\": \"logits.bin\", \"shape\": [%d, %d], "
               "\"layout\": \"float32, row = position, n_vocab per row\"},\n", n_tokens, n_vocab);
    fprintf(f, "  \"layout\": \"each file is float32, dense, ne0 fastest: element (i0,i1,i2,i3) at "
               "((i3*ne2+i2)*ne1+i1)*ne0+i0; ne/nb/contiguous describe the tensor in llama.cpp's "
               "graph (nb in bytes of the source type); a name can label several nodes, "
               "told apart by occurrence in graph order\",\n");
    /* What the llama graph's attention nodes hold, which the names alone do not say. */
    fprintf(f, "  \"notes\": [\"kq-N is q.k without the 1/sqrt(head_dim) scale; kq_soft_max-N applies "
               "the scale and the causal mask; their ne0 runs over KV cache cells (position j in "
               "cell j for a fresh cache), padded past n_tokens\", "
               "\"grouped-query heads: query head h reads KV head h / (n_head / n_head_kv)\", "
               "\"with an F16 KV cache the K and V operands are F16, so q and the softmax weights "
               "are rounded to F16 inside kq and kqv\", "
               "\"with --flash-attn on, kq, kq_soft_max and kqv are fused away\"],\n");
    fprintf(f, "  \"tensors\": [\n");
    for (int i = 0; i < st.n_entries; i++) {
        const dump_entry *e = &st.entries[i];
        fprintf(f, "    {\"name\": ");
        s_json_string(f, e->name);
        fprintf(f, ", \"occurrence\": %d, \"file\": ", e->occurrence);
        if (e->written)
            s_json_string(f, e->file);
        else
            fprintf(f, "null, \"skipped\": \"type %s is not converted\"", e->type);
        fprintf(f, ", \"op\": ");
        s_json_string(f, e->op);
        fprintf(f, ", \"type\": \"%s\", \"ne\": [%lld, %lld, %lld, %lld], \"nb\": [%zu, %zu, %zu, %zu], "
                   "\"contiguous\": %s}%s\n",
                e->type, (long long)e->ne[0], (long long)e->ne[1], (long long)e->ne[2],
                (long long)e->ne[3], e->nb[0], e->nb[1], e->nb[2], e->nb[3],
                e->contiguous ? "true" : "false", i + 1 < st.n_entries ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "llama-dump: short write to %s\n", path);
        return 2;
    }

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    if (st.use_regex)
        regfree(&st.regex);
    free(st.entries);
    free(st.raw);
    free(st.dense);
    free(logits);
    free(tokens);
    return 0;
}
