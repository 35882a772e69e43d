/* Vectorisable float math shared by the CPU ops (SiLU's sigmoid, attention's softmax). */
#ifndef DDPM_CPU_MATH_H
#define DDPM_CPU_MATH_H

#include <stdint.h>
#include <string.h>

/* e^v to within 1.5 ulp for |v| <= 87 (the Cephes expf polynomial after Cody-Waite
 * reduction), saturating at e^(+-87) beyond: ample for a sigmoid and for a softmax (whose
 * arguments are <= 0: e^-87 where libm gives 0 adds 1.6e-38 to a sum of at least 1).
 * libm's expf stays a scalar call without -ffast-math, so this is written without calls
 * or float branches (the clamp works on the bits) and the loops using it vectorize. */
static inline float exp_saturating(float v) {
    const float limit = 87.0f;              /* e^+-87 and 2^n below stay normal floats */
    const float round_magic = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t v_bits, limit_bits;
    memcpy(&v_bits, &v, sizeof v_bits);
    memcpy(&limit_bits, &limit, sizeof limit_bits);
    uint32_t magnitude = v_bits & 0x7FFFFFFFu;  /* |v| as bits orders like |v| */
    magnitude = magnitude < limit_bits ? magnitude : limit_bits;
    v_bits = (v_bits & 0x80000000u) | magnitude;
    memcpy(&v, &v_bits, sizeof v);

    float shifted = v * 1.44269504088896341f + round_magic;
    float n = shifted - round_magic;        /* round(v / ln 2) */
    float r = v - n * 0.693359375f - n * -2.12194440e-4f;  /* v - n ln 2, in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;             /* e^r on |r| <= ln2 / 2 */

    int32_t n_bits, scale_bits;
    memcpy(&n_bits, &shifted, sizeof n_bits);  /* the low mantissa bits hold n */
    scale_bits = (n_bits - 0x4B400000 + 127) * (1 << 23);
    float scale;                            /* 2^n */
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

#endif
