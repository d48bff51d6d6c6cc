/* tokenizer.h - the Llama SentencePiece tokenizer (GGUF `tokenizer.ggml.model = llama`),
 * giving the same ids as llama.cpp's SPM tokenizer, and its detokenizer. */
#ifndef LLORCH_TOKENIZER_H
#define LLORCH_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* Token types, numbered as in GGUF's tokenizer.ggml.token_type. Other numbers in a
 * file are read as TOKEN_UNDEFINED, as llama.cpp reads them. */
enum token_type {
    TOKEN_UNDEFINED = 0,
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
};

#define TOKENIZER_MAX_VOCAB (1u << 24)         /* ids must fit an int32 with room to spare */
#define TOKENIZER_MAX_PIECE_BYTES (64u * 1024) /* longest piece accepted */

/* Everything a tokenizer is made of, as plain arrays: what the loader puts in the
 * manifest and the router receives. Nothing here is kept; tokenizer_new copies. */
typedef struct tokenizer_config {
    uint32_t n_vocab;
    const char *const *pieces;  /* (n_vocab) piece bytes, "▁" for a space; need no NUL */
    const uint32_t *piece_lens; /* (n_vocab) bytes of each piece */
    const float *scores;        /* (n_vocab) merge priority, higher first; NULL = all 0 */
    const int32_t *types;       /* (n_vocab) enum token_type; NULL = all TOKEN_NORMAL */
    int32_t bos_id;             /* -1 = none */
    int32_t eos_id;             /* -1 = none */
    int32_t unk_id;             /* -1 = none */
    bool add_bos;               /* TOKENIZE_ADD_SPECIAL prepends bos_id */
    bool add_eos;               /* TOKENIZE_ADD_SPECIAL appends eos_id */
    bool add_space_prefix;      /* text (and text after a control token) starts with "▁" */
} tokenizer_config;

/* A built tokenizer. Read the public fields freely; do not change them. It is never
 * written after construction, so any number of threads may encode and decode with
 * one tokenizer at once. */
typedef struct tokenizer {
    uint32_t n_vocab;
    char *text;              /* every piece back to back, each followed by a NUL */
    uint32_t *piece_offset;  /* (n_vocab) where piece i starts in text */
    uint32_t *piece_len;     /* (n_vocab) its bytes (an empty piece is stored as
                                "[EMPTY_i]", as llama.cpp stores it) */
    float *scores;           /* (n_vocab) */
    uint8_t *types;          /* (n_vocab) enum token_type */
    int32_t bos_id, eos_id, unk_id; /* -1 = none */
    bool add_bos, add_eos, add_space_prefix;
    int32_t byte_to_id[256]; /* token for a raw byte ("<0xNN>", else the byte itself), -1 = none */
    uint32_t max_piece_len;
    /* private */
    char *decoded;            /* every piece as text: "▁" -> " ", byte tokens -> the byte */
    uint32_t *decoded_offset; /* (n_vocab) */
    uint32_t *decoded_len;    /* (n_vocab) */
    uint32_t *slots;          /* hash of piece bytes -> id + 1 (0 = empty slot) */
    uint32_t slot_mask;
    int32_t *special_ids;     /* control, user-defined and unknown ids, longest piece first */
    uint32_t n_special;
} tokenizer;

/* Builds a tokenizer from plain arrays, checking all of it: sizes, id ranges, that
 * no two pieces are equal, byte tokens spelled "<0xNN>", finite scores. Returns
 * NULL with err saying what is wrong. Free with tokenizer_free. */
tokenizer *tokenizer_new(const tokenizer_config *cfg, llorch_error *err);

/* Builds the tokenizer of a GGUF file (tokenizer.ggml.*: model must be "llama";
 * tokens, scores, token_type, bos/eos/unknown_token_id, add_bos_token,
 * add_eos_token, add_space_prefix, with llama.cpp's defaults 1/2/0, true, false,
 * true). The file may be closed afterwards. NULL with err on any problem. */
tokenizer *tokenizer_from_gguf(const gguf_file *f, llorch_error *err);

/* Frees everything and sets *t to NULL. Safe on NULL and on *t == NULL. */
void tokenizer_free(tokenizer **t);

/* Piece i as stored in the vocabulary (with "▁"), NUL-terminated; len may be NULL.
 * The caller checks 0 <= id < n_vocab. */
const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len);

/* The id whose piece is exactly s[0..n), or -1. */
int32_t tokenizer_find(const tokenizer *t, const char *s, size_t n);

/* Flags of tokenizer_encode. */
#define TOKENIZE_ADD_SPECIAL 1u  /* BOS in front (and EOS at the end) as the vocabulary says */
#define TOKENIZE_PARSE_SPECIAL 2u /* control/unknown token text in the input ("<s>") becomes
                                     that token; user-defined tokens always do */

/* Turns text[0..text_len) (any bytes) into ids exactly as llama.cpp's
 * llama_tokenize(vocab, text, add_special, parse_special) does for SPM vocabularies.
 * On success *ids is a malloc'd array of *n_ids ids the caller frees (never NULL).
 * Fails (-1, err) only on allocation failure, or when a character is in neither the
 * vocabulary nor its byte tokens and there is no unknown token. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t text_len, unsigned flags,
                     int32_t **ids, size_t *n_ids, llorch_error *err);

/* Flags of tokenizer_decode and tokenizer_stream. */
#define TOKENIZER_DECODE_SPECIAL 1u        /* control/unknown tokens show their text ("</s>") */
#define TOKENIZER_DECODE_REMOVE_SPECIAL 2u /* drop a leading BOS (and trailing EOS when
                                              add_eos) */
#define TOKENIZER_DECODE_CONTINUE 4u       /* the ids continue text already shown: keep
                                              the first piece's leading space */

/* The text of ids[0..n) exactly as llama.cpp's llama_detokenize(remove_special,
 * unparse_special) gives it: "▁" becomes a space, byte tokens their byte, control
 * tokens nothing unless TOKENIZER_DECODE_SPECIAL, and with add_space_prefix one
 * leading space of the *first* token is dropped (not of a token after a kept BOS:
 * with a BOS removed by TOKENIZER_DECODE_REMOVE_SPECIAL the space stays too, as in
 * llama.cpp). The result is raw bytes (byte tokens may make it ill-formed UTF-8),
 * malloc'd and NUL-terminated, *len bytes; caller frees. -1 with err when an id is
 * out of range or memory runs out. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **text,
                     size_t *len, llorch_error *err);

/* Decodes a stream of ids one at a time (generation), emitting only well-formed
 * UTF-8: bytes of a character split across byte tokens are held back until the
 * character is complete; ill-formed bytes come out as U+FFFD. The concatenated
 * output of the pushes and the flush is tokenizer_decode's text of the same ids
 * (with the same flags, trailing-EOS removal aside), made well-formed. */
typedef struct tokenizer_stream {
    const tokenizer *tok;
    unsigned flags;
    size_t n_pushed;   /* ids seen so far */
    uint8_t held[4];   /* start of an unfinished character */
    size_t n_held;
    char *out;         /* output of the last call (out_cap bytes), then a work area */
    size_t out_cap;
} tokenizer_stream;

/* Prepares s for tokenizer t (which must outlive it). -1 with err on allocation failure. */
int tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, unsigned flags,
                          llorch_error *err);

/* Feeds one id; *text and *len receive the UTF-8 now complete (possibly empty), valid
 * until the next call on s. -1 with err when id is out of range (s unchanged). */
int tokenizer_stream_push(tokenizer_stream *s, int32_t id, const char **text, size_t *len,
                          llorch_error *err);

/* Ends the stream: whatever is held comes out as U+FFFD. s can then be reused from
 * the start. Cannot fail. */
void tokenizer_stream_flush(tokenizer_stream *s, const char **text, size_t *len);

/* Frees the stream's buffer. Safe to call twice. */
void tokenizer_stream_free(tokenizer_stream *s);

#endif
