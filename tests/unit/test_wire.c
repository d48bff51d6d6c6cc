/* test_wire.c - the wire schema: round trips of every message, every limit and malformed
 * input refused with the right code and message, and real ZeroMQ sockets over ipc://. */
#include "testutil.h"

#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <zmq.h>

#include "wire.h"

/* ---- helpers ---- */

/* Encodes m, decodes the result into out (the caller frees both). */
static void s_roundtrip(const wire_message *m, wire_msg *raw, wire_message *out)
{
    llorch_error err = {{0}};
    if (wire_encode(m, raw, &err) != 0)
        fail_msg("encode failed: %s", err.msg);
    int rc = wire_decode(raw, out, &err);
    if (rc != WIRE_OK)
        fail_msg("decode failed (%d): %s", rc, err.msg);
    assert_int_equal(out->type, m->type);
}

/* A header under construction: map of n_fields + 2 with "v" and "t" first. */
typedef struct hdr {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} hdr;

static void hdr_begin(hdr *h, unsigned version, const char *type, size_t n_fields)
{
    msgpack_sbuffer_init(&h->sb);
    msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&h->pk, n_fields + 2);
    msgpack_pack_str_with_body(&h->pk, "v", 1);
    msgpack_pack_uint32(&h->pk, version);
    msgpack_pack_str_with_body(&h->pk, "t", 1);
    msgpack_pack_str_with_body(&h->pk, type, strlen(type));
}

static void hdr_key(hdr *h, const char *k)
{
    msgpack_pack_str_with_body(&h->pk, k, strlen(k));
}

static void hdr_kv_u64(hdr *h, const char *k, uint64_t v)
{
    hdr_key(h, k);
    msgpack_pack_uint64(&h->pk, v);
}

/* Decodes header bytes plus optional bulk frames; expects failure with code and a
 * message containing want (NULL: expects success, then frees). */
static void s_expect(const void *header, size_t n, const wire_frame *bulk, size_t n_bulk,
                     int code, const char *want)
{
    wire_msg raw = {0};
    raw.frames[0] = (wire_frame){header, n};
    for (size_t i = 0; i < n_bulk && i + 1 < WIRE_MAX_FRAMES; i++)
        raw.frames[1 + i] = bulk[i];
    raw.n_frames = 1 + n_bulk; /* may exceed WIRE_MAX_FRAMES: the decoder must refuse it */
    wire_message m;
    llorch_error err = {{0}};
    int rc = wire_decode(&raw, &m, &err);
    if (rc != code)
        fail_msg("decode returned %d, expected %d (%s)", rc, code, err.msg);
    if (want && !strstr(err.msg, want))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, want);
    if (rc == WIRE_OK)
        wire_message_free(&m);
}

static void hdr_expect(hdr *h, const wire_frame *bulk, size_t n_bulk, int code,
                       const char *want)
{
    s_expect(h->sb.data, h->sb.size, bulk, n_bulk, code, want);
    msgpack_sbuffer_destroy(&h->sb);
}

/* Field-by-field (structs have padding). */
static void s_rows_equal(const wire_row *a, const wire_row *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        assert_true(a[i].session_id == b[i].session_id);
        assert_int_equal(a[i].pos, b[i].pos);
        assert_int_equal(a[i].token, b[i].token);
        assert_int_equal(a[i].want_logits, b[i].want_logits);
    }
}

/* ---- round trips ---- */

static void test_roundtrip_register_ack_heartbeat(void **state)
{
    wire_msg raw = {0};
    wire_message m = {.type = WIRE_REGISTER}, out;
    m.reg = (wire_register){.worker_id = "w0", .model_id = "m-1", .endpoint = "ipc:///tmp/w0",
                            .layer_first = 4, .layer_last = 8, .n_layers = 22, .threads = 2,
                            .kv_budget_bytes = 1ull << 33};
    s_roundtrip(&m, &raw, &out);
    assert_string_equal(out.reg.worker_id, "w0");
    assert_string_equal(out.reg.model_id, "m-1");
    assert_string_equal(out.reg.endpoint, "ipc:///tmp/w0");
    assert_int_equal(out.reg.layer_first, 4);
    assert_int_equal(out.reg.layer_last, 8);
    assert_int_equal(out.reg.n_layers, 22);
    assert_int_equal(out.reg.threads, 2);
    assert_true(out.reg.kv_budget_bytes == 1ull << 33);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_REGISTER_ACK};
    m.reg_ack = (wire_register_ack){.worker_id = "w0", .heartbeat_ms = 1000, .liveness = 3};
    s_roundtrip(&m, &raw, &out);
    assert_string_equal(out.reg_ack.worker_id, "w0");
    assert_int_equal(out.reg_ack.heartbeat_ms, 1000);
    assert_int_equal(out.reg_ack.liveness, 3);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_HEARTBEAT};
    m.heartbeat = (wire_heartbeat){.sender_id = "router", .seq = UINT64_MAX, .n_sessions = 7,
                                   .queue_depth = 2, .kv_used_bytes = 12345, .batches = 99};
    s_roundtrip(&m, &raw, &out);
    assert_string_equal(out.heartbeat.sender_id, "router");
    assert_true(out.heartbeat.seq == UINT64_MAX);
    assert_int_equal(out.heartbeat.n_sessions, 7);
    assert_int_equal(out.heartbeat.queue_depth, 2);
    assert_int_equal(out.heartbeat.kv_used_bytes, 12345);
    assert_int_equal(out.heartbeat.batches, 99);
    wire_message_free(&out);
    wire_msg_free(&raw);
}

static void test_roundtrip_forward_and_logits(void **state)
{
    wire_row rows[3] = {{1, 0, 17, false}, {2, 5, 99, true}, {UINT64_MAX, 4000000, 0, true}};
    const char *route[2] = {"ipc:///tmp/w1", "tcp://10.0.0.2:5555"};
    wire_msg raw = {0};
    wire_message m = {.type = WIRE_FORWARD}, out;
    m.forward = (wire_forward){.batch_id = 42, .pipeline_id = 1, .hidden_dim = 8, .n_rows = 3,
                               .rows = rows, .n_hops = 2, .route = route};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(raw.n_frames, 1); /* tokens: no hidden frame */
    assert_int_equal(out.forward.batch_id, 42);
    assert_int_equal(out.forward.pipeline_id, 1);
    assert_int_equal(out.forward.hidden_dim, 8);
    assert_int_equal(out.forward.n_rows, 3);
    assert_null(out.forward.hidden);
    s_rows_equal(out.forward.rows, rows, 3);
    assert_int_equal(out.forward.n_hops, 2);
    assert_string_equal(out.forward.route[0], route[0]);
    assert_string_equal(out.forward.route[1], route[1]);
    wire_message_free(&out);
    wire_msg_free(&raw);

    float hidden[3 * 8];
    for (int i = 0; i < 24; i++)
        hidden[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 3; i++)
        rows[i].token = -1;
    m.forward.hidden = hidden;
    m.forward.n_hops = 0;
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(raw.n_frames, 2);
    assert_int_equal(raw.frames[1].n_bytes, sizeof hidden);
    assert_memory_equal(out.forward.hidden, hidden, sizeof hidden);
    assert_int_equal(out.forward.rows[1].token, -1);
    assert_true(out.forward.rows[1].want_logits);
    assert_int_equal(out.forward.n_hops, 0);
    wire_message_free(&out);
    wire_msg_free(&raw);

    wire_logit_row lrows[2] = {{2, 5}, {9, 1}};
    float logits[2 * 5] = {1, -2, 3.5f, 4, 5, 6, 7, 8, 9, -1e30f};
    m = (wire_message){.type = WIRE_LOGITS};
    m.logits = (wire_logits){.batch_id = 42, .pipeline_id = 1, .n_vocab = 5, .n_rows = 2,
                             .rows = lrows, .logits = logits};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.logits.n_vocab, 5);
    assert_int_equal(out.logits.n_rows, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(out.logits.rows[i].session_id, lrows[i].session_id);
        assert_int_equal(out.logits.rows[i].pos, lrows[i].pos);
    }
    assert_memory_equal(out.logits.logits, logits, sizeof logits);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m.logits.n_rows = 0; /* a batch where no row wanted logits still reports back */
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(raw.n_frames, 2);
    assert_int_equal(out.logits.n_rows, 0);
    wire_message_free(&out);
    wire_msg_free(&raw);
}

static void test_roundtrip_small_messages(void **state)
{
    wire_msg raw = {0};
    wire_message out;
    wire_message m = {.type = WIRE_SESSION_FREE, .session_free = {.session_id = 77}};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.session_free.session_id, 77);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_ERROR};
    m.error = (wire_error){.code = WIRE_ERR_NO_MEMORY, .message = "session 5 does not fit",
                           .session_id = 5, .batch_id = 6, .request_id = 0};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.error.code, WIRE_ERR_NO_MEMORY);
    assert_string_equal(out.error.message, "session 5 does not fit");
    assert_int_equal(out.error.session_id, 5);
    assert_int_equal(out.error.batch_id, 6);
    assert_int_equal(out.error.request_id, 0);
    assert_string_equal(wire_errc_name(out.error.code), "no_memory");
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_MANIFEST_REQ, .manifest_req = {.worker_id = "w3"}};
    s_roundtrip(&m, &raw, &out);
    assert_string_equal(out.manifest_req.worker_id, "w3");
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_CHUNK_REQ, .chunk_req = {.tensor = 3, .offset = 1 << 20,
                                                             .length = 4096}};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.chunk_req.tensor, 3);
    assert_int_equal(out.chunk_req.offset, 1 << 20);
    assert_int_equal(out.chunk_req.length, 4096);
    wire_message_free(&out);
    wire_msg_free(&raw);

    static const uint8_t bytes[5] = {1, 2, 3, 0, 255};
    m = (wire_message){.type = WIRE_CHUNK, .chunk = {.tensor = 3, .offset = 10, .length = 5,
                                                     .data = bytes}};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.chunk.length, 5);
    assert_memory_equal(out.chunk.data, bytes, 5);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_CANCEL, .cancel = {.request_id = 12}};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.cancel.request_id, 12);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_STATS_REQ};
    s_roundtrip(&m, &raw, &out);
    wire_message_free(&out);
    wire_msg_free(&raw);

    wire_stat counters[3] = {{"batches", 12}, {"rows_per_batch", 3.5}, {"queue", 0}};
    m = (wire_message){.type = WIRE_STATS,
                       .stats = {.sender_id = "router", .n_counters = 3, .counters = counters}};
    s_roundtrip(&m, &raw, &out);
    assert_string_equal(out.stats.sender_id, "router");
    assert_int_equal(out.stats.n_counters, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out.stats.counters[i].name, counters[i].name);
        assert_true(out.stats.counters[i].value == counters[i].value);
    }
    wire_message_free(&out);
    wire_msg_free(&raw);
}

/* A small but complete manifest: 4 tokens, 2 tensors. */
static const char *const s_pieces[4] = {"<unk>", "<s>", "\xe2\x96\x81hi", "\x00z"};
static const uint32_t s_piece_lens[4] = {5, 3, 5, 2};
static const float s_scores[4] = {0, 0, -1.5f, -2};
static const int32_t s_types[4] = {2, 3, 1, 6};

static wire_message s_manifest(wire_tensor_info *t)
{
    t[0] = (wire_tensor_info){.name = "token_embd.weight", .type = 8, .n_dims = 2,
                              .ne = {64, 4, 1, 1}, .offset = 0, .n_bytes = 272};
    t[1] = (wire_tensor_info){.name = "output_norm.weight", .type = 0, .n_dims = 1,
                              .ne = {64, 1, 1, 1}, .offset = 288, .n_bytes = 256};
    for (int i = 0; i < WIRE_DIGEST_BYTES; i++)
        t[0].digest[i] = (uint8_t)i, t[1].digest[i] = (uint8_t)(255 - i);
    wire_message m = {.type = WIRE_MANIFEST};
    m.manifest = (wire_manifest){
        .model_id = "blake2b:0123", .host_id = "host-a", .segment_name = "/llorch-1",
        .segment_bytes = 4096,
        .config = {.arch = "llama", .n_vocab = 4, .n_embd = 64, .n_layers = 2, .n_heads = 8,
                   .n_kv_heads = 4, .n_ff = 172, .n_ctx_train = 512, .n_rot = 8,
                   .rope_freq_base = 10000.0f, .rms_norm_eps = 1e-5f},
        .tokenizer = {.model = "llama", .n_tokens = 4, .pieces = s_pieces,
                      .piece_lens = s_piece_lens, .scores = s_scores, .types = s_types,
                      .bos_id = 1, .eos_id = -1, .unk_id = 0, .add_bos = true,
                      .add_space_prefix = true},
        .n_tensors = 2, .tensors = t};
    return m;
}

static void test_roundtrip_manifest(void **state)
{
    wire_tensor_info t[2];
    wire_message m = s_manifest(t), out;
    wire_msg raw = {0};
    s_roundtrip(&m, &raw, &out);
    const wire_manifest *o = &out.manifest;
    assert_int_equal(raw.n_frames, 3);
    assert_string_equal(o->model_id, "blake2b:0123");
    assert_string_equal(o->host_id, "host-a");
    assert_string_equal(o->segment_name, "/llorch-1");
    assert_int_equal(o->segment_bytes, 4096);
    const wire_model_config *c = &o->config, *ci = &m.manifest.config;
    assert_true(c->n_vocab == ci->n_vocab && c->n_embd == ci->n_embd &&
                c->n_layers == ci->n_layers && c->n_heads == ci->n_heads &&
                c->n_kv_heads == ci->n_kv_heads && c->n_ff == ci->n_ff &&
                c->n_ctx_train == ci->n_ctx_train && c->n_rot == ci->n_rot &&
                c->rope_freq_base == ci->rope_freq_base && c->rms_norm_eps == ci->rms_norm_eps);
    assert_string_equal(o->config.arch, "llama");
    assert_int_equal(o->tokenizer.n_tokens, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o->tokenizer.piece_lens[i], s_piece_lens[i]);
        assert_memory_equal(o->tokenizer.pieces[i], s_pieces[i], s_piece_lens[i]);
    }
    assert_memory_equal(o->tokenizer.scores, s_scores, sizeof s_scores);
    assert_memory_equal(o->tokenizer.types, s_types, sizeof s_types);
    assert_int_equal(o->tokenizer.bos_id, 1);
    assert_int_equal(o->tokenizer.eos_id, -1);
    assert_true(o->tokenizer.add_bos && !o->tokenizer.add_eos && o->tokenizer.add_space_prefix);
    assert_int_equal(o->n_tensors, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(o->tensors[i].name, t[i].name);
        assert_int_equal(o->tensors[i].type, t[i].type);
        assert_int_equal(o->tensors[i].n_dims, t[i].n_dims);
        assert_memory_equal(o->tensors[i].ne, t[i].ne, sizeof t[i].ne);
        assert_int_equal(o->tensors[i].offset, t[i].offset);
        assert_int_equal(o->tensors[i].n_bytes, t[i].n_bytes);
        assert_memory_equal(o->tensors[i].digest, t[i].digest, WIRE_DIGEST_BYTES);
    }
    wire_message_free(&out);
    wire_msg_free(&raw);

    /* The schema checks: a tensor outside the segment, duplicate names, bad ids. */
    llorch_error err = {{0}};
    t[1].offset = 4000;
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "do not lie inside the 4096-byte segment"));
    t[1].offset = 288;
    t[1].name = t[0].name;
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "appears twice"));
    t[1].name = "output_norm.weight";
    m.manifest.tokenizer.bos_id = 4;
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "bos_id"));
}

/* The header of the encoded manifest raw with tensors[0]'s "layout" set to value, or
 * removed when drop, into h (hdr_expect or msgpack_sbuffer_destroy frees it). */
static void s_edit_layout(const wire_msg *raw, bool drop, uint64_t value, hdr *h)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, raw->frames[0].data, raw->frames[0].n_bytes, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_object_map *top = &up.data.via.map, *t0 = NULL;
    for (uint32_t i = 0; i < top->size; i++)
        if (top->ptr[i].key.via.str.size == 7 && !memcmp(top->ptr[i].key.via.str.ptr, "tensors", 7))
            t0 = &top->ptr[i].val.via.array.ptr[0].via.map;
    assert_non_null(t0);
    bool found = false;
    for (uint32_t i = 0; i < t0->size && !found; i++)
        if (t0->ptr[i].key.via.str.size == 6 && !memcmp(t0->ptr[i].key.via.str.ptr, "layout", 6)) {
            found = true;
            if (drop)
                t0->ptr[i] = t0->ptr[--t0->size];
            else
                t0->ptr[i].val.via.u64 = value;
        }
    assert_true(found);
    msgpack_sbuffer_init(&h->sb);
    msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write);
    msgpack_pack_object(&h->pk, up.data);
    msgpack_unpacked_destroy(&up);
}

/* A tensor's layout travels as it is; a manifest without the key (an older loader) means
 * GGUF rows; a layout beyond WIRE_MAX_LAYOUT is refused by the decoder, naming the tensor,
 * and by the encoder. */
static void test_manifest_tensor_layout(void **state)
{
    wire_tensor_info t[2];
    wire_message m = s_manifest(t), out;
    t[0].layout = 1;
    wire_msg raw = {0};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.manifest.tensors[0].layout, 1);
    assert_int_equal(out.manifest.tensors[1].layout, 0);
    wire_message_free(&out);

    wire_frame bulk[2] = {raw.frames[1], raw.frames[2]};
    hdr h;
    s_edit_layout(&raw, true, 0, &h);
    wire_msg edited = {.n_frames = 3, .frames = {{h.sb.data, h.sb.size}, bulk[0], bulk[1]}};
    llorch_error err = {{0}};
    assert_int_equal(wire_decode(&edited, &out, &err), WIRE_OK);
    assert_int_equal(out.manifest.tensors[0].layout, 0);
    assert_string_equal(out.manifest.tensors[0].name, "token_embd.weight");
    wire_message_free(&out);
    msgpack_sbuffer_destroy(&h.sb);

    s_edit_layout(&raw, false, WIRE_MAX_LAYOUT + 1, &h);
    hdr_expect(&h, bulk, 2, WIRE_ERR_MALFORMED,
               "token_embd.weight: layout 2 is over the limit of 1");
    s_edit_layout(&raw, false, 1ull << 40, &h);
    hdr_expect(&h, bulk, 2, WIRE_ERR_MALFORMED, "layout: 1099511627776 is over the limit");
    wire_msg_free(&raw);

    t[0].layout = WIRE_MAX_LAYOUT + 1;
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "tensors[0]: layout: 2 is outside [0, 1]"));
}

static void test_roundtrip_client_messages(void **state)
{
    const char *stop[2] = {"\n\n", "User:"};
    wire_msg raw = {0};
    wire_message m = {.type = WIRE_SUBMIT}, out;
    m.submit = (wire_submit){.request_id = 1, .prompt = "Once upon a time",
                             .sampling = wire_sampling_default(), .max_tokens = 64,
                             .top_n_probs = 5, .n_stop = 2, .stop = stop};
    m.submit.sampling.temperature = 0;
    m.submit.sampling.seed = 1234;
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(raw.n_frames, 1);
    assert_string_equal(out.submit.prompt, "Once upon a time");
    assert_memory_equal(&out.submit.sampling, &m.submit.sampling, sizeof m.submit.sampling);
    assert_int_equal(out.submit.max_tokens, 64);
    assert_int_equal(out.submit.top_n_probs, 5);
    assert_int_equal(out.submit.n_stop, 2);
    assert_string_equal(out.submit.stop[1], "User:");
    assert_false(out.submit.ignore_eos);
    wire_message_free(&out);
    wire_msg_free(&raw);

    /* ignore_eos goes on the wire when set, and comes back. */
    m.submit.ignore_eos = true;
    s_roundtrip(&m, &raw, &out);
    assert_true(out.submit.ignore_eos);
    assert_int_equal(out.submit.max_tokens, 64);
    assert_string_equal(out.submit.stop[0], "\n\n");
    wire_message_free(&out);
    wire_msg_free(&raw);
    m.submit.ignore_eos = false;

    int32_t tokens[3] = {1, 15043, 3186};
    m.submit.prompt = NULL;
    m.submit.n_tokens = 3;
    m.submit.tokens = tokens;
    m.submit.n_stop = 0;
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(raw.n_frames, 2);
    assert_null(out.submit.prompt);
    assert_int_equal(out.submit.n_tokens, 3);
    assert_memory_equal(out.submit.tokens, tokens, sizeof tokens);
    wire_message_free(&out);
    wire_msg_free(&raw);

    /* Absent sampling keys take the defaults. */
    hdr h;
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "submit", 2);
    hdr_kv_u64(&h, "request_id", 9);
    hdr_key(&h, "prompt");
    msgpack_pack_str_with_body(&h.pk, "hi", 2);
    raw = (wire_msg){.n_frames = 1, .frames = {{h.sb.data, h.sb.size}}};
    llorch_error err = {{0}};
    assert_int_equal(wire_decode(&raw, &out, &err), WIRE_OK);
    wire_sampling def = wire_sampling_default();
    assert_memory_equal(&out.submit.sampling, &def, sizeof def);
    assert_int_equal(out.submit.max_tokens, WIRE_DEFAULT_MAX_TOKENS);
    assert_false(out.submit.ignore_eos);
    wire_message_free(&out);
    msgpack_sbuffer_destroy(&h.sb);
    raw = (wire_msg){0};

    wire_top_prob top[2] = {{42, 0.75f}, {7, 0.125f}};
    m = (wire_message){.type = WIRE_TOKEN};
    m.token = (wire_token){.request_id = 1, .index = 3, .token = 42, .piece = "\xe2\x96",
                           .piece_bytes = 2, .n_top = 2, .top = top};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.token.token, 42);
    assert_int_equal(out.token.index, 3);
    assert_int_equal(out.token.piece_bytes, 2);
    assert_memory_equal(out.token.piece, "\xe2\x96", 2);
    assert_int_equal(out.token.n_top, 2);
    assert_memory_equal(out.token.top, top, sizeof top);
    wire_message_free(&out);
    wire_msg_free(&raw);

    m = (wire_message){.type = WIRE_DONE};
    m.done = (wire_done){.request_id = 1, .stop_reason = WIRE_STOP_STRING, .n_prompt_tokens = 5,
                         .n_generated_tokens = 17, .queue_ms = 0.5, .prompt_ms = 12.25,
                         .generate_ms = 300};
    s_roundtrip(&m, &raw, &out);
    assert_int_equal(out.done.request_id, 1);
    assert_int_equal(out.done.stop_reason, WIRE_STOP_STRING);
    assert_int_equal(out.done.n_prompt_tokens, 5);
    assert_int_equal(out.done.n_generated_tokens, 17);
    assert_true(out.done.queue_ms == 0.5 && out.done.prompt_ms == 12.25 &&
                out.done.generate_ms == 300);
    wire_message_free(&out);
    wire_msg_free(&raw);
}

/* ---- malformed input ---- */

static void test_truncated_headers_are_refused(void **state)
{
    wire_tensor_info t[2];
    wire_message m = s_manifest(t);
    wire_msg raw = {0};
    llorch_error err = {{0}};
    assert_int_equal(wire_encode(&m, &raw, &err), 0);
    wire_frame bulk[2] = {raw.frames[1], raw.frames[2]};
    for (size_t n = 1; n < raw.frames[0].n_bytes; n++)
        s_expect(raw.frames[0].data, n, bulk, 2, WIRE_ERR_MALFORMED, "malformed message");
    s_expect(raw.frames[0].data, raw.frames[0].n_bytes, bulk, 2, WIRE_OK, NULL);
    wire_msg_free(&raw);
}

static void test_hostile_msgpack_structure(void **state)
{
    /* A top-level map claiming 4 billion entries: refused before any allocation. */
    static const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0};
    s_expect(huge_map, sizeof huge_map, NULL, 0, WIRE_ERR_MALFORMED, "claims 4294967295");
    static const uint8_t huge_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'v'};
    s_expect(huge_str, sizeof huge_str, NULL, 0, WIRE_ERR_MALFORMED, "truncated header");
    /* Depth bomb: 200 nested one-element arrays. */
    uint8_t bomb[202];
    bomb[0] = 0x81, bomb[1] = 0xa1;
    memset(bomb + 2, 0x91, 200);
    s_expect(bomb, sizeof bomb, NULL, 0, WIRE_ERR_MALFORMED, "nested deeper than 5");
    static const uint8_t ext[] = {0x81, 0xa1, 'v', 0xd4, 0x01, 0x00};
    s_expect(ext, sizeof ext, NULL, 0, WIRE_ERR_MALFORMED, "extension types");
    static const uint8_t reserved[] = {0x81, 0xa1, 'v', 0xc1};
    s_expect(reserved, sizeof reserved, NULL, 0, WIRE_ERR_MALFORMED, "0xc1");
    static const uint8_t array_root[] = {0x92, 0x01, 0x02};
    s_expect(array_root, sizeof array_root, NULL, 0, WIRE_ERR_MALFORMED, "expected a map");
    static const uint8_t trailing[] = {0x80, 0x00};
    s_expect(trailing, sizeof trailing, NULL, 0, WIRE_ERR_MALFORMED, "1 stray bytes");
    static const uint8_t int_key[] = {0x81, 0x01, 0x02};
    s_expect(int_key, sizeof int_key, NULL, 0, WIRE_ERR_MALFORMED, "a map key");
    s_expect("", 0, NULL, 0, WIRE_ERR_MALFORMED, "empty header frame");

    /* More values than WIRE_MAX_OBJECTS in a (manifest-sized) header. */
    size_t n = WIRE_MAX_OBJECTS + 10;
    uint8_t *many = malloc(n + 5);
    assert_non_null(many);
    many[0] = 0xdd, many[1] = (uint8_t)(n >> 24), many[2] = (uint8_t)(n >> 16);
    many[3] = (uint8_t)(n >> 8), many[4] = (uint8_t)n;
    memset(many + 5, 0xc0, n);
    s_expect(many, n + 5, NULL, 0, WIRE_ERR_MALFORMED, "more than 2097152 values");
    free(many);
}

static void test_schema_violations(void **state)
{
    hdr h;
    /* Version and type. */
    hdr_begin(&h, 1, "forward", 0);
    hdr_expect(&h, NULL, 0, WIRE_ERR_VERSION, "protocol version 1, this build speaks 2");
    hdr_begin(&h, 3, "forward", 0);
    hdr_expect(&h, NULL, 0, WIRE_ERR_VERSION, "protocol version 3, this build speaks 2");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "teleport", 0);
    hdr_expect(&h, NULL, 0, WIRE_ERR_UNSUPPORTED, "unknown message type \"teleport\"");
    /* Missing, wrong-typed, duplicate and unknown fields. */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 0);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "cancel: request_id: required field missing");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 1);
    hdr_key(&h, "request_id");
    msgpack_pack_str_with_body(&h.pk, "12", 2);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "expected an unsigned integer, got a string");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 2);
    hdr_kv_u64(&h, "request_id", 1);
    hdr_kv_u64(&h, "request_id", 2);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "\"request_id\" appears twice");
    /* Two empty keys are a duplicate too. (An empty key can come without a pointer, which
     * memcmp must not see: tests/fuzz/corpus_wire holds the input that found it.) */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 2);
    hdr_kv_u64(&h, "", 1);
    hdr_kv_u64(&h, "", 2);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "\"\" appears twice");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 2);
    hdr_kv_u64(&h, "request_id", 1);
    hdr_kv_u64(&h, "added_in_a_later_minor_release", 2);
    hdr_expect(&h, NULL, 0, WIRE_OK, NULL); /* unknown keys are ignored */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "cancel", 1);
    hdr_kv_u64(&h, "request_id", 0);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "request_id: 0 is outside");
    /* Strings: a NUL inside, over a length limit. */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "manifest_req", 1);
    hdr_key(&h, "worker_id");
    msgpack_pack_str_with_body(&h.pk, "w\0x", 3);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "holds a NUL byte");
    char long_id[WIRE_MAX_ENDPOINT_BYTES + 2];
    memset(long_id, 'a', sizeof long_id);
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "manifest_req", 1);
    hdr_key(&h, "worker_id");
    msgpack_pack_str_with_body(&h.pk, long_id, sizeof long_id);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "over the limit of 256");
    /* Numbers: out of a C type's range, NaN. */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "chunk_req", 3);
    hdr_kv_u64(&h, "tensor", 1ull << 32);
    hdr_kv_u64(&h, "offset", 0);
    hdr_kv_u64(&h, "length", 1);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "tensor: 4294967296 is over the limit");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "chunk_req", 3);
    hdr_kv_u64(&h, "tensor", 1);
    hdr_kv_u64(&h, "offset", 0);
    hdr_kv_u64(&h, "length", WIRE_MAX_CHUNK_BYTES + 1ull);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "length: 67108865 is outside");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "submit", 3);
    hdr_kv_u64(&h, "request_id", 1);
    hdr_key(&h, "prompt");
    msgpack_pack_str_with_body(&h.pk, "x", 1);
    hdr_key(&h, "temperature");
    msgpack_pack_double(&h.pk, NAN);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "does not fit a 32-bit float");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "submit", 3);
    hdr_kv_u64(&h, "request_id", 1);
    hdr_key(&h, "prompt");
    msgpack_pack_str_with_body(&h.pk, "x", 1);
    hdr_kv_u64(&h, "ignore_eos", 1);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "ignore_eos");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "done", 4);
    hdr_kv_u64(&h, "request_id", 1);
    hdr_key(&h, "stop_reason");
    msgpack_pack_str_with_body(&h.pk, "bored", 5);
    hdr_kv_u64(&h, "n_prompt_tokens", 1);
    hdr_kv_u64(&h, "n_generated_tokens", 1);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "\"bored\" is not eos");
}

/* A FORWARD header with n rows of hidden states (token -1). */
static void s_forward_hdr(hdr *h, uint32_t n_rows, uint32_t hidden_dim, int32_t token)
{
    hdr_begin(h, WIRE_PROTOCOL_VERSION, "forward", 4);
    hdr_kv_u64(h, "batch_id", 1);
    hdr_kv_u64(h, "pipeline_id", 0);
    hdr_kv_u64(h, "hidden_dim", hidden_dim);
    hdr_key(h, "rows");
    msgpack_pack_array(&h->pk, n_rows);
    for (uint32_t i = 0; i < n_rows; i++) {
        msgpack_pack_array(&h->pk, 4);
        msgpack_pack_uint64(&h->pk, 1 + i);
        msgpack_pack_uint32(&h->pk, 0);
        msgpack_pack_int32(&h->pk, token);
        msgpack_pack_true(&h->pk);
    }
}

static void test_frame_checks(void **state)
{
    static float data[4 * 8 + 1];
    hdr h;
    wire_frame ok = {data, 4 * 8 * 4};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, &ok, 1, WIRE_OK, NULL);
    wire_frame short_frame = {data, 4 * 8 * 4 - 4};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, &short_frame, 1, WIRE_ERR_MALFORMED,
               "frame 1 (hidden): 124 bytes, expected 4 x 8 x 4 = 128");
    wire_frame misaligned = {(const char *)data + 2, 4 * 8 * 4};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, &misaligned, 1, WIRE_ERR_MALFORMED, "not 4-byte aligned");
    s_forward_hdr(&h, 4, 8, 5); /* token rows must not come with hidden states */
    hdr_expect(&h, &ok, 1, WIRE_ERR_MALFORMED, "every row must have token -1");
    s_forward_hdr(&h, 4, 8, -1); /* hidden rows without the frame */
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "no hidden-state frame");
    s_forward_hdr(&h, WIRE_MAX_ROWS + 1, 8, 3);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "rows: 4097 entries, over the limit of 4096");
    s_forward_hdr(&h, 1, WIRE_MAX_HIDDEN_DIM + 1, 3);
    hdr_expect(&h, NULL, 0, WIRE_ERR_MALFORMED, "hidden_dim: 65537 is outside");
    wire_frame three[3] = {ok, ok, ok};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, three, 3, WIRE_ERR_MALFORMED, "4 frames, expected 2");
    wire_frame too_many[WIRE_MAX_FRAMES] = {ok, ok, ok, ok};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, too_many, WIRE_MAX_FRAMES, WIRE_ERR_MALFORMED, "1 to 4 frames");
    /* LOGITS: n_vocab limit, and a frame that does not match rows x n_vocab. */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "logits", 4);
    hdr_kv_u64(&h, "batch_id", 1);
    hdr_kv_u64(&h, "pipeline_id", 0);
    hdr_kv_u64(&h, "n_vocab", WIRE_MAX_VOCAB + 1);
    hdr_key(&h, "rows");
    msgpack_pack_array(&h.pk, 0);
    wire_frame empty = {NULL, 0};
    hdr_expect(&h, &empty, 1, WIRE_ERR_MALFORMED, "n_vocab: 1048577 is outside");
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "logits", 4);
    hdr_kv_u64(&h, "batch_id", 1);
    hdr_kv_u64(&h, "pipeline_id", 0);
    hdr_kv_u64(&h, "n_vocab", 8);
    hdr_key(&h, "rows");
    msgpack_pack_array(&h.pk, 1);
    msgpack_pack_array(&h.pk, 2);
    msgpack_pack_uint64(&h.pk, 3);
    msgpack_pack_uint32(&h.pk, 4);
    hdr_expect(&h, &ok, 1, WIRE_ERR_MALFORMED, "expected 1 x 8 x 4 = 32");
    /* CHUNK: the frame must hold exactly length bytes. */
    hdr_begin(&h, WIRE_PROTOCOL_VERSION, "chunk", 3);
    hdr_kv_u64(&h, "tensor", 0);
    hdr_kv_u64(&h, "offset", 0);
    hdr_kv_u64(&h, "length", 100);
    hdr_expect(&h, &ok, 1, WIRE_ERR_MALFORMED, "128 bytes but length says 100");
    /* A bulk frame claiming more than WIRE_MAX_FRAME_BYTES is refused before it is read. */
    wire_frame huge = {data, WIRE_MAX_FRAME_BYTES + 1};
    s_forward_hdr(&h, 4, 8, -1);
    hdr_expect(&h, &huge, 1, WIRE_ERR_MALFORMED, "over the limit of 1073741824");
}

static void test_encoder_refuses_invalid_messages(void **state)
{
    wire_msg raw = {0};
    llorch_error err = {{0}};
    wire_message m = {.type = WIRE_REGISTER};
    m.reg = (wire_register){.worker_id = "w", .model_id = "m", .endpoint = "ipc:///tmp/x",
                            .layer_first = 8, .layer_last = 4, .n_layers = 22, .threads = 1};
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "cannot encode: register: layers [8, 4)"));
    m.reg.layer_first = 0;
    m.reg.worker_id = NULL;
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "worker_id: missing"));
    m = (wire_message){.type = (wire_type)99};
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_int_equal(raw.n_frames, 0);
    wire_row row = {.session_id = 0, .token = 1};
    m = (wire_message){.type = WIRE_FORWARD,
                       .forward = {.hidden_dim = 4, .n_rows = 1, .rows = &row}};
    assert_int_equal(wire_encode(&m, &raw, &err), -1);
    assert_non_null(strstr(err.msg, "session_id 0 is reserved"));
}

/* Deterministic mutations of valid headers: whatever the bytes, the decoder answers. */
static void test_mutated_headers_never_crash(void **state)
{
    wire_tensor_info t[2];
    wire_message m = s_manifest(t);
    wire_msg raw = {0};
    llorch_error err = {{0}};
    assert_int_equal(wire_encode(&m, &raw, &err), 0);
    size_t n = raw.frames[0].n_bytes;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int n_ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, raw.frames[0].data, n);
        for (int k = 0; k < 1 + iter % 4; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[x % n] = (uint8_t)(x >> 40);
        }
        wire_msg in = raw;
        in.store_ = NULL;
        in.frames[0].data = buf;
        wire_message out;
        int rc = wire_decode(&in, &out, &err);
        if (rc == WIRE_OK) {
            n_ok++;
            wire_message_free(&out);
        } else {
            assert_true(err.msg[0] != 0);
        }
    }
    assert_true(n_ok < 20000);
    free(buf);
    wire_msg_free(&raw);
}

/* ---- over real ZeroMQ sockets ---- */

static void s_ipc_endpoint(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "ipc:///tmp/llorch-test-wire-%s-%d.sock", tag, (int)getpid());
}

static void s_timeouts(void *socket)
{
    int ms = 5000, zero = 0;
    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(socket, ZMQ_SNDTIMEO, &ms, sizeof ms);
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
}

static void test_zmq_pair_forward_with_frame(void **state)
{
    char endpoint[128];
    s_ipc_endpoint(endpoint, sizeof endpoint, "pair");
    void *ctx = zmq_ctx_new();
    void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    llorch_error err = {{0}};
    s_timeouts(a), s_timeouts(b);
    assert_int_equal(wire_socket_limits(b, &err), 0);
    assert_int_equal(zmq_bind(b, endpoint), 0);
    assert_int_equal(zmq_connect(a, endpoint), 0);

    enum { ROWS = 3, DIM = 288 };
    static float hidden[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++)
        hidden[i] = sinf((float)i);
    wire_row rows[ROWS] = {{1, 7, -1, true}, {2, 0, -1, false}, {3, 12, -1, true}};
    wire_message m = {.type = WIRE_FORWARD};
    m.forward = (wire_forward){.batch_id = 5, .pipeline_id = 0, .hidden_dim = DIM,
                               .n_rows = ROWS, .rows = rows, .hidden = hidden};
    if (wire_send_message(a, NULL, 0, &m, 0, &err) != 0)
        fail_msg("send: %s", err.msg);
    wire_msg raw;
    wire_message out;
    int rc = wire_recv_message(b, &raw, &out, 0, &err);
    if (rc != 0)
        fail_msg("receive (%d): %s", rc, err.msg);
    assert_int_equal(out.type, WIRE_FORWARD);
    assert_int_equal(out.forward.n_rows, ROWS);
    s_rows_equal(out.forward.rows, rows, 3);
    assert_memory_equal(out.forward.hidden, hidden, sizeof hidden);
    assert_int_equal((uintptr_t)out.forward.hidden % 4, 0);
    wire_message_free(&out);
    wire_msg_free(&raw);
    zmq_close(a), zmq_close(b);
    zmq_ctx_term(ctx);
    unlink(endpoint + strlen("ipc://"));
}

static void test_zmq_dealer_router_replies_and_errors(void **state)
{
    char endpoint[128];
    s_ipc_endpoint(endpoint, sizeof endpoint, "router");
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER), *dealer = zmq_socket(ctx, ZMQ_DEALER);
    llorch_error err = {{0}};
    s_timeouts(router), s_timeouts(dealer);
    assert_int_equal(zmq_bind(router, endpoint), 0);
    assert_int_equal(zmq_connect(dealer, endpoint), 0);

    /* REGISTER -> REGISTER_ACK through the sender's identity. */
    wire_message m = {.type = WIRE_REGISTER};
    m.reg = (wire_register){.worker_id = "w0", .model_id = "m", .endpoint = "ipc:///tmp/w0",
                            .layer_first = 0, .layer_last = 2, .n_layers = 2, .threads = 1};
    assert_int_equal(wire_send_message(dealer, NULL, 0, &m, 0, &err), 0);
    wire_msg raw;
    wire_message in;
    assert_int_equal(wire_recv_message(router, &raw, &in, 0, &err), 0);
    assert_int_equal(in.type, WIRE_REGISTER);
    assert_true(raw.identity_bytes > 0);
    wire_message ack = {.type = WIRE_REGISTER_ACK,
                        .reg_ack = {.worker_id = "w0", .heartbeat_ms = 500, .liveness = 3}};
    assert_int_equal(wire_send_message(router, raw.identity, raw.identity_bytes, &ack, 0, &err),
                     0);
    wire_message_free(&in);
    wire_msg_free(&raw);
    wire_msg draw;
    wire_message reply;
    assert_int_equal(wire_recv_message(dealer, &draw, &reply, 0, &err), 0);
    assert_int_equal(reply.type, WIRE_REGISTER_ACK);
    assert_int_equal(reply.reg_ack.heartbeat_ms, 500);
    wire_message_free(&reply);
    wire_msg_free(&draw);

    /* Garbage: the router gets a code and the sender's identity, and answers ERROR. */
    zmq_send(dealer, "\xc1garbage", 8, 0);
    int rc = wire_recv_message(router, &raw, &in, 0, &err);
    assert_int_equal(rc, WIRE_ERR_MALFORMED);
    assert_true(raw.identity_bytes > 0);
    assert_int_equal(raw.n_frames, 0);
    assert_int_equal(wire_reply_error(router, &raw, (uint32_t)rc, err.msg, 0, 0, 0, &err), 0);
    wire_msg_free(&raw);
    assert_int_equal(wire_recv_message(dealer, &draw, &reply, 0, &err), 0);
    assert_int_equal(reply.type, WIRE_ERROR);
    assert_int_equal(reply.error.code, WIRE_ERR_MALFORMED);
    assert_non_null(strstr(reply.error.message, "0xc1"));
    wire_message_free(&reply);
    wire_msg_free(&draw);

    /* Too many frames: dropped whole, and the next message still arrives intact. */
    for (int i = 0; i < WIRE_MAX_FRAMES + 2; i++)
        zmq_send(dealer, "x", 1, i + 1 < WIRE_MAX_FRAMES + 2 ? ZMQ_SNDMORE : 0);
    wire_message cancel = {.type = WIRE_CANCEL, .cancel = {.request_id = 3}};
    assert_int_equal(wire_send_message(dealer, NULL, 0, &cancel, 0, &err), 0);
    rc = wire_recv(router, &raw, 0, &err);
    assert_int_equal(rc, WIRE_ERR_MALFORMED);
    assert_non_null(strstr(err.msg, "more frames than the protocol allows"));
    assert_true(raw.identity_bytes > 0);
    wire_msg_free(&raw);
    assert_int_equal(wire_recv_message(router, &raw, &in, 0, &err), 0);
    assert_int_equal(in.type, WIRE_CANCEL);
    assert_int_equal(in.cancel.request_id, 3);
    wire_message_free(&in);
    wire_msg_free(&raw);

    /* Nothing waiting: -1 with EAGAIN, not a decode error. */
    assert_int_equal(wire_recv(router, &raw, ZMQ_DONTWAIT, &err), -1);
    assert_int_equal(errno, EAGAIN);
    zmq_close(router), zmq_close(dealer);
    zmq_ctx_term(ctx);
    unlink(endpoint + strlen("ipc://"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_register_ack_heartbeat),
        cmocka_unit_test(test_roundtrip_forward_and_logits),
        cmocka_unit_test(test_roundtrip_small_messages),
        cmocka_unit_test(test_roundtrip_manifest),
        cmocka_unit_test(test_manifest_tensor_layout),
        cmocka_unit_test(test_roundtrip_client_messages),
        cmocka_unit_test(test_truncated_headers_are_refused),
        cmocka_unit_test(test_hostile_msgpack_structure),
        cmocka_unit_test(test_schema_violations),
        cmocka_unit_test(test_frame_checks),
        cmocka_unit_test(test_encoder_refuses_invalid_messages),
        cmocka_unit_test(test_mutated_headers_never_crash),
        cmocka_unit_test(test_zmq_pair_forward_with_frame),
        cmocka_unit_test(test_zmq_dealer_router_replies_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
