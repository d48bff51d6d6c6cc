/* kernels.h - the math of a forward pass: matrix x batch products and the vector ops. */
#ifndef LLORCH_KERNELS_H
#define LLORCH_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* How a weight's bytes are arranged: the GGUF order (row after row, each row
 * `row_bytes` long), or Q8_0 rows repacked in groups of 16 for the AVX-512 VNNI kernels.
 * A repacked tensor has exactly the bytes of the GGUF one, and group g (rows 16g..16g+15)
 * occupies the same byte range [16 g row_bytes, 16 (g + 1) row_bytes) in both layouts,
 * so any whole number of groups can be repacked on its own. */
enum weight_layout {
    WEIGHT_LAYOUT_ROWS = 0,
    /* Per group, per block b of 32 columns (544 bytes): the 16 rows' scales as halves
     * (32 bytes), then quad k = 0..7 of the 16 rows (64 bytes each: row r's quants
     * 4k..4k+3 at bytes 4r..4r+3), every quant stored as q + 128 (unsigned). One 64-byte
     * load then feeds one vpdpbusd for 16 rows, and the rows are the lanes. */
    WEIGHT_LAYOUT_Q8_0_R16 = 1,
    WEIGHT_LAYOUT_COUNT
};

#define KERNEL_R16_ROWS 16

/* "rows", "q8_0_r16". */
const char *weight_layout_name(enum weight_layout layout);

/* True when a tensor of `type`, rows x cols, can be stored in `layout` (ROWS always;
 * Q8_0_R16 for Q8_0 matrices whose rows are a multiple of 16). */
bool weight_layout_fits(enum weight_layout layout, enum tensor_type type, int64_t rows, int64_t cols);

/* The layout the active kernel variant computes fastest for such a tensor: Q8_0_R16
 * when the AVX-512 VNNI variant is active and the tensor fits it, else ROWS. */
enum weight_layout kernel_preferred_layout(enum tensor_type type, int64_t rows, int64_t cols);

/* Rearranges `rows` rows (a multiple of 16) of a Q8_0 matrix with `cols` columns from
 * the GGUF order at src into `layout` at dst (same byte count; src and dst must not
 * overlap). ROWS copies. kernel_unpack_rows is the inverse. Cannot fail. */
void kernel_repack_rows(enum weight_layout layout, const void *src, void *dst, int64_t rows,
                        int64_t cols);
void kernel_unpack_rows(enum weight_layout layout, const void *src, void *dst, int64_t rows,
                        int64_t cols);

/* A read-only view of a weight matrix, wherever its bytes live (mapped file, shared
 * memory, heap). y = W x computes `rows` outputs from `cols` inputs; in GGUF terms
 * cols = ne[0], rows = ne[1]. A vector (norm weight) is a 1-row F32 weight. */
typedef struct weight {
    enum tensor_type type;
    enum weight_layout layout;
    int64_t rows;     /* output features */
    int64_t cols;     /* input features (a multiple of 32 for Q8_0) */
    size_t row_bytes; /* bytes of one row in the ROWS layout */
    const void *data; /* rows * row_bytes bytes */
} weight;

/* Activations prepared for one weight type, the way ggml prepares them so that
 * results agree with llama.cpp: F32 weights take F32 activations as they are, F16
 * weights take activations rounded to F16, BF16 weights rounded to BF16, Q8_0 weights
 * take activations quantized to Q8_0 per block of 32 (quant.h). */
typedef struct kernel_act {
    enum tensor_type type; /* the weight type these activations are prepared for */
    int64_t n_rows;        /* batch rows */
    int64_t cols;
    size_t row_bytes;      /* bytes of one prepared row */
    const void *data;      /* n_rows * row_bytes bytes */
    const float *data_f32; /* F16: the same rounded values as floats (n_rows x cols), so
                              that a product converts them once, not once per weight
                              row; NULL for the other types */
    /* Q8_0, per block (n_rows x cols / 32): the scale as a float, and -128 times the sum
     * of the block's quants (what a product with weights stored as q + 128 must take
     * away); NULL for the other types */
    const float *block_d;
    const int32_t *block_bias;
} kernel_act;

/* Instruction-set variants of the kernels. */
typedef enum kernel_isa {
    KERNEL_ISA_SCALAR = 0,
    KERNEL_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    KERNEL_ISA_AVX512 = 2, /* AVX-512 F, BW, VL, DQ and VNNI (with AVX2 + FMA + F16C) */
    KERNEL_ISA_COUNT
} kernel_isa;

/* "scalar", "avx2", "avx512". */
const char *kernel_isa_name(kernel_isa isa);

/* True when this CPU (and OS) can run the variant. Scalar is always available. */
bool kernel_isa_available(kernel_isa isa);

/* The variant in use. On first use it is the best the CPU has, unless the environment
 * variable LLORCH_ISA=scalar|avx2|avx512 names another (an unknown or unavailable name is
 * reported on stderr once and ignored). */
kernel_isa kernel_isa_active(void);

/* Switches every kernel to `isa` (for tests and benchmarks). Returns -1 with err when
 * the CPU cannot run it. Not thread-safe: call while no kernel runs. */
int kernel_isa_select(kernel_isa isa, llorch_error *err);

/* Bytes of buffer kernel_act_prepare needs for n_rows x cols activations for a weight
 * of type `type` (0 for F32: the activations are used in place). */
size_t kernel_act_bytes(enum tensor_type type, int64_t n_rows, int64_t cols);

/* Describes x (n_rows x cols float32, row stride cols) prepared for weights of `type`
 * in buf (kernel_act_bytes long; unused for F32). Only the act header is filled; call
 * kernel_act_convert for the rows (possibly split over threads) before using it. */
kernel_act kernel_act_init(enum tensor_type type, const float *x, int64_t n_rows, int64_t cols,
                           void *buf);

/* Converts rows [row_begin, row_end) of x into act (no-op for F32). */
void kernel_act_convert(const kernel_act *act, const float *x, int64_t row_begin, int64_t row_end);

/* out[r * out_stride + i] = dot(W row i, act row r) for every batch row r and the
 * weight rows i in [row_begin, row_end). act must be prepared for w->type with
 * act->cols == w->cols. Every output element is computed with the same arithmetic
 * whatever the batch size and the row range: splitting [0, w->rows) over threads, or a
 * batch into smaller batches, gives bit-identical results. For Q8_0 in the ROWS layout
 * that arithmetic is ggml's (so that results round as llama.cpp's do), in every
 * variant: per element eight float lanes, lane j accumulating fma(d_w * d_x, integer
 * dot of quants 4j..4j+3, lane j) block after block, summed as ((l0 + l4) + (l2 + l6))
 * + ((l1 + l5) + (l3 + l7)) (kernel_dot_q8_0). For Q8_0 in the R16 layout it is, in
 * every variant, one float chain per element: acc = fma(d_w * d_x, exact integer dot of
 * the block's 32 quants, acc) block after block (the same products, summed in integers
 * first: one rounding per block instead of eight). One batch row is a matrix x vector
 * product bound by memory bandwidth; several rows run as a cache-blocked int8 matrix
 * product that reads each weight from memory once per 64 batch rows (ROWS) or once per
 * call (R16). row_begin and row_end may cut an R16 group. */
void kernel_matmul(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                   int64_t row_begin, int64_t row_end);

/* Row `row` of an embedding table (any supported type and layout) as float32 into out
 * (w->cols). */
void kernel_get_row(const weight *w, int64_t row, float *out);

/* Single dot products (exposed for tests): w and x in the formats above, n elements. */
float kernel_dot_f32(const float *w, const float *x, int64_t n);
float kernel_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n);
float kernel_dot_bf16(const uint16_t *w, const uint16_t *x, int64_t n);
float kernel_dot_q8_0(const void *w_blocks, const void *x_blocks, int64_t n); /* see matmul */

/* Row conversions (exposed for tests): n elements. */
void kernel_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void kernel_f32_to_bf16(const float *x, uint16_t *out, int64_t n);
void kernel_quantize_q8_0(const float *x, void *out_blocks, int64_t n); /* n % 32 == 0 */

/* out = x / sqrt(mean(x^2) + eps) * norm_weight, n elements (out may be x). The sum of
 * squares is accumulated in double, as ggml does (in order in the scalar and AVX2
 * variants, in eight lanes in AVX-512's). */
void kernel_rmsnorm(float *out, const float *x, const float *norm_weight, int64_t n, float eps);

/* Rotates one vector of n_heads heads of head_dim in place for position pos, pairs
 * (x[2i], x[2i+1]) of the first rope_dim dims of each head (llama.cpp's "normal"
 * rope): angle pos * freq_base^(-2i/rope_dim), computed as ggml does (the angle
 * multiplied by the ratio pair after pair, in float). */
void kernel_rope(float *x, int n_heads, int head_dim, int rope_dim, int pos, float freq_base);

/* The rotation of position pos for kernel_rope_apply: cs[2i] = cos and cs[2i + 1] = sin
 * of pair i's angle, rope_dim / 2 pairs, the same floats kernel_rope computes. The
 * angles depend on the position only: compute them once per row and reuse them for
 * every head and layer. */
void kernel_rope_angles(float *cs, int rope_dim, int pos, float freq_base);

/* kernel_rope with the angles of kernel_rope_angles (bit-identical results). */
void kernel_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, const float *cs);

/* y[i] += a * x[i], n elements (the weighted sum of attention values). */
void kernel_axpy(float *y, float a, const float *x, int64_t n);
void kernel_avx2_axpy(float *y, float a, const float *x, int64_t n);

/* y[i] += a * x[i] with x in F16 (an F16 KV cache's values), n elements: each product
 * is rounded to float, then added (no fused multiply-add), in every variant. */
void kernel_axpy_f16(float *y, float a, const uint16_t *x, int64_t n);
void kernel_avx2_axpy_f16(float *y, float a, const uint16_t *x, int64_t n);

/* In place: x = softmax(x), n elements (max subtracted; sum in double). The scalar
 * variant takes libm's expf, AVX-512 its own (within ~2 ulp). */
void kernel_softmax(float *x, int64_t n);

/* out[g * out_stride] = kernel_dot_f32(q + g * q_stride, k, n) for g < n_q, bit for bit
 * (the queries of one key in attention: several dot products at once). */
void kernel_dot_f32_rows(const float *q, int64_t q_stride, int n_q, const float *k, int64_t n,
                         float *out, int64_t out_stride);

/* kernel_axpy(y + g * y_stride, a[g * a_stride], x, n) for g < n_y, bit for bit. */
void kernel_axpy_rows(float *y, int64_t y_stride, const float *a, int64_t a_stride, int n_y,
                      const float *x, int64_t n);

/* Entry points of the AVX2 variant (kernels_avx2.c), same contracts as above. */
float kernel_avx2_dot_f32(const float *w, const float *x, int64_t n);
float kernel_avx2_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n);
float kernel_avx2_dot_bf16(const uint16_t *w, const uint16_t *x, int64_t n);
float kernel_avx2_dot_q8_0(const void *w_blocks, const void *x_blocks, int64_t n);
void kernel_avx2_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void kernel_avx2_f32_to_bf16(const float *x, uint16_t *out, int64_t n);
void kernel_avx2_quantize_q8_0(const float *x, void *out_blocks, int64_t n);
void kernel_avx2_matmul_q8_0(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                             int64_t row_begin, int64_t row_end);
void kernel_avx2_matmul_f16(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                            int64_t row_begin, int64_t row_end);
void kernel_avx2_matmul_f32(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                            int64_t row_begin, int64_t row_end);
void kernel_avx2_f16_to_f32(const uint16_t *x, float *out, int64_t n);

/* Entry points of the AVX-512 variant (kernels_avx512.c). Q8_0 R16 products; F16 and
 * F32 products and dot products with llama.cpp's arithmetic on such a CPU: one 16-lane
 * chain over 16-element steps (llamafile's sgemm) when n is a multiple of 16, else four
 * 16-lane accumulators over 64-element steps (ggml's dot products). */
void kernel_avx512_matmul_q8_0_r16(const weight *w, const kernel_act *act, float *out,
                                   int64_t out_stride, int64_t row_begin, int64_t row_end);
float kernel_avx512_dot_f32(const float *w, const float *x, int64_t n);
float kernel_avx512_dot_f16(const uint16_t *w, const uint16_t *x, int64_t n);
void kernel_avx512_matmul_f16(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                              int64_t row_begin, int64_t row_end);
void kernel_avx512_matmul_f32(const weight *w, const kernel_act *act, float *out, int64_t out_stride,
                              int64_t row_begin, int64_t row_end);
void kernel_avx512_softmax(float *x, int64_t n);
void kernel_avx512_rmsnorm(float *out, const float *x, const float *norm_weight, int64_t n, float eps);
void kernel_avx512_swiglu(float *gate, const float *up, int64_t n);
void kernel_avx512_dot_f32_rows(const float *q, int64_t q_stride, int n_q, const float *k,
                                int64_t n, float *out, int64_t out_stride);
void kernel_avx512_axpy_rows(float *y, int64_t y_stride, const float *a, int64_t a_stride, int n_y,
                             const float *x, int64_t n);

/* x / (1 + exp(-x)). */
float kernel_silu(float x);

/* gate[i] = silu(gate[i]) * up[i], n elements (kernel_silu's floats in the scalar and
 * AVX2 variants; AVX-512 its own exp). */
void kernel_swiglu(float *gate, const float *up, int64_t n);

#endif
