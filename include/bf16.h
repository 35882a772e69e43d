/* bfloat16 rounding, shared by the CPU backend, the tests and (through the matching
 * device function in kernels/cuda_common.cuh) the CUDA kernels.
 *
 * Mixed precision is emulated by keeping fp32 storage and rounding values to the
 * nearest bf16 (the top 16 bits of an fp32): bf16 has fp32's exponent range, so
 * rounding is integer arithmetic on the bit pattern. Round to nearest, ties to even,
 * as PyTorch's .bfloat16() and the CUDA intrinsic __float2bfloat16_rn do:
 *   - NaN stays a quiet NaN, even one whose payload lies only in the low 16 bits
 *     (plain rounding would turn it into Inf or keep a signalling pattern);
 *   - +-Inf stay; finite values that round past the largest bf16 become +-Inf (the
 *     carry runs into the exponent, which is exactly the overflow);
 *   - subnormals round like any other value (same exponent field as fp32). */
#ifndef DDPM_BF16_H
#define DDPM_BF16_H

#include <stdint.h>
#include <string.h>

/* The bf16 bit pattern nearest to f. */
static inline uint16_t bf16_from_float(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u)                 /* NaN: keep sign, force quiet */
        return (uint16_t)((bits >> 16) | 0x0040u);
    uint32_t lsb = (bits >> 16) & 1u;                       /* ties go to the even neighbour */
    return (uint16_t)((bits + 0x7fffu + lsb) >> 16);
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The nearest bf16 value, as a float (its low 16 bits are zero). */
static inline float bf16_round(float f) { return bf16_to_float(bf16_from_float(f)); }

#endif
