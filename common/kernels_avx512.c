/* kernels_avx512.c - the AVX-512 VNNI variant: Q8_0 products over the R16 layout, F16 and F32 products as llama.cpp computes them on such a CPU. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"
#include "quant.h"

/* ---- Q8_0 in the R16 layout ------------------------------------------------------- */

/* One block of a 16-row group: 16 half scales, then 8 quads of 16 rows (kernels.h). */
#define R16_BLOCK_BYTES (KERNEL_R16_ROWS * 34)
#define R16_QUANTS_AT 32

/* Batch rows one tile keeps in registers: 2 x 8 zmm accumulators (float and integer)
 * plus the weight quad and temporaries fit the 32 registers. */
#define R16_TILE_COLS 8

/* Bytes ahead of the weight stream that every block prefetches (its 9 lines, 4 KB on).
 * One batch row is bound by memory bandwidth: without it the loop waits on every line.
 * 4 KB read 30-40 GB/s with 2 threads on Zen4 where 2 KB read 24-32 and 8 KB 28-38 (the
 * machine's probe moving 29-54 GB/s from one run to the next). */
#define R16_PREFETCH_BYTES 4096

/* An unaligned int32 in memory, as an asm operand. */
typedef int32_t __attribute__((aligned(1), may_alias)) s_i32_unaligned;

/* dot += the products of the 64 unsigned bytes of w with the 4 signed bytes at x
 * repeated (vpdpbusd with an embedded broadcast, which compilers do not form from the
 * intrinsic and a separate broadcast). */
static inline __m512i s_dpbusd_bcast(__m512i dot, __m512i w, const uint8_t *x)
{
    __asm__("vpdpbusd %[x]%{1to16%}, %[w], %[dot]" : [dot] "+v"(dot) : [w] "v"(w), [x] "m"(*(const s_i32_unaligned *)x));
    return dot;
}

/* out[c * out_stride + r] for the 16 rows of one group (lanes where `keep` is set) and
 * batch rows c = 0..C-1 of act starting at x (their blocks), d and bias (their block
 * scales and biases, n_blocks per batch row). Per block and batch row: the integer
 * dot of 16 rows at once, starting from the bias (-128 sum x: the weights are stored
 * as q + 128), one vpdpbusd per quad with the quad's 4 activation bytes broadcast;
 * then acc = fma(d_w * d_x, dot, acc): the R16 arithmetic of kernels.h, lane = row. */
static inline __attribute__((always_inline)) void
s_r16_tile(const uint8_t *group, int64_t n_blocks, const uint8_t *x, size_t x_stride, const float *d,
           const int32_t *bias, float *out, int64_t out_stride, __mmask16 keep, const int C)
{
    __m512 acc[R16_TILE_COLS];
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
        acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = group + (size_t)b * R16_BLOCK_BYTES;
#pragma GCC unroll 9
        for (int l = 0; l < R16_BLOCK_BYTES; l += 64)
            _mm_prefetch((const char *)blk + R16_PREFETCH_BYTES + l, _MM_HINT_T0);
        __m512i dot[R16_TILE_COLS];
#pragma GCC unroll 8
        for (int c = 0; c < C; c++)
            dot[c] = _mm512_set1_epi32(bias[(size_t)c * n_blocks + b]);
        const uint8_t *xb = x + (size_t)b * sizeof(q8_0_block) + 2;
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            const __m512i wq = _mm512_loadu_si512(blk + R16_QUANTS_AT + 64 * k);
#pragma GCC unroll 8
            for (int c = 0; c < C; c++)
                dot[c] = s_dpbusd_bcast(dot[c], wq, xb + (size_t)c * x_stride + 4 * k);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) {
            /* d_w * d_x is exact in float (two halves), as in the scalar variant */
            const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(d[(size_t)c * n_blocks + b]));
            acc[c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot[c]), acc[c]);
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
        _mm512_mask_storeu_ps(out + c * out_stride, keep, acc[c]);
}

#define R16_TILE_FN(C)                                                                         \
    static void s_r16_tile_##C(const uint8_t *g, int64_t nb, const uint8_t *x, size_t xs,      \
                               const float *d, const int32_t *bias, float *out, int64_t os,    \
                               __mmask16 keep)                                                 \
    {                                                                                          \
        s_r16_tile(g, nb, x, xs, d, bias, out, os, keep, C);                                   \
    }
R16_TILE_FN(1)
R16_TILE_FN(2)
R16_TILE_FN(3)
R16_TILE_FN(4)
R16_TILE_FN(5)
R16_TILE_FN(6)
R16_TILE_FN(7)
R16_TILE_FN(8)
#undef R16_TILE_FN

typedef void (*r16_tile_fn)(const uint8_t *, int64_t, const uint8_t *, size_t, const float *,
                            const int32_t *, float *, int64_t, __mmask16);
static const r16_tile_fn s_r16_tiles[R16_TILE_COLS] = {
    s_r16_tile_1, s_r16_tile_2, s_r16_tile_3, s_r16_tile_4,
    s_r16_tile_5, s_r16_tile_6, s_r16_tile_7, s_r16_tile_8,
};

/* Group after group of the row range; in each, the batch rows in tiles of at most 8, as
 * even as possible (12 rows: 6 + 6), so the group's weights are read from memory once
 * and from cache by the later tiles. */
void kernel_avx512_matmul_q8_0_r16(const weight *w, const kernel_act *act, float *out,
                                   int64_t out_stride, int64_t row_begin, int64_t row_end)
{
    const int64_t n_blocks = w->cols / Q8_0_BLOCK;
    const size_t group_bytes = (size_t)KERNEL_R16_ROWS * w->row_bytes;
    const int64_t n_tiles = (act->n_rows + R16_TILE_COLS - 1) / R16_TILE_COLS;
    for (int64_t g = row_begin / KERNEL_R16_ROWS; g * KERNEL_R16_ROWS < row_end; g++) {
        const int64_t i0 = g * KERNEL_R16_ROWS;
        const int lo = row_begin > i0 ? (int)(row_begin - i0) : 0;
        const int hi = row_end < i0 + KERNEL_R16_ROWS ? (int)(row_end - i0) : KERNEL_R16_ROWS;
        const __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        const uint8_t *group = (const uint8_t *)w->data + (size_t)g * group_bytes;
        for (int64_t t = 0, c0 = 0; t < n_tiles; t++) {
            const int64_t c1 = act->n_rows * (t + 1) / n_tiles;
            s_r16_tiles[c1 - c0 - 1](group, n_blocks,
                                     (const uint8_t *)act->data + (size_t)c0 * act->row_bytes,
                                     act->row_bytes, act->block_d + c0 * n_blocks,
                                     act->block_bias + c0 * n_blocks, out + c0 * out_stride + i0,
                                     out_stride, keep);
            c0 = c1;
        }
    }
}

/* ---- F16 and F32: llama.cpp's AVX-512 arithmetic ----------------------------------- */

/* _mm512_reduce_add_ps's order, spelled out so that every compiler gives the same bits:
 * halves added, then quarters, then pairs, then the last two lanes. */
static inline float s_reduce16(__m512 v)
{
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

static inline __m512 s_load_f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* 16 values of a row from element i: F16 (converted) or F32. */
static inline __m512 s_load16(const void *p, int64_t i, const bool f16)
{
    return f16 ? s_load_f16x16((const uint16_t *)p + i) : _mm512_loadu_ps((const float *)p + i);
}

static inline float s_value(const void *p, int64_t i, const bool f16)
{
    return f16 ? fp16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* ggml_vec_dot_f32 / _f16 on AVX-512 (what llama.cpp uses when a row is not a multiple
 * of 16): four 16-lane accumulators over 64-element steps, added as (s0 + s2) + (s1 + s3),
 * then s_reduce16; the tail added in float (F32 weights) or in double (F16 weights). x is
 * F16 (x_f16) or floats. */
static inline __attribute__((always_inline)) float s_dot4(const void *w, const void *x, int64_t n,
                                                           const bool f16, const bool x_f16)
{
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            s[j] = _mm512_fmadd_ps(s_load16(w, i + 16 * j, f16), s_load16(x, i + 16 * j, x_f16), s[j]);
    s[0] = _mm512_add_ps(s[0], s[2]);
    s[1] = _mm512_add_ps(s[1], s[3]);
    const float r = s_reduce16(_mm512_add_ps(s[0], s[1]));
    if (f16) {
        double t = r;
        for (int64_t i = np; i < n; i++)
            t += (double)(s_value(w, i, true) * s_value(x, i, x_f16));
        return (float)t;
    }
    float t = r;
    for (int64_t i = np; i < n; i++)
        t += s_value(w, i, false) * s_value(x, i, x_f16);
    return t;
}

/* tinyBLAS's form (n % 16 == 0): one 16-lane chain over 16-element steps, s_reduce16. */
static inline __attribute__((always_inline)) float s_dot1(const void *w, const void *x, int64_t n,
                                                           const bool f16)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16)
        acc = _mm512_fmadd_ps(s_load16(w, i, f16), s_load16(x, i, f16), acc);
    return s_reduce16(acc);
}

float kernel_avx512_dot_f32(const float *w, const float *x, int64_t n)
{
    return n % 16 == 0 ? s_dot1(w, x, n, false) : s_dot4(w, x, n, false, false);
}

float kernel_avx512_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n)
{
    return n % 16 == 0 ? s_dot1(w, x, n, true) : s_dot4(w, x, n, true, true);
}

/* Rows % 16 == 0: tinyBLAS's arithmetic (llamafile's sgemm, which llama.cpp runs for F16
 * and F32 products of any batch size on AVX-512): one 16-lane accumulator per element,
 * fma'd over 16-element steps, then s_reduce16. R weight rows x C batch rows at once
 * (independent chains, so the fma latency is hidden); each weight step is loaded
 * (converted) once for the C batch rows. */
#define F_TILE_R 4
#define F_TILE_C 2
#define F_PREFETCH_BYTES 2048

static inline __attribute__((always_inline)) void
s_ftile(const uint8_t *w, size_t w_stride, const float *x, int64_t n, float *out, int64_t out_stride,
        const bool f16, const int R, const int C, const bool prefetch)
{
    __m512 acc[F_TILE_R][F_TILE_C];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    const size_t elem = f16 ? 2 : 4;
    for (int64_t i = 0; i < n; i += 16) {
        __m512 xv[F_TILE_C];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            xv[c] = _mm512_loadu_ps(x + c * n + i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *wr = w + (size_t)r * w_stride + (size_t)i * elem;
            if (prefetch && (i * elem) % 64 == 0)
                _mm_prefetch((const char *)wr + F_PREFETCH_BYTES, _MM_HINT_T0);
            const __m512 wv = f16 ? s_load_f16x16((const uint16_t *)wr) : _mm512_loadu_ps((const float *)wr);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            out[c * out_stride + r] = s_reduce16(acc[r][c]);
}

#define F_TILE_FN(NAME, F16, R, C)                                                             \
    static void NAME(const uint8_t *w, size_t ws, const float *x, int64_t n, float *out,       \
                     int64_t os)                                                               \
    {                                                                                          \
        s_ftile(w, ws, x, n, out, os, F16, R, C, C == 1);                                      \
    }
F_TILE_FN(s_f32_4x1, false, 4, 1)
F_TILE_FN(s_f32_4x2, false, 4, 2)
F_TILE_FN(s_f32_1x1, false, 1, 1)
F_TILE_FN(s_f32_1x2, false, 1, 2)
F_TILE_FN(s_f16_4x1, true, 4, 1)
F_TILE_FN(s_f16_4x2, true, 4, 2)
F_TILE_FN(s_f16_1x1, true, 1, 1)
F_TILE_FN(s_f16_1x2, true, 1, 2)
#undef F_TILE_FN

typedef void (*ftile_fn)(const uint8_t *, size_t, const float *, int64_t, float *, int64_t);
static const ftile_fn s_ftiles[2][2][2] = {
    /* [f16][R == 1][C - 1] */
    {{s_f32_4x1, s_f32_4x2}, {s_f32_1x1, s_f32_1x2}},
    {{s_f16_4x1, s_f16_4x2}, {s_f16_1x1, s_f16_1x2}},
};

static void s_matmul_float(const weight *w, const float *x, int64_t n_rows, const bool f16, float *out,
                           int64_t out_stride, int64_t row_begin, int64_t row_end)
{
    const int64_t n = w->cols;
    if (n % 16) {
        for (int64_t i = row_begin; i < row_end; i++) {
            const void *wrow = (const uint8_t *)w->data + (size_t)i * w->row_bytes;
            for (int64_t c = 0; c < n_rows; c++)
                out[c * out_stride + i] = s_dot4(wrow, x + c * n, n, f16, false);
        }
        return;
    }
    for (int64_t i = row_begin; i < row_end;) {
        const int one = row_end - i < F_TILE_R;
        const uint8_t *wrow = (const uint8_t *)w->data + (size_t)i * w->row_bytes;
        for (int64_t c = 0; c < n_rows; c += F_TILE_C) {
            const int nc = n_rows - c >= F_TILE_C ? F_TILE_C : (int)(n_rows - c);
            s_ftiles[f16][one][nc - 1](wrow, w->row_bytes, x + c * n, n, out + c * out_stride + i,
                                       out_stride);
        }
        i += one ? 1 : F_TILE_R;
    }
}

void kernel_avx512_matmul_f16(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                              int64_t row_begin, int64_t row_end)
{
    s_matmul_float(w, act->data_f32, act->n_rows, true, out, out_stride, row_begin, row_end);
}

void kernel_avx512_matmul_f32(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                              int64_t row_begin, int64_t row_end)
{
    s_matmul_float(w, act->data, act->n_rows, false, out, out_stride, row_begin, row_end);
}

/* ---- vector ops --------------------------------------------------------------------- */

/* e^x, within ~2 ulp: x = n ln2 + r (ln2 in two parts, so r is exact), |r| <= ln2 / 2,
 * e^r by its Taylor polynomial to r^7 (remainder < 5e-9), scaled by 2^n. Inputs are
 * clamped to [-104, 88.7]: below, e^x is 0 in float; above, it overflows. */
static inline __m512 s_exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* As the scalar kernel_softmax, 16 at a time: the maximum, e^(x - max), the sum in
 * double, then each value times 1 / sum. */
void kernel_avx512_softmax(float *x, int64_t n)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    float max = _mm512_reduce_max_ps(vmax);
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    const __m512 m = _mm512_set1_ps(max);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 e = s_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    if (i < n) {
        const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = s_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), m));
        _mm512_mask_storeu_ps(x + i, tail, e);
        float rest[16];
        _mm512_storeu_ps(rest, e);
        for (int64_t j = 0; j < n - i; j++)
            sum += (double)rest[j];
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= (float)(1.0 / sum);
}

/* gate = gate / (1 + e^-gate) * up, 16 at a time (a masked tail). */
void kernel_avx512_swiglu(float *gate, const float *up, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, s_exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_mask_storeu_ps(gate + i, k, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(k, up + i)));
    }
}

/* N of the chains of kernel_avx512_dot_f32_rows at once, n % 16 == 0. */
static inline __attribute__((always_inline)) void
s_dot_chains(const float *q, int64_t q_stride, const float *k, int64_t n, float *out,
             int64_t out_stride, const int N)
{
    __m512 acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < N; j++)
        acc[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __m512 kv = _mm512_loadu_ps(k + i);
#pragma GCC unroll 8
        for (int j = 0; j < N; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + j * q_stride + i), kv, acc[j]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < N; j++)
        out[j * out_stride] = s_reduce16(acc[j]);
}

/* out[g * out_stride] = kernel_avx512_dot_f32(q + g * q_stride, k, n) for g < n_q, up to
 * 8 chains interleaved (each still one chain: the same bits as alone). */
void kernel_avx512_dot_f32_rows(const float *q, int64_t q_stride, int n_q, const float *k,
                                int64_t n, float *out, int64_t out_stride)
{
    int g = 0;
    if (n % 16 == 0) {
        for (; g + 8 <= n_q; g += 8)
            s_dot_chains(q + g * q_stride, q_stride, k, n, out + g * out_stride, out_stride, 8);
        for (; g + 4 <= n_q; g += 4)
            s_dot_chains(q + g * q_stride, q_stride, k, n, out + g * out_stride, out_stride, 4);
    }
    for (; g < n_q; g++)
        out[g * out_stride] = kernel_avx512_dot_f32(q + g * q_stride, k, n);
}

/* y[g * y_stride + i] += a[g * a_stride] * x[i] for g < n_y: multiply, then add, as
 * kernel_axpy (the same floats), x loaded once for the n_y rows. */
void kernel_avx512_axpy_rows(float *y, int64_t y_stride, const float *a, int64_t a_stride, int n_y,
                             const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
        for (int g = 0; g < n_y; g++) {
            float *yg = y + g * y_stride + i;
            const __m512 p = _mm512_mul_ps(_mm512_set1_ps(a[g * a_stride]), xv);
            _mm512_mask_storeu_ps(yg, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, yg), p));
        }
    }
}

/* As the scalar kernel_rmsnorm: squares in float, their sum in double (eight lanes, so
 * another order: the float mean comes out the same but for a tie in ~1e-9 of rows), then
 * (x * scale) * weight. */
void kernel_avx512_rmsnorm(float *out, const float *x, const float *norm_weight, int64_t n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512 sq = _mm512_mul_ps(v, v);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    const __m512 vs = _mm512_set1_ps(scale);
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs),
                                                _mm512_loadu_ps(norm_weight + i)));
    for (; i < n; i++)
        out[i] = (x[i] * scale) * norm_weight[i];
}
