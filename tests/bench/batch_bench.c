/* batch_bench.c - times Q8_0 matrix x batch products and batched decode steps in-process.
 *
 * The instrument for small batches (2-16 rows), not a test; it asserts nothing but
 * prints a mismatch when the active kernels disagree with the scalar ones.
 *
 *   batch_bench kernel [THREADS]        GMAC/s of kernel_matmul over 1..64 batch rows on
 *                                       ~100 MB of 5632 x 2048 Q8_0 weights, and a
 *                                       bit-for-bit check of every batch size against the
 *                                       scalar variant
 *   batch_bench profile MODEL [THREADS] where the time of one decode step (one session)
 *                                       goes, op by op, from the stage's trace hook: ms
 *                                       per step and, for the matrix products, GB/s of
 *                                       weights read (weights placed on huge pages as
 *                                       `llorch generate` does; BATCH_BENCH_MMAP=1
 *                                       reads them from the mapped file)
 *   batch_bench stage MODEL [THREADS] [SESSIONS...]
 *                                       seconds per decode step (median of 16) and
 *                                       aggregate tokens/s of
 *                                       SESSIONS sequences decoding together (default
 *                                       1 2 4 8 16)
 *
 * Build: cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Icommon tests/bench/batch_bench.c
 *        build/lib/libllorch-core.a -ljansson -lmsgpackc -lzmq -lsodium -lm -o build/bench/batch_bench
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "kv_cache.h"
#include "model.h"
#include "quant.h"
#include "stage.h"
#include "threadpool.h"

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t s_rand_state = 12345;
static float s_rand(void)
{
    s_rand_state = s_rand_state * 1664525u + 1013904223u;
    return (float)(s_rand_state >> 8) / (float)(1u << 24) - 0.5f;
}

/* ---- kernel mode ------------------------------------------------------------------- */

typedef struct job {
    const weight *w;
    const kernel_act *act;
    float *out;
    _Atomic int64_t next;
} job;

static void s_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    job *j = ctx;
    (void)begin, (void)end, (void)thread_index;
    for (;;) {
        const int64_t lo = atomic_fetch_add(&j->next, 32);
        if (lo >= j->w->rows)
            return;
        const int64_t hi = lo + 32 < j->w->rows ? lo + 32 : j->w->rows;
        kernel_matmul(j->w, j->act, j->out, j->w->rows, lo, hi);
    }
}

static void s_make_q8(weight *w, int64_t rows, int64_t cols)
{
    float *row = malloc((size_t)cols * sizeof *row);
    const size_t row_bytes = (size_t)(cols / 32) * sizeof(q8_0_block);
    uint8_t *data = malloc((size_t)rows * row_bytes);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            row[c] = s_rand();
        q8_0_quantize_row(row, (q8_0_block *)(data + (size_t)r * row_bytes), cols);
    }
    free(row);
    *w = (weight){.type = TENSOR_Q8_0, .rows = rows, .cols = cols, .row_bytes = row_bytes, .data = data};
    /* the layout llorch places such a matrix in (BATCH_BENCH_LAYOUT=rows: GGUF rows) */
    const char *want = getenv("BATCH_BENCH_LAYOUT");
    w->layout = want && !strcmp(want, "rows") ? WEIGHT_LAYOUT_ROWS
                                              : kernel_preferred_layout(TENSOR_Q8_0, rows, cols);
    if (w->layout != WEIGHT_LAYOUT_ROWS) {
        uint8_t *packed = malloc((size_t)rows * row_bytes);
        kernel_repack_rows(w->layout, data, packed, rows, cols);
        free(data);
        w->data = packed;
    }
}

static int s_kernel_mode(int threads)
{
    enum { N_W = 8, MAX_B = 64 };
    /* BATCH_BENCH_ROWS, BATCH_BENCH_COLS: the shape of each of the 8 weights (5632 x
     * 2048; 64 rows keep them in cache) */
    const char *env_rows = getenv("BATCH_BENCH_ROWS"), *env_cols = getenv("BATCH_BENCH_COLS");
    const int ROWS = env_rows ? atoi(env_rows) : 5632;
    const int COLS = env_cols ? atoi(env_cols) / 32 * 32 : 2048;
    weight w[N_W];
    for (int i = 0; i < N_W; i++)
        s_make_q8(&w[i], ROWS, COLS);
    float *x = malloc((size_t)MAX_B * COLS * sizeof *x);
    for (int i = 0; i < MAX_B * COLS; i++)
        x[i] = s_rand();
    void *buf = malloc(kernel_act_bytes(TENSOR_Q8_0, MAX_B, COLS));
    float *out = malloc((size_t)MAX_B * ROWS * sizeof *out);
    float *want = malloc((size_t)MAX_B * ROWS * sizeof *want);
    threadpool *pool = threadpool_new(threads, NULL);
    static const int batches[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 32, 64};
    const kernel_isa best = kernel_isa_active();
    int bad = 0;
    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
        const int b = batches[bi];
        kernel_act act = kernel_act_init(TENSOR_Q8_0, x, b, COLS, buf);
        kernel_act_convert(&act, x, 0, b);
        /* check 200 rows (odd count: partial tiles) against the scalar kernels */
        weight part = w[0];
        part.rows = ROWS < 203 ? ROWS : 203;
        kernel_isa_select(KERNEL_ISA_SCALAR, NULL);
        kernel_matmul(&part, &act, want, part.rows, 0, part.rows);
        kernel_isa_select(best, NULL);
        job cj = {.w = &part, .act = &act, .out = out};
        threadpool_for(pool, threads, s_share, &cj);
        if (memcmp(out, want, (size_t)b * (size_t)part.rows * sizeof *out)) {
            printf("batch %d: %s differs from scalar\n", b, kernel_isa_name(best));
            bad = 1;
        }
        double best_t = 1e9;
        const int reps = ROWS < 1024 ? 200 : 5;
        for (int rep = 0; rep < reps; rep++) {
            const double t0 = s_now();
            for (int i = 0; i < N_W; i++) {
                job j = {.w = &w[i], .act = &act, .out = out};
                threadpool_for(pool, threads, s_share, &j);
            }
            const double t = s_now() - t0;
            best_t = t < best_t ? t : best_t;
        }
        const double macs = (double)N_W * ROWS * COLS * b;
        printf("batch %2d: %7.2f ms  %6.1f GMAC/s  %6.1f GB/s weights\n", b, best_t * 1e3,
               macs / best_t * 1e-9, (double)N_W * ROWS * w[0].row_bytes / best_t * 1e-9);
        fflush(stdout);
    }
    threadpool_free(&pool);
    for (int i = 0; i < N_W; i++)
        free((void *)w[i].data);
    free(x);
    free(buf);
    free(out);
    free(want);
    return bad;
}

/* ---- profile mode ------------------------------------------------------------------ */

/* The trace hook fires after each op; the time since the previous event is that op's.
 * Events are grouped by what ran before them (kernels.h names, stage.h order). */
enum { P_NORM, P_QKV, P_ROPE, P_ATTN, P_WO, P_ADD, P_FFN, P_OUT, P_COUNT };
static const char *const s_group_names[P_COUNT] = {
    "rmsnorm", "q k v matmuls", "rope", "attention", "wo matmul", "residual adds",
    "ffn gate/up/down + swiglu", "output matmul"};

typedef struct profile {
    double last;
    double t[P_COUNT];
} profile;

static int s_group(const char *name)
{
    static const struct { const char *name; int group; } map[] = {
        {"attn_norm", P_NORM}, {"ffn_norm", P_NORM}, {"result_norm", P_NORM},
        {"q", P_QKV}, {"k", P_QKV}, {"v", P_QKV}, {"q_rope", P_ROPE}, {"k_rope", P_ROPE},
        {"kq", P_ATTN}, {"kq_softmax", P_ATTN}, {"attn_out", P_ATTN}, {"attn_proj", P_WO},
        {"ffn_inp", P_ADD}, {"l_out", P_ADD}, {"ffn_out", P_FFN}, {"logits", P_OUT}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].name, name))
            return map[i].group;
    return -1;
}

static void s_profile_hook(void *user, const stage_trace_tensor *t)
{
    profile *p = user;
    const double now = s_now();
    const int g = s_group(t->name);
    if (g >= 0)
        p->t[g] += now - p->last;
    p->last = s_now(); /* the hook's own time is nobody's */
}

static double s_weight_bytes(const weight *w) { return (double)w->rows * (double)w->row_bytes; }

static int s_profile_mode(const char *path, int threads)
{
    llorch_error err = {0};
    model *m = model_open(path, &err);
    if (!m) {
        fprintf(stderr, "batch_bench: %s\n", err.msg);
        return 1;
    }
    if (!getenv("BATCH_BENCH_MMAP") && model_place_weights(m, &err) < 0)
        fprintf(stderr, "batch_bench: weights stay mapped: %s\n", err.msg);
    enum { PROMPT = 8, STEPS = 16 };
    profile prof = {0};
    /* BATCH_BENCH_PROMPT=N (2..64): profile a prompt batch of N rows instead (4 of them) */
    const char *env_prompt = getenv("BATCH_BENCH_PROMPT");
    const int prompt_rows = env_prompt ? atoi(env_prompt) : 0;
    if (env_prompt && (prompt_rows < 2 || prompt_rows > 64)) {
        fprintf(stderr, "batch_bench: BATCH_BENCH_PROMPT=%s is not 2..64\n", env_prompt);
        return 1;
    }
    stage_opts opts = {.threads = threads, .max_batch_rows = 64, .max_seqs = 1 + STEPS, .n_ctx = 256,
                       .trace = s_profile_hook, .trace_user = &prof};
    stage *s = stage_new(m, 0, m->config.n_layers, &opts, &err);
    model_weights w = {0};
    if (!s || model_weights_bind(&w, &m->config, m->tensors, m->n_tensors, 0, m->config.n_layers,
                                 &err) < 0) {
        fprintf(stderr, "batch_bench: %s\n", err.msg);
        return 1;
    }
    double bytes[P_COUNT] = {0};
    for (uint32_t l = 0; l < m->config.n_layers; l++) {
        const layer_weights *lw = &w.layers[l];
        bytes[P_QKV] += s_weight_bytes(&lw->wq) + s_weight_bytes(&lw->wk) + s_weight_bytes(&lw->wv);
        bytes[P_WO] += s_weight_bytes(&lw->wo);
        bytes[P_FFN] += s_weight_bytes(&lw->ffn_gate) + s_weight_bytes(&lw->ffn_up) +
                        s_weight_bytes(&lw->ffn_down);
    }
    bytes[P_OUT] = s_weight_bytes(&w.output);
    float *logits = malloc((size_t)stage_out_cols(s) * PROMPT * sizeof *logits);
    stage_row rows[PROMPT];
    for (int p = 0; p < PROMPT; p++)
        rows[p] = (stage_row){.seq_id = 1, .pos = p, .token = 1 + p, .want_logits = p == PROMPT - 1};
    if (stage_forward(s, rows, PROMPT, NULL, logits, &err) < 0) {
        fprintf(stderr, "batch_bench: %s\n", err.msg);
        return 1;
    }
    memset(prof.t, 0, sizeof prof.t);
    double total = 0;
    const int n_steps = prompt_rows ? 4 : STEPS;
    stage_row batch[64];
    float *batch_logits = malloc((size_t)stage_out_cols(s) * sizeof *batch_logits);
    for (int step = 0; step < n_steps; step++) {
        const int n = prompt_rows ? prompt_rows : 1;
        for (int r = 0; r < n; r++)
            batch[r] = prompt_rows ? (stage_row){.seq_id = 2 + step, .pos = r, .token = 1 + r,
                                                 .want_logits = r == n - 1}
                                   : (stage_row){.seq_id = 1, .pos = PROMPT + step,
                                                 .token = 100 + step, .want_logits = true};
        const double t0 = s_now();
        prof.last = t0;
        if (stage_forward(s, batch, n, NULL, batch_logits, &err) < 0) {
            fprintf(stderr, "batch_bench: %s\n", err.msg);
            return 1;
        }
        total += s_now() - t0;
    }
    free(batch_logits);
    const int STEPS_RUN = n_steps;
    double accounted = 0, all_bytes = 0;
    if (prompt_rows)
        printf("%-22s %2d rows %9s %6s %8s\n", "op (prompt batch of", prompt_rows, "ms/batch", "share", "GB/s");
    else
        printf("%-28s %9s %6s %8s\n", "op (decode step, 1 session)", "ms/step", "share", "GB/s");
    for (int g = 0; g < P_COUNT; g++) {
        const double per = prof.t[g] / STEPS_RUN;
        accounted += per;
        all_bytes += bytes[g];
        printf("%-28s %9.2f %5.1f%%", s_group_names[g], per * 1e3, 100.0 * per / (total / STEPS_RUN));
        if (bytes[g] > 0)
            printf(" %8.1f", bytes[g] / per * 1e-9);
        printf("\n");
    }
    printf("%-28s %9.2f %5.1f%%\n", "other (embedding, hook)", (total / STEPS_RUN - accounted) * 1e3,
           100.0 * (total / STEPS_RUN - accounted) / (total / STEPS_RUN));
    printf("%-28s %9.2f        %8.1f  (%.2f tok/s)\n", "step", total / STEPS_RUN * 1e3,
           all_bytes / (total / STEPS_RUN) * 1e-9, STEPS_RUN / total);
    free(logits);
    model_weights_free(&w);
    stage_free(&s);
    model_free(&m);
    return 0;
}

/* ---- stage mode -------------------------------------------------------------------- */

static int s_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int s_stage_mode(const char *path, int threads, const int *sessions, int n_sessions)
{
    llorch_error err = {0};
    model *m = model_open(path, &err);
    if (!m) {
        fprintf(stderr, "batch_bench: %s\n", err.msg);
        return 1;
    }
    /* placed (and repacked) as llorch generate and the workers have them */
    if (!getenv("BATCH_BENCH_MMAP") && model_place_weights(m, &err) < 0)
        fprintf(stderr, "batch_bench: weights stay mapped: %s\n", err.msg);
    enum { PROMPT = 8, STEPS = 16, MAX_SEQ = 64 };
    const size_t per_pos = kv_cache_bytes_per_position((int)m->config.n_layers, (int)m->config.kv_dim,
                                                       KV_TYPE_F32);
    stage_opts opts = {.threads = threads, .max_batch_rows = 64, .max_seqs = MAX_SEQ, .n_ctx = 256,
                       .kv_budget_bytes = per_pos * 64 * (PROMPT + STEPS + 2 * KV_BLOCK_POSITIONS)};
    stage *s = stage_new(m, 0, m->config.n_layers, &opts, &err);
    if (!s) {
        fprintf(stderr, "batch_bench: %s\n", err.msg);
        return 1;
    }
    const int64_t vocab = stage_out_cols(s);
    float *logits = malloc((size_t)MAX_SEQ * (size_t)vocab * sizeof *logits);
    stage_row rows[MAX_SEQ * PROMPT];
    double one = 0;
    for (int si = 0; si < n_sessions; si++) {
        const int n = sessions[si];
        if (n > MAX_SEQ)
            continue;
        for (int q = 0; q < n; q++)
            for (int p = 0; p < PROMPT; p++)
                rows[q * PROMPT + p] = (stage_row){.seq_id = (uint64_t)q + 1, .pos = p,
                                                    .token = 1 + 7 * q + p, .want_logits = p == PROMPT - 1};
        for (int begin = 0; begin < n * PROMPT; begin += 64) {
            const int cnt = n * PROMPT - begin < 64 ? n * PROMPT - begin : 64;
            if (stage_forward(s, rows + begin, cnt, NULL, logits, &err) < 0) {
                fprintf(stderr, "batch_bench: %s\n", err.msg);
                return 1;
            }
        }
        double times[STEPS];
        for (int step = 0; step < STEPS; step++) {
            for (int q = 0; q < n; q++)
                rows[q] = (stage_row){.seq_id = (uint64_t)q + 1, .pos = PROMPT + step,
                                      .token = 100 + 3 * q + step, .want_logits = true};
            const double t0 = s_now();
            if (stage_forward(s, rows, n, NULL, logits, &err) < 0) {
                fprintf(stderr, "batch_bench: %s\n", err.msg);
                return 1;
            }
            times[step] = s_now() - t0;
        }
        qsort(times, STEPS, sizeof times[0], s_cmp_double);
        const double step_t = times[STEPS / 2]; /* the median step */
        if (n == 1)
            one = 1.0 / step_t;
        printf("sessions %2d: %7.1f ms/step  %7.1f tok/s%s", n, step_t * 1e3, n / step_t,
               one > 0 ? "" : "\n");
        if (one > 0)
            printf("  (%.2fx one session)\n", n / step_t / one);
        fflush(stdout);
        for (int q = 0; q < n; q++)
            stage_free_seq(s, (uint64_t)q + 1);
    }
    free(logits);
    stage_free(&s);
    model_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "kernel"))
        return s_kernel_mode(argc > 2 ? atoi(argv[2]) : 2);
    if (argc >= 3 && !strcmp(argv[1], "profile"))
        return s_profile_mode(argv[2], argc > 3 ? atoi(argv[3]) : 2);
    if (argc >= 3 && !strcmp(argv[1], "stage")) {
        int sessions[32] = {1, 2, 4, 8, 16}, n = 5;
        if (argc > 4) {
            n = 0;
            for (int i = 4; i < argc && n < 32; i++)
                sessions[n++] = atoi(argv[i]);
        }
        return s_stage_mode(argv[2], argc > 3 ? atoi(argv[3]) : 2, sessions, n);
    }
    fprintf(stderr, "usage: batch_bench kernel [THREADS] | profile MODEL [THREADS] |\n"
                    "       stage MODEL [THREADS] [SESSIONS...]\n");
    return 2;
}
