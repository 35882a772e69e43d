/* Counter-based Philox4x32-10 random numbers, shared by host C and CUDA.
 *
 * Every random number in the engine is a pure function of
 *   (seed, stream, step, sample, element)
 * so a run is reproducible on any backend and any split of the batch:
 *   key     = { seed low 32 bits, seed high 32 bits }
 *   counter = { element / 4, sample0 + sample, step, stream }
 * sample0 is where an op's batch starts in the global batch: a data-parallel rank
 * holding samples [sample0, sample0 + n) draws exactly what one process would.
 * One Philox call yields four 32-bit words; word (element % 4) serves the element.
 * Normals use Box-Muller on the word pairs (0,1) and (2,3), in float.
 * The CUDA backend computes the same words (cuRAND's Philox4x32-10 is the same
 * function) and the same transforms, so both backends draw the same noise. */
#ifndef DDPM_PHILOX_H
#define DDPM_PHILOX_H

#include <stdint.h>
#include <math.h>

#ifdef __CUDACC__
#define DDPM_HD __host__ __device__ __forceinline__
#else
#define DDPM_HD static inline
#endif

/* What a random draw is for: separate streams never share counters. */
enum {
    RNG_STREAM_INIT = 1,        /* parameter initialisation; step = parameter index */
    RNG_STREAM_TIMESTEP = 2,    /* t for each training sample */
    RNG_STREAM_EPS = 3,         /* training noise epsilon */
    RNG_STREAM_FLIP = 4,        /* random horizontal flip */
    RNG_STREAM_SHUFFLE = 5,     /* data order; step = epoch */
    RNG_STREAM_SAMPLE_XT = 6,   /* initial x_T of a sampling run */
    RNG_STREAM_SAMPLE_Z = 7,    /* per-step sampling noise; step = t */
    RNG_STREAM_LABEL_DROP = 8,  /* classifier-free guidance: a label replaced by the null class */
    RNG_STREAM_POSTERIOR = 0x10, /* the autoencoder's posterior eps (training, ddpm encode) */
    RNG_STREAM_DROPOUT = 0x100, /* + layer index */
};

typedef struct {
    uint64_t seed;
    uint32_t stream;
    uint32_t step;
    uint32_t sample0;   /* global index of the batch's first sample (0 on one process) */
} RngKey;

typedef struct { uint32_t v[4]; } Philox4;

DDPM_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

DDPM_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = philox_mulhilo(0xD2511F53u, ctr.v[0], &hi0);
        uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, ctr.v[2], &hi1);
        Philox4 next = {{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
        ctr = next;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return ctr;
}

DDPM_HD Philox4 philox_block(RngKey key, uint32_t sample, uint64_t element) {
    Philox4 ctr = {{(uint32_t)(element >> 2), key.sample0 + sample, key.step, key.stream}};
    return philox4x32_10(ctr, (uint32_t)key.seed, (uint32_t)(key.seed >> 32));
}

/* Uniform in the open interval (0, 1): 23 bits keep k + 0.5 exact in a float,
 * so the largest word maps strictly below 1. */
DDPM_HD float philox_u01(uint32_t word) {
    return ((float)(word >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

DDPM_HD uint32_t philox_word(RngKey key, uint32_t sample, uint64_t element) {
    return philox_block(key, sample, element).v[element & 3];
}

DDPM_HD float philox_uniform(RngKey key, uint32_t sample, uint64_t element) {
    return philox_u01(philox_word(key, sample, element));
}

/* Integer in [0, n) without modulo bias worth measuring (n < 2^16 in practice). */
DDPM_HD uint32_t philox_below(RngKey key, uint32_t sample, uint64_t element, uint32_t n) {
    return (uint32_t)(((uint64_t)philox_word(key, sample, element) * n) >> 32);
}

DDPM_HD float philox_normal(RngKey key, uint32_t sample, uint64_t element) {
    Philox4 r = philox_block(key, sample, element);
    int pair = (int)(element & 2);
    float u1 = philox_u01(r.v[pair]), u2 = philox_u01(r.v[pair + 1]);
    float radius = sqrtf(-2.0f * logf(u1));
    float angle = 6.283185307179586f * u2;
    return (element & 1) ? radius * sinf(angle) : radius * cosf(angle);
}

#endif
