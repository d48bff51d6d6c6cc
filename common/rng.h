/* rng.h - small, fast, deterministic random numbers (xoshiro256+ seeded by splitmix64). */
#ifndef LLORCH_RNG_H
#define LLORCH_RNG_H

#include <stdint.h>

/* Generator state: 256 bits. The same seed gives the same sequence on every
 * machine and compiler (integer arithmetic only until the final float scale). */
typedef struct rng {
    uint64_t s[4];
} rng;

/* One step of splitmix64: a good 64-bit mixer, used to seed and to derive
 * independent streams from (seed, tensor, row) tuples. */
static inline uint64_t rng_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Seeds all 256 bits from one 64-bit value (never all zero). */
static inline void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = rng_splitmix64(&seed);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* Next 64 random bits (xoshiro256+: the low bits are weaker, callers use the high ones). */
static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 24 random bits. */
static inline float rng_uniform(rng *r)
{
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Approximately standard normal (mean 0, std 1): the Irwin-Hall sum of four 16-bit
 * uniforms from one 64-bit draw, centred and scaled. Bounded to about +-3.46; good
 * enough for random weights and about 20x cheaper than Box-Muller. */
static inline float rng_normal_fast(rng *r)
{
    const uint64_t x = rng_next(r);
    const int32_t sum = (int32_t)(x & 0xffff) + (int32_t)((x >> 16) & 0xffff) +
                        (int32_t)((x >> 32) & 0xffff) + (int32_t)(x >> 48);
    /* the sum has mean 2 * 65535 and std sqrt(4 * (65536^2 - 1) / 12) = 37837.23 */
    return (float)(sum - 131070) * (1.0f / 37837.23f);
}

#endif
