/* utf8.h - the UTF-8 facts the tokenizer needs: sequence lengths and well-formedness. */
#ifndef LLORCH_UTF8_H
#define LLORCH_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Bytes in the sequence that starts with lead, judged by its top four bits only
 * (1 for ASCII and stray continuation bytes, 2 for 0xC_/0xD_, 3 for 0xE_, 4 for
 * 0xF_). This is how SentencePiece and llama.cpp split text into characters, even
 * when the text is not well-formed, so the tokenizer must split the same way. */
size_t utf8_seq_len(uint8_t lead);

/* Judges the bytes at s[0..n), n >= 1, by the rules of the WHATWG UTF-8 decoder:
 *   k > 0  s starts with a well-formed sequence of k bytes;
 *   0      s[0..n) is a well-formed but incomplete start (more bytes may finish it);
 *   -k     the first k bytes (k >= 1) are an ill-formed part that decodes to one
 *          U+FFFD (the "maximal subpart" rule, which is what browsers and V8 do). */
int utf8_check(const uint8_t *s, size_t n);

/* Copies src[0..n) to dst, replacing every ill-formed part with U+FFFD (EF BF BD),
 * an incomplete tail included. dst must hold 3 * n bytes. Returns bytes written. */
size_t utf8_sanitize(char *dst, const char *src, size_t n);

#endif
