/* quant.h - reference (scalar) Q8_0 quantization, bit-compatible with ggml's. */
#ifndef LLORCH_QUANT_H
#define LLORCH_QUANT_H

#include <stdint.h>

/* One Q8_0 block: 32 values = d * qs[i], d stored as IEEE half. 34 bytes, packed. */
typedef struct __attribute__((packed)) q8_0_block {
    uint16_t d;
    int8_t qs[32];
} q8_0_block;

/* Quantizes n floats (n a multiple of 32) into n/32 blocks the way ggml's
 * quantize_row_q8_0 does: d = max|x| / 127, q = round(x / d). */
void q8_0_quantize_row(const float *x, q8_0_block *out, int64_t n);

/* Expands n/32 blocks back to n floats. */
void q8_0_dequantize_row(const q8_0_block *in, float *out, int64_t n);

#endif
