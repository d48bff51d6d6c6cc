/* fuzz_wire.c - libFuzzer target for the wire decoder: arbitrary frames in, and anything it
 * accepts must encode again and decode to the same type. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* Input layout. Byte 0: bits 0-1 = bulk frames (0..3); bit 7 = template mode.
 * Raw mode: bytes 1..6 are three little-endian u16 bulk-frame lengths; the bulk frames
 * are cut from the end of the input, the header is what lies between.
 * Template mode: byte 1 picks a valid message; the rest are (offset u16, xor u8) triples
 * applied to its header, which takes the fuzzer deep into the schema without a corpus. */

static void s_check_roundtrip(const wire_message *m)
{
    wire_msg again = {0};
    llorch_error err;
    if (wire_encode(m, &again, &err) != 0)
        abort(); /* decoder and encoder disagree about the schema */
    wire_message back;
    if (wire_decode(&again, &back, &err) != WIRE_OK || back.type != m->type)
        abort();
    wire_message_free(&back);
    wire_msg_free(&again);
}

static void s_decode(const wire_msg *raw)
{
    wire_message m;
    llorch_error err;
    if (wire_decode(raw, &m, &err) == WIRE_OK) {
        s_check_roundtrip(&m);
        wire_message_free(&m);
    } else if (err.msg[0] == 0) {
        abort(); /* every refusal says why */
    }
}

static int s_template(int which, wire_msg *out, float *hidden, size_t n_hidden)
{
    static wire_row rows[2] = {{1, 0, -1, true}, {2, 3, -1, false}};
    static const char *route[1] = {"ipc:///tmp/next"};
    static const char *pieces[3] = {"<unk>", "<s>", "a"};
    static const uint32_t lens[3] = {5, 3, 1};
    static const float scores[3] = {0, 0, -1};
    static const int32_t types[3] = {2, 3, 1};
    static wire_tensor_info tensors[1] = {{.name = "output.weight", .type = 0, .n_dims = 2,
                                           .ne = {4, 3, 1, 1}, .offset = 0, .n_bytes = 48}};
    static const char *stop[1] = {"\n"};
    static wire_top_prob top[1] = {{1, 0.5f}};
    wire_message m = {0};
    llorch_error err;
    switch (which % 5) {
    case 0:
        m.type = WIRE_FORWARD;
        m.forward = (wire_forward){.batch_id = 1, .hidden_dim = 4, .n_rows = 2, .rows = rows,
                                   .n_hops = 1, .route = route, .hidden = hidden};
        break;
    case 1:
        m.type = WIRE_MANIFEST;
        m.manifest = (wire_manifest){
            .model_id = "m", .host_id = "h", .segment_name = "/s", .segment_bytes = 64,
            .config = {.arch = "llama", .n_vocab = 3, .n_embd = 4, .n_layers = 1, .n_heads = 2,
                       .n_kv_heads = 1, .n_ff = 8, .n_ctx_train = 16, .n_rot = 2,
                       .rope_freq_base = 10000, .rms_norm_eps = 1e-5f},
            .tokenizer = {.model = "llama", .n_tokens = 3, .pieces = pieces, .piece_lens = lens,
                          .scores = scores, .types = types, .bos_id = 1, .eos_id = 2,
                          .unk_id = 0},
            .n_tensors = 1, .tensors = tensors};
        break;
    case 2:
        m.type = WIRE_SUBMIT;
        m.submit = (wire_submit){.request_id = 1, .prompt = "hi", .max_tokens = 4,
                                 .sampling = wire_sampling_default(), .n_stop = 1, .stop = stop};
        break;
    case 3:
        m.type = WIRE_TOKEN;
        m.token = (wire_token){.request_id = 1, .token = 1, .piece = "a", .piece_bytes = 1,
                               .n_top = 1, .top = top};
        break;
    default:
        m.type = WIRE_ERROR;
        m.error = (wire_error){.code = 1, .message = "bad", .batch_id = 2};
        break;
    }
    (void)n_hidden;
    return wire_encode(&m, out, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n_bulk = data[0] & 3;
    if (data[0] & 0x80) {
        float hidden[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        wire_msg tmpl = {0};
        if (s_template(data[1], &tmpl, hidden, 8) != 0)
            abort();
        size_t n = tmpl.frames[0].n_bytes;
        uint8_t *header = malloc(n);
        memcpy(header, tmpl.frames[0].data, n);
        for (size_t i = 2; i + 3 <= size; i += 3)
            header[(data[i] | (size_t)data[i + 1] << 8) % n] ^= data[i + 2];
        wire_msg raw = tmpl;
        raw.store_ = NULL;
        raw.frames[0].data = header;
        s_decode(&raw);
        free(header);
        wire_msg_free(&tmpl);
        return 0;
    }
    if (size < 7)
        return 0;
    const uint8_t *p = data + 7, *end = data + size;
    wire_msg raw = {0};
    void *copies[WIRE_MAX_FRAMES] = {0};
    for (size_t i = n_bulk; i >= 1; i--) {
        size_t len = data[1 + 2 * (i - 1)] | (size_t)data[2 + 2 * (i - 1)] << 8;
        if (len > (size_t)(end - p))
            len = (size_t)(end - p);
        end -= len;
        copies[i] = malloc(len ? len : 1); /* own buffers: exact bounds, malloc alignment */
        memcpy(copies[i], end, len);
        raw.frames[i] = (wire_frame){copies[i], len};
    }
    size_t header_len = (size_t)(end - p);
    copies[0] = malloc(header_len ? header_len : 1);
    memcpy(copies[0], p, header_len);
    raw.frames[0] = (wire_frame){copies[0], header_len};
    raw.n_frames = 1 + n_bulk;
    s_decode(&raw);
    for (int i = 0; i < WIRE_MAX_FRAMES; i++)
        free(copies[i]);
    return 0;
}
