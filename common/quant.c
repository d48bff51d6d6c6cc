/* quant.c - scalar Q8_0 quantization (the reference the SIMD kernels must match). */
#include "quant.h"

#include <math.h>

#include "fp16.h"

void q8_0_quantize_row(const float *x, q8_0_block *out, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        out[b].d = f32_to_fp16(d);
        for (int i = 0; i < 32; i++)
            out[b].qs[i] = (int8_t)roundf(xb[i] * id);
    }
}

void q8_0_dequantize_row(const q8_0_block *in, float *out, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = fp16_to_f32(in[b].d);
        for (int i = 0; i < 32; i++)
            out[b * 32 + i] = d * (float)in[b].qs[i];
    }
}
