/* The bf16 rounding of include/bf16.h, which the mixed-precision emulation (the
 * round_bf16 op, the bf16 compute weights) rests on: hand-checked bit patterns for
 * every special case, then a cross-check against PyTorch's .bfloat16() over a few
 * thousand values when /usr/bin/python3 has torch (else that part is skipped; the
 * hand checks always run, so this test never exits 77). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf16.h"
#include "philox.h"
#include "testing.h"

static float from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void expect(uint32_t in, uint16_t want, const char *what) {
    uint16_t got = bf16_from_float(from_bits(in));
    CHECK(got == want, "%s: 0x%08" PRIx32 " -> 0x%04x, want 0x%04x", what, in, got, want);
    uint32_t rounded = to_bits(bf16_round(from_bits(in)));
    CHECK(rounded == (uint32_t)want << 16, "%s: bf16_round gives 0x%08" PRIx32, what, rounded);
}

static int is_quiet_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x0040u); }

static void hand_checks(void) {
    /* exact values keep their bits */
    expect(0x3f800000u, 0x3f80, "1.0");
    expect(0x00000000u, 0x0000, "+0");
    expect(0x80000000u, 0x8000, "-0");
    /* ties: exactly half an ulp above; to even means the kept lsb decides */
    expect(0x3f808000u, 0x3f80, "tie, even below (lsb 0): down");
    expect(0x3f818000u, 0x3f82, "tie, odd below (lsb 1): up");
    expect(0xbf808000u, 0xbf80, "negative tie, lsb 0: down (towards zero)");
    expect(0xbf818000u, 0xbf82, "negative tie, lsb 1: up in magnitude");
    /* just off the tie */
    expect(0x3f808001u, 0x3f81, "above half an ulp: up");
    expect(0x3f807fffu, 0x3f80, "below half an ulp: down");
    /* infinities */
    expect(0x7f800000u, 0x7f80, "+Inf");
    expect(0xff800000u, 0xff80, "-Inf");
    /* the largest finite bf16, 0x7f7f = (2 - 2^-7) * 2^127 */
    expect(0x7f7f0000u, 0x7f7f, "max finite bf16");
    expect(0x7f7f7fffu, 0x7f7f, "below the max's half ulp: stays finite");
    expect(0x7f7f8000u, 0x7f80, "the max's tie rounds to even = +Inf");
    expect(0x7f7fffffu, 0x7f80, "FLT_MAX rounds past the max: +Inf");
    expect(0xff7fffffu, 0xff80, "-FLT_MAX: -Inf");
    /* subnormals: same exponent field as fp32, rounded like normals */
    expect(0x00000001u, 0x0000, "smallest fp32 subnormal: to +0");
    expect(0x80000001u, 0x8000, "negative smallest subnormal: to -0");
    expect(0x00008000u, 0x0000, "subnormal tie, lsb 0: down to 0");
    expect(0x00018000u, 0x0002, "subnormal tie, lsb 1: up");
    expect(0x00010000u, 0x0001, "smallest bf16 subnormal: exact");
    expect(0x007fffffu, 0x0080, "largest fp32 subnormal rounds up to the smallest normal");
    /* NaN: stays NaN and quiet, sign kept; never Inf */
    uint16_t nan_low = bf16_from_float(from_bits(0x7f800001u));
    CHECK(is_quiet_nan(nan_low), "NaN with payload only in the low 16 bits -> 0x%04x", nan_low);
    uint16_t nan_neg = bf16_from_float(from_bits(0xff80ffffu));
    CHECK(is_quiet_nan(nan_neg) && (nan_neg & 0x8000u), "negative NaN -> 0x%04x", nan_neg);
    uint16_t nan_quiet = bf16_from_float(from_bits(0x7fc00000u));
    CHECK(nan_quiet == 0x7fc0, "canonical quiet NaN -> 0x%04x", nan_quiet);
    uint16_t nan_near_carry = bf16_from_float(from_bits(0x7fffffffu));
    CHECK(is_quiet_nan(nan_near_carry), "NaN 0x7fffffff -> 0x%04x (no wrap)", nan_near_carry);
    CHECK(bf16_to_float(0x4049) == 3.140625f, "bits -> float: 0x4049 is 3.140625");
}

enum { TORCH_VALUES = 4096 };

/* Values spread over the whole range: random bit patterns (all exponents, incl.
 * subnormals, Inf and NaN), random normals, and exact ties. */
static void make_values(float *v, int n) {
    RngKey key = {1234, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)philox_below(key, 0, (uint64_t)i, 0xffffffffu);
        switch (i % 4) {
        case 0: v[i] = from_bits(bits); break;
        case 1: v[i] = philox_normal(key, 1, (uint64_t)i) * 100.0f; break;
        case 2: v[i] = from_bits((bits & 0xffff0000u) | 0x8000u); break;   /* a tie */
        default: v[i] = from_bits(bits & 0x807fffffu); break;              /* subnormal */
        }
    }
}

/* 1: compared, 0: torch not available (skipped). */
static int torch_cross_check(void) {
    const char *python = "/usr/bin/python3";
    if (access(python, X_OK) != 0) return 0;
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) return 0;
    char in_path[] = "/tmp/test_bf16_in_XXXXXX", out_path[] = "/tmp/test_bf16_out_XXXXXX";
    int in_fd = mkstemp(in_path), out_fd = mkstemp(out_path);
    if (in_fd < 0 || out_fd < 0) {
        CHECK(0, "cannot create temporary files for the torch cross-check");
        return 1;
    }
    close(out_fd);
    static float values[TORCH_VALUES];
    static uint16_t torch_bits[TORCH_VALUES];
    make_values(values, TORCH_VALUES);
    FILE *in = fdopen(in_fd, "wb");
    fwrite(values, sizeof(float), TORCH_VALUES, in);
    fclose(in);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys, numpy as np, torch; "
             "x = torch.from_numpy(np.fromfile(sys.argv[1], dtype=np.float32)); "
             "x.bfloat16().view(torch.int16).numpy().tofile(sys.argv[2])\" %s %s",
             in_path, out_path);
    int rc = system(cmd);
    FILE *out = fopen(out_path, "rb");
    size_t got = out ? fread(torch_bits, sizeof(uint16_t), TORCH_VALUES, out) : 0;
    if (out) fclose(out);
    unlink(in_path);
    unlink(out_path);
    CHECK(rc == 0 && got == TORCH_VALUES, "torch ran (rc %d) and wrote %zu of %d values", rc, got,
          TORCH_VALUES);
    int mismatches = 0, nans = 0;
    for (size_t i = 0; i < got; i++) {
        uint16_t ours = bf16_from_float(values[i]);
        if (values[i] != values[i]) {   /* torch writes the canonical 0x7fc0; both NaN */
            nans++;
            if (!is_quiet_nan(ours) || !is_quiet_nan(torch_bits[i])) mismatches++;
            continue;
        }
        if (ours != torch_bits[i] && mismatches++ < 5)
            fprintf(stderr, "  0x%08" PRIx32 ": ours 0x%04x, torch 0x%04x\n", to_bits(values[i]),
                    ours, torch_bits[i]);
    }
    CHECK(mismatches == 0, "%d of %zu values differ from torch's .bfloat16()", mismatches, got);
    printf("torch cross-check: %zu values (%d NaN), %d mismatches\n", got, nans, mismatches);
    return 1;
}

int main(void) {
    hand_checks();
    if (!torch_cross_check()) SKIP("torch cross-check: /usr/bin/python3 without torch");
    return test_summary("test_bf16");
}
