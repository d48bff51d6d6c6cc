/* kernels.c - portable kernels and the run-time choice of the SIMD variant. */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* ---- scalar variant --------------------------------------------------------------- */

/* Every half as a float (256 KB), built once: the scalar F16 dot product would
 * otherwise spend its time in fp16_to_f32's branches. */
static float s_f16_table[1 << 16];
static pthread_once_t s_f16_table_once = PTHREAD_ONCE_INIT;

static void s_build_f16_table(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++)
        s_f16_table[h] = fp16_to_f32((uint16_t)h);
}

/* Eight partial sums, like the 8 lanes of the AVX2 path: the compiler may vectorise
 * this loop without reassociating, and long rows lose less precision than with one
 * running sum. */
static float s_dot_f32(const float *w, const float *x, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += w[i + j] * x[i + j];
    float sum = 0.0f;
    for (int j = 0; j < 8; j++)
        sum += acc[j];
    for (; i < n; i++)
        sum += w[i] * x[i];
    return sum;
}

static float s_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n)
{
    const float *f = s_f16_table;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += f[w[i + j]] * f[x[i + j]];
    float sum = 0.0f;
    for (int j = 0; j < 8; j++)
        sum += acc[j];
    for (; i < n; i++)
        sum += f[w[i]] * f[x[i]];
    return sum;
}

static float s_dot_bf16(const uint16_t *w, const uint16_t *x, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += bf16_to_f32(w[i + j]) * bf16_to_f32(x[i + j]);
    float sum = 0.0f;
    for (int j = 0; j < 8; j++)
        sum += acc[j];
    for (; i < n; i++)
        sum += bf16_to_f32(w[i]) * bf16_to_f32(x[i]);
    return sum;
}

/* ggml's Q8_0 arithmetic, the one every variant computes (kernels.h): eight float
 * lanes, lane j accumulating fma(d_w * d_x, dot of quants 4j..4j+3, lane j) block
 * after block, added up as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). */
static float s_dot_q8_0(const void *w_blocks, const void *x_blocks, int64_t n)
{
    const q8_0_block *w = w_blocks;
    const q8_0_block *x = x_blocks;
    float lane[8] = {0};
    for (int64_t b = 0; b < n / Q8_0_BLOCK; b++) {
        const float d = s_f16_table[w[b].d] * s_f16_table[x[b].d];
        for (int j = 0; j < 8; j++) {
            int32_t quad = 0;
            for (int i = 4 * j; i < 4 * j + 4; i++)
                quad += (int32_t)w[b].qs[i] * (int32_t)x[b].qs[i];
            lane[j] = fmaf(d, (float)quad, lane[j]);
        }
    }
    return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

static void s_f32_to_f16(const float *x, uint16_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = f32_to_fp16(x[i]);
}

static void s_f32_to_bf16(const float *x, uint16_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = f32_to_bf16(x[i]);
}

static void s_quantize_q8_0(const float *x, void *out_blocks, int64_t n)
{
    q8_0_quantize_row(x, out_blocks, n);
}

static void s_axpy(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void s_axpy_f16(float *y, float a, const uint16_t *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float p = a * s_f16_table[x[i]];
        y[i] += p;
    }
}

/* ---- the Q8_0 R16 layout ---------------------------------------------------------- */

/* Bytes of one block of one 16-row group: 16 scales, then 8 quads x 16 rows x 4 quants. */
#define R16_BLOCK_BYTES (KERNEL_R16_ROWS * sizeof(q8_0_block))
#define R16_QUANTS_AT 32

const char *weight_layout_name(enum weight_layout layout)
{
    switch (layout) {
    case WEIGHT_LAYOUT_ROWS: return "rows";
    case WEIGHT_LAYOUT_Q8_0_R16: return "q8_0_r16";
    default: return "unknown";
    }
}

bool weight_layout_fits(enum weight_layout layout, enum tensor_type type, int64_t rows, int64_t cols)
{
    switch (layout) {
    case WEIGHT_LAYOUT_ROWS: return true;
    case WEIGHT_LAYOUT_Q8_0_R16:
        return type == TENSOR_Q8_0 && rows > 0 && rows % KERNEL_R16_ROWS == 0 && cols > 0 &&
               cols % Q8_0_BLOCK == 0;
    default: return false;
    }
}

/* Where quant i of row r (of its group) of block b lives in an R16 group. */
static inline size_t s_r16_quant_at(int64_t b, int r, int i)
{
    return (size_t)b * R16_BLOCK_BYTES + R16_QUANTS_AT + (size_t)(i / 4) * 64 + (size_t)r * 4 + i % 4;
}

/* One 16-row group (n_blocks blocks) from one layout to the other, four quants at a
 * time: quad k of row r of block b moves between its GGUF place and R16 lane r of quad k
 * (the quants flip their top bit either way). */
static void s_r16_group(const uint8_t *from, uint8_t *to, size_t row_bytes, int64_t n_blocks,
                        bool to_r16)
{
    for (int64_t b = 0; b < n_blocks; b++) {
        const size_t blk = (size_t)b * R16_BLOCK_BYTES;
        for (int r = 0; r < KERNEL_R16_ROWS; r++) {
            const size_t row = (size_t)r * row_bytes + (size_t)b * sizeof(q8_0_block);
            const uint8_t *in = from + (to_r16 ? row : blk);
            uint8_t *out = to + (to_r16 ? blk : row);
            uint32_t quad[8];
            if (to_r16) {
                memcpy(out + 2 * (size_t)r, in, 2);
                memcpy(quad, in + 2, sizeof quad);
            } else {
                memcpy(out, in + 2 * (size_t)r, 2);
                for (int k = 0; k < 8; k++)
                    memcpy(&quad[k], in + R16_QUANTS_AT + 64 * k + 4 * r, 4);
            }
            for (int k = 0; k < 8; k++)
                quad[k] ^= 0x80808080u;
            if (to_r16)
                for (int k = 0; k < 8; k++)
                    memcpy(out + R16_QUANTS_AT + 64 * k + 4 * r, &quad[k], 4);
            else
                memcpy(out + 2, quad, sizeof quad);
        }
    }
}

static void s_relayout(enum weight_layout layout, const void *src, void *dst, int64_t rows,
                       int64_t cols, bool to_r16)
{
    const size_t row_bytes = (size_t)(cols / Q8_0_BLOCK) * sizeof(q8_0_block);
    if (layout != WEIGHT_LAYOUT_Q8_0_R16) {
        memcpy(dst, src, (size_t)rows * row_bytes);
        return;
    }
    const size_t group_bytes = KERNEL_R16_ROWS * row_bytes;
    for (int64_t g = 0; g < rows / KERNEL_R16_ROWS; g++)
        s_r16_group((const uint8_t *)src + (size_t)g * group_bytes, (uint8_t *)dst + (size_t)g * group_bytes,
                    row_bytes, cols / Q8_0_BLOCK, to_r16);
}

void kernel_repack_rows(enum weight_layout layout, const void *src, void *dst, int64_t rows,
                        int64_t cols)
{
    s_relayout(layout, src, dst, rows, cols, true);
}

void kernel_unpack_rows(enum weight_layout layout, const void *src, void *dst, int64_t rows,
                        int64_t cols)
{
    s_relayout(layout, src, dst, rows, cols, false);
}

/* Block b of row `row` of an R16 matrix as a GGUF block. */
static void s_r16_block(const weight *w, int64_t row, int64_t b, q8_0_block *out)
{
    const uint8_t *group = (const uint8_t *)w->data + (size_t)(row / KERNEL_R16_ROWS) * KERNEL_R16_ROWS * w->row_bytes;
    const int r = (int)(row % KERNEL_R16_ROWS);
    memcpy(&out->d, group + (size_t)b * R16_BLOCK_BYTES + 2 * (size_t)r, 2);
    for (int i = 0; i < Q8_0_BLOCK; i++)
        out->qs[i] = (int8_t)(group[s_r16_quant_at(b, r, i)] ^ 0x80);
}

/* The R16 arithmetic (kernels.h), one element at a time: the exact integer dot of each
 * block, then acc = fma(d_w * d_x, dot, acc) block after block. */
static void s_matmul_q8_0_r16(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                              int64_t row_begin, int64_t row_end)
{
    const int64_t n_blocks = w->cols / Q8_0_BLOCK;
    for (int64_t i = row_begin; i < row_end; i++)
        for (int64_t c = 0; c < act->n_rows; c++) {
            const q8_0_block *x = (const q8_0_block *)((const uint8_t *)act->data + (size_t)c * act->row_bytes);
            float acc = 0.0f;
            for (int64_t b = 0; b < n_blocks; b++) {
                q8_0_block wb;
                s_r16_block(w, i, b, &wb);
                int32_t dot = 0;
                for (int k = 0; k < Q8_0_BLOCK; k++)
                    dot += (int32_t)wb.qs[k] * x[b].qs[k];
                acc = fmaf(s_f16_table[wb.d] * s_f16_table[x[b].d], (float)dot, acc);
            }
            out[c * out_stride + i] = acc;
        }
}

/* ---- variant table ---------------------------------------------------------------- */

typedef struct kernel_variant {
    float (*dot_f32)(const float *, const float *, int64_t);
    float (*dot_f16)(const uint16_t *, const uint16_t *, int64_t);
    float (*dot_bf16)(const uint16_t *, const uint16_t *, int64_t);
    float (*dot_q8_0)(const void *, const void *, int64_t);
    void (*f32_to_f16)(const float *, uint16_t *, int64_t);
    void (*f32_to_bf16)(const float *, uint16_t *, int64_t);
    void (*quantize_q8_0)(const float *, void *, int64_t);
    /* NULL: the matrix product is a loop of dot_q8_0 / dot_f16 / dot_f32 */
    void (*matmul_q8_0)(const weight *, const kernel_act *, float *, int64_t, int64_t, int64_t);
    void (*matmul_q8_0_r16)(const weight *, const kernel_act *, float *, int64_t, int64_t, int64_t);
    void (*matmul_f16)(const weight *, const kernel_act *, float *, int64_t, int64_t, int64_t);
    void (*matmul_f32)(const weight *, const kernel_act *, float *, int64_t, int64_t, int64_t);
    void (*axpy)(float *, float, const float *, int64_t);
    void (*f16_to_f32)(const uint16_t *, float *, int64_t);
    void (*axpy_f16)(float *, float, const uint16_t *, int64_t);
    /* NULL: the scalar code (or a loop of dot_f32 / axpy) */
    void (*softmax)(float *, int64_t);
    void (*swiglu)(float *, const float *, int64_t);
    void (*dot_f32_rows)(const float *, int64_t, int, const float *, int64_t, float *, int64_t);
    void (*axpy_rows)(float *, int64_t, const float *, int64_t, int, const float *, int64_t);
    void (*rmsnorm)(float *, const float *, const float *, int64_t, float);
} kernel_variant;

static void s_f16_to_f32(const uint16_t *x, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = fp16_to_f32(x[i]);
}

static const kernel_variant s_variants[KERNEL_ISA_COUNT] = {
    [KERNEL_ISA_SCALAR] = {.dot_f32 = s_dot_f32, .dot_f16 = s_dot_f16, .dot_bf16 = s_dot_bf16,
                           .dot_q8_0 = s_dot_q8_0, .f32_to_f16 = s_f32_to_f16,
                           .f32_to_bf16 = s_f32_to_bf16, .quantize_q8_0 = s_quantize_q8_0,
                           .matmul_q8_0_r16 = s_matmul_q8_0_r16, .axpy = s_axpy,
                           .f16_to_f32 = s_f16_to_f32, .axpy_f16 = s_axpy_f16},
    [KERNEL_ISA_AVX2] = {.dot_f32 = kernel_avx2_dot_f32, .dot_f16 = kernel_avx2_dot_f16,
                         .dot_bf16 = kernel_avx2_dot_bf16, .dot_q8_0 = kernel_avx2_dot_q8_0,
                         .f32_to_f16 = kernel_avx2_f32_to_f16,
                         .f32_to_bf16 = kernel_avx2_f32_to_bf16,
                         .quantize_q8_0 = kernel_avx2_quantize_q8_0,
                         .matmul_q8_0 = kernel_avx2_matmul_q8_0,
                         .matmul_q8_0_r16 = s_matmul_q8_0_r16,
                         .matmul_f16 = kernel_avx2_matmul_f16, .matmul_f32 = kernel_avx2_matmul_f32,
                         .axpy = kernel_avx2_axpy, .f16_to_f32 = kernel_avx2_f16_to_f32,
                         .axpy_f16 = kernel_avx2_axpy_f16},
    /* AVX2's Q8_0 ROWS kernels (ggml's arithmetic needs no more than AVX2 has) */
    [KERNEL_ISA_AVX512] = {.dot_f32 = kernel_avx512_dot_f32, .dot_f16 = kernel_avx512_dot_f16,
                           .dot_bf16 = kernel_avx2_dot_bf16, .dot_q8_0 = kernel_avx2_dot_q8_0,
                           .f32_to_f16 = kernel_avx2_f32_to_f16,
                           .f32_to_bf16 = kernel_avx2_f32_to_bf16,
                           .quantize_q8_0 = kernel_avx2_quantize_q8_0,
                           .matmul_q8_0 = kernel_avx2_matmul_q8_0,
                           .matmul_q8_0_r16 = kernel_avx512_matmul_q8_0_r16,
                           .matmul_f16 = kernel_avx512_matmul_f16,
                           .matmul_f32 = kernel_avx512_matmul_f32, .axpy = kernel_avx2_axpy,
                           .f16_to_f32 = kernel_avx2_f16_to_f32,
                           .axpy_f16 = kernel_avx2_axpy_f16, .softmax = kernel_avx512_softmax,
                           .swiglu = kernel_avx512_swiglu,
                           .dot_f32_rows = kernel_avx512_dot_f32_rows,
                           .axpy_rows = kernel_avx512_axpy_rows,
                           .rmsnorm = kernel_avx512_rmsnorm},
};

static const kernel_variant *s_active;
static kernel_isa s_active_isa;

const char *kernel_isa_name(kernel_isa isa)
{
    switch (isa) {
    case KERNEL_ISA_SCALAR: return "scalar";
    case KERNEL_ISA_AVX2: return "avx2";
    case KERNEL_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

bool kernel_isa_available(kernel_isa isa)
{
    if (isa == KERNEL_ISA_SCALAR)
        return true;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == KERNEL_ISA_AVX2) {
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d))
            return false;
        bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
             f16c = c & (1u << 29);
        if (!(fma && osxsave && avx && f16c))
            return false;
        /* The OS must save the YMM registers (XCR0 bits 1 and 2). */
        unsigned xcr0_lo, xcr0_hi;
        __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
        if ((xcr0_lo & 6) != 6)
            return false;
        if (__get_cpuid_max(0, NULL) < 7)
            return false;
        __cpuid_count(7, 0, a, b, c, d);
        return b & (1u << 5);
    }
    if (isa == KERNEL_ISA_AVX512) {
        if (!kernel_isa_available(KERNEL_ISA_AVX2))
            return false;
        /* The OS must also save the opmask and ZMM registers (XCR0 bits 5, 6 and 7). */
        unsigned xcr0_lo, xcr0_hi, a, b, c, d;
        __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
        if ((xcr0_lo & 0xe6) != 0xe6)
            return false;
        __cpuid_count(7, 0, a, b, c, d);
        const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30),
                   vl = b & (1u << 31), vnni = c & (1u << 11);
        return f && dq && bw && vl && vnni;
    }
#endif
    return false;
}

static void s_init_active(void)
{
    pthread_once(&s_f16_table_once, s_build_f16_table);
    if (s_active)
        return;
    kernel_isa best = KERNEL_ISA_SCALAR;
    for (int i = KERNEL_ISA_COUNT - 1; i > KERNEL_ISA_SCALAR; i--)
        if (kernel_isa_available((kernel_isa)i)) {
            best = (kernel_isa)i;
            break;
        }
    const char *env = getenv("LLORCH_ISA");
    if (env && *env) {
        kernel_isa want = KERNEL_ISA_COUNT;
        for (int i = 0; i < KERNEL_ISA_COUNT; i++)
            if (!strcmp(env, kernel_isa_name((kernel_isa)i)))
                want = (kernel_isa)i;
        if (want == KERNEL_ISA_COUNT)
            fprintf(stderr, "llorch: LLORCH_ISA=%s is not one of scalar, avx2, avx512; using %s\n", env,
                    kernel_isa_name(best));
        else if (!kernel_isa_available(want))
            fprintf(stderr, "llorch: LLORCH_ISA=%s: this CPU cannot run it; using %s\n", env,
                    kernel_isa_name(best));
        else
            best = want;
    }
    s_active_isa = best;
    s_active = &s_variants[best];
}

kernel_isa kernel_isa_active(void)
{
    s_init_active();
    return s_active_isa;
}

int kernel_isa_select(kernel_isa isa, llorch_error *err)
{
    if (isa < 0 || isa >= KERNEL_ISA_COUNT || !kernel_isa_available(isa))
        return llorch_error_set(err, "kernel variant %s is not available on this CPU",
                                kernel_isa_name(isa));
    pthread_once(&s_f16_table_once, s_build_f16_table);
    s_active_isa = isa;
    s_active = &s_variants[isa];
    return 0;
}

static inline const kernel_variant *s_kernels(void)
{
    if (!s_active)
        s_init_active();
    return s_active;
}

float kernel_dot_f32(const float *w, const float *x, int64_t n) { return s_kernels()->dot_f32(w, x, n); }
float kernel_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n) { return s_kernels()->dot_f16(w, x, n); }
float kernel_dot_bf16(const uint16_t *w, const uint16_t *x, int64_t n) { return s_kernels()->dot_bf16(w, x, n); }
float kernel_dot_q8_0(const void *w, const void *x, int64_t n) { return s_kernels()->dot_q8_0(w, x, n); }
void kernel_f32_to_f16(const float *x, uint16_t *out, int64_t n) { s_kernels()->f32_to_f16(x, out, n); }
void kernel_f32_to_bf16(const float *x, uint16_t *out, int64_t n) { s_kernels()->f32_to_bf16(x, out, n); }
void kernel_quantize_q8_0(const float *x, void *out, int64_t n) { s_kernels()->quantize_q8_0(x, out, n); }
void kernel_axpy(float *y, float a, const float *x, int64_t n) { s_kernels()->axpy(y, a, x, n); }
void kernel_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) { s_kernels()->axpy_f16(y, a, x, n); }

/* ---- matrix x batch --------------------------------------------------------------- */

/* F16 activations: the rows as F16, then (32-byte aligned) the same values as floats. */
static size_t s_f16_part_bytes(int64_t n_rows, int64_t cols)
{
    return ((size_t)(n_rows * cols) * sizeof(uint16_t) + 31) & ~(size_t)31;
}

/* Q8_0 activations: the blocks, then (aligned to 64 bytes) the scales as floats and the
 * biases, n_rows x cols / 32 each. */
static size_t s_q8_part_bytes(int64_t n_rows, int64_t cols)
{
    return ((size_t)(n_rows * (cols / Q8_0_BLOCK)) * sizeof(q8_0_block) + 63) & ~(size_t)63;
}

size_t kernel_act_bytes(enum tensor_type type, int64_t n_rows, int64_t cols)
{
    switch (type) {
    case TENSOR_F16:
        return s_f16_part_bytes(n_rows, cols) + (size_t)(n_rows * cols) * sizeof(float) + 31;
    case TENSOR_BF16: return (size_t)(n_rows * cols) * sizeof(uint16_t);
    case TENSOR_Q8_0: return s_q8_part_bytes(n_rows, cols) + (size_t)(n_rows * (cols / Q8_0_BLOCK)) * 8;
    default: return 0;
    }
}

kernel_act kernel_act_init(enum tensor_type type, const float *x, int64_t n_rows, int64_t cols,
                           void *buf)
{
    kernel_act act = {.type = type, .n_rows = n_rows, .cols = cols};
    /* a prepared row is a row of the weight's type */
    act.row_bytes = n_rows ? (size_t)tensor_row_bytes(type, (uint64_t)cols) : 0;
    act.data = type == TENSOR_F32 ? (const void *)x : buf;
    if (type == TENSOR_Q8_0) {
        /* buf is at least 8-byte aligned (malloc); the floats need no more */
        float *d = (float *)((uint8_t *)buf + s_q8_part_bytes(n_rows, cols));
        act.block_d = d;
        act.block_bias = (const int32_t *)(d + n_rows * (cols / Q8_0_BLOCK));
    }
    if (type == TENSOR_F16) {
        uintptr_t f = (uintptr_t)buf + s_f16_part_bytes(n_rows, cols);
        act.data_f32 = (const float *)((f + 31) & ~(uintptr_t)31);
    }
    return act;
}

void kernel_act_convert(const kernel_act *act, const float *x, int64_t row_begin, int64_t row_end)
{
    const kernel_variant *k = s_kernels();
    for (int64_t r = row_begin; r < row_end; r++) {
        const float *src = x + r * act->cols;
        void *dst = (char *)act->data + (size_t)r * act->row_bytes;
        switch (act->type) {
        case TENSOR_F16:
            k->f32_to_f16(src, dst, act->cols);
            k->f16_to_f32(dst, (float *)act->data_f32 + r * act->cols, act->cols);
            break;
        case TENSOR_BF16: k->f32_to_bf16(src, dst, act->cols); break;
        case TENSOR_Q8_0: {
            k->quantize_q8_0(src, dst, act->cols);
            const int64_t n_blocks = act->cols / Q8_0_BLOCK;
            const q8_0_block *blk = dst;
            float *d = (float *)act->block_d + r * n_blocks;
            int32_t *bias = (int32_t *)act->block_bias + r * n_blocks;
            for (int64_t b = 0; b < n_blocks; b++) {
                int32_t sum = 0;
                for (int i = 0; i < Q8_0_BLOCK; i++)
                    sum += blk[b].qs[i];
                d[b] = s_f16_table[blk[b].d];
                bias[b] = -128 * sum;
            }
            break;
        }
        default: break; /* F32: used in place */
        }
    }
}

void kernel_matmul(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                   int64_t row_begin, int64_t row_end)
{
    const kernel_variant *k = s_kernels();
    const int64_t n = w->cols;
    if (w->type == TENSOR_Q8_0 && w->layout == WEIGHT_LAYOUT_Q8_0_R16) {
        k->matmul_q8_0_r16(w, act, out, out_stride, row_begin, row_end);
        return;
    }
    if (w->type == TENSOR_Q8_0 && w->layout == WEIGHT_LAYOUT_ROWS && k->matmul_q8_0) {
        k->matmul_q8_0(w, act, out, out_stride, row_begin, row_end);
        return;
    }
    if (w->type == TENSOR_F16 && w->layout == WEIGHT_LAYOUT_ROWS && k->matmul_f16 && act->data_f32) {
        k->matmul_f16(w, act, out, out_stride, row_begin, row_end);
        return;
    }
    if (w->type == TENSOR_F32 && w->layout == WEIGHT_LAYOUT_ROWS && k->matmul_f32) {
        k->matmul_f32(w, act, out, out_stride, row_begin, row_end);
        return;
    }
    /* Weight row outside, batch inside: each weight row is read from memory once per
     * call and reused from cache for every batch row. */
    for (int64_t i = row_begin; i < row_end; i++) {
        const void *wrow = (const char *)w->data + (size_t)i * w->row_bytes;
        for (int64_t r = 0; r < act->n_rows; r++) {
            const void *xrow = (const char *)act->data + (size_t)r * act->row_bytes;
            float y;
            switch (w->type) {
            case TENSOR_F16: y = k->dot_f16(wrow, xrow, n); break;
            case TENSOR_BF16: y = k->dot_bf16(wrow, xrow, n); break;
            case TENSOR_Q8_0: y = k->dot_q8_0(wrow, xrow, n); break;
            default: y = k->dot_f32(wrow, xrow, n); break;
            }
            out[r * out_stride + i] = y;
        }
    }
}

enum weight_layout kernel_preferred_layout(enum tensor_type type, int64_t rows, int64_t cols)
{
    if (kernel_isa_active() == KERNEL_ISA_AVX512 &&
        weight_layout_fits(WEIGHT_LAYOUT_Q8_0_R16, type, rows, cols))
        return WEIGHT_LAYOUT_Q8_0_R16;
    return WEIGHT_LAYOUT_ROWS;
}

void kernel_get_row(const weight *w, int64_t row, float *out)
{
    const void *src = (const char *)w->data + (size_t)row * w->row_bytes;
    switch (w->type) {
    case TENSOR_F16:
        for (int64_t i = 0; i < w->cols; i++)
            out[i] = fp16_to_f32(((const uint16_t *)src)[i]);
        break;
    case TENSOR_BF16:
        for (int64_t i = 0; i < w->cols; i++)
            out[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case TENSOR_Q8_0:
        if (w->layout == WEIGHT_LAYOUT_Q8_0_R16) {
            /* one block at a time, so no buffer of a whole row is needed */
            for (int64_t b = 0; b < w->cols / Q8_0_BLOCK; b++) {
                q8_0_block blk;
                s_r16_block(w, row, b, &blk);
                q8_0_dequantize_row(&blk, out + b * Q8_0_BLOCK, Q8_0_BLOCK);
            }
        } else {
            q8_0_dequantize_row(src, out, w->cols);
        }
        break;
    default: memcpy(out, src, (size_t)w->cols * sizeof(float)); break;
    }
}

/* ---- vector ops ------------------------------------------------------------------- */

void kernel_rmsnorm(float *out, const float *x, const float *norm_weight, int64_t n, float eps)
{
    const kernel_variant *k = s_kernels();
    if (k->rmsnorm) {
        k->rmsnorm(out, x, norm_weight, n, eps);
        return;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = (x[i] * scale) * norm_weight[i];
}

void kernel_rope(float *x, int n_heads, int head_dim, int rope_dim, int pos, float freq_base)
{
    const float theta_scale = powf(freq_base, -2.0f / (float)rope_dim);
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        float theta = (float)pos;
        for (int i = 0; i < rope_dim; i += 2) {
            const float c = cosf(theta), s = sinf(theta);
            const float x0 = v[i], x1 = v[i + 1];
            v[i] = x0 * c - x1 * s;
            v[i + 1] = x0 * s + x1 * c;
            theta *= theta_scale;
        }
    }
}

void kernel_rope_angles(float *cs, int rope_dim, int pos, float freq_base)
{
    const float theta_scale = powf(freq_base, -2.0f / (float)rope_dim);
    float theta = (float)pos;
    for (int i = 0; i < rope_dim; i += 2) {
        cs[i] = cosf(theta);
        cs[i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}

void kernel_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, const float *cs)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < rope_dim; i += 2) {
            const float c = cs[i], s = cs[i + 1];
            const float x0 = v[i], x1 = v[i + 1];
            v[i] = x0 * c - x1 * s;
            v[i + 1] = x0 * s + x1 * c;
        }
    }
}

static void s_softmax(float *x, int64_t n);
static void s_swiglu(float *gate, const float *up, int64_t n);

void kernel_softmax(float *x, int64_t n)
{
    const kernel_variant *k = s_kernels();
    if (k->softmax)
        k->softmax(x, n);
    else
        s_softmax(x, n);
}

void kernel_swiglu(float *gate, const float *up, int64_t n)
{
    const kernel_variant *k = s_kernels();
    if (k->swiglu)
        k->swiglu(gate, up, n);
    else
        s_swiglu(gate, up, n);
}

void kernel_dot_f32_rows(const float *q, int64_t q_stride, int n_q, const float *k, int64_t n,
                         float *out, int64_t out_stride)
{
    const kernel_variant *v = s_kernels();
    if (v->dot_f32_rows) {
        v->dot_f32_rows(q, q_stride, n_q, k, n, out, out_stride);
        return;
    }
    for (int g = 0; g < n_q; g++)
        out[g * out_stride] = v->dot_f32(q + g * q_stride, k, n);
}

void kernel_axpy_rows(float *y, int64_t y_stride, const float *a, int64_t a_stride, int n_y,
                      const float *x, int64_t n)
{
    const kernel_variant *v = s_kernels();
    if (v->axpy_rows) {
        v->axpy_rows(y, y_stride, a, a_stride, n_y, x, n);
        return;
    }
    for (int g = 0; g < n_y; g++)
        v->axpy(y + g * y_stride, a[g * a_stride], x, n);
}

static void s_softmax(float *x, int64_t n)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

float kernel_silu(float x)
{
    return x / (1.0f + expf(-x));
}

static void s_swiglu(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        gate[i] = kernel_silu(gate[i]) * up[i];
}
