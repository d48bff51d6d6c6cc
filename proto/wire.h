/* wire.h - llorch's message schema: msgpack headers plus raw little-endian bulk frames. */
#ifndef LLORCH_WIRE_H
#define LLORCH_WIRE_H

/* Every message between llorch processes is one ZeroMQ multipart message:
 *   frame 0     a msgpack map {"v": WIRE_PROTOCOL_VERSION, "t": "<type name>", fields...}
 *   frames 1..  raw bulk data (float32 activations or logits, tensor bytes), little-endian,
 *               never msgpack arrays of numbers.
 * docs/protocol.md describes every message, its fields and the limits below. Decoders
 * check each of those limits before trusting a count or a length, ignore unknown keys
 * (so a minor addition needs no version bump) and reject everything else off-schema. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llorch bulk frames are little-endian; this host is not"
#endif

/* 2: tensors carry a layout; a version-1 worker would read repacked bytes as GGUF rows */
#define WIRE_PROTOCOL_VERSION 2

/* ---- limits (a decoder rejects anything beyond them; an encoder refuses to make it) ---- */
#define WIRE_MAX_FRAMES 4                        /* header + up to 3 bulk frames */
#define WIRE_MAX_HEADER_BYTES (2u << 20)         /* frame 0 of every type but MANIFEST */
#define WIRE_MAX_MANIFEST_HEADER_BYTES (32u << 20) /* frame 0 of MANIFEST (vocabulary) */
#define WIRE_MAX_FRAME_BYTES ((size_t)1 << 30)   /* one bulk frame */
#define WIRE_MAX_DEPTH 5                         /* containers inside containers */
#define WIRE_MAX_OBJECTS (1u << 21)              /* msgpack values in one header */
#define WIRE_MAX_KEYS 64                         /* keys in any map but STATS counters */
#define WIRE_MAX_KEY_BYTES 64                    /* bytes of a map key */
#define WIRE_MAX_ID_BYTES 64                     /* worker_id, sender_id, model_id */
#define WIRE_MAX_ENDPOINT_BYTES 256              /* a ZeroMQ endpoint, a host or segment name */
#define WIRE_MAX_TEXT_BYTES 4096                 /* ERROR message, short names */
#define WIRE_MAX_ROWS 4096                       /* rows in one FORWARD or LOGITS */
#define WIRE_MAX_HIDDEN_DIM 65536                /* floats per hidden-state row */
#define WIRE_MAX_VOCAB (1u << 20)                /* n_vocab, tokenizer entries */
#define WIRE_MAX_TOKEN_BYTES 1024                /* one vocabulary piece or TOKEN text piece */
#define WIRE_MAX_LAYERS 4096
#define WIRE_MAX_TENSORS 65536
#define WIRE_MAX_TENSOR_NAME_BYTES 64            /* as ggml allows */
#define WIRE_MAX_HOPS 64                         /* endpoints in a FORWARD route */
#define WIRE_MAX_CHUNK_BYTES (64u << 20)         /* one CHUNK of tensor data */
#define WIRE_MAX_PROMPT_BYTES (1u << 20)         /* SUBMIT prompt text */
#define WIRE_MAX_PROMPT_TOKENS (1u << 18)        /* SUBMIT prompt token ids */
#define WIRE_MAX_GEN_TOKENS (1u << 20)           /* SUBMIT max_tokens */
#define WIRE_DEFAULT_MAX_TOKENS 256              /* SUBMIT max_tokens when absent */
#define WIRE_MAX_STOP_STRINGS 16
#define WIRE_MAX_STOP_BYTES 256
#define WIRE_MAX_TOP_PROBS 32                    /* top_n_probs, TOKEN top entries */
#define WIRE_MAX_STATS 256                       /* counters in STATS */
#define WIRE_DIGEST_BYTES 32                     /* BLAKE2b-256 of a tensor's bytes */
#define WIRE_MAX_LAYOUT 1                        /* tensor layouts known to this version */

/* Codes carried by ERROR and returned by the decoders. Stable numbers: they are on the wire. */
typedef enum wire_errc {
    WIRE_OK = 0,
    WIRE_ERR_MALFORMED = 1,   /* not msgpack, off-schema, over a limit, frames do not match */
    WIRE_ERR_VERSION = 2,     /* another protocol version */
    WIRE_ERR_UNSUPPORTED = 3, /* unknown message type, or a type this peer does not serve */
    WIRE_ERR_INVALID = 4,     /* well-formed, but the request makes no sense here */
    WIRE_ERR_BUSY = 5,        /* queue full: retry later */
    WIRE_ERR_NO_MEMORY = 6,   /* KV budget or memory exhausted */
    WIRE_ERR_NOT_FOUND = 7,   /* unknown session, request, tensor */
    WIRE_ERR_DIGEST = 8,      /* tensor bytes do not match their digest */
    WIRE_ERR_UNAVAILABLE = 9, /* no pipeline, a worker or the router is gone */
    WIRE_ERR_CANCELLED = 10,
    WIRE_ERR_INTERNAL = 11,
} wire_errc;

/* Message types; the wire carries the lower-case name ("forward") as "t". */
typedef enum wire_type {
    WIRE_REGISTER = 1,   /* worker -> router */
    WIRE_REGISTER_ACK,   /* router -> worker */
    WIRE_HEARTBEAT,      /* both ways */
    WIRE_FORWARD,        /* router -> first worker, worker -> next worker */
    WIRE_LOGITS,         /* last worker -> router */
    WIRE_SESSION_FREE,   /* router -> worker */
    WIRE_ERROR,          /* any reply */
    WIRE_MANIFEST_REQ,   /* worker -> loader */
    WIRE_MANIFEST,       /* loader -> worker */
    WIRE_CHUNK_REQ,      /* worker -> loader */
    WIRE_CHUNK,          /* loader -> worker */
    WIRE_SUBMIT,         /* client -> router */
    WIRE_TOKEN,          /* router -> client */
    WIRE_DONE,           /* router -> client */
    WIRE_CANCEL,         /* client -> router */
    WIRE_STATS_REQ,      /* anyone -> router/worker/loader */
    WIRE_STATS,          /* reply to STATS_REQ */
    WIRE_TYPE_COUNT
} wire_type;

/* All strings below are NUL-terminated. In a decoded message they live in the message's
 * own memory; bulk pointers (hidden, logits, scores, data, ...) point into the frames of
 * the wire_msg it was decoded from, which must outlive their use. */

typedef struct wire_register {
    const char *worker_id;    /* unique per worker, <= WIRE_MAX_ID_BYTES */
    const char *model_id;     /* the loader's model id, so that a router never mixes models */
    const char *endpoint;     /* where this worker receives FORWARD */
    uint32_t layer_first;     /* layers [layer_first, layer_last) */
    uint32_t layer_last;
    uint32_t n_layers;        /* the model's total, >= layer_last */
    uint32_t threads;
    uint64_t kv_budget_bytes;
} wire_register;

typedef struct wire_register_ack {
    const char *worker_id;
    uint32_t heartbeat_ms; /* send a HEARTBEAT this often */
    uint32_t liveness;     /* heartbeats missed before a peer counts as dead */
} wire_register_ack;

typedef struct wire_heartbeat {
    const char *sender_id;   /* worker_id, or "router" */
    uint64_t seq;            /* +1 per heartbeat from this sender */
    uint32_t n_sessions;     /* sessions holding KV cache here */
    uint32_t queue_depth;    /* batches waiting */
    uint64_t kv_used_bytes;
    uint64_t batches;        /* batches processed since start */
} wire_heartbeat;

/* One row of a batch: the next position of a session. */
typedef struct wire_row {
    uint64_t session_id; /* >= 1 */
    uint32_t pos;        /* position in the session's sequence */
    int32_t token;       /* token to embed, or -1: the row's hidden state is in the frame */
    bool want_logits;    /* the last worker returns this row's logits */
} wire_row;

/* Frame 1 (only when every row has token -1): float32 hidden, (n_rows, hidden_dim). */
typedef struct wire_forward {
    uint64_t batch_id;
    uint32_t pipeline_id;
    uint32_t hidden_dim;        /* the model's n_embd */
    uint32_t n_rows;            /* 1..WIRE_MAX_ROWS */
    const wire_row *rows;       /* (n_rows) */
    uint32_t n_hops;
    const char *const *route;   /* (n_hops) endpoints after the receiver, in order */
    const float *hidden;        /* (n_rows, hidden_dim) or NULL when rows carry tokens */
} wire_forward;

typedef struct wire_logit_row {
    uint64_t session_id;
    uint32_t pos;
} wire_logit_row;

/* Frame 1 (always, empty when n_rows is 0): float32 logits, (n_rows, n_vocab). */
typedef struct wire_logits {
    uint64_t batch_id;
    uint32_t pipeline_id;
    uint32_t n_vocab;
    uint32_t n_rows;              /* rows of the batch that wanted logits, 0..WIRE_MAX_ROWS */
    const wire_logit_row *rows;   /* (n_rows) */
    const float *logits;          /* (n_rows, n_vocab) */
} wire_logits;

typedef struct wire_session_free {
    uint64_t session_id;
} wire_session_free;

typedef struct wire_error {
    uint32_t code;       /* wire_errc; unknown codes are kept as they are */
    const char *message; /* what was wrong and what to do, <= WIRE_MAX_TEXT_BYTES */
    uint64_t batch_id;   /* 0 when not about a batch */
    uint64_t session_id; /* 0 when not about a session */
    uint64_t request_id; /* 0 when not about a client request */
} wire_error;

typedef struct wire_manifest_req {
    const char *worker_id; /* for the loader's log; "" allowed */
} wire_manifest_req;

typedef struct wire_model_config {
    const char *arch;        /* "llama" */
    uint32_t n_vocab;
    uint32_t n_embd;         /* hidden_dim of FORWARD */
    uint32_t n_layers;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t n_ff;
    uint32_t n_ctx_train;
    uint32_t n_rot;          /* rotary dimensions per head */
    float rope_freq_base;
    float rms_norm_eps;
} wire_model_config;

/* Frames 1 and 2 of MANIFEST: float32 scores (n_tokens), int32 types (n_tokens). */
typedef struct wire_tokenizer {
    const char *model;                /* "llama" */
    uint32_t n_tokens;                /* 1..WIRE_MAX_VOCAB */
    const char *const *pieces;        /* (n_tokens) bytes, NUL-terminated for convenience */
    const uint32_t *piece_lens;       /* (n_tokens) bytes of each piece */
    const float *scores;              /* (n_tokens) frame 1 */
    const int32_t *types;             /* (n_tokens) frame 2 */
    int32_t bos_id, eos_id, unk_id;   /* -1 = none, else < n_tokens */
    bool add_bos, add_eos, add_space_prefix;
} wire_tokenizer;

typedef struct wire_tensor_info {
    const char *name;        /* <= WIRE_MAX_TENSOR_NAME_BYTES */
    uint32_t type;           /* ggml type number; the receiver checks it is one it computes */
    uint32_t n_dims;         /* 1..4 */
    uint64_t ne[4];          /* ne[0] fastest; unused dims are 1 */
    uint64_t offset;         /* in the segment; offset + n_bytes <= segment_bytes */
    uint64_t n_bytes;
    uint8_t digest[WIRE_DIGEST_BYTES]; /* BLAKE2b-256 of the n_bytes bytes */
    uint32_t layout;         /* how the bytes are arranged: 0 = GGUF rows; 1 = Q8_0 in 16-row
                                groups (enum weight_layout, kernels.h); 0..WIRE_MAX_LAYOUT,
                                0 when absent on the wire */
} wire_tensor_info;

typedef struct wire_manifest {
    const char *model_id;      /* names this model (e.g. a digest), <= WIRE_MAX_ID_BYTES */
    const char *host_id;       /* the loader's host; a worker maps the segment only on it */
    const char *segment_name;  /* POSIX shared-memory name, "" when not shareable */
    uint64_t segment_bytes;
    wire_model_config config;
    wire_tokenizer tokenizer;
    uint32_t n_tensors;                /* 1..WIRE_MAX_TENSORS */
    const wire_tensor_info *tensors;   /* (n_tensors) */
} wire_manifest;

typedef struct wire_chunk_req {
    uint32_t tensor;  /* index into the manifest's tensors */
    uint64_t offset;  /* from the tensor's start */
    uint64_t length;  /* 1..WIRE_MAX_CHUNK_BYTES */
} wire_chunk_req;

/* Frame 1: length bytes of the tensor from offset. */
typedef struct wire_chunk {
    uint32_t tensor;
    uint64_t offset;
    uint64_t length;  /* 0..WIRE_MAX_CHUNK_BYTES; 0 only past the end */
    const void *data; /* (length) */
} wire_chunk;

/* Sampling parameters of a request; the ranges are the sampler's (common/sampler.h). */
typedef struct wire_sampling {
    float temperature;       /* >= 0; 0 = greedy */
    int32_t top_k;           /* >= 0; 0 = off */
    float top_p;             /* [0, 1] */
    float min_p;             /* [0, 1] */
    int32_t penalty_last_n;  /* >= 0 */
    float repeat_penalty;    /* > 0 */
    float frequency_penalty; /* [-2, 2] */
    float presence_penalty;  /* [-2, 2] */
    uint64_t seed;           /* UINT64_MAX = a random seed */
} wire_sampling;

/* Frame 1 (only when prompt is NULL): int32 prompt token ids, (n_tokens). */
typedef struct wire_submit {
    uint64_t request_id;       /* chosen by the client, >= 1, unique per connection */
    const char *prompt;        /* text the router tokenizes, or NULL */
    uint32_t n_tokens;         /* token ids given instead of text */
    const int32_t *tokens;     /* (n_tokens) */
    wire_sampling sampling;    /* absent keys take wire_sampling_default() */
    uint32_t max_tokens;       /* tokens to generate, 1..WIRE_MAX_GEN_TOKENS; absent on the
                                  wire: WIRE_DEFAULT_MAX_TOKENS */
    uint32_t top_n_probs;      /* alternatives reported with each TOKEN, 0..WIRE_MAX_TOP_PROBS */
    uint32_t n_stop;
    const char *const *stop;   /* (n_stop) stop strings, 1..WIRE_MAX_STOP_BYTES each */
    bool ignore_eos;           /* the EOS token does not end the request (benchmarks); on the
                                  wire only when true */
} wire_submit;

typedef struct wire_top_prob {
    int32_t token;
    float prob;
} wire_top_prob;

typedef struct wire_token {
    uint64_t request_id;
    uint32_t index;          /* 0 for the first generated token */
    int32_t token;
    const char *piece;       /* UTF-8 completed by this token (may be empty) */
    uint32_t piece_bytes;
    uint32_t n_top;
    const wire_top_prob *top; /* (n_top) by descending prob */
} wire_token;

typedef enum wire_stop_reason {
    WIRE_STOP_EOS = 0,
    WIRE_STOP_LENGTH,    /* max_tokens or the context is full */
    WIRE_STOP_STRING,    /* a stop string was produced */
    WIRE_STOP_CANCELLED,
    WIRE_STOP_ERROR,
    WIRE_STOP_COUNT
} wire_stop_reason;

typedef struct wire_done {
    uint64_t request_id;
    wire_stop_reason stop_reason;  /* "eos", "length", "stop", "cancelled", "error" */
    uint32_t n_prompt_tokens;
    uint32_t n_generated_tokens;
    double queue_ms;
    double prompt_ms;
    double generate_ms;
} wire_done;

typedef struct wire_cancel {
    uint64_t request_id;
} wire_cancel;

typedef struct wire_stat {
    const char *name;  /* <= WIRE_MAX_KEY_BYTES */
    double value;
} wire_stat;

typedef struct wire_stats {
    const char *sender_id;
    uint32_t n_counters;          /* 0..WIRE_MAX_STATS */
    const wire_stat *counters;    /* (n_counters), unique names */
} wire_stats;

/* A decoded (or to-be-encoded) message: type plus the matching member. STATS_REQ has none. */
typedef struct wire_message {
    wire_type type;
    union {
        wire_register reg;
        wire_register_ack reg_ack;
        wire_heartbeat heartbeat;
        wire_forward forward;
        wire_logits logits;
        wire_session_free session_free;
        wire_error error;
        wire_manifest_req manifest_req;
        wire_manifest manifest;
        wire_chunk_req chunk_req;
        wire_chunk chunk;
        wire_submit submit;
        wire_token token;
        wire_done done;
        wire_cancel cancel;
        wire_stats stats;
    };
    void *zone_; /* private: memory of a decoded message */
} wire_message;

/* One frame: bytes it does not own. */
typedef struct wire_frame {
    const void *data;
    size_t n_bytes;
} wire_frame;

/* A multipart message as it travels. frames[0] is the header. identity is the peer's
 * routing id on a ROUTER socket (filled by wire_recv, sent first by wire_send).
 * Zero-initialise before use; wire_msg_free releases what encode or recv attached. */
typedef struct wire_msg {
    size_t n_frames;                   /* 1..WIRE_MAX_FRAMES */
    wire_frame frames[WIRE_MAX_FRAMES];
    uint8_t identity[255];
    size_t identity_bytes;             /* 0 = none */
    void *store_;                      /* private: owned header / received parts */
} wire_msg;

/* "forward", "register", ...; "unknown" for anything else. Never NULL. */
const char *wire_type_name(int type);

/* "malformed", "version", ...; "unknown" for codes this build does not know. Never NULL. */
const char *wire_errc_name(uint32_t code);

/* "eos", "length", "stop", "cancelled", "error"; "unknown" otherwise. Never NULL. */
const char *wire_stop_reason_name(int reason);

/* The sampler defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * penalty_last_n 64, repeat_penalty 1, penalties 0, random seed). Cannot fail. */
wire_sampling wire_sampling_default(void);

/* Checks m against the schema and every limit above: the same checks a decoder makes
 * after reading the fields. Returns 0, or -1 with err naming the field and the limit. */
int wire_validate(const wire_message *m, llorch_error *err);

/* Encodes m into out (zero-initialised or freed before): frame 0 is a new msgpack header
 * out owns; bulk frames point at m's arrays, which must stay valid until out is sent.
 * Returns 0, or -1 with err when m fails wire_validate (nothing is attached to out). */
int wire_encode(const wire_message *m, wire_msg *out, llorch_error *err);

/* Decodes in into out without trusting any byte of it: frame count and sizes, header
 * size, msgpack structure (depth, counts, lengths), version, type, every field's kind
 * and range, unknown keys skipped, duplicate keys refused. Returns WIRE_OK with out
 * filled (free with wire_message_free), or the wire_errc to put in an ERROR reply with
 * err saying what was wrong; out then holds nothing to free. */
int wire_decode(const wire_msg *in, wire_message *out, llorch_error *err);

/* Frees what wire_decode allocated and zeroes m. Safe on a zeroed or freed message. */
void wire_message_free(wire_message *m);

/* Frees what wire_encode or wire_recv attached and zeroes msg. Safe on a zeroed msg. */
void wire_msg_free(wire_msg *msg);

/* ---- over ZeroMQ (wire_zmq.c) ---- */

/* Sets ZMQ_MAXMSGSIZE so that a peer sending a frame over WIRE_MAX_FRAME_BYTES is
 * disconnected before the frame is buffered. Returns 0, or -1 with err. */
int wire_socket_limits(void *socket, llorch_error *err);

/* Watches socket's connections: a PAIR socket in ctx receiving the ZMQ_EVENT_* in events
 * over inproc://name (unique in ctx). NULL when it cannot be made (the caller then goes
 * without). Close with wire_monitor_close. */
void *wire_monitor_open(void *ctx, void *socket, const char *name, int events);

/* The next event waiting on monitor (one of its ZMQ_EVENT_*), 0 when none is waiting; never
 * blocks. */
int wire_monitor_next(void *monitor);

/* Stops watching socket and closes monitor (either may be NULL). */
void wire_monitor_close(void *socket, void *monitor);

/* Sends msg as one multipart message; on a ROUTER socket msg->identity goes first.
 * flags: 0 or ZMQ_DONTWAIT. Returns 0, or -1 with err (errno from zmq kept: EAGAIN
 * when ZMQ_DONTWAIT could not send, ETERM when the context is ending). */
int wire_send(void *socket, const wire_msg *msg, int flags, llorch_error *err);

/* Receives one multipart message into out (zeroed or freed before); on a ROUTER socket
 * the first part is taken as the identity. Returns 0 (free out with wire_msg_free);
 * -1 with err and zmq's errno (EAGAIN, EINTR, ETERM) when nothing was received; or
 * WIRE_ERR_MALFORMED when a message arrived with too many frames or bytes: it is read
 * to its end and dropped, and out->identity still names the sender for an ERROR reply. */
int wire_recv(void *socket, wire_msg *out, int flags, llorch_error *err);

/* wire_encode + wire_send with the given identity (NULL/0 for none). 0 or -1 with err. */
int wire_send_message(void *socket, const void *identity, size_t identity_bytes,
                      const wire_message *m, int flags, llorch_error *err);

/* wire_recv + wire_decode. Returns 0 with raw and msg filled (free both), -1 as
 * wire_recv, or a wire_errc with raw->identity set (raw freed of frames) and err set. */
int wire_recv_message(void *socket, wire_msg *raw, wire_message *msg, int flags,
                      llorch_error *err);

/* Sends ERROR {code, message, ids} to the sender of request (its identity, if any).
 * Returns 0 or -1 with err. */
int wire_reply_error(void *socket, const wire_msg *request, uint32_t code, const char *message,
                     uint64_t batch_id, uint64_t session_id, uint64_t request_id,
                     llorch_error *err);

#endif
