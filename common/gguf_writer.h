/* gguf_writer.h - writing GGUF v3 files, with tensor data streamed tensor by tensor. */
#ifndef LLORCH_GGUF_WRITER_H
#define LLORCH_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* Use:
 *   gguf_writer *w = gguf_writer_new(0);
 *   gguf_writer_set_string(w, "general.architecture", "llama", &err); ...   metadata
 *   gguf_writer_add_tensor(w, "token_embd.weight", TENSOR_Q8_0, 2, ne, &err); ...
 *   gguf_writer_open(w, path, &err);          writes header, metadata, tensor infos
 *   for each tensor, in the order added:
 *       gguf_writer_begin_tensor(w, name, &err);
 *       gguf_writer_write(w, bytes, n, &err);  any number of times, n_bytes in total
 *   gguf_writer_finish(w, &err);              checks, flushes, renames into place
 *   gguf_writer_free(&w);
 * Metadata and tensor infos live in memory (small); tensor data goes straight to the
 * file through a large buffer, so a file of any size needs a few MB of memory. The
 * file is written as PATH.part and renamed to PATH only by a successful finish, so a
 * failed or interrupted run never leaves a truncated model under the real name.
 * Every call after the first failure fails again with the same message. */
typedef struct gguf_writer gguf_writer;

/* A writer with the given data alignment (0 = the GGUF default, 32; anything else must
 * be a power of two and is recorded as general.alignment). NULL only when out of
 * memory or for a bad alignment. Free with gguf_writer_free. */
gguf_writer *gguf_writer_new(uint32_t alignment);

/* Closes and removes an unfinished PATH.part, frees everything, sets *w to NULL.
 * Safe on NULL and *w == NULL. */
void gguf_writer_free(gguf_writer **w);

/* Metadata setters, all before gguf_writer_open. Each key may be set once: a
 * duplicate key, an empty key or a call after open is an error (-1, err says which).
 * Strings are copied; they need not be NUL-free but are passed as C strings here. */
int gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v, llorch_error *err);
int gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v, llorch_error *err);
int gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v, llorch_error *err);
int gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v, llorch_error *err);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v, llorch_error *err);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v, llorch_error *err);
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v, llorch_error *err);
int gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v, llorch_error *err);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v, llorch_error *err);
int gguf_writer_set_f64(gguf_writer *w, const char *key, double v, llorch_error *err);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v, llorch_error *err);
int gguf_writer_set_string(gguf_writer *w, const char *key, const char *v, llorch_error *err);

/* An array of n numeric or bool elements of elem_type, given as n packed values of
 * that type in host (little-endian) order: e.g. float[] for GGUF_TYPE_FLOAT32,
 * int32_t[] for GGUF_TYPE_INT32, uint8_t 0/1 for GGUF_TYPE_BOOL. */
int gguf_writer_set_array(gguf_writer *w, const char *key, enum gguf_type elem_type,
                          const void *values, uint64_t n, llorch_error *err);

/* An array of n strings (C strings). */
int gguf_writer_set_string_array(gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n, llorch_error *err);

/* Any value as the reader returns it (including arrays of strings and nested arrays),
 * e.g. to copy tokenizer.* keys from one GGUF into another. */
int gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v,
                          llorch_error *err);

/* Declares the next tensor: its name (unique, 1..63 bytes as ggml allows), type and shape (ne[0] fastest,
 * 1..4 dims, every ne >= 1, ne[0] a whole number of blocks for Q8_0). Data offsets are
 * laid out in the order of declaration. Before gguf_writer_open only. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum tensor_type type,
                           uint32_t n_dims, const uint64_t *ne, llorch_error *err);

/* Bytes of tensor data of the tensor declared with that shape and type (0 on a bad
 * shape); and of the whole file as it will be written (valid once all keys and
 * tensors are declared; callable before open, e.g. for a size estimate). */
uint64_t gguf_writer_tensor_bytes(enum tensor_type type, uint32_t n_dims, const uint64_t *ne);
uint64_t gguf_writer_file_bytes(const gguf_writer *w);

/* Creates PATH.part (truncating one left by an earlier failed run) and writes the
 * header, metadata and tensor infos. err names the path and the system error. */
int gguf_writer_open(gguf_writer *w, const char *path, llorch_error *err);

/* Starts the data of the tensor named name, which must be the next one declared (the
 * previous one must be complete). */
int gguf_writer_begin_tensor(gguf_writer *w, const char *name, llorch_error *err);

/* Appends n bytes to the current tensor's data; more than the tensor holds is an
 * error. A write error (disk full, ...) names the file and the system error. */
int gguf_writer_write(gguf_writer *w, const void *data, size_t n, llorch_error *err);

/* Checks that every tensor was written whole, flushes, closes and renames PATH.part
 * to PATH. After it the writer only accepts gguf_writer_free. */
int gguf_writer_finish(gguf_writer *w, llorch_error *err);

/* Bytes written to the file so far (header included): for progress reports. */
uint64_t gguf_writer_bytes_written(const gguf_writer *w);

#endif
