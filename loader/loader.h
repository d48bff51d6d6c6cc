/* loader.h - a GGUF model placed in a POSIX shared-memory segment, with its manifest. */
#ifndef LLORCH_LOADER_H
#define LLORCH_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"
#include "wire.h"

typedef struct loader_options {
    const char *model_path;
    const char *shm_name;   /* NULL: "/llorch-<model_id[0:8]>-<pid>" */
    bool progress;          /* progress lines for any size (large models always get them) */
    bool layout_rows;       /* --layout rows: every tensor keeps the GGUF row order */
} loader_options;

/* The loaded model: tensor bytes in a shared segment and the manifest describing them.
 * The segment is a table of (offset, n_bytes, type, layout) per tensor, each at a page
 * boundary. The bytes are the file's, in the file's type, except that Q8_0 matrices are
 * repacked into the layout this CPU's kernels prefer (kernel_preferred_layout: 16-row
 * groups for AVX-512 VNNI) unless layout_rows; every digest is of the bytes in the
 * segment, which is what workers map or fetch. */
typedef struct loader_model {
    char segment_name[WIRE_MAX_ENDPOINT_BYTES]; /* "/llorch-..." as passed to shm_open */
    const uint8_t *segment;   /* (segment_bytes) mapped read-only once written */
    uint64_t segment_bytes;
    uint64_t data_bytes;      /* sum of the tensors' n_bytes (the segment adds page padding) */
    bool segment_owned;       /* unlink on free */
    char model_id[17];        /* 16 hex digits of the digest over all tensor digests */
    char host_id[WIRE_MAX_ENDPOINT_BYTES];
    tokenizer *tok;           /* owns the pieces, scores the manifest points at */
    const char **pieces;      /* (n_vocab) into tok */
    uint32_t *piece_lens;     /* (n_vocab) */
    int32_t *types;           /* (n_vocab) token types as int32 for the wire */
    char (*names)[WIRE_MAX_TENSOR_NAME_BYTES + 1]; /* (n_tensors) */
    wire_tensor_info *tensors; /* (n_tensors) */
    wire_manifest manifest;   /* points into the fields above */
    wire_msg manifest_msg;    /* the encoded MANIFEST, sent as is to every asker */
    double load_ms;
} loader_model;

/* Opens and validates the GGUF file (gguf_open, model_config_from_gguf, its tokenizer),
 * creates the shared segment (refusing to replace an existing one), copies the tensors to
 * page-aligned offsets (repacking Q8_0 matrices on the way, see above) and digests what it
 * wrote (BLAKE2b-256), and builds and encodes the manifest. Logs progress. The GGUF file
 * is closed again before returning, so the model is resident once (in the segment).
 * NULL with err on any problem; no segment is left behind then. Free with
 * loader_model_free. */
loader_model *loader_model_load(const loader_options *o, llorch_error *err);

/* Unmaps and unlinks the segment, frees everything and sets *lm to NULL. Safe on NULL. */
void loader_model_free(loader_model **lm);

/* Counters of the request loop (STATS). */
typedef struct loader_stats {
    uint64_t manifests;
    uint64_t chunks;
    uint64_t chunk_bytes;
    uint64_t errors;       /* requests answered with ERROR */
} loader_stats;

/* Test-only: when LLORCH_LOADER_TAMPER names a tensor, every CHUNK served from it has
 * its first byte flipped (the segment itself is untouched), so that a fetching worker's
 * digest check can be shown to work. Never set it in production. */
#define LOADER_TAMPER_ENV "LLORCH_LOADER_TAMPER"

/* Receives one message from the ROUTER socket (non-blocking) and answers it: MANIFEST_REQ
 * -> MANIFEST, CHUNK_REQ -> CHUNK (bounds checked), STATS_REQ -> STATS, anything else or
 * anything malformed -> ERROR. tamper is the tensor index to corrupt or -1. Returns 1
 * when a message was handled, 0 when none was waiting, -1 with err on a socket error
 * (EINTR/ETERM included, errno kept). Never fails because of what a peer sent. */
int loader_serve_one(loader_model *lm, void *socket, int tamper, loader_stats *st,
                     llorch_error *err);

#endif
