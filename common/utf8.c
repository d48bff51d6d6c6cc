/* utf8.c - UTF-8 sequence lengths and well-formedness checks. */
#include "utf8.h"

#include <string.h>

size_t utf8_seq_len(uint8_t lead)
{
    static const uint8_t lengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lengths[lead >> 4];
}

int utf8_check(const uint8_t *s, size_t n)
{
    uint8_t lead = s[0];
    if (lead < 0x80)
        return 1;
    size_t need;
    uint8_t lower = 0x80, upper = 0xBF; /* allowed range of the second byte */
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        need = 2;
        if (lead == 0xE0)
            lower = 0xA0; /* overlong */
        if (lead == 0xED)
            upper = 0x9F; /* surrogates */
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        need = 3;
        if (lead == 0xF0)
            lower = 0x90; /* overlong */
        if (lead == 0xF4)
            upper = 0x8F; /* above U+10FFFF */
    } else {
        return -1; /* continuation byte, C0, C1 or F5..FF */
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n)
            return 0;
        uint8_t lo = i == 1 ? lower : 0x80, hi = i == 1 ? upper : 0xBF;
        if (s[i] < lo || s[i] > hi)
            return -(int)i;
    }
    return (int)need + 1;
}

size_t utf8_sanitize(char *dst, const char *src, size_t n)
{
    const uint8_t *s = (const uint8_t *)src;
    size_t in = 0, out = 0;
    while (in < n) {
        int k = utf8_check(s + in, n - in);
        if (k > 0) {
            memcpy(dst + out, s + in, (size_t)k);
            out += (size_t)k;
            in += (size_t)k;
            continue;
        }
        memcpy(dst + out, "\xEF\xBF\xBD", 3);
        out += 3;
        in += k == 0 ? n - in : (size_t)-k;
    }
    return out;
}
