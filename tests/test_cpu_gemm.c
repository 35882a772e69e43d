/* The CPU GEMMs on oneDNN against OpenBLAS (cpu_gemm.h), the op-level oracle.
 *  - cpu_gemm itself on the calls the linear layers and attention make (transposed
 *    operands, strided batches over qkv's interleaved rows, an output scale, beta 0 and 1)
 *    and odd sizes: equal to OpenBLAS's result to 1e-5 relative, and oneDNN really runs
 *    them (a call oneDNN has no kernel for would go to OpenBLAS and compare with itself);
 *  - the linear layers, forward and backward, on the U-Nets' shapes: every output within
 *    1e-5. (Attention runs on OpenBLAS on either path; cpu_dense.c says why.)
 * Without oneDNN in the build the comparison is skipped, not passed. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_gemm.h"
#include "philox.h"
#include "testing.h"
#include "util.h"

#define TOL 1e-5

static float *random_floats(size_t n, uint32_t stream) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    RngKey key = {99, stream, 0, 0};
    for (size_t i = 0; i < n; i++) x[i] = philox_uniform(key, 0, i) * 2.0f - 1.0f;
    return x;
}

/* Elements an operand spans: its last batch's start plus one (rows, cols) block. */
static size_t span(int batch, size_t stride, int rows, int cols, int ld, int trans) {
    size_t last = trans ? (size_t)(cols - 1) * ld + rows : (size_t)(rows - 1) * ld + cols;
    return (size_t)(batch - 1) * stride + last;
}

static void compare_call(const char *what, GemmCall g) {
    if (g.batch < 1) g.batch = 1;
    size_t na = span(g.batch, g.stride_a, g.m, g.k, g.lda, g.trans_a);
    size_t nb = span(g.batch, g.stride_b, g.k, g.n, g.ldb, g.trans_b);
    size_t nc = span(g.batch, g.stride_c, g.m, g.n, g.ldc, 0);
    float *a = random_floats(na, 1), *b = random_floats(nb, 2), *c0 = random_floats(nc, 3);
    float *ref = xmalloc(nc * sizeof(float)), *got = xmalloc(nc * sizeof(float));
    memcpy(ref, c0, nc * sizeof(float));
    memcpy(got, c0, nc * sizeof(float));
    cpu_gemm_set_path(GEMM_PATH_OPENBLAS);
    cpu_gemm(&g, a, b, ref);
    cpu_gemm_set_path(GEMM_PATH_ONEDNN);
    CHECK(cpu_gemm_onednn_runs(&g), "%s: oneDNN has no kernel for it", what);
    cpu_gemm(&g, a, b, got);
    double err = rel_error(got, ref, nc, 0);
    CHECK(err <= TOL, "%s: oneDNN differs from OpenBLAS by %.3g relative", what, err);
    free(a), free(b), free(c0), free(ref), free(got);
}

static void gemm_calls(void) {
    /* linear: y = x w^T (+ seeded bias: beta 1), dx = dy w, dw = dy^T x */
    compare_call("qkv forward", (GemmCall){.m = 512, .n = 384, .k = 128, .trans_b = 1,
                                           .lda = 128, .ldb = 128, .ldc = 384, .alpha = 1,
                                           .beta = 1});
    compare_call("qkv dx", (GemmCall){.m = 512, .n = 128, .k = 384, .lda = 384, .ldb = 128,
                                      .ldc = 128, .alpha = 1, .beta = 1});
    compare_call("qkv dw", (GemmCall){.m = 384, .n = 128, .k = 512, .trans_a = 1, .lda = 384,
                                      .ldb = 128, .ldc = 128, .alpha = 1});
    compare_call("time embedding, one row", (GemmCall){.m = 1, .n = 256, .k = 64, .trans_b = 1,
                                                       .lda = 64, .ldb = 64, .ldc = 256,
                                                       .alpha = 1});
    compare_call("odd sizes", (GemmCall){.m = 37, .n = 19, .k = 53, .trans_b = 1, .lda = 53,
                                         .ldb = 53, .ldc = 19, .alpha = 1, .beta = 0});
    /* attention's strided batches over qkv (L, 3C): scores, mix, and the backward's */
    const int l = 256, c = 128, ld = 3 * c, b = 3;
    const size_t qkv = (size_t)l * ld, pp = (size_t)l * l, out = (size_t)l * c;
    compare_call("scores q k^T", (GemmCall){.batch = b, .m = l, .n = l, .k = c, .trans_b = 1,
                                            .lda = ld, .ldb = ld, .ldc = l, .stride_a = qkv,
                                            .stride_b = qkv, .stride_c = pp, .alpha = 0.088f});
    compare_call("probs v", (GemmCall){.batch = b, .m = l, .n = c, .k = l, .lda = l, .ldb = ld,
                                       .ldc = c, .stride_a = pp, .stride_b = qkv,
                                       .stride_c = out, .alpha = 1});
    compare_call("dv = probs^T dout", (GemmCall){.batch = b, .m = l, .n = c, .k = l,
                                                 .trans_a = 1, .lda = l, .ldb = c, .ldc = ld,
                                                 .stride_a = pp, .stride_b = out,
                                                 .stride_c = qkv, .alpha = 1});
    compare_call("dk = dscores^T q", (GemmCall){.batch = b, .m = l, .n = c, .k = l,
                                                .trans_a = 1, .lda = l, .ldb = ld, .ldc = ld,
                                                .stride_a = pp, .stride_b = qkv,
                                                .stride_c = qkv, .alpha = 0.088f});
}

typedef struct {
    float *y, *dx, *dw, *db;
} LinearOut;

static LinearOut linear_on(CpuGemmPath path, const float *x, const float *w, const float *bias,
                           const float *dy, int m, int k, int n) {
    cpu_gemm_set_path(path);
    LinearOut o = {xmalloc((size_t)m * n * 4), xmalloc((size_t)m * k * 4),
                   xmalloc((size_t)n * k * 4), xmalloc((size_t)n * 4)};
    cpu_linear_forward(o.y, x, w, bias, m, k, n);
    cpu_linear_backward(o.dx, 0.0f, o.dw, o.db, dy, x, w, m, k, n);
    return o;
}

static void compare_linear(int m, int k, int n) {
    float *x = random_floats((size_t)m * k, 4), *w = random_floats((size_t)n * k, 5);
    float *bias = random_floats((size_t)n, 6), *dy = random_floats((size_t)m * n, 7);
    LinearOut ref = linear_on(GEMM_PATH_OPENBLAS, x, w, bias, dy, m, k, n);
    LinearOut got = linear_on(GEMM_PATH_ONEDNN, x, w, bias, dy, m, k, n);
    double e[3] = {rel_error(got.y, ref.y, (size_t)m * n, 0),
                   rel_error(got.dx, ref.dx, (size_t)m * k, 0),
                   rel_error(got.dw, ref.dw, (size_t)n * k, 0)};
    CHECK(e[0] <= TOL && e[1] <= TOL && e[2] <= TOL,
          "linear %dx%d -> %d: y %.3g, dx %.3g, dw %.3g relative", m, k, n, e[0], e[1], e[2]);
    free(x), free(w), free(bias), free(dy);
    free(ref.y), free(ref.dx), free(ref.dw), free(ref.db);
    free(got.y), free(got.dx), free(got.dw), free(got.db);
}

int main(void) {
    if (cpu_gemm_set_path(GEMM_PATH_ONEDNN) != 0) {
        SKIP("this build has no oneDNN: nothing to compare with OpenBLAS");
        test_summary("test_cpu_gemm");
        return 77;   /* tests/run_tests.sh: skipped, not passed */
    }
    gemm_calls();
    compare_linear(2 * 256, 128, 384);   /* qkv at 16x16 */
    compare_linear(2 * 256, 128, 128);   /* to_out */
    compare_linear(3, 256, 256);         /* time embedding */
    compare_linear(3 * 49, 64, 192);     /* a 7x7 level */
    return test_summary("test_cpu_gemm");
}
