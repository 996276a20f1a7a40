/* xoshiro256** seeded through splitmix64 (Blackman and Vigna): every draw
 * is a pure function of the seed and the number of draws before it. */
#include <math.h>

#include "ops.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void lpnx_rng_seed(lpnx_rng *g, uint64_t seed) {
    for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lpnx_rng_next(lpnx_rng *g) {
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float lpnx_rng_uniform(lpnx_rng *g) {
    return (float)(lpnx_rng_next(g) >> 40) * 0x1.0p-24f;
}

void lpnx_rng_fill_uniform(lpnx_rng *g, float *out, size_t n, float lo, float hi) {
    float span = hi - lo;
    for (size_t i = 0; i < n; i++) {
        float v = lo + span * lpnx_rng_uniform(g);
        out[i] = v < hi ? v : lo; /* rounding must not reach hi */
    }
}

void lpnx_rng_fill_normal(lpnx_rng *g, float *out, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i += 2) {
        /* 53-bit uniforms; u1 in (0, 1] so the log is finite. */
        double u1 = ((double)(lpnx_rng_next(g) >> 11) + 1.0) * 0x1.0p-53;
        double u2 = (double)(lpnx_rng_next(g) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        out[i] = (float)(mean + std * r * cos(a));
        if (i + 1 < n) out[i + 1] = (float)(mean + std * r * sin(a));
    }
}
