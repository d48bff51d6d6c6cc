/* gguf_get.c - typed access to GGUF metadata values, and the names and sizes of types. */
#include "gguf.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool s_is_unsigned(enum gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool s_is_signed(enum gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static const gguf_value *s_need(const gguf_file *f, const char *key, llorch_error *err)
{
    const gguf_value *v = gguf_find(f, key);
    if (!v)
        llorch_error_set(err, "%s: key '%s' is missing", f ? f->path : "(no file)", key);
    return v;
}

static int s_get_int(const gguf_file *f, const char *key, uint64_t max, uint64_t *out,
                     llorch_error *err)
{
    const gguf_value *v = s_need(f, key, err);
    if (!v)
        return -1;
    if (s_is_unsigned(v->type))
        *out = v->u64;
    else if (s_is_signed(v->type) && v->i64 >= 0)
        *out = (uint64_t)v->i64;
    else if (s_is_signed(v->type))
        return llorch_error_set(err, "%s: key '%s' is %" PRId64 "; it must not be negative",
                                f->path, key, v->i64);
    else
        return llorch_error_set(err, "%s: key '%s' has type %s; an integer is needed", f->path,
                                key, gguf_type_name(v->type));
    if (*out > max)
        return llorch_error_set(err, "%s: key '%s' is %" PRIu64 ", out of range (at most %" PRIu64
                                     ")",
                                f->path, key, *out, max);
    return 0;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, llorch_error *err)
{
    uint64_t v;
    if (s_get_int(f, key, UINT32_MAX, &v, err))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, llorch_error *err)
{
    return s_get_int(f, key, UINT64_MAX, out, err);
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, llorch_error *err)
{
    const gguf_value *v = s_need(f, key, err);
    if (!v)
        return -1;
    double d;
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64)
        d = v->f64;
    else if (s_is_unsigned(v->type))
        d = (double)v->u64;
    else if (s_is_signed(v->type))
        d = (double)v->i64;
    else
        return llorch_error_set(err, "%s: key '%s' has type %s; a number is needed", f->path, key,
                                gguf_type_name(v->type));
    if (isfinite(d) && fabs(d) > FLT_MAX)
        return llorch_error_set(err, "%s: key '%s' = %g does not fit a float", f->path, key, d);
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, llorch_error *err)
{
    const gguf_value *v = s_need(f, key, err);
    if (!v)
        return -1;
    if (v->type != GGUF_TYPE_BOOL)
        return llorch_error_set(err, "%s: key '%s' has type %s; a bool is needed", f->path, key,
                                gguf_type_name(v->type));
    *out = v->b;
    return 0;
}

int gguf_get_string(const gguf_file *f, const char *key, char **out, llorch_error *err)
{
    const gguf_value *v = s_need(f, key, err);
    if (!v)
        return -1;
    if (v->type != GGUF_TYPE_STRING)
        return llorch_error_set(err, "%s: key '%s' has type %s; a string is needed", f->path,
                                key, gguf_type_name(v->type));
    char *s = malloc((size_t)v->str.len + 1);
    if (!s)
        return llorch_error_set(err, "%s: out of memory copying key '%s'", f->path, key);
    memcpy(s, v->str.ptr, (size_t)v->str.len);
    s[v->str.len] = '\0';
    *out = s;
    return 0;
}

const gguf_array *gguf_get_array(const gguf_file *f, const char *key, enum gguf_type elem_type,
                                 llorch_error *err)
{
    const gguf_value *v = s_need(f, key, err);
    if (!v)
        return NULL;
    if (v->type != GGUF_TYPE_ARRAY) {
        llorch_error_set(err, "%s: key '%s' has type %s; an array is needed", f->path, key,
                         gguf_type_name(v->type));
        return NULL;
    }
    if (elem_type != GGUF_TYPE_COUNT && v->arr->elem_type != elem_type) {
        llorch_error_set(err, "%s: key '%s' is an array of %s; an array of %s is needed",
                         f->path, key, gguf_type_name(v->arr->elem_type), gguf_type_name(elem_type));
        return NULL;
    }
    return v->arr;
}

/* Element i of a numeric array; the raw bytes may be unaligned, hence memcpy. */
int64_t gguf_array_i64(const gguf_array *a, uint64_t i)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            uint64_t u64; int64_t i64; float f32; double f64; } x;
    if (!a->raw || i >= a->n)
        return 0;
    const uint8_t *r = (const uint8_t *)a->raw + i * gguf_type_size(a->elem_type);
    memcpy(&x, r, (size_t)gguf_type_size(a->elem_type));
    switch (a->elem_type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: return x.u8;
    case GGUF_TYPE_INT8: return x.i8;
    case GGUF_TYPE_UINT16: return x.u16;
    case GGUF_TYPE_INT16: return x.i16;
    case GGUF_TYPE_UINT32: return x.u32;
    case GGUF_TYPE_INT32: return x.i32;
    case GGUF_TYPE_UINT64: return (int64_t)x.u64;
    case GGUF_TYPE_INT64: return x.i64;
    case GGUF_TYPE_FLOAT32: return isfinite(x.f32) && fabsf(x.f32) < 9.2e18f ? (int64_t)x.f32 : 0;
    case GGUF_TYPE_FLOAT64: return isfinite(x.f64) && fabs(x.f64) < 9.2e18 ? (int64_t)x.f64 : 0;
    default: return 0;
    }
}

double gguf_array_f64(const gguf_array *a, uint64_t i)
{
    if (!a->raw || i >= a->n)
        return 0.0;
    const uint8_t *r = (const uint8_t *)a->raw + i * gguf_type_size(a->elem_type);
    if (a->elem_type == GGUF_TYPE_FLOAT32) {
        float x;
        memcpy(&x, r, 4);
        return x;
    }
    if (a->elem_type == GGUF_TYPE_FLOAT64) {
        double x;
        memcpy(&x, r, 8);
        return x;
    }
    if (a->elem_type == GGUF_TYPE_UINT64) {
        uint64_t x;
        memcpy(&x, r, 8);
        return (double)x;
    }
    return (double)gguf_array_i64(a, i);
}

/* ---- names and sizes ----------------------------------------------------------- */

uint64_t gguf_type_size(int type)
{
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *tensor_type_name(int type)
{
    /* All ggml types, so that a refusal can say what the file holds. */
    static const char *const names[] = {
        [0] = "F32",     [1] = "F16",     [2] = "Q4_0",    [3] = "Q4_1",    [6] = "Q5_0",
        [7] = "Q5_1",    [8] = "Q8_0",    [9] = "Q8_1",    [10] = "Q2_K",   [11] = "Q3_K",
        [12] = "Q4_K",   [13] = "Q5_K",   [14] = "Q6_K",   [15] = "Q8_K",   [16] = "IQ2_XXS",
        [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",
        [22] = "IQ2_S",  [23] = "IQ4_XS", [24] = "I8",     [25] = "I16",    [26] = "I32",
        [27] = "I64",    [28] = "F64",    [29] = "IQ1_M",  [30] = "BF16",   [34] = "TQ1_0",
        [35] = "TQ2_0",  [39] = "MXFP4",
    };
    if (type >= 0 && (size_t)type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "unknown(%d)", type);
    return buf;
}

const char *gguf_type_name(int type)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool",  "string", "array", "uint64", "int64", "float64",
    };
    if (type >= 0 && type < GGUF_TYPE_COUNT)
        return names[type];
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "unknown(%d)", type);
    return buf;
}

bool tensor_type_supported(int type)
{
    return type == TENSOR_F32 || type == TENSOR_F16 || type == TENSOR_BF16 || type == TENSOR_Q8_0;
}

uint64_t tensor_row_bytes(enum tensor_type type, uint64_t n)
{
    switch (type) {
    case TENSOR_F32: return n <= UINT64_MAX / 4 ? n * 4 : 0;
    case TENSOR_F16:
    case TENSOR_BF16: return n <= UINT64_MAX / 2 ? n * 2 : 0;
    case TENSOR_Q8_0: return n % Q8_0_BLOCK == 0 ? n / Q8_0_BLOCK * 34 : 0;
    default: return 0;
    }
}
