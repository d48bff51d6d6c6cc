/* kernels_avx2.c - the AVX2 + FMA + F16C variant of the dot products and conversions. */
#include <immintrin.h>
#include <math.h>

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

/* Per block: the 32 int8 products summed pairwise into 8 int32 lanes (maddubs needs an
 * unsigned operand, so |w| times x carrying w's sign), converted to float and scaled
 * by d_w * d_x: the same arithmetic as ggml's AVX2 path. */
float kernel_avx2_dot_q8_0(const void *w_blocks, const void *x_blocks, int64_t n)
{
    const q8_0_block *w = w_blocks;
    const q8_0_block *x = x_blocks;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / Q8_0_BLOCK; b++) {
        const __m256i qw = _mm256_loadu_si256((const __m256i *)w[b].qs);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i abs_w = _mm256_sign_epi8(qw, qw);
        const __m256i signed_x = _mm256_sign_epi8(qx, qw);
        const __m256i pairs = _mm256_maddubs_epi16(abs_w, signed_x);
        const __m256 q = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    return s_hsum(acc);
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
