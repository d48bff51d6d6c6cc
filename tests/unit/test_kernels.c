/* test_kernels.c - every kernel against a naive float64 reference, in every ISA variant
 * this CPU can run, including odd sizes and bit-exact conversions. */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "fp16.h"
#include "kernels.h"
#include "quant.h"
#include "threadpool.h"

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static float s_uniform(void) /* [-1, 1) */
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (float)((double)(s_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static void s_fill(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = s_uniform() * scale;
}

/* Runs body once per ISA variant the CPU has. */
#define FOR_EACH_ISA(isa)                                                                     \
    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++)                                          \
        if (kernel_isa_available((kernel_isa)isa) && kernel_isa_select((kernel_isa)isa, NULL) == 0)

static const int64_t s_sizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 257, 1000, 4096};
#define N_SIZES (sizeof s_sizes / sizeof s_sizes[0])

/* |got - want| within a relative bound of the sum of |terms| (float accumulation). */
static void s_assert_dot(double got, double want, double abs_terms, int isa, int64_t n)
{
    double tol = 1e-6 * abs_terms * sqrt((double)n + 1) + 1e-30;
    if (fabs(got - want) > tol)
        fail_msg("%s n=%lld: got %.9g want %.9g (tol %.3g)", kernel_isa_name(isa), (long long)n,
                 got, want, tol);
}

static void test_dot_f32_matches_float64(void **state)
{
    (void)state;
    float *w = malloc(4096 * sizeof *w), *x = malloc(4096 * sizeof *x);
    FOR_EACH_ISA(isa) {
        for (size_t s = 0; s < N_SIZES; s++) {
            int64_t n = s_sizes[s];
            s_fill(w, n, 1.0f);
            s_fill(x, n, 3.0f);
            double want = 0, terms = 0;
            for (int64_t i = 0; i < n; i++) {
                want += (double)w[i] * x[i];
                terms += fabs((double)w[i] * x[i]);
            }
            s_assert_dot(kernel_dot_f32(w, x, n), want, terms, isa, n);
        }
    }
    free(w);
    free(x);
}

static void test_dot_f16_and_bf16_match_float64(void **state)
{
    (void)state;
    uint16_t *w = malloc(4096 * 2), *x = malloc(4096 * 2);
    float *tmp = malloc(4096 * sizeof *tmp);
    FOR_EACH_ISA(isa) {
        for (int bf = 0; bf < 2; bf++) {
            for (size_t s = 0; s < N_SIZES; s++) {
                int64_t n = s_sizes[s];
                s_fill(tmp, n, 1.0f);
                for (int64_t i = 0; i < n; i++)
                    w[i] = bf ? f32_to_bf16(tmp[i]) : f32_to_fp16(tmp[i]);
                s_fill(tmp, n, 4.0f);
                for (int64_t i = 0; i < n; i++)
                    x[i] = bf ? f32_to_bf16(tmp[i]) : f32_to_fp16(tmp[i]);
                double want = 0, terms = 0;
                for (int64_t i = 0; i < n; i++) {
                    double a = bf ? bf16_to_f32(w[i]) : fp16_to_f32(w[i]);
                    double b = bf ? bf16_to_f32(x[i]) : fp16_to_f32(x[i]);
                    want += a * b;
                    terms += fabs(a * b);
                }
                float got = bf ? kernel_dot_bf16(w, x, n) : kernel_dot_f16(w, x, n);
                s_assert_dot(got, want, terms, isa, n);
            }
        }
    }
    free(w);
    free(x);
    free(tmp);
}

static void test_q8_0_quantization_is_bit_exact_with_reference(void **state)
{
    (void)state;
    enum { N = 32 * 40 };
    float x[N];
    s_fill(x, N, 5.0f);
    /* Hard blocks: all zero; ties (max 127 makes id = 1, so k + 0.5 must round away
     * from zero); tiny values; one huge value; negative max; values just below .5. */
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    for (int i = 0; i < 32; i++) x[32 + i] = (i == 0) ? 127.0f : (float)(i - 16) + 0.5f;
    for (int i = 0; i < 32; i++) x[64 + i] = 1e-30f * (float)(i - 10);
    for (int i = 0; i < 32; i++) x[96 + i] = (i == 5) ? 3e4f : s_uniform();
    for (int i = 0; i < 32; i++) x[128 + i] = (i == 7) ? -127.0f : (float)i * 0.49999997f;
    for (int i = 0; i < 32; i++) x[160 + i] = (i == 0) ? 254.0f : (float)(2 * i - 31);
    q8_0_block want[N / 32], got[N / 32];
    q8_0_quantize_row(x, want, N);
    FOR_EACH_ISA(isa) {
        memset(got, 0x55, sizeof got);
        kernel_quantize_q8_0(x, got, N);
        for (int b = 0; b < N / 32; b++)
            if (memcmp(&got[b], &want[b], sizeof got[b]))
                fail_msg("%s: block %d differs from quant.h", kernel_isa_name(isa), b);
    }
}

static void test_dot_q8_0_matches_float64(void **state)
{
    (void)state;
    static const int64_t sizes[] = {32, 64, 96, 160, 4096};
    float *wf = malloc(4096 * sizeof *wf), *xf = malloc(4096 * sizeof *xf);
    q8_0_block *w = malloc(128 * sizeof *w), *x = malloc(128 * sizeof *x);
    FOR_EACH_ISA(isa) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            s_fill(wf, n, 0.1f);
            s_fill(xf, n, 2.0f);
            q8_0_quantize_row(wf, w, n);
            q8_0_quantize_row(xf, x, n);
            double want = 0, terms = 0;
            for (int64_t b = 0; b < n / 32; b++) {
                double isum = 0;
                for (int i = 0; i < 32; i++)
                    isum += (double)w[b].qs[i] * x[b].qs[i];
                double d = (double)fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d);
                want += d * isum;
                terms += fabs(d * isum);
            }
            s_assert_dot(kernel_dot_q8_0(w, x, n), want, terms, isa, n);
        }
    }
    free(wf);
    free(xf);
    free(w);
    free(x);
}

static void test_f16_and_bf16_conversions_are_bit_exact(void **state)
{
    (void)state;
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x);
    uint16_t *got = malloc(N * 2);
    s_fill(x, N, 10.0f);
    const float special[] = {0.0f, -0.0f, 1e-8f, -3e-7f, 6.1e-5f, 65504.0f, 65520.0f, 1e6f,
                             -1e6f, 1.0009765625f, 1.00048828125f, 2.00390625f, INFINITY,
                             -INFINITY, 3.0e-39f, 1.5f, 0.33333334f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        x[i * 7] = special[i];
    FOR_EACH_ISA(isa) {
        kernel_f32_to_f16(x, got, N);
        for (int i = 0; i < N; i++)
            if (got[i] != f32_to_fp16(x[i]))
                fail_msg("%s f16: x=%g got %04x want %04x", kernel_isa_name(isa), x[i], got[i],
                         f32_to_fp16(x[i]));
        kernel_f32_to_bf16(x, got, N);
        for (int i = 0; i < N; i++)
            if (got[i] != f32_to_bf16(x[i]))
                fail_msg("%s bf16: x=%g got %04x want %04x", kernel_isa_name(isa), x[i], got[i],
                         f32_to_bf16(x[i]));
    }
    free(x);
    free(got);
}

/* A weight of `type` with rows x cols from random floats, and its float64 values. */
static void *s_make_weight(enum tensor_type type, int64_t rows, int64_t cols, weight *w, double *values)
{
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    s_fill(f, rows * cols, 0.5f);
    size_t row_bytes = tensor_row_bytes(type, (uint64_t)cols);
    void *data = malloc((size_t)rows * row_bytes);
    for (int64_t r = 0; r < rows; r++) {
        const float *src = f + r * cols;
        void *dst = (char *)data + r * row_bytes;
        for (int64_t c = 0; c < cols; c++) {
            if (type == TENSOR_F32) ((float *)dst)[c] = src[c];
            if (type == TENSOR_F16) ((uint16_t *)dst)[c] = f32_to_fp16(src[c]);
            if (type == TENSOR_BF16) ((uint16_t *)dst)[c] = f32_to_bf16(src[c]);
        }
        if (type == TENSOR_Q8_0)
            q8_0_quantize_row(src, dst, cols);
    }
    *w = (weight){.type = type, .rows = rows, .cols = cols, .row_bytes = row_bytes, .data = data};
    float *row = malloc((size_t)cols * sizeof *row);
    for (int64_t r = 0; r < rows; r++) {
        kernel_get_row(w, r, row);
        for (int64_t c = 0; c < cols; c++)
            values[r * cols + c] = row[c];
    }
    free(row);
    free(f);
    return data;
}

/* The activations as the weight type sees them: rounded to F16/BF16 or Q8_0-quantized. */
static void s_act_values(enum tensor_type type, const float *x, int64_t cols, double *out)
{
    q8_0_block q[64];
    float deq[64 * 32];
    if (type == TENSOR_Q8_0) {
        q8_0_quantize_row(x, q, cols);
        q8_0_dequantize_row(q, deq, cols);
    }
    for (int64_t c = 0; c < cols; c++) {
        switch (type) {
        case TENSOR_F16: out[c] = fp16_to_f32(f32_to_fp16(x[c])); break;
        case TENSOR_BF16: out[c] = bf16_to_f32(f32_to_bf16(x[c])); break;
        case TENSOR_Q8_0: out[c] = deq[c]; break;
        default: out[c] = x[c]; break;
        }
    }
}

typedef struct matmul_job {
    const weight *w;
    const kernel_act *act;
    float *out;
} matmul_job;

static void s_matmul_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    matmul_job *job = ctx;
    kernel_matmul(job->w, job->act, job->out, job->w->rows, begin, end);
}

static void test_matmul_every_type_matches_float64_and_splits(void **state)
{
    (void)state;
    static const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0};
    enum { ROWS = 13, COLS = 96, BATCH = 3 };
    threadpool *pool = threadpool_new(2, NULL);
    assert_non_null(pool);
    FOR_EACH_ISA(isa) {
        for (size_t t = 0; t < 4; t++) {
            weight w;
            double *wv = malloc(ROWS * COLS * sizeof *wv);
            void *data = s_make_weight(types[t], ROWS, COLS, &w, wv);
            float x[BATCH * COLS];
            s_fill(x, BATCH * COLS, 2.0f);
            void *buf = malloc(kernel_act_bytes(types[t], BATCH, COLS) + 1);
            kernel_act act = kernel_act_init(types[t], x, BATCH, COLS, buf);
            kernel_act_convert(&act, x, 0, BATCH);
            float one[BATCH * ROWS], split[BATCH * ROWS];
            kernel_matmul(&w, &act, one, ROWS, 0, ROWS);
            matmul_job job = {&w, &act, split};
            threadpool_for(pool, ROWS, s_matmul_share, &job);
            for (int r = 0; r < BATCH; r++) {
                double xv[COLS];
                s_act_values(types[t], x + r * COLS, COLS, xv);
                for (int i = 0; i < ROWS; i++) {
                    double want = 0, terms = 0;
                    for (int c = 0; c < COLS; c++) {
                        want += wv[i * COLS + c] * xv[c];
                        terms += fabs(wv[i * COLS + c] * xv[c]);
                    }
                    s_assert_dot(one[r * ROWS + i], want, terms, isa, COLS);
                    assert_true(one[r * ROWS + i] == split[r * ROWS + i]);
                }
            }
            free(buf);
            free(data);
            free(wv);
        }
    }
    threadpool_free(&pool);
    assert_null(pool);
}

/* For the active variant: the Q8_0 product of w with x (max_batch rows of w->cols), cut
 * into batches of each size in batches[] and the weight rows into the pieces between
 * cuts[] (0 < cuts[0] < ... < w->rows), equals want (max_batch x w->rows) bit for bit.
 * buf holds kernel_act_bytes of max_batch rows, got max_batch x w->rows floats. */
static void s_assert_q8_0_pieces(const weight *w, const float *x, int max_batch, const int *batches,
                                 size_t n_batches, const int *cuts, size_t n_cuts, const float *want,
                                 void *buf, float *got, const char *what)
{
    const int64_t rows = w->rows, cols = w->cols;
    for (size_t bi = 0; bi < n_batches; bi++) {
        const int batch = batches[bi];
        for (int first = 0; first < max_batch; first += batch) {
            const int n = max_batch - first < batch ? max_batch - first : batch;
            kernel_act act = kernel_act_init(TENSOR_Q8_0, x + (size_t)first * cols, n, cols, buf);
            kernel_act_convert(&act, x + (size_t)first * cols, 0, n);
            for (size_t c = 0, lo = 0; c <= n_cuts; c++) {
                const int64_t hi = c < n_cuts ? cuts[c] : rows;
                kernel_matmul(w, &act, got, rows, (int64_t)lo, hi);
                lo = (size_t)hi;
            }
            for (int r = 0; r < n; r++)
                for (int64_t i = 0; i < rows; i++)
                    if (got[r * rows + i] != want[(first + r) * rows + i])
                        fail_msg("%s %s batch %d row %d out %lld: got %.9g want %.9g",
                                 kernel_isa_name(kernel_isa_active()), what, batch, first + r,
                                 (long long)i, got[r * rows + i], want[(first + r) * rows + i]);
        }
    }
}

/* The Q8_0 matrix product computes every element with the same arithmetic whatever
 * the batch size (matrix x vector, or blocked matrix x batch with partial tiles and
 * several column chunks), the row range, and the ISA: each element equals the scalar
 * kernel_dot_q8_0 bit for bit. */
static void test_q8_0_matmul_is_batch_split_and_isa_invariant(void **state)
{
    (void)state;
    enum { ROWS = 37, COLS = 32 * 70, MAX_BATCH = 9 };
    static const int batches[] = {1, 2, 3, 4, 5, 9};
    weight w;
    double *wv = malloc((size_t)ROWS * COLS * sizeof *wv);
    void *data = s_make_weight(TENSOR_Q8_0, ROWS, COLS, &w, wv);
    float *x = malloc((size_t)MAX_BATCH * COLS * sizeof *x);
    s_fill(x, MAX_BATCH * COLS, 3.0f);
    void *buf = malloc(kernel_act_bytes(TENSOR_Q8_0, MAX_BATCH, COLS));
    float want[MAX_BATCH][ROWS], got[MAX_BATCH * ROWS];
    assert_int_equal(kernel_isa_select(KERNEL_ISA_SCALAR, NULL), 0);
    kernel_act all = kernel_act_init(TENSOR_Q8_0, x, MAX_BATCH, COLS, buf);
    kernel_act_convert(&all, x, 0, MAX_BATCH);
    for (int r = 0; r < MAX_BATCH; r++)
        for (int i = 0; i < ROWS; i++)
            want[r][i] = kernel_dot_q8_0((const char *)data + (size_t)i * w.row_bytes,
                                         (const char *)buf + (size_t)r * all.row_bytes, COLS);
    /* rows in uneven pieces: 0..5, 5..21, 21..37 */
    static const int cuts[] = {5, 21};
    FOR_EACH_ISA(isa)
        s_assert_q8_0_pieces(&w, x, MAX_BATCH, batches, sizeof batches / sizeof batches[0], cuts,
                             2, &want[0][0], buf, got, "rows");
    free(buf);
    free(x);
    free(data);
    free(wv);
}

/* The R16 layout (Q8_0 in 16-row groups): repacking and unpacking give back the GGUF
 * bytes, a row read from it is the GGUF row, and its products equal, bit for bit, the
 * R16 arithmetic written out here (exact integer dot per block, then one fma chain) in
 * every variant, for matrix x vector, small and large batches and row ranges that cut
 * groups; and they agree with float64. */
static void test_q8_0_r16_layout_and_products(void **state)
{
    (void)state;
    enum { ROWS = 48, COLS = 32 * 61, MAX_BATCH = 19 };
    static const int batches[] = {1, 2, 3, 5, 8, 9, 17, 19};
    weight w;
    double *wv = malloc((size_t)ROWS * COLS * sizeof *wv);
    void *data = s_make_weight(TENSOR_Q8_0, ROWS, COLS, &w, wv);
    assert_true(weight_layout_fits(WEIGHT_LAYOUT_Q8_0_R16, TENSOR_Q8_0, ROWS, COLS));
    assert_false(weight_layout_fits(WEIGHT_LAYOUT_Q8_0_R16, TENSOR_Q8_0, ROWS - 1, COLS));
    assert_false(weight_layout_fits(WEIGHT_LAYOUT_Q8_0_R16, TENSOR_F16, ROWS, COLS));
    assert_false(weight_layout_fits(WEIGHT_LAYOUT_COUNT, TENSOR_Q8_0, ROWS, COLS));
    const size_t bytes = (size_t)ROWS * w.row_bytes;
    uint8_t *packed = malloc(bytes), *back = malloc(bytes);
    kernel_repack_rows(WEIGHT_LAYOUT_Q8_0_R16, data, packed, ROWS, COLS);
    assert_true(memcmp(packed, data, bytes) != 0);
    kernel_unpack_rows(WEIGHT_LAYOUT_Q8_0_R16, packed, back, ROWS, COLS);
    assert_memory_equal(back, data, bytes);
    weight r16 = w;
    r16.layout = WEIGHT_LAYOUT_Q8_0_R16;
    r16.data = packed;
    float a[COLS], b[COLS];
    for (int i = 0; i < ROWS; i++) {
        kernel_get_row(&w, i, a);
        kernel_get_row(&r16, i, b);
        assert_memory_equal(a, b, sizeof a);
    }

    float *x = malloc((size_t)MAX_BATCH * COLS * sizeof *x);
    s_fill(x, MAX_BATCH * COLS, 3.0f);
    const int64_t n_blocks = COLS / 32;
    q8_0_block *xq = malloc((size_t)MAX_BATCH * n_blocks * sizeof *xq);
    static float want[MAX_BATCH][ROWS];
    for (int r = 0; r < MAX_BATCH; r++) {
        q8_0_quantize_row(x + (size_t)r * COLS, xq + r * n_blocks, COLS);
        double xv[COLS];
        s_act_values(TENSOR_Q8_0, x + (size_t)r * COLS, COLS, xv);
        for (int i = 0; i < ROWS; i++) {
            const q8_0_block *wr = (const q8_0_block *)((const char *)data + (size_t)i * w.row_bytes);
            float acc = 0.0f;
            double exact = 0, terms = 0;
            for (int64_t k = 0; k < n_blocks; k++) {
                int32_t dot = 0;
                for (int j = 0; j < 32; j++)
                    dot += wr[k].qs[j] * xq[r * n_blocks + k].qs[j];
                acc = fmaf(fp16_to_f32(wr[k].d) * fp16_to_f32(xq[r * n_blocks + k].d), (float)dot, acc);
            }
            for (int c = 0; c < COLS; c++) {
                exact += wv[i * COLS + c] * xv[c];
                terms += fabs(wv[i * COLS + c] * xv[c]);
            }
            want[r][i] = acc;
            s_assert_dot(acc, exact, terms, 0, COLS);
        }
    }
    void *buf = malloc(kernel_act_bytes(TENSOR_Q8_0, MAX_BATCH, COLS));
    static float got[MAX_BATCH * ROWS];
    /* rows in pieces that cut groups: 0..5, 5..21, 21..32, 32..48 */
    static const int cuts[] = {5, 21, 32};
    FOR_EACH_ISA(isa) {
        s_assert_q8_0_pieces(&r16, x, MAX_BATCH, batches, sizeof batches / sizeof batches[0], cuts,
                             3, &want[0][0], buf, got, "r16");
        assert_int_equal(kernel_preferred_layout(TENSOR_Q8_0, ROWS, COLS),
                         isa == KERNEL_ISA_AVX512 ? WEIGHT_LAYOUT_Q8_0_R16 : WEIGHT_LAYOUT_ROWS);
        assert_int_equal(kernel_preferred_layout(TENSOR_F16, ROWS, COLS), WEIGHT_LAYOUT_ROWS);
    }
    free(buf);
    free(xq);
    free(x);
    free(back);
    free(packed);
    free(data);
    free(wv);
}

/* Cached rope angles give the same floats as kernel_rope; axpy adds a scaled vector. */
static void test_rope_angles_and_axpy(void **state)
{
    (void)state;
    enum { HEADS = 3, HEAD_DIM = 16, ROPE_DIM = 12, N = 37 };
    float a[HEADS * HEAD_DIM], b[HEADS * HEAD_DIM], cs[ROPE_DIM];
    s_fill(a, HEADS * HEAD_DIM, 1.0f);
    memcpy(b, a, sizeof a);
    kernel_rope(a, HEADS, HEAD_DIM, ROPE_DIM, 77, 10000.0f);
    kernel_rope_angles(cs, ROPE_DIM, 77, 10000.0f);
    kernel_rope_apply(b, HEADS, HEAD_DIM, ROPE_DIM, cs);
    assert_memory_equal(a, b, sizeof a);
    FOR_EACH_ISA(isa) {
        float y[N], x[N], y0[N];
        s_fill(y, N, 1.0f);
        s_fill(x, N, 1.0f);
        memcpy(y0, y, sizeof y);
        kernel_axpy(y, 0.37f, x, N);
        for (int i = 0; i < N; i++)
            if (fabs(y[i] - (y0[i] + 0.37 * x[i])) > 1e-6)
                fail_msg("%s axpy element %d", kernel_isa_name(isa), i);
    }
}

/* axpy over F16 values (an F16 KV cache's): each product rounded to float then added,
 * the same bits in every variant, for lengths with and without a tail. */
static void test_axpy_f16_is_exact_and_isa_invariant(void **state)
{
    (void)state;
    enum { N = 45 };
    float x[N], y0[N], want[N], got[N];
    uint16_t xh[N];
    s_fill(x, N, 2.0f);
    s_fill(y0, N, 1.0f);
    for (int i = 0; i < N; i++)
        xh[i] = f32_to_fp16(x[i]);
    const float a = fp16_to_f32(f32_to_fp16(0.3711f));
    for (int n = 1; n <= N; n += 11) {
        bool have = false;
        FOR_EACH_ISA(isa) {
            memcpy(got, y0, sizeof got);
            kernel_axpy_f16(got, a, xh, n);
            for (int i = n; i < N; i++)
                if (got[i] != y0[i])
                    fail_msg("%s axpy_f16 n %d wrote element %d", kernel_isa_name(isa), n, i);
            for (int i = 0; i < n; i++) {
                const float p = a * fp16_to_f32(xh[i]);
                if (got[i] != y0[i] + p)
                    fail_msg("%s axpy_f16 n %d element %d: %.9g", kernel_isa_name(isa), n, i, got[i]);
            }
            if (have)
                assert_memory_equal(got, want, sizeof got);
            memcpy(want, got, sizeof want);
            have = true;
        }
    }
}

/* RMSNorm, softmax and SwiGLU agree with float64 in every variant, over lengths with
 * and without a tail of the vector width, and over the range of attention scores (a
 * softmax of values 100 apart: e^-100 is 0 in float). */
static void test_vector_ops_match_float64(void **state)
{
    (void)state;
    static const int sizes[] = {173, 64, 5, 1};
    enum { N = 173 };
    FOR_EACH_ISA(isa) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si];
            float x[N], wt[N], out[N];
            s_fill(x, n, 3.0f);
            s_fill(wt, n, 1.0f);
            if (si == 0)
                x[7] = 100.0f;
            /* RMSNorm */
            kernel_rmsnorm(out, x, wt, n, 1e-5f);
            double ss = 0;
            for (int i = 0; i < n; i++)
                ss += (double)x[i] * x[i];
            double scale = 1.0 / sqrt(ss / n + 1e-5);
            for (int i = 0; i < n; i++)
                if (!(fabs(out[i] - x[i] * scale * wt[i]) < 1e-5 * (1 + fabs(x[i] * scale * wt[i]))))
                    fail_msg("%s rmsnorm n=%d [%d]: %.9g", kernel_isa_name(isa), n, i, out[i]);
            /* softmax */
            memcpy(out, x, sizeof x);
            kernel_softmax(out, n);
            double mx = -1e30, sum = 0;
            for (int i = 0; i < n; i++)
                mx = x[i] > mx ? x[i] : mx;
            for (int i = 0; i < n; i++)
                sum += exp(x[i] - mx);
            for (int i = 0; i < n; i++) {
                const double want = exp(x[i] - mx) / sum;
                if (!(fabs(out[i] - want) <= 1e-6 * want + 1e-30))
                    fail_msg("%s softmax n=%d [%d]: %.9g want %.9g", kernel_isa_name(isa), n, i,
                             out[i], want);
            }
            /* SiLU, SwiGLU */
            memcpy(out, x, sizeof x);
            kernel_swiglu(out, wt, n);
            for (int i = 0; i < n; i++) {
                double silu = x[i] / (1.0 + exp(-(double)x[i]));
                assert_true(fabs(kernel_silu(x[i]) - silu) < 1e-6 * (1 + fabs(silu)));
                if (!(fabs(out[i] - silu * wt[i]) < 1e-6 * (1 + fabs(silu))))
                    fail_msg("%s swiglu n=%d [%d]: %.9g want %.9g", kernel_isa_name(isa), n, i,
                             out[i], silu * wt[i]);
            }
        }
    }
}

/* The attention helpers give, bit for bit, what one dot product or axpy at a time
 * gives, in every variant (head dims a multiple of 16 and not). */
static void test_dot_and_axpy_rows_equal_one_at_a_time(void **state)
{
    (void)state;
    static const int dims[] = {64, 128, 16, 20, 7};
    enum { G = 7, D = 128 };
    FOR_EACH_ISA(isa) {
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
            const int n = dims[di];
            float q[G * D], k[D], a[G * 3], y[G * D], want[G * D], got[G * 3], one[G];
            s_fill(q, G * D, 1.0f);
            s_fill(k, D, 1.0f);
            s_fill(a, G * 3, 1.0f);
            s_fill(y, G * D, 1.0f);
            memcpy(want, y, sizeof y);
            kernel_dot_f32_rows(q, D, G, k, n, got, 3);
            for (int g = 0; g < G; g++) {
                one[g] = kernel_dot_f32(q + g * D, k, n);
                if (got[g * 3] != one[g])
                    fail_msg("%s dot rows n=%d g=%d: %.9g, alone %.9g", kernel_isa_name(isa), n, g,
                             got[g * 3], one[g]);
                kernel_axpy(want + g * D, a[g * 3], k, n);
            }
            kernel_axpy_rows(y, D, a, 3, G, k, n);
            assert_memory_equal(y, want, sizeof y);
        }
    }
}

static void test_rope_rotates_adjacent_pairs_of_the_rope_dims(void **state)
{
    (void)state;
    enum { HEADS = 3, HEAD_DIM = 10, ROPE_DIM = 6 };
    const float base = 10000.0f;
    float x[HEADS * HEAD_DIM], orig[HEADS * HEAD_DIM];
    for (int pos = 0; pos < 300; pos += 37) {
        s_fill(x, HEADS * HEAD_DIM, 1.0f);
        memcpy(orig, x, sizeof x);
        kernel_rope(x, HEADS, HEAD_DIM, ROPE_DIM, pos, base);
        for (int h = 0; h < HEADS; h++) {
            for (int i = 0; i < HEAD_DIM; i += 2) {
                const float *o = orig + h * HEAD_DIM + i;
                const float *g = x + h * HEAD_DIM + i;
                double a0 = o[0], a1 = o[1];
                if (i >= ROPE_DIM) { /* beyond the rope dims: untouched */
                    assert_true(g[0] == o[0] && g[1] == o[1]);
                    continue;
                }
                double theta = pos * pow(base, -(double)i / ROPE_DIM);
                double w0 = a0 * cos(theta) - a1 * sin(theta);
                double w1 = a0 * sin(theta) + a1 * cos(theta);
                /* float angles lose ~1e-7 relative, i.e. ~3e-5 rad at pos 300 */
                assert_true(fabs(g[0] - w0) < 1e-4 && fabs(g[1] - w1) < 1e-4);
            }
        }
    }
}

/* The F16 and F32 matrix products (F16 activations converted to floats once, two batch
 * rows per pass over a weight row) compute every element as the variant's
 * kernel_dot_f16 / kernel_dot_f32 does, bit for bit, whatever the batch size and the
 * row range; a tail of n % 32 included. */
static void test_f16_f32_matmul_is_batch_and_split_invariant(void **state)
{
    (void)state;
    enum { ROWS = 11, COLS = 32 * 9 + 7, MAX_BATCH = 5 };
    static const int batches[] = {1, 2, 3, 5};
    static const enum tensor_type types[] = {TENSOR_F16, TENSOR_F32};
    float *x = malloc((size_t)MAX_BATCH * COLS * sizeof *x);
    s_fill(x, MAX_BATCH * COLS, 3.0f);
    float want[MAX_BATCH * ROWS], got[MAX_BATCH * ROWS];
    for (size_t t = 0; t < 2; t++) {
        weight w;
        double *wv = malloc((size_t)ROWS * COLS * sizeof *wv);
        void *data = s_make_weight(types[t], ROWS, COLS, &w, wv);
        void *buf = malloc(kernel_act_bytes(types[t], MAX_BATCH, COLS) + 1);
        FOR_EACH_ISA(isa) {
            for (int r = 0; r < MAX_BATCH; r++) {
                uint16_t xr[COLS];
                for (int c = 0; c < COLS; c++)
                    xr[c] = f32_to_fp16(x[r * COLS + c]);
                for (int i = 0; i < ROWS; i++) {
                    const void *wrow = (const char *)data + i * w.row_bytes;
                    want[r * ROWS + i] = types[t] == TENSOR_F16
                                             ? kernel_dot_f16(wrow, xr, COLS)
                                             : kernel_dot_f32(wrow, x + r * COLS, COLS);
                }
            }
            for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                const int n = batches[b];
                kernel_act act = kernel_act_init(types[t], x, n, COLS, buf);
                kernel_act_convert(&act, x, 0, n);
                memset(got, 0, sizeof got);
                kernel_matmul(&w, &act, got, ROWS, 0, 4);
                kernel_matmul(&w, &act, got, ROWS, 4, ROWS);
                for (int r = 0; r < n; r++)
                    for (int i = 0; i < ROWS; i++)
                        if (got[r * ROWS + i] != want[r * ROWS + i])
                            fail_msg("%s %s batch %d row %d col %d: %.9g, dot %.9g",
                                     kernel_isa_name(isa), t ? "f32" : "f16", n, r, i,
                                     got[r * ROWS + i], want[r * ROWS + i]);
            }
        }
        free(buf);
        free(data);
        free(wv);
    }
    free(x);
}

static void test_get_row_dequantizes_every_type(void **state)
{
    (void)state;
    static const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0};
    for (size_t t = 0; t < 4; t++) {
        weight w;
        double v[4 * 64];
        void *data = s_make_weight(types[t], 4, 64, &w, v);
        float row[64];
        kernel_get_row(&w, 2, row);
        for (int c = 0; c < 64; c++)
            assert_true(row[c] == (float)v[2 * 64 + c]);
        free(data);
    }
}

static void test_isa_override_and_names(void **state)
{
    (void)state;
    assert_true(kernel_isa_available(KERNEL_ISA_SCALAR));
    assert_string_equal(kernel_isa_name(KERNEL_ISA_AVX2), "avx2");
    assert_string_equal(kernel_isa_name(KERNEL_ISA_AVX512), "avx512");
    assert_string_equal(weight_layout_name(WEIGHT_LAYOUT_Q8_0_R16), "q8_0_r16");
    llorch_error err = {0};
    assert_int_equal(kernel_isa_select(KERNEL_ISA_SCALAR, &err), 0);
    assert_int_equal(kernel_isa_active(), KERNEL_ISA_SCALAR);
    assert_int_equal(kernel_isa_select((kernel_isa)99, &err), -1);
    assert_non_null(strstr(err.msg, "not available"));
}

typedef struct count_job {
    int64_t seen[1000];
} count_job;

static void s_count_share(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    count_job *job = ctx;
    for (int64_t i = begin; i < end; i++)
        job->seen[i]++;
}

static void test_threadpool_covers_every_item_once_many_times(void **state)
{
    (void)state;
    threadpool *pool = threadpool_new(2, NULL);
    assert_int_equal(threadpool_size(pool), 2);
    count_job job = {0};
    for (int round = 0; round < 2000; round++)
        threadpool_for(pool, 1 + round % 1000, s_count_share, &job);
    for (int i = 0; i < 1000; i++) {
        int64_t want = 0;
        for (int round = 0; round < 2000; round++)
            want += i < 1 + round % 1000;
        assert_int_equal(job.seen[i], want);
    }
    threadpool_free(&pool);
    llorch_error err = {0};
    assert_null(threadpool_new(0, &err));
    assert_non_null(strstr(err.msg, "out of range"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_f32_matches_float64),
        cmocka_unit_test(test_dot_f16_and_bf16_match_float64),
        cmocka_unit_test(test_q8_0_quantization_is_bit_exact_with_reference),
        cmocka_unit_test(test_dot_q8_0_matches_float64),
        cmocka_unit_test(test_f16_and_bf16_conversions_are_bit_exact),
        cmocka_unit_test(test_f16_f32_matmul_is_batch_and_split_invariant),
        cmocka_unit_test(test_matmul_every_type_matches_float64_and_splits),
        cmocka_unit_test(test_q8_0_matmul_is_batch_split_and_isa_invariant),
        cmocka_unit_test(test_q8_0_r16_layout_and_products),
        cmocka_unit_test(test_rope_angles_and_axpy),
        cmocka_unit_test(test_axpy_f16_is_exact_and_isa_invariant),
        cmocka_unit_test(test_vector_ops_match_float64),
        cmocka_unit_test(test_dot_and_axpy_rows_equal_one_at_a_time),
        cmocka_unit_test(test_rope_rotates_adjacent_pairs_of_the_rope_dims),
        cmocka_unit_test(test_get_row_dequantizes_every_type),
        cmocka_unit_test(test_isa_override_and_names),
        cmocka_unit_test(test_threadpool_covers_every_item_once_many_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
