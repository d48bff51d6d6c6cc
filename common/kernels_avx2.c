/* kernels_avx2.c - the AVX2 + FMA + F16C variant of the dot products and conversions. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"
#include "quant.h"

static inline float s_hsum(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* ggml's reduction of four 8-lane accumulators: pairwise adds, then two horizontal
 * adds. With the same 32-element steps this gives the same float result as ggml's
 * single-row dot products, so that rounding the result to F16 or Q8_0 in the next
 * layer rounds the same way as llama.cpp does. */
static inline float s_reduce4(__m256 sum[4])
{
    sum[0] = _mm256_add_ps(sum[0], sum[2]);
    sum[1] = _mm256_add_ps(sum[1], sum[3]);
    sum[0] = _mm256_add_ps(sum[0], sum[1]);
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(sum[0]), _mm256_extractf128_ps(sum[0], 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

float kernel_avx2_dot_f32(const float *w, const float *x, int64_t n)
{
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            sum[j] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8 * j), _mm256_loadu_ps(x + i + 8 * j),
                                     sum[j]);
    float total = s_reduce4(sum);
    for (int64_t i = np; i < n; i++)
        total += w[i] * x[i];
    return total;
}

static inline __m256 s_load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* As ggml: the tail (n % 32) is added in double. */
float kernel_avx2_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n)
{
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            sum[j] = _mm256_fmadd_ps(s_load_f16(w + i + 8 * j), s_load_f16(x + i + 8 * j), sum[j]);
    double total = s_reduce4(sum);
    for (int64_t i = np; i < n; i++)
        total += (double)(fp16_to_f32(w[i]) * fp16_to_f32(x[i]));
    return (float)total;
}

void kernel_avx2_f16_to_f32(const uint16_t *x, float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, s_load_f16(x + i));
    for (; i < n; i++)
        out[i] = fp16_to_f32(x[i]);
}

/* ---- F16 and F32 matrix x batch -------------------------------------------------- */

/* Weight row w (F16 or F32) against one or two batch rows of floats, with the
 * arithmetic of kernel_avx2_dot_f16 / kernel_avx2_dot_f32 for every element (four
 * 8-lane accumulators over 32-element steps, s_reduce4, the tail added in double for
 * F16 and in float for F32), so that results are the same bits whatever the batch size.
 * F16 activations come as floats (act->data_f32: converted once per product, not once
 * per weight row), and each 32-element step of the weight row is loaded (converted)
 * once for two batch rows. One batch row reads the weights as a stream, prefetched
 * ahead like the Q8_0 rows. */
#define ROW_PREFETCH_BYTES 2048

static inline __attribute__((always_inline)) void
s_row_tile(const void *w, const bool f16, const float *x0, const float *x1, int64_t n, float *y0,
           float *y1, const bool two, const bool prefetch)
{
    const uint16_t *wh = w;
    const float *wf = w;
    __m256 a0[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 a1[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32) {
        if (prefetch)
            _mm_prefetch((const char *)w + (f16 ? 2 : 4) * i + ROW_PREFETCH_BYTES, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256 wv = f16 ? s_load_f16(wh + i + 8 * j) : _mm256_loadu_ps(wf + i + 8 * j);
            a0[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i + 8 * j), a0[j]);
            if (two)
                a1[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i + 8 * j), a1[j]);
        }
    }
    const float r0 = s_reduce4(a0), r1 = two ? s_reduce4(a1) : 0.0f;
    if (f16) {
        double t0 = r0, t1 = r1;
        for (int64_t i = np; i < n; i++) {
            const float wi = fp16_to_f32(wh[i]);
            t0 += (double)(wi * x0[i]);
            if (two)
                t1 += (double)(wi * x1[i]);
        }
        *y0 = (float)t0;
        if (two)
            *y1 = (float)t1;
    } else {
        float t0 = r0, t1 = r1;
        for (int64_t i = np; i < n; i++) {
            t0 += wf[i] * x0[i];
            if (two)
                t1 += wf[i] * x1[i];
        }
        *y0 = t0;
        if (two)
            *y1 = t1;
    }
}

static inline __attribute__((always_inline)) void
s_matmul_rows(const weight *w, const float *x, int64_t n_rows, const bool f16, float *out,
              int64_t out_stride, int64_t row_begin, int64_t row_end)
{
    const int64_t n = w->cols;
    for (int64_t i = row_begin; i < row_end; i++) {
        const void *wrow = (const uint8_t *)w->data + (size_t)i * w->row_bytes;
        if (n_rows == 1) {
            s_row_tile(wrow, f16, x, NULL, n, out + i, NULL, false, true);
            continue;
        }
        int64_t r = 0;
        for (; r + 2 <= n_rows; r += 2)
            s_row_tile(wrow, f16, x + r * n, x + (r + 1) * n, n, out + r * out_stride + i,
                       out + (r + 1) * out_stride + i, true, false);
        if (r < n_rows)
            s_row_tile(wrow, f16, x + r * n, NULL, n, out + r * out_stride + i, NULL, false, false);
    }
}

void kernel_avx2_matmul_f16(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                            int64_t row_begin, int64_t row_end)
{
    s_matmul_rows(w, act->data_f32, act->n_rows, true, out, out_stride, row_begin, row_end);
}

void kernel_avx2_matmul_f32(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                            int64_t row_begin, int64_t row_end)
{
    s_matmul_rows(w, act->data, act->n_rows, false, out, out_stride, row_begin, row_end);
}

static inline __m256 s_load_bf16(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float kernel_avx2_dot_bf16(const uint16_t *w, const uint16_t *x, int64_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(s_load_bf16(w + i), s_load_bf16(x + i), acc0);
        acc1 = _mm256_fmadd_ps(s_load_bf16(w + i + 8), s_load_bf16(x + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(s_load_bf16(w + i), s_load_bf16(x + i), acc0);
    float sum = s_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += bf16_to_f32(w[i]) * bf16_to_f32(x[i]);
    return sum;
}

/* The 32 int8 products of one block summed in quads: lane j = products 4j..4j+3.
 * maddubs needs an unsigned operand, so |w| times x carrying w's sign; no pair sum can
 * saturate (2 * 128 * 127 < 2^15). */
static inline __m256i s_block_quads(__m256i qw, __m256i qx)
{
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* Unaligned scalar loads (Q8_0 blocks are 34 bytes: their fields sit at any offset). */
static inline int32_t s_load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t s_load_u16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes ahead of the weight stream that the Q8_0 row loop prefetches. Without it the
 * loop waits on memory for every line: once the loop does real work the hardware
 * prefetchers stop keeping enough lines in flight. One row stream with 1-2 KB ahead
 * measured best on Zen3 (27-30 GB/s of 31-32 with 2 threads), ahead of 2, 4 or 8 row
 * streams sharing the activation loads. */
#define GEMV_PREFETCH_BYTES 2048

/* The Q8_0 arithmetic of every path (kernels.h), ggml's: eight float lanes, lane j
 * accumulating fma(d_w * d_x, quad j of the block, lane j) block after block, then
 * s_hsum's order. */
static inline float s_dot_q8_0(const q8_0_block *w, const q8_0_block *x, int64_t n_blocks,
                               bool prefetch)
{
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        if (prefetch)
            _mm_prefetch((const char *)(w + b) + GEMV_PREFETCH_BYTES, _MM_HINT_T0);
        const __m256i qw = _mm256_loadu_si256((const __m256i *)w[b].qs);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s_block_quads(qw, qx)), acc);
    }
    return s_hsum(acc);
}

float kernel_avx2_dot_q8_0(const void *w_blocks, const void *x_blocks, int64_t n)
{
    return s_dot_q8_0(w_blocks, x_blocks, n / Q8_0_BLOCK, false);
}

/* ---- Q8_0 matrix x vector (one batch row): bandwidth-bound ------------------------- */

/* y[i] for rows [begin, end) of w (GGUF row order) against one quantized row x: the
 * rows one after the other, one sequential stream, prefetched ahead. */
static void s_gemv_q8_0(const weight *w, const q8_0_block *x, float *out, int64_t begin, int64_t end)
{
    const int64_t n_blocks = w->cols / Q8_0_BLOCK;
    for (int64_t i = begin; i < end; i++)
        out[i] = s_dot_q8_0((const q8_0_block *)((const uint8_t *)w->data + (size_t)i * w->row_bytes),
                            x, n_blocks, true);
}

/* ---- Q8_0 matrix x batch: compute-bound, cache-blocked ----------------------------- */

/* A panel of 8 weight rows x GEMM_CHUNK_BLOCKS blocks, repacked so that one 32-byte
 * load holds quad k (4 quants) of each of the 8 rows (lane r = row r): every x quad,
 * broadcast, then meets 8 rows in one maddubs, and the scales of 8 rows apply in one
 * multiply. Quad k of a block is what ggml's lane k accumulates, so keeping one float
 * accumulator per quad (8 per batch row) and adding them up in s_hsum's order gives
 * ggml's float result for every row. The panel (17 KB) stays in L1 while the batch
 * rows pass over it, so each weight byte is read from memory once per GEMM_COLS_MAX
 * batch rows. */
#define GEMM_ROWS 8
#define GEMM_CHUNK_BLOCKS 32
#define GEMM_COLS_MAX 64

typedef struct gemm_panel {
    float d[GEMM_CHUNK_BLOCKS][GEMM_ROWS]; /* row scales */
    __m256i q[GEMM_CHUNK_BLOCKS][8];       /* [block][k]: lane r = row r's quants 4k..4k+3 */
    __m256i abs_q[GEMM_CHUNK_BLOCKS][8];   /* |q|: maddubs' unsigned operand */
} gemm_panel;

/* Rows [i0, i0 + n_rows) (n_rows <= 8; missing rows are zero), blocks [b0, b0 + nb). */
static void s_pack_panel(gemm_panel *pp, const weight *w, int64_t i0, int n_rows, int64_t b0, int nb)
{
    for (int b = 0; b < nb; b++) {
        int32_t lanes[8][GEMM_ROWS]; /* [k][r] */
        for (int r = 0; r < GEMM_ROWS; r++) {
            if (r >= n_rows) {
                pp->d[b][r] = 0.0f;
                for (int k = 0; k < 8; k++)
                    lanes[k][r] = 0;
                continue;
            }
            const uint8_t *blk = (const uint8_t *)w->data + (size_t)(i0 + r) * w->row_bytes +
                                 (size_t)(b0 + b) * sizeof(q8_0_block);
            pp->d[b][r] = _cvtsh_ss(s_load_u16(blk));
            for (int k = 0; k < 8; k++)
                lanes[k][r] = s_load_i32(blk + 2 + 4 * k);
        }
        for (int k = 0; k < 8; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)lanes[k]);
            pp->q[b][k] = q;
            pp->abs_q[b][k] = _mm256_abs_epi8(q);
        }
    }
}

/* acc[k] (lane r: row r's quad-k accumulator) += blocks [0, nb) of the panel against
 * the activation blocks at x. */
static void s_gemm_column(const gemm_panel *pp, int nb, const uint8_t *x, __m256 acc[8])
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    __m256 a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
    for (int b = 0; b < nb; b++, x += sizeof(q8_0_block)) {
        const __m256 d = _mm256_mul_ps(_mm256_loadu_ps(pp->d[b]), _mm256_set1_ps(_cvtsh_ss(s_load_u16(x))));
#define QUAD(k, a)                                                                             \
    do {                                                                                       \
        const __m256i xq = _mm256_set1_epi32(s_load_i32(x + 2 + 4 * (k)));                     \
        const __m256i pairs = _mm256_maddubs_epi16(pp->abs_q[b][k], _mm256_sign_epi8(xq, pp->q[b][k])); \
        a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones)), a);         \
    } while (0)
        QUAD(0, a0);
        QUAD(1, a1);
        QUAD(2, a2);
        QUAD(3, a3);
        QUAD(4, a4);
        QUAD(5, a5);
        QUAD(6, a6);
        QUAD(7, a7);
#undef QUAD
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
}

static void s_gemm_q8_0(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                        int64_t begin, int64_t end)
{
    const int64_t n_blocks = w->cols / Q8_0_BLOCK;
    gemm_panel panel __attribute__((aligned(32)));
    __m256 acc[GEMM_COLS_MAX][8]; /* the quad accumulators of each batch row of a group */
    for (int64_t c0 = 0; c0 < act->n_rows; c0 += GEMM_COLS_MAX) {
        const int nc = act->n_rows - c0 < GEMM_COLS_MAX ? (int)(act->n_rows - c0) : GEMM_COLS_MAX;
        for (int64_t i0 = begin; i0 < end; i0 += GEMM_ROWS) {
            const int n_rows = end - i0 < GEMM_ROWS ? (int)(end - i0) : GEMM_ROWS;
            for (int c = 0; c < nc; c++)
                for (int k = 0; k < 8; k++)
                    acc[c][k] = _mm256_setzero_ps();
            for (int64_t b0 = 0; b0 < n_blocks; b0 += GEMM_CHUNK_BLOCKS) {
                const int nb = n_blocks - b0 < GEMM_CHUNK_BLOCKS ? (int)(n_blocks - b0) : GEMM_CHUNK_BLOCKS;
                s_pack_panel(&panel, w, i0, n_rows, b0, nb);
                for (int c = 0; c < nc; c++)
                    s_gemm_column(&panel, nb,
                                  (const uint8_t *)act->data + (size_t)(c0 + c) * act->row_bytes +
                                      (size_t)b0 * sizeof(q8_0_block),
                                  acc[c]);
            }
            for (int c = 0; c < nc; c++) {
                /* s_hsum's order: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) */
                __m256 *a = acc[c];
                const __m256 even = _mm256_add_ps(_mm256_add_ps(a[4], a[0]), _mm256_add_ps(a[6], a[2]));
                const __m256 odd = _mm256_add_ps(_mm256_add_ps(a[5], a[1]), _mm256_add_ps(a[7], a[3]));
                float sums[GEMM_ROWS];
                _mm256_storeu_ps(sums, _mm256_add_ps(even, odd));
                memcpy(out + (c0 + c) * out_stride + i0, sums, (size_t)n_rows * sizeof(float));
            }
        }
    }
}

/* ---- Q8_0 matrix x small batch: register tiles ------------------------------------ */

/* R weight rows x C batch rows per tile, every block of the rows in one pass with the
 * R x C accumulators in registers (lane j of acc[r][c] is ggml's lane j: quad j of each
 * block, fma'd with d_w * d_x, then s_hsum's order). Per block, |w| of a weight row is
 * computed once and meets the C activation rows (vpsignb moves w's sign onto x), each
 * activation row is loaded once for the R weight rows. Nothing is repacked, so a tile
 * costs the same per multiply-add for 2 batch rows as for 16: the kernel for small
 * batches, where repacking a panel is not paid back. 2 x 4 (8 accumulators, no spills)
 * measured best on Zen3 among 1x8, 2x3, 2x5, 3x3, 4x2 and 4x3; every shape reaches the
 * same ~34 GMAC/s per core from cache (the sign, maddubs, madd, cvt, fma chain), the
 * wider ones lose it to spills or to the per-row work. */
#define TILE_R 2
#define TILE_C 4

/* Activation scales as floats, dx[c * n_blocks + b], converted once per call. */
#define TILE_DX_MAX 8192

/* Batch sizes up to this run as register tiles, larger ones as repacked panels
 * (64 rows: ~76 against ~65 GMAC/s with 2 threads; 16: 56 against 58). */
#define SMALL_BATCH_MAX 16

static inline __attribute__((always_inline)) void
s_tile_q8_0(const uint8_t *w0, size_t w_stride, const uint8_t *x0, size_t x_stride, const float *dx,
            int64_t n_blocks, float *out, int64_t out_stride, const int R, const int C)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE_R][TILE_C];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *wb = w0 + (size_t)b * sizeof(q8_0_block);
        const uint8_t *xb = x0 + (size_t)b * sizeof(q8_0_block);
        __m256 dxb[TILE_C];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            dxb[c] = _mm256_broadcast_ss(dx + (size_t)c * n_blocks + b);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *wr = wb + (size_t)r * w_stride;
            _mm_prefetch((const char *)wr + GEMV_PREFETCH_BYTES, _MM_HINT_T0);
            const __m256 dwb = _mm256_set1_ps(_cvtsh_ss(s_load_u16(wr)));
            const __m256i qw = _mm256_loadu_si256((const __m256i *)(wr + 2));
            const __m256i aw = _mm256_sign_epi8(qw, qw);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                const __m256i qx = _mm256_loadu_si256((const __m256i *)(xb + (size_t)c * x_stride + 2));
                const __m256i pairs = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(qx, qw));
                const __m256 quads = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                /* d_w * d_x is exact in float (two halves), as in s_dot_q8_0 */
                acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dwb, dxb[c]), quads, acc[r][c]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            out[c * out_stride + r] = s_hsum(acc[r][c]);
}

/* One instance per tile shape: 2 rows (or 1, a range's last row) x 1..4 batch rows. */
#define TILE_FN(R, C)                                                                          \
    static void s_tile_##R##x##C(const uint8_t *w0, size_t ws, const uint8_t *x0, size_t xs,   \
                                 const float *dx, int64_t nb, float *out, int64_t os)          \
    {                                                                                          \
        s_tile_q8_0(w0, ws, x0, xs, dx, nb, out, os, R, C);                                    \
    }
TILE_FN(2, 1)
TILE_FN(2, 2)
TILE_FN(2, 3)
TILE_FN(2, 4)
TILE_FN(1, 1)
TILE_FN(1, 2)
TILE_FN(1, 3)
TILE_FN(1, 4)
#undef TILE_FN

typedef void (*tile_fn)(const uint8_t *, size_t, const uint8_t *, size_t, const float *, int64_t,
                        float *, int64_t);
static const tile_fn s_tiles[2][TILE_C] = {
    {s_tile_2x1, s_tile_2x2, s_tile_2x3, s_tile_2x4},
    {s_tile_1x1, s_tile_1x2, s_tile_1x3, s_tile_1x4},
};

/* Batch rows split into column groups of at most TILE_C, as even as possible
 * (8 rows: 4 + 4; 6: 3 + 3; 5: 3 + 2). */
static void s_small_q8_0(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                         int64_t begin, int64_t end)
{
    const int64_t n_blocks = w->cols / Q8_0_BLOCK;
    float dx[TILE_DX_MAX];
    const int64_t cols_per_pass = TILE_DX_MAX / n_blocks;
    for (int64_t p0 = 0; p0 < act->n_rows; p0 += cols_per_pass) {
        const int64_t np = act->n_rows - p0 < cols_per_pass ? act->n_rows - p0 : cols_per_pass;
        const uint8_t *xp = (const uint8_t *)act->data + (size_t)p0 * act->row_bytes;
        for (int64_t c = 0; c < np; c++)
            for (int64_t b = 0; b < n_blocks; b++)
                dx[c * n_blocks + b] =
                    _cvtsh_ss(s_load_u16(xp + (size_t)c * act->row_bytes + (size_t)b * sizeof(q8_0_block)));
        const int64_t n_groups = (np + TILE_C - 1) / TILE_C;
        for (int64_t i = begin; i < end;) {
            const int r = end - i >= TILE_R ? 0 : 1;
            const uint8_t *wr = (const uint8_t *)w->data + (size_t)i * w->row_bytes;
            for (int64_t g = 0, c0 = 0; g < n_groups; g++) {
                const int64_t c1 = np * (g + 1) / n_groups;
                s_tiles[r][c1 - c0 - 1](wr, w->row_bytes, xp + (size_t)c0 * act->row_bytes,
                                        act->row_bytes, dx + c0 * n_blocks, n_blocks,
                                        out + (p0 + c0) * out_stride + i, out_stride);
                c0 = c1;
            }
            i += r == 0 ? TILE_R : 1;
        }
    }
}

void kernel_avx2_matmul_q8_0(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                             int64_t row_begin, int64_t row_end)
{
    if (act->n_rows == 1)
        s_gemv_q8_0(w, act->data, out, row_begin, row_end);
    else if (act->n_rows <= SMALL_BATCH_MAX && w->cols / Q8_0_BLOCK <= TILE_DX_MAX)
        s_small_q8_0(w, act, out, out_stride, row_begin, row_end);
    else
        s_gemm_q8_0(w, act, out, out_stride, row_begin, row_end);
}

/* Multiply, then add (not fused): the same floats as the scalar variant. */
void kernel_avx2_axpy(float *y, float a, const float *x, int64_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++)
        y[i] += a * x[i];
}

void kernel_avx2_axpy_f16(float *y, float a, const uint16_t *x, int64_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(va, s_load_f16(x + i))));
    for (; i < n; i++) {
        const float p = a * fp16_to_f32(x[i]);
        y[i] += p;
    }
}

void kernel_avx2_f32_to_f16(const float *x, uint16_t *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(out + i), h);
    }
    for (; i < n; i++)
        out[i] = f32_to_fp16(x[i]);
}

/* Round to nearest even on the upper 16 bits; NaN stays a quiet NaN (as fp16.h). */
void kernel_avx2_f32_to_bf16(const float *x, uint16_t *out, int64_t n)
{
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(64);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(x + i + 8 * k));
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(v, 16), one);
            __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(v, _mm256_add_epi32(bias, lsb)), 16);
            __m256i nan_value = _mm256_or_si256(_mm256_srli_epi32(v, 16), quiet);
            __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(v, abs_mask), inf);
            r[k] = _mm256_blendv_epi8(rounded, nan_value, is_nan);
        }
        /* packus interleaves 128-bit lanes: put the quarters back in order. */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)(out + i), packed);
    }
    for (; i < n; i++)
        out[i] = f32_to_bf16(x[i]);
}

/* Bit-exact with q8_0_quantize_row: d = max|x| / 127, id = 1 / d, q = roundf(x * id)
 * with roundf's ties away from zero (computed as trunc + (fraction >= 0.5), exact). */
void kernel_avx2_quantize_q8_0(const float *x, void *out_blocks, int64_t n)
{
    q8_0_block *out = out_blocks;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (int64_t b = 0; b < n / Q8_0_BLOCK; b++) {
        const float *xb = x + b * Q8_0_BLOCK;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[k]));
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float max_abs = _mm_cvtss_f32(m);
        const float d = max_abs / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        out[b].d = f32_to_fp16(d);
        const __m256 mul = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 scaled = _mm256_mul_ps(v[k], mul);
            const __m256 sign = _mm256_and_ps(scaled, sign_bit);
            const __m256 a = _mm256_andnot_ps(sign_bit, scaled);
            const __m256 t = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 up = _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(a, t), half, _CMP_GE_OQ), one);
            q[k] = _mm256_cvttps_epi32(_mm256_or_ps(_mm256_add_ps(t, up), sign));
        }
        __m256i q01 = _mm256_packs_epi32(q[0], q[1]);
        __m256i q23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i bytes = _mm256_packs_epi16(q01, q23);
        bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[b].qs, bytes);
    }
}
