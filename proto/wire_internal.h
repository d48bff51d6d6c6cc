/* wire_internal.h - what the wire sources share and callers never see: a message's owned memory. */
#ifndef LLORCH_WIRE_INTERNAL_H
#define LLORCH_WIRE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "wire.h"

/* What a wire_msg owns (its store_): the encoded header, or the received ZeroMQ parts
 * plus aligned copies of any part whose bytes did not start 4-byte aligned. */
typedef struct wire_store {
    char *header;                     /* encode: malloc'd msgpack header */
    size_t n_parts;                   /* recv: parts[0..n_parts) are open */
    zmq_msg_t parts[WIRE_MAX_FRAMES];
    void *copies[WIRE_MAX_FRAMES];    /* recv: malloc'd aligned copies, or NULL */
} wire_store;

/* A store owning header (malloc'd; freed with the store). NULL when out of memory,
 * and header is then still the caller's. */
wire_store *wire_store_new_header(char *header);

/* Walks the msgpack bytes of a header without allocating: one value (a map at the top is
 * checked later), every count no larger than the bytes left, nesting at most
 * WIRE_MAX_DEPTH, at most WIRE_MAX_OBJECTS values, no extension types, nothing after
 * the value. Returns 0, or -1 with err saying what and where. */
int wire_prescan(const uint8_t *p, size_t n, llorch_error *err);

#endif
