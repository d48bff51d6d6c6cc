/* cmd_mkmodel.c - `llorch mkmodel`: write a random-weight Llama GGUF model. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "mkmodel.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch mkmodel --out FILE [options]\n"
            "\n"
            "Writes a random-weight Llama model as GGUF v3 (llama.cpp loads it). The same\n"
            "options and seed give the same bytes every time.\n"
            "\n"
            "  --out FILE          where to write (required)\n"
            "  --preset NAME       tiny (default: dim 256, 4 layers, F32, built-in vocab),\n"
            "                      llama2-7b (Q8_0, 7.2 GB), tinyllama-1.1b (Q8_0);\n"
            "                      the options below override the preset\n"
            "  --dim N             embedding length\n"
            "  --layers N          transformer blocks\n"
            "  --heads N           attention heads (dim / heads must be even)\n"
            "  --kv-heads N        key/value heads (divides heads; fewer = GQA)\n"
            "  --ffn N             feed-forward hidden size\n"
            "  --ctx N             context length\n"
            "  --type T            f32, f16 or q8_0 for the matrices (norms stay f32)\n"
            "  --vocab FILE.gguf   copy the tokenizer.* keys of this GGUF (e.g.\n"
            "                      ggml-vocab-llama-spm.gguf); default: built-in vocabulary\n"
            "  --vocab-size N      size of the built-in vocabulary (%u..%u)\n"
            "  --seed N            random seed (default 1)\n"
            "  --std X             weight standard deviation (default 0.02)\n"
            "  --out-std X         output.weight standard deviation (default 0.5: sharp logits)\n"
            "  --norm-std X        norm weights are 1 + N(0, X) (default 0.1)\n"
            "  --rope-theta X      RoPE base frequency (default 10000)\n"
            "  --rms-eps X         RMSNorm epsilon (default 1e-5)\n"
            "  --name S            general.name\n"
            "  --threads N         generator threads (default 2; output does not depend on it)\n"
            "  --quiet             no progress on stderr\n",
            mkmodel_builtin_vocab_min(), mkmodel_builtin_vocab_max());
}

/* Parses a whole number in [0, max]; prints the error and returns -1 otherwise. */
static int s_parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (!*s || *end || errno || s[0] == '-' || v > max) {
        fprintf(stderr, "llorch mkmodel: %s '%s' is not a whole number in 0..%" PRIu64 "\n",
                opt, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int s_parse_u32(const char *opt, const char *s, uint32_t *out)
{
    uint64_t v;
    if (s_parse_u64(opt, s, UINT32_MAX, &v))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int s_parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (!*s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "llorch mkmodel: %s '%s' is not a number\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

typedef struct progress_state {
    double start_s, last_s;
    int last_tenth;
    bool tty, shown;
} progress_state;

static double s_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Percentage and MB/s: redrawn in place on a terminal, a line per 10% otherwise.
 * Files under 64 MB are written too fast to need it. */
static void s_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_state *p = ctx;
    if (total < (64u << 20))
        return;
    double now = s_now_s();
    int tenth = (int)(done * 10 / total);
    bool last = done >= total;
    if (p->tty ? (now - p->last_s < 0.25 && !last) : (tenth == p->last_tenth && !last))
        return;
    p->last_s = now;
    p->last_tenth = tenth;
    double elapsed = now - p->start_s;
    fprintf(stderr, "%smkmodel: %3d%%  %.2f of %.2f GB  %.0f MB/s%s", p->tty ? "\r" : "",
            (int)(done * 100 / total), done / 1e9, total / 1e9,
            elapsed > 0 ? done / 1e6 / elapsed : 0.0, p->tty ? "" : "\n");
    p->shown = true;
}

int cmd_mkmodel(int argc, char **argv)
{
    const char *preset = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
    }
    mkmodel_config cfg;
    llorch_error err = {{0}};
    if (mkmodel_preset(preset, &cfg, &err)) {
        fprintf(stderr, "llorch mkmodel: %s\n", err.msg);
        return 2;
    }
    const char *out = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--quiet")) {
            quiet = true;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0) {
            fprintf(stderr, "llorch mkmodel: unexpected argument '%s' (see --help)\n", opt);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "llorch mkmodel: %s needs a value (see --help)\n", opt);
            return 2;
        }
        const char *val = argv[++i];
        uint64_t u64;
        int bad = 0;
        if (!strcmp(opt, "--out")) out = val;
        else if (!strcmp(opt, "--preset")) continue;
        else if (!strcmp(opt, "--dim")) bad = s_parse_u32(opt, val, &cfg.dim);
        else if (!strcmp(opt, "--layers")) bad = s_parse_u32(opt, val, &cfg.n_layers);
        else if (!strcmp(opt, "--heads")) bad = s_parse_u32(opt, val, &cfg.n_heads);
        else if (!strcmp(opt, "--kv-heads")) bad = s_parse_u32(opt, val, &cfg.n_kv_heads);
        else if (!strcmp(opt, "--ffn")) bad = s_parse_u32(opt, val, &cfg.ffn_dim);
        else if (!strcmp(opt, "--ctx")) bad = s_parse_u32(opt, val, &cfg.ctx);
        else if (!strcmp(opt, "--vocab-size")) bad = s_parse_u32(opt, val, &cfg.vocab_size);
        else if (!strcmp(opt, "--seed")) bad = s_parse_u64(opt, val, UINT64_MAX, &cfg.seed);
        else if (!strcmp(opt, "--std")) bad = s_parse_float(opt, val, &cfg.std);
        else if (!strcmp(opt, "--out-std")) bad = s_parse_float(opt, val, &cfg.out_std);
        else if (!strcmp(opt, "--norm-std")) bad = s_parse_float(opt, val, &cfg.norm_std);
        else if (!strcmp(opt, "--rope-theta")) bad = s_parse_float(opt, val, &cfg.rope_theta);
        else if (!strcmp(opt, "--rms-eps")) bad = s_parse_float(opt, val, &cfg.rms_eps);
        else if (!strcmp(opt, "--vocab")) cfg.vocab_path = val;
        else if (!strcmp(opt, "--name")) cfg.name = val;
        else if (!strcmp(opt, "--threads")) {
            bad = s_parse_u64(opt, val, 1024, &u64);
            cfg.n_threads = (int)u64;
        } else if (!strcmp(opt, "--type")) {
            if (!strcmp(val, "f32") || !strcmp(val, "F32")) cfg.type = TENSOR_F32;
            else if (!strcmp(val, "f16") || !strcmp(val, "F16")) cfg.type = TENSOR_F16;
            else if (!strcmp(val, "q8_0") || !strcmp(val, "Q8_0")) cfg.type = TENSOR_Q8_0;
            else {
                fprintf(stderr, "llorch mkmodel: --type '%s': use f32, f16 or q8_0\n", val);
                return 2;
            }
        } else {
            fprintf(stderr, "llorch mkmodel: unknown option '%s' (see --help)\n", opt);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!out) {
        fprintf(stderr, "llorch mkmodel: --out FILE is required (see --help)\n");
        return 2;
    }
    if (mkmodel_validate(&cfg, &err)) {
        fprintf(stderr, "llorch mkmodel: %s\n", err.msg);
        return 2;
    }
    progress_state prog = {.start_s = s_now_s(), .last_tenth = -1, .tty = isatty(2)};
    if (mkmodel_write(&cfg, out, quiet ? NULL : s_progress, &prog, &err)) {
        if (prog.shown && prog.tty)
            fputc('\n', stderr);
        fprintf(stderr, "llorch mkmodel: %s\n", err.msg);
        return 1;
    }
    if (prog.shown && prog.tty)
        fputc('\n', stderr);
    double elapsed = s_now_s() - prog.start_s;
    FILE *f = fopen(out, "rb");
    long long size = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (f)
        fclose(f);
    static const char *type_names[] = {[TENSOR_F32] = "f32", [TENSOR_F16] = "f16",
                                       [TENSOR_Q8_0] = "q8_0"};
    printf("wrote %s: %lld bytes, dim %u, %u layers, %u heads, %u kv heads, ffn %u, "
           "%s, seed %" PRIu64 ", %s vocabulary, %.1f s\n",
           out, size, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim,
           type_names[cfg.type], cfg.seed, cfg.vocab_path ? cfg.vocab_path : "built-in",
           elapsed);
    return 0;
}
