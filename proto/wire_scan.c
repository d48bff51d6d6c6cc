/* wire_scan.c - a bounded structural check of a msgpack header before it is unpacked. */
#include "wire_internal.h"

#include <stdint.h>

/* ---- pass 1: a bounded structural scan of the raw header ----
 * msgpack-c allocates an array's or map's slots from the count in the header before it
 * reads a single element, so five bytes could ask it for gigabytes. This scan walks the
 * bytes first and refuses any count larger than the bytes left (every element takes at
 * least one byte), nesting deeper than WIRE_MAX_DEPTH, more than WIRE_MAX_OBJECTS
 * values, extension types, and trailing bytes. After it, what msgpack-c allocates is
 * bounded by a small multiple of the header size. */

typedef struct s_scan {
    const uint8_t *p;
    size_t n;
    size_t off;
    size_t n_objects;
    llorch_error *err;
} s_scan;

static uint64_t s_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

static int s_need(s_scan *s, uint64_t bytes, const char *what)
{
    if (bytes > s->n - s->off)
        return llorch_error_set(s->err, "truncated header: %s needs %llu bytes at offset "
                                "%zu but only %zu remain", what, (unsigned long long)bytes,
                                s->off, s->n - s->off);
    return 0;
}

static int s_scan_value(s_scan *s, int depth)
{
    if (++s->n_objects > WIRE_MAX_OBJECTS)
        return llorch_error_set(s->err, "header holds more than %u values", WIRE_MAX_OBJECTS);
    if (s_need(s, 1, "a value"))
        return -1;
    uint8_t b = s->p[s->off++];
    uint64_t len = 0, count = 0;
    int kind = 0; /* 0 scalar (len bytes follow), 1 array, 2 map, 3 str/bin */
    int width = 0; /* bytes of the length/count field that follows the marker */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if (b <= 0x8f) {
        kind = 2, count = b & 0x0f;
    } else if (b <= 0x9f) {
        kind = 1, count = b & 0x0f;
    } else if (b <= 0xbf) {
        kind = 3, len = b & 0x1f;
    } else {
        switch (b) {
        case 0xc4: case 0xd9: kind = 3, width = 1; break;
        case 0xc5: case 0xda: kind = 3, width = 2; break;
        case 0xc6: case 0xdb: kind = 3, width = 4; break;
        case 0xcc: case 0xd0: len = 1; break;
        case 0xcd: case 0xd1: len = 2; break;
        case 0xca: case 0xce: case 0xd2: len = 4; break;
        case 0xcb: case 0xcf: case 0xd3: len = 8; break;
        case 0xdc: kind = 1, width = 2; break;
        case 0xdd: kind = 1, width = 4; break;
        case 0xde: kind = 2, width = 2; break;
        case 0xdf: kind = 2, width = 4; break;
        default:
            return llorch_error_set(s->err, "byte 0x%02x at offset %zu is not a msgpack value "
                                    "the protocol uses (extension types are refused)", b,
                                    s->off - 1);
        }
    }
    if (width) {
        if (s_need(s, (uint64_t)width, "a length"))
            return -1;
        uint64_t v = s_be(s->p + s->off, width);
        s->off += (size_t)width;
        if (kind == 3)
            len = v;
        else
            count = v;
    }
    if (kind == 0 || kind == 3)
        return s_need(s, len, kind == 3 ? "a string" : "a number") ? -1
                                                                    : (s->off += (size_t)len, 0);
    if (depth + 1 > WIRE_MAX_DEPTH)
        return llorch_error_set(s->err, "containers nested deeper than %d levels",
                                WIRE_MAX_DEPTH);
    uint64_t elements = kind == 2 ? count * 2 : count;
    if (elements > s->n - s->off)
        return llorch_error_set(s->err, "%s at offset %zu claims %llu entries but only %zu "
                                "bytes remain", kind == 2 ? "a map" : "an array", s->off,
                                (unsigned long long)count, s->n - s->off);
    for (uint64_t i = 0; i < elements; i++)
        if (s_scan_value(s, depth + 1))
            return -1;
    return 0;
}

int wire_prescan(const uint8_t *p, size_t n, llorch_error *err)
{
    s_scan s = {.p = p, .n = n, .off = 0, .n_objects = 0, .err = err};
    if (s_scan_value(&s, 0))
        return -1;
    if (s.off != n)
        return llorch_error_set(err, "%zu stray bytes after the header's map", n - s.off);
    return 0;
}
