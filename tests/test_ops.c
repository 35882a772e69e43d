/* Every op of backend.h, from one table of cases (op_cases() below), in the modes of
 * op_harness.h: `bin/test_ops` runs the CPU checks and the CUDA comparison (skipped
 * without a GPU); `bin/test_ops --bench` times every case instead.
 *
 * Where the tolerances come from (each is the one the earlier per-file tests used for
 * the same check, or tighter):
 *  - reference checks against double-precision loops: 1e-5 relative to the tensor's
 *    max for conv, linear, attention and GroupNorm (float accumulation over up to a
 *    few thousand terms); 1e-6 for silu, mse, global_norm, AdamW and sample_update
 *    with learned variances (one float rounding or a few); bit for bit where the op
 *    computes the formula exactly as written (add, bias, layout, dropout, the timestep
 *    embedding, the class embedding, the Philox draws, q_sample, sample_update,
 *    guidance_combine (one fmaf), ema);
 *  - beta 1: bit for bit for the elementwise and layout ops (one float add), 1e-6 for
 *    the GEMM-based ones (BLAS may fold the add into the product);
 *  - finite differences with a step of 1e-2: score <= 2e-3 with atol = the gradient's
 *    rms for the dense ops (40 probes), <= 1e-2 with atol 1e-2 elsewhere (48 probes),
 *    the float forward's rounding over 2h bounding both;
 *  - CPU vs CUDA: 1e-5 relative in strict fp32 (DDPM_TF32 unset), 0 for copies and
 *    masks, 1e-6 for Gaussian draws (the device's logf/sinf/cosf may differ from
 *    glibc's in the last ulp). */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/conv_algo_cache.h"
#include "bf16.h"
#include "op_harness.h"

enum { MAX_CASES = 160 };

/* ---- building the table ---- */

static OpCase *table;
static int n_cases, capacity;
static void *kept_host[4 * MAX_CASES];   /* fixed host data of the cases, freed at exit */
static int n_kept;

static const FdRule FD_DENSE = {40, -1.0, 2e-3};      /* atol: the gradient's rms */
static const FdRule FD_POINTWISE = {48, 1e-2, 1e-2};

static OpCase *add_case(unsigned modes, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static OpCase *add_case(unsigned modes, const char *fmt, ...) {
    if (n_cases == capacity) die("test_ops: more than %d cases", capacity);
    OpCase *c = &table[n_cases++];
    memset(c, 0, sizeof *c);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
    c->modes = modes;
    c->tol = 1e-5;
    return c;
}

static int add_tensor(OpCase *c, TensorSpec s) {
    if (c->nt == MAX_TENSORS) die("test_ops: %s has too many tensors", c->name);
    if (s.tol == 0 && s.role != T_ABSENT) s.tol = -1;   /* the case's tolerance */
    c->t[c->nt] = s;
    return c->nt++;
}

static int input(OpCase *c, const char *name, size_t n, float lo, float hi) {
    return add_tensor(c, (TensorSpec){name, T_IN, n, 4, lo, hi, NULL, -1, 0});
}

/* Fixed bytes (copied, kept until exit): integers, tables, images. */
static int input_bytes(OpCase *c, const char *name, size_t n, size_t elem, const void *host) {
    void *copy = xmalloc(n * elem + 1);
    memcpy(copy, host, n * elem);
    if (n_kept == (int)(sizeof kept_host / sizeof kept_host[0])) die("test_ops: too many inputs");
    kept_host[n_kept++] = copy;
    return add_tensor(c, (TensorSpec){name, T_IN, n, elem, 0, 0, copy, -1, 0});
}

/* An output; `weight` (an input of the same size, or -1) is dL/doutput for the
 * finite-difference loss and the backward's dy. */
static int output(OpCase *c, const char *name, size_t n, int weight) {
    return add_tensor(c, (TensorSpec){name, T_OUT, n, 4, 0, 0, NULL, weight, 0});
}

static int grad(OpCase *c, const char *name, int of) {
    return add_tensor(c, (TensorSpec){name, T_GRAD, c->t[of].n, 4, 0, 0, NULL, of, 0});
}

static int param_grad(OpCase *c, const char *name, int of) {
    return add_tensor(c, (TensorSpec){name, T_PARAM_GRAD, c->t[of].n, 4, 0, 0, NULL, of, 0});
}

/* A slot the op gets as NULL (an optional operand left out). */
static int absent(OpCase *c) { return add_tensor(c, (TensorSpec){.role = T_ABSENT}); }

static void set_tol(OpCase *c, int i, double tol) { c->t[i].tol = tol; }

typedef void (*OpForward)(const OpCase *c, OpRun *r);
typedef void (*OpBackward)(const OpCase *c, OpRun *r, float beta);

/* The op's calls; backward NULL: the op has none; check NULL: no CPU reference here */
static void set_op(OpCase *c, OpForward forward, OpBackward backward, OpForward check) {
    c->forward = forward;
    c->backward = backward;
    c->check = check;
}

static void free_kept_host(void) {
    for (int i = 0; i < n_kept; i++) free(kept_host[i]);
}

#define F(i) ((float *)r->t[i])
#define I32(i) ((const int32_t *)r->t[i])

static int is_cuda(const OpRun *r) { return r->be != backend_cpu(); }

/* The reference's result, rounded to float, within tol of the op's (relative to the
 * reference tensor's max, as rel_error measures it). */
static void expect_ref(const OpCase *c, const char *what, const float *got, const double *want,
                       size_t n, double tol) {
    float *wf = xmalloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) wf[i] = (float)want[i];
    double err = rel_error(got, wf, n, 1e-6);
    CHECK(err <= tol, "%s %s: relative error %.3g against the reference > %.3g", c->name, what,
          err, tol);
    free(wf);
}

static double *zeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* ---- memory ---- */

enum { MEM_A, MEM_B };

static void copy_forward(const OpCase *c, OpRun *r) {
    r->be->copy(F(MEM_B), F(MEM_A), c->t[MEM_A].n * sizeof(float));
}
static void fill_forward(const OpCase *c, OpRun *r) { r->be->fill(F(MEM_B), 0.25f, c->t[MEM_B].n); }
/* a fresh allocation in place of the poisoned output: it must read as zeros */
static void alloc_forward(const OpCase *c, OpRun *r) {
    r->be->release(r->t[MEM_B]);
    r->t[MEM_B] = r->be->alloc(c->t[MEM_B].n * sizeof(float));
}

static void memory_check(const OpCase *c, OpRun *r) {
    int ok = 1;
    for (size_t i = 0; i < c->t[MEM_B].n; i++)
        ok &= F(MEM_B)[i] == (c->flag == 0 ? F(MEM_A)[i] : c->flag == 1 ? 0.25f : 0.0f);
    CHECK(ok, "%s: wrong values", c->name);
}

static void memory_cases(void) {
    void (*forwards[3])(const OpCase *, OpRun *) = {copy_forward, fill_forward, alloc_forward};
    const char *names[3] = {"copy", "fill", "alloc zeroes"};
    for (int k = 0; k < 3; k++) {
        OpCase *c = add_case(MODE_CPU | MODE_CUDA, "%s", names[k]);
        input(c, "a", 1000, -1, 1);
        set_tol(c, output(c, "b", 1000, -1), 0.0);
        c->flag = k;
        set_op(c, forwards[k], NULL, memory_check);
    }
}

/* ---- bf16 rounding (mixed precision's emulation) ---- */

enum { RB_X, RB_Y };

static void round_bf16_forward(const OpCase *c, OpRun *r) {
    r->be->copy(F(RB_Y), F(RB_X), c->t[RB_X].n * sizeof(float));
    r->be->round_bf16(F(RB_Y), c->t[RB_Y].n);
}

/* Bit for bit include/bf16.h's bf16_round (itself checked by tests/test_bf16.c), the
 * low 16 bits zero; NaN stays NaN. */
static void round_bf16_check(const OpCase *c, OpRun *r) {
    size_t wrong = 0;
    for (size_t i = 0; i < c->t[RB_X].n; i++) {
        float x = F(RB_X)[i], y = F(RB_Y)[i], want = bf16_round(x);
        uint32_t bits;
        memcpy(&bits, &y, sizeof bits);
        int same = x != x ? y != y : memcmp(&y, &want, sizeof y) == 0;
        wrong += !same || (bits & 0xffffu) != 0;
    }
    CHECK(wrong == 0, "round_bf16: %zu of %zu values differ from bf16_round", wrong,
          c->t[RB_X].n);
}

/* Random bit patterns: every exponent (subnormals; with specials, Inf and NaN), and a tie
 * every fourth value. The CUDA comparison takes finite inputs that stay finite (its
 * relative error is NaN at an Inf), so the CUDA case draws exponents below the top. */
static void round_bf16_case(unsigned modes, size_t n, int specials) {
    OpCase *c = add_case(modes, "round_bf16 n%zu%s", n, specials ? " with Inf/NaN" : "");
    uint32_t *bits = xmalloc(n * sizeof *bits);
    RngKey key = {0xbf16, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        uint32_t b = philox_below(key, 0, i, 0xffffffffu);
        if (!specials && ((b >> 23) & 0xffu) >= 0xfeu) b &= 0xbfffffffu;   /* exponent < 0x7f */
        if (i % 4 == 0) b = (b & 0xffff0000u) | 0x8000u;
        bits[i] = b;
    }
    if (specials) {
        uint32_t fixed[] = {0x7f800000u, 0xff800000u, 0x7f800001u, 0x7f7fffffu, 0x80000001u};
        memcpy(bits, fixed, sizeof fixed);
    }
    input_bytes(c, "x", n, sizeof(float), bits);
    free(bits);
    set_tol(c, output(c, "y", n, -1), 0.0);
    set_op(c, round_bf16_forward, NULL, round_bf16_check);
}

static void round_bf16_cases(void) {
    round_bf16_case(MODE_CPU, 100003, 1);   /* parallel, with a ragged tail */
    round_bf16_case(MODE_CPU | MODE_CUDA | MODE_BENCH, 100003, 0);
}

/* ---- convolution ---- */

enum { CV_X, CV_W, CV_B, CV_DY, CV_Y, CV_DX, CV_DW, CV_DB, CV_RES };

static void conv_setup(const OpCase *c, OpRun *r) {
    ConvShape *s = &r->conv;
    *s = (ConvShape){.n = c->n, .h = c->h, .w = c->w, .c = c->ch, .oc = c->oc, .kh = c->k,
                     .kw = c->k, .stride = c->stride, .pad_top = c->pad[0],
                     .pad_left = c->pad[1], .pad_bottom = c->pad[2], .pad_right = c->pad[3]};
    conv_shape_finish(s);
    const char *method = is_cuda(r) ? c->conv_bwd_data : NULL;
    const char *outer = getenv("DDPM_CONV_BWD_DATA");
    char *saved = outer ? strdup(outer) : NULL;
    if (method) setenv("DDPM_CONV_BWD_DATA", method, 1);   /* read at a shape's first prepare */
    r->be->conv2d_prepare(s);
    if (saved) setenv("DDPM_CONV_BWD_DATA", saved, 1);
    else unsetenv("DDPM_CONV_BWD_DATA");
    free(saved);
    if (method) {   /* a forced method is used where it applies; elsewhere cuDNN's */
        int want = strcmp(method, "transposed") == 0 && conv_transposed_applies(s);
        int got = conv_bwd_data_is_transposed(s->algo[CONV_BACKWARD_DATA]);
        CHECK(got == want, "%s: backward data by %s, expected %s", c->name,
              got ? "the transposed method" : "cuDNN", want ? "the transposed method" : "cuDNN");
    }
    s->n = c->run_n;   /* as the U-Net runs a prepared conv on a smaller batch */
    r->workspace = r->be->alloc(s->workspace_bytes);
    if (!is_cuda(r) && s->workspace_bytes)   /* NaN bytes: the op must not read them */
        memset(r->workspace, 0xff, s->workspace_bytes);
}

static void conv_forward(const OpCase *c, OpRun *r) {
    r->be->conv2d_forward(&r->conv, F(CV_Y), F(CV_X), F(CV_W), F(CV_B), F(CV_RES), r->workspace);
}

static void conv_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->conv2d_backward(&r->conv, F(CV_DX), beta, F(CV_DW), F(CV_DB), F(CV_DY), F(CV_X),
                           F(CV_W), r->workspace);
}

/* Calls visit(ctx, y index, x index, w index) for every multiply of the convolution. */
typedef struct {
    const float *x, *w, *dy;
    double *y, *dx, *dw;
} ConvRef;

static void conv_reference(const ConvShape *s, ConvRef *ref) {
    for (int n = 0; n < s->n; n++)
        for (int oy = 0; oy < s->oh; oy++)
            for (int ox = 0; ox < s->ow; ox++)
                for (int o = 0; o < s->oc; o++)
                    for (int ky = 0; ky < s->kh; ky++)
                        for (int kx = 0; kx < s->kw; kx++) {
                            int iy = oy * s->stride - s->pad_top + ky;
                            int ix = ox * s->stride - s->pad_left + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            size_t yi = (((size_t)n * s->oh + oy) * s->ow + ox) * s->oc + o;
                            size_t xi = (((size_t)n * s->h + iy) * s->w + ix) * s->c;
                            size_t wi = (((size_t)o * s->kh + ky) * s->kw + kx) * s->c;
                            for (int ch = 0; ch < s->c; ch++) {
                                ref->y[yi] += (double)ref->x[xi + ch] * ref->w[wi + ch];
                                ref->dx[xi + ch] += (double)ref->dy[yi] * ref->w[wi + ch];
                                ref->dw[wi + ch] += (double)ref->dy[yi] * ref->x[xi + ch];
                            }
                        }
}

static void conv_check(const OpCase *c, OpRun *r) {
    const ConvShape *s = &r->conv;
    size_t ny = c->t[CV_Y].n, nx = c->t[CV_X].n, nw = c->t[CV_W].n;
    ConvRef ref = {F(CV_X), F(CV_W), F(CV_DY), zeros(ny), zeros(nx), zeros(nw)};
    double *db = zeros((size_t)s->oc);
    for (size_t i = 0; i < ny; i++) {
        if (F(CV_B)) ref.y[i] = F(CV_B)[i % s->oc];
        if (F(CV_RES)) ref.y[i] += F(CV_RES)[i];
        db[i % s->oc] += F(CV_DY)[i];
    }
    conv_reference(s, &ref);
    expect_ref(c, "forward", F(CV_Y), ref.y, ny, c->ref_tol);
    expect_ref(c, "dx", F(CV_DX), ref.dx, nx, c->ref_tol);
    expect_ref(c, "dw", F(CV_DW), ref.dw, nw, c->ref_tol);
    if (F(CV_DB)) expect_ref(c, "db", F(CV_DB), db, (size_t)s->oc, c->ref_tol);
    if (c->flag) {   /* the workspace holds fewer samples than the batch: chunked */
        size_t whole = (size_t)s->n * s->oh * s->ow * s->kh * s->kw * s->c * sizeof(float);
        CHECK(s->workspace_bytes > 0 && s->workspace_bytes < whole,
              "%s: workspace %zu bytes does not chunk a %zu-byte column matrix", c->name,
              s->workspace_bytes, whole);
    }
    free(ref.y), free(ref.dx), free(ref.dw), free(db);
}

/* pads: top, left, bottom, right; run_n: the batch it runs at (prepared at n) */
/* residual: y = conv(x) + b + residual, the ResBlock's skip (its gradient is dy, added by
 * the graph, so the op has none) */
static OpCase *conv_case_residual(unsigned modes, const char *name, int n, int run_n, int h,
                                  int w, int ch, int oc, int k, int stride, const int pad[4],
                                  int bias, int residual) {
    OpCase *c = add_case(modes, "conv %s", name);
    c->n = n, c->run_n = run_n, c->h = h, c->w = w, c->ch = ch, c->oc = oc, c->k = k;
    c->stride = stride;
    memcpy(c->pad, pad, sizeof c->pad);
    int oh = (h + pad[0] + pad[2] - k) / stride + 1, ow = (w + pad[1] + pad[3] - k) / stride + 1;
    int x = input(c, "x", (size_t)run_n * h * w * ch, -1, 1);
    int wt = input(c, "w", (size_t)oc * k * k * ch, -1, 1);
    int b = bias ? input(c, "b", (size_t)oc, -1, 1) : absent(c);
    int dy = input(c, "dy", (size_t)run_n * oh * ow * oc, -1, 1);
    output(c, "y", c->t[dy].n, dy);
    grad(c, "dx", x);
    param_grad(c, "dw", wt);
    if (bias) param_grad(c, "db", b);
    else absent(c);
    if (residual) input(c, "residual", c->t[dy].n, -2, 2);
    else absent(c);
    c->setup = conv_setup;
    set_op(c, conv_forward, conv_backward, conv_check);
    c->ref_tol = 1e-5, c->beta_tol = 1e-6, c->fd = FD_DENSE;
    return c;
}

static OpCase *conv_case(unsigned modes, const char *name, int n, int run_n, int h, int w, int ch,
                         int oc, int k, int stride, const int pad[4], int bias) {
    return conv_case_residual(modes, name, n, run_n, h, w, ch, oc, k, stride, pad, bias, 0);
}

static void conv_cases(void) {
    static const int P1[4] = {1, 1, 1, 1}, P0[4] = {0}, DOWN[4] = {0, 0, 1, 1};
    static const int ASYM[4] = {0, 0, 1, 1}, P2[4] = {2, 2, 2, 2};
    const unsigned all = MODE_ALL;
    /* the CPU reference cases (finite differences on the small ones) */
    conv_case(all, "3x3 odd", 2, 2, 5, 7, 3, 4, 3, 1, P1, 1);
    conv_case(all, "3x3 no bias", 1, 1, 4, 4, 5, 3, 3, 1, P1, 0);
    conv_case(all, "1x1", 2, 2, 5, 7, 6, 5, 1, 1, P0, 1);
    conv_case(all, "3x3 s2 downsample", 2, 2, 6, 8, 3, 4, 3, 2, DOWN, 1);
    conv_case(all, "3x3 s2 odd downsample", 2, 2, 5, 7, 4, 3, 3, 2, DOWN, 1);
    conv_case(all, "3x3 s2 uncovered edge", 2, 2, 6, 6, 2, 3, 3, 2, P0, 1);
    conv_case(all, "1x1 s2", 2, 2, 5, 5, 3, 2, 1, 2, P0, 1);
    /* the skip add written by the conv: ResBlock conv2 (3x3) and conv_shortcut (1x1) */
    conv_case_residual(all, "3x3 residual", 2, 2, 5, 6, 3, 4, 3, 1, P1, 1, 1);
    conv_case_residual(all, "3x3 residual no bias", 2, 2, 4, 4, 3, 3, 3, 1, P1, 0, 1);
    conv_case_residual(all, "1x1 residual", 2, 2, 5, 7, 6, 5, 1, 1, P0, 1, 1);
    OpCase *chunked = conv_case(all, "3x3 chunked batch", 4, 4, 64, 64, 64, 8, 3, 1, P1, 1);
    chunked->fd.probes = 0;
    chunked->flag = 1;
    OpCase *chunked_res = conv_case_residual(all, "3x3 chunked batch residual", 4, 4, 64, 64, 64,
                                             8, 3, 1, P1, 1, 1);
    chunked_res->fd.probes = 0;
    chunked_res->flag = 1;
    /* the GPU's cases: cuDNN's algorithms, batches smaller than prepared, and each
     * backward-data method forced. Each shape (batch included) is its own: the plan
     * cache keeps the first choice made for a shape. */
    const unsigned gpu = MODE_CUDA | MODE_BENCH;
    conv_case(gpu, "3x3", 2, 2, 8, 8, 8, 16, 3, 1, P1, 1);
    conv_case(gpu, "3x3 in=3", 2, 2, 8, 8, 3, 8, 3, 1, P1, 1);
    conv_case(gpu, "3x3 out=3", 2, 2, 8, 8, 16, 3, 3, 1, P1, 1);
    conv_case(gpu, "1x1 shortcut", 2, 2, 8, 8, 16, 8, 1, 1, P0, 1);
    conv_case(gpu, "downsample", 2, 2, 8, 8, 8, 8, 3, 2, DOWN, 1);
    conv_case(gpu, "3x3 smaller n", 4, 2, 8, 8, 8, 16, 3, 1, P1, 1);
    conv_case(gpu, "down smaller n", 4, 3, 8, 8, 8, 8, 3, 2, DOWN, 1);
    conv_case(gpu, "3x3 no bias 8", 2, 2, 8, 8, 8, 8, 3, 1, P1, 0);
    conv_case(gpu, "3x3 16x16 c32", 3, 3, 16, 16, 32, 32, 3, 1, P1, 1);
    conv_case_residual(gpu, "3x3 16x16 c32 residual", 3, 3, 16, 16, 32, 32, 3, 1, P1, 1, 1);
    conv_case_residual(gpu, "1x1 shortcut residual", 2, 2, 8, 8, 16, 8, 1, 1, P0, 1, 1);
    /* prepared at batch 2, run at 1 (`ddpm sample --n 3 --batch 2` died on the first) */
    conv_case(gpu, "3x3 oc=1 batch 2->1", 2, 1, 32, 32, 16, 1, 3, 1, P1, 1);
    conv_case(gpu, "3x3 batch 2->1", 2, 1, 12, 12, 16, 16, 3, 1, P1, 1);
    /* backward data as the forward conv of dy with W'; where it does not apply,
     * cuDNN's backward data runs instead */
    static const struct { const char *name; int n, run_n, h, c, oc, k; const int *pad;
                          const char *method; int stride; } forced[] = {
        {"3x3 transposed", 3, 3, 10, 8, 12, 3, P1, "transposed", 1},
        {"3x3 transposed c>oc", 2, 2, 9, 16, 6, 3, P1, "transposed", 1},
        {"1x1 transposed", 2, 2, 8, 12, 20, 1, P0, "transposed", 1},
        {"3x3 pad 0 transposed", 2, 2, 10, 4, 6, 3, P0, "transposed", 1},
        {"3x3 pad 2 transposed", 2, 2, 7, 5, 3, 3, P2, "transposed", 1},
        {"transposed 3->1", 3, 1, 12, 8, 16, 3, P1, "transposed", 1},
        {"1x1 transposed 2->1", 2, 1, 6, 24, 8, 1, P0, "transposed", 1},
        {"down, transposed asked", 2, 2, 10, 8, 8, 3, DOWN, "transposed", 2},
        {"stride 1 asymmetric, transposed asked", 2, 2, 9, 6, 6, 3, ASYM, "transposed", 1},
        {"3x3 cudnn forced", 2, 2, 11, 8, 12, 3, P1, "cudnn", 1},
    };
    for (size_t i = 0; i < sizeof forced / sizeof forced[0]; i++) {
        OpCase *c = conv_case(gpu, forced[i].name, forced[i].n, forced[i].run_n, forced[i].h,
                              forced[i].h, forced[i].c, forced[i].oc, forced[i].k,
                              forced[i].stride, forced[i].pad, 1);
        c->conv_bwd_data = forced[i].method;
    }
    conv_case(MODE_BENCH, "bench 3x3 32x32 128->128", 16, 16, 32, 32, 128, 128, 3, 1, P1, 1);
}

/* ---- group norm ---- */

enum { GN_X, GN_GAMMA, GN_SHIFT, GN_DY, GN_Y, GN_MEAN, GN_RSTD, GN_DX, GN_DGAMMA, GN_DSHIFT };

static void groupnorm_forward(const OpCase *c, OpRun *r) {
    r->be->groupnorm_forward(F(GN_Y), F(GN_MEAN), F(GN_RSTD), F(GN_X), F(GN_GAMMA), F(GN_SHIFT),
                             c->n, c->h, c->ch, c->groups, 1e-6f, c->flag, c->p, c->key);
}

static void groupnorm_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->groupnorm_backward(F(GN_DX), beta, F(GN_DGAMMA), F(GN_DSHIFT), F(GN_DY), F(GN_X),
                              F(GN_MEAN), F(GN_RSTD), F(GN_GAMMA), F(GN_SHIFT), c->n, c->h,
                              c->ch, c->groups, c->flag, c->p, c->key);
}

/* The fused dropout's factor for element e of sample s: 1/(1-p) where kept, else 0. */
static double dropout_factor(const OpCase *c, int s, size_t e) {
    if (c->p == 0.0f) return 1.0;
    return philox_uniform(c->key, (uint32_t)s, e) >= c->p ? 1.0f / (1.0f - c->p) : 0.0;
}

/* Direct double GroupNorm of one (sample, group): y, and the gradients from dy. */
static void groupnorm_reference_group(const OpCase *c, OpRun *r, int s, int grp, double *y,
                                      double *dx, double *dgamma, double *dshift) {
    int hw = c->h, ch_n = c->ch, cg = ch_n / c->groups;
    const float *x = F(GN_X), *gamma = F(GN_GAMMA), *shift = F(GN_SHIFT), *dy = F(GN_DY);
    double count = (double)hw * cg, mu = 0, var = 0, mean_g = 0, mean_gx = 0;
#define AT(p, j) ((size_t)s * hw * ch_n + (size_t)(p) * ch_n + grp * cg + (j))
    for (int p = 0; p < hw; p++)
        for (int j = 0; j < cg; j++) mu += x[AT(p, j)] / count;
    for (int p = 0; p < hw; p++)
        for (int j = 0; j < cg; j++) var += pow(x[AT(p, j)] - mu, 2) / count;
    double rstd = 1.0 / sqrt(var + 1e-6);
    for (int pass = 0; pass < 3; pass++)   /* y; the group means of the gradient; dx */
        for (int p = 0; p < hw; p++)
            for (int j = 0; j < cg; j++) {
                int chn = grp * cg + j;
                size_t i = AT(p, j);
                double xhat = (x[i] - mu) * rstd, pre = xhat * gamma[chn] + shift[chn];
                double sig = 1.0 / (1.0 + exp(-pre));
                double drop = dropout_factor(c, s, (size_t)p * ch_n + chn);
                if (pass == 0) y[i] = (c->flag ? pre * sig : pre) * drop;
                double dout = dy[i] * drop;
                double dpre = c->flag ? dout * sig * (1 + pre * (1 - sig)) : dout;
                double gr = dpre * gamma[chn];
                if (pass == 1) {
                    mean_g += gr / count;
                    mean_gx += gr * xhat / count;
                    dgamma[chn] += dpre * xhat;
                    dshift[chn] += dpre;
                }
                if (pass == 2) dx[i] = rstd * (gr - mean_g - xhat * mean_gx);
            }
#undef AT
}

/* The parameter gradients must not depend on the number of threads. */
static void groupnorm_check_threads(const OpCase *c, OpRun *r) {
    size_t total = c->t[GN_X].n;
    float *dx[2] = {xmalloc(total * sizeof(float)), xmalloc(total * sizeof(float))};
    float *dgamma[2] = {xmalloc(c->ch * sizeof(float)), xmalloc(c->ch * sizeof(float))};
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        r->be->groupnorm_backward(dx[k], 0.0f, dgamma[k], NULL, F(GN_DY), F(GN_X), F(GN_MEAN),
                                  F(GN_RSTD), F(GN_GAMMA), F(GN_SHIFT), c->n, c->h, c->ch,
                                  c->groups, c->flag, c->p, c->key);
    }
    omp_set_num_threads(threads);
    CHECK(!memcmp(dx[0], dx[1], total * sizeof(float)) &&
              !memcmp(dgamma[0], dgamma[1], c->ch * sizeof(float)),
          "%s: backward differs between 1 and 3 threads", c->name);
    free(dx[0]), free(dx[1]), free(dgamma[0]), free(dgamma[1]);
}

static int same_bits(const float *a, const float *b, size_t n) {
    return !memcmp(a, b, n * sizeof(float));
}

/* The fused dropout is the unfused chain bit for bit: groupnorm (+ SiLU) then
 * dropout_forward; dropout_backward then the groupnorm backward. */
static void groupnorm_check_unfused(const OpCase *c, OpRun *r) {
    const Backend *be = r->be;
    size_t total = c->t[GN_X].n, stats = c->t[GN_MEAN].n, per = (size_t)c->h * c->ch;
    float *pre = xmalloc(total * 4), *y = xmalloc(total * 4), *mean = xmalloc(stats * 4);
    float *rstd = xmalloc(stats * 4), *dpre = xmalloc(total * 4), *dx = xmalloc(total * 4);
    float *dgamma = xmalloc(c->ch * 4), *dshift = xmalloc(c->ch * 4);
    const RngKey none = {0};
    be->groupnorm_forward(pre, mean, rstd, F(GN_X), F(GN_GAMMA), F(GN_SHIFT), c->n, c->h, c->ch,
                          c->groups, 1e-6f, c->flag, 0.0f, none);
    be->dropout_forward(y, pre, c->n, per, c->p, c->key);
    be->dropout_backward(dpre, 0.0f, F(GN_DY), c->n, per, c->p, c->key);
    be->groupnorm_backward(dx, 0.0f, dgamma, dshift, dpre, F(GN_X), mean, rstd, F(GN_GAMMA),
                           F(GN_SHIFT), c->n, c->h, c->ch, c->groups, c->flag, 0.0f, none);
    CHECK(same_bits(y, F(GN_Y), total) && same_bits(mean, F(GN_MEAN), stats) &&
              same_bits(rstd, F(GN_RSTD), stats),
          "%s: forward differs from groupnorm then dropout", c->name);
    CHECK(same_bits(dx, F(GN_DX), total), "%s: dx differs from the unfused backward", c->name);
    CHECK(same_bits(dgamma, F(GN_DGAMMA), c->ch) && same_bits(dshift, F(GN_DSHIFT), c->ch),
          "%s: dgamma/dshift differ from the unfused backward", c->name);
    size_t dropped = 0;
    for (size_t i = 0; i < total; i++) dropped += F(GN_Y)[i] == 0.0f && pre[i] != 0.0f;
    CHECK(dropped > 0 && dropped < total, "%s: %zu of %zu dropped", c->name, dropped, total);
    free(pre), free(y), free(mean), free(rstd), free(dpre), free(dx), free(dgamma), free(dshift);
}

static void groupnorm_check(const OpCase *c, OpRun *r) {
    size_t total = c->t[GN_X].n;
    double *y = zeros(total), *dx = zeros(total), *dgamma = zeros(c->ch), *dshift = zeros(c->ch);
    for (int s = 0; s < c->n; s++)
        for (int g = 0; g < c->groups; g++)
            groupnorm_reference_group(c, r, s, g, y, dx, dgamma, dshift);
    expect_ref(c, "forward", F(GN_Y), y, total, c->ref_tol);
    expect_ref(c, "dx", F(GN_DX), dx, total, c->ref_tol);
    expect_ref(c, "dgamma", F(GN_DGAMMA), dgamma, c->ch, c->ref_tol);
    expect_ref(c, "dshift", F(GN_DSHIFT), dshift, c->ch, c->ref_tol);
    if (c->k) groupnorm_check_threads(c, r);
    if (c->p > 0.0f) groupnorm_check_unfused(c, r);
    free(y), free(dx), free(dgamma), free(dshift);
}

static OpCase *groupnorm_case(unsigned modes, int n, int hw, int ch, int groups, int silu,
                              float x_lo, float x_hi) {
    OpCase *c = add_case(modes, "groupnorm n%d hw%d c%d g%d silu%d x[%g,%g)", n, hw, ch, groups,
                         silu, x_lo, x_hi);
    c->n = n, c->h = hw, c->ch = ch, c->groups = groups, c->flag = silu;
    size_t total = (size_t)n * hw * ch;
    int x = input(c, "x", total, x_lo, x_hi);
    int gamma = input(c, "gamma", ch, 0.5f, 1.5f), shift = input(c, "shift", ch, -0.5f, 0.5f);
    int dy = input(c, "dy", total, -1, 1);
    output(c, "y", total, dy);
    output(c, "mean", (size_t)n * groups, -1);
    output(c, "rstd", (size_t)n * groups, -1);
    grad(c, "dx", x);
    param_grad(c, "dgamma", gamma);
    param_grad(c, "dshift", shift);
    set_op(c, groupnorm_forward, groupnorm_backward, groupnorm_check);
    c->ref_tol = 1e-5, c->fd = FD_POINTWISE;
    return c;
}

static void groupnorm_cases(void) {
    for (int silu = 0; silu < 2; silu++) {
        groupnorm_case(MODE_ALL, 2, 6, 8, 2, silu, -1.5f, 2.5f);
        groupnorm_case(MODE_ALL, 3, 5, 4, 4, silu, -1.5f, 2.5f);
        groupnorm_case(MODE_CUDA | MODE_BENCH, 2, 16, 32, 8, silu, -2, 3);
        /* column sums over several chunks */
        groupnorm_case(MODE_CUDA | MODE_BENCH, 4, 1024, 64, 32, silu, -2, 3);
    }
    groupnorm_case(MODE_ALL, 2, 9, 12, 1, 1, -1.5f, 2.5f);
    /* statistics of an activation with a large mean must not lose the variance */
    OpCase *large = groupnorm_case(MODE_CPU, 1, 256, 4, 1, 0, 999, 1001);
    large->ref_tol = 1e-4, large->fd.probes = 0;
    OpCase *threads = groupnorm_case(MODE_CPU, 6, 64, 32, 8, 1, -1, 1);
    threads->k = 1, threads->fd.probes = 0;
    groupnorm_case(MODE_BENCH, 16, 1024, 128, 32, 1, -2, 3);
    /* the ResBlock's norm2 -> SiLU -> dropout as one op (and without the SiLU); c = 12 and
     * 45 do not divide the chunks, so runs start off a Philox block */
    const RngKey drop_key = {7, 3, 11, RNG_STREAM_DROPOUT + 2};
    static const int dropout_shapes[][4] = {{2, 6, 8, 2}, {3, 9, 12, 3}, {2, 40, 45, 5}};
    for (int silu = 0; silu < 2; silu++)
        for (int k = 0; k < 3; k++) {
            const int *sh = dropout_shapes[k];
            OpCase *d = groupnorm_case(k == 2 ? MODE_CPU | MODE_CUDA : MODE_ALL, sh[0], sh[1],
                                       sh[2], sh[3], silu, -1.5f, 2.5f);
            d->p = 0.3f, d->key = drop_key;
            snprintf(d->name + strlen(d->name), sizeof d->name - strlen(d->name), " dropout%g",
                     d->p);
            if (k == 2) d->fd.probes = 0;
        }
    /* the coalesced CUDA forward: the U-Net's C = 128 at G = 32 (4 channels a group), and
     * groups wider than a 32-channel span; with dropout, and x with a large mean */
    OpCase *wide = groupnorm_case(MODE_CUDA, 3, 64, 128, 32, 1, -2, 3);
    wide->p = 0.1f, wide->key = drop_key;
    groupnorm_case(MODE_CUDA, 2, 20, 128, 2, 0, -2, 3);
    groupnorm_case(MODE_CUDA, 2, 50, 64, 16, 1, 9, 11);
    OpCase *bench_drop = groupnorm_case(MODE_BENCH, 16, 1024, 128, 32, 1, -2, 3);
    bench_drop->p = 0.1f, bench_drop->key = drop_key;
    strcat(bench_drop->name, " dropout0.1");   /* against the two bench cases it replaces */
}

/* ---- elementwise ---- */

enum { EL_A, EL_B, EL_DY, EL_Y, EL_DA, EL_DB };

static size_t el_n(const OpCase *c) { return c->t[EL_A].n; }

static void silu_forward(const OpCase *c, OpRun *r) {
    r->be->silu_forward(F(EL_Y), F(EL_A), el_n(c));
}
static void silu_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->silu_backward(F(EL_DA), beta, F(EL_DY), F(EL_A), el_n(c));
}

static void silu_check(const OpCase *c, OpRun *r) {
    double worst = 0;
    for (size_t i = 0; i < el_n(c); i++) {
        double x = F(EL_A)[i], ref = x / (1.0 + exp(-x));
        worst = fmax(worst, fabs(F(EL_Y)[i] - ref) / fmax(fabs(ref), 1e-3));
    }
    CHECK(worst <= c->ref_tol, "silu forward vs double: %g", worst);
    /* far tails: no overflow to inf or NaN in forward or backward */
    float tails[4] = {-1000.0f, -90.0f, 90.0f, 1000.0f}, ones[4] = {1, 1, 1, 1};
    float y[4], dx[4];
    r->be->silu_forward(y, tails, 4);
    r->be->silu_backward(dx, 0.0f, ones, tails, 4);
    CHECK(fabsf(y[0]) < 1e-30f && fabsf(y[1]) < 1e-30f && y[2] == 90.0f && y[3] == 1000.0f,
          "silu tails: %g %g %g %g", y[0], y[1], y[2], y[3]);
    CHECK(fabsf(dx[0]) < 1e-30f && fabsf(dx[1]) < 1e-30f && dx[2] == 1.0f && dx[3] == 1.0f,
          "silu' tails: %g %g %g %g", dx[0], dx[1], dx[2], dx[3]);
}

static void add_forward(const OpCase *c, OpRun *r) {
    r->be->add_forward(F(EL_Y), F(EL_A), F(EL_B), el_n(c));
}
/* the backward of a sum: dy to both operands, by accumulate */
static void add_backward(const OpCase *c, OpRun *r, float beta) {
    if (F(EL_DA)) r->be->accumulate(F(EL_DA), beta, F(EL_DY), el_n(c));
    if (F(EL_DB)) r->be->accumulate(F(EL_DB), beta, F(EL_DY), el_n(c));
}

static void add_check(const OpCase *c, OpRun *r) {
    int exact = 1;
    for (size_t i = 0; i < el_n(c); i++) exact &= F(EL_Y)[i] == F(EL_A)[i] + F(EL_B)[i];
    CHECK(exact, "add_forward is not a + b");
}

static void elementwise_case(unsigned modes, const char *name, size_t n, float lo, float hi,
                             int binary) {
    OpCase *c = add_case(modes, "%s n%zu", name, n);
    int a = input(c, "a", n, lo, hi);
    int b = binary ? input(c, "b", n, -1, 1) : absent(c);
    int dy = input(c, "dy", n, -1, 1);
    output(c, "y", n, dy);
    grad(c, binary ? "da" : "dx", a);
    if (binary) grad(c, "db", b);
    else absent(c);
    if (binary) set_op(c, add_forward, add_backward, add_check);
    else set_op(c, silu_forward, silu_backward, silu_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

/* ---- bias, dropout ---- */

enum { BI_X, BI_BIAS, BI_DY, BI_Y, BI_DX, BI_DBIAS, BI_CHANNEL };

static void add_bias_forward(const OpCase *c, OpRun *r) {
    r->be->add_bias_forward(F(BI_Y), F(BI_X), F(BI_BIAS), F(BI_CHANNEL), c->n, c->h, c->ch);
}
static void add_bias_backward(const OpCase *c, OpRun *r, float beta) {
    if (F(BI_DBIAS)) r->be->add_bias_backward(F(BI_DBIAS), beta, F(BI_DY), c->n, c->h, c->ch);
    if (F(BI_DX)) r->be->accumulate(F(BI_DX), beta, F(BI_DY), c->t[BI_X].n);
}

static void add_bias_check(const OpCase *c, OpRun *r) {
    int exact = 1;
    for (int s = 0; s < c->n; s++)
        for (int p = 0; p < c->h; p++)
            for (int ch = 0; ch < c->ch; ch++) {
                size_t i = ((size_t)s * c->h + p) * c->ch + ch;
                float b = F(BI_BIAS)[(size_t)s * c->ch + ch];
                if (F(BI_CHANNEL)) b = b + F(BI_CHANNEL)[ch];
                exact &= F(BI_Y)[i] == F(BI_X)[i] + b;
            }
    CHECK(exact, "%s: forward is not x + (bias[sample] + channel_bias)", c->name);
}

/* channel_bias: a conv bias folded into the add (its gradient is the graph's) */
static void add_bias_case_channel(unsigned modes, int n, int hw, int ch, int channel_bias) {
    OpCase *c = add_case(modes, "add_bias n%d hw%d c%d%s", n, hw, ch,
                         channel_bias ? " channel bias" : "");
    c->n = n, c->h = hw, c->ch = ch;
    size_t total = (size_t)n * hw * ch;
    int x = input(c, "x", total, -1, 1), bias = input(c, "bias", (size_t)n * ch, -1, 1);
    int dy = input(c, "dy", total, -1, 1);
    output(c, "y", total, dy);
    grad(c, "dx", x);
    grad(c, "dbias", bias);
    if (channel_bias) input(c, "channel_bias", (size_t)ch, -1, 1);
    else absent(c);
    set_op(c, add_bias_forward, add_bias_backward, add_bias_check);
    c->fd = FD_POINTWISE;
}

static void add_bias_case(unsigned modes, int n, int hw, int ch) {
    add_bias_case_channel(modes, n, hw, ch, 0);
}

enum { MP_X, MP_DY, MP_Y, MP_DX };

static void mean_pool_forward(const OpCase *c, OpRun *r) {
    r->be->mean_pool_forward(F(MP_Y), F(MP_X), c->n, c->h, c->ch);
}
static void mean_pool_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->mean_pool_backward(F(MP_DX), beta, F(MP_DY), c->n, c->h, c->ch);
}

static void mean_pool_check(const OpCase *c, OpRun *r) {
    double *want = xmalloc((size_t)c->n * c->ch * sizeof(double));
    for (int s = 0; s < c->n; s++)
        for (int ch = 0; ch < c->ch; ch++) {
            double sum = 0;
            for (int p = 0; p < c->h; p++) sum += F(MP_X)[((size_t)s * c->h + p) * c->ch + ch];
            want[(size_t)s * c->ch + ch] = sum / c->h;
        }
    expect_ref(c, "mean_pool forward", F(MP_Y), want, (size_t)c->n * c->ch, 1e-6);
    free(want);
}

static void mean_pool_case(unsigned modes, int n, int hw, int ch) {
    OpCase *c = add_case(modes, "mean_pool n%d hw%d c%d", n, hw, ch);
    c->n = n, c->h = hw, c->ch = ch;
    int x = input(c, "x", (size_t)n * hw * ch, -1, 1), dy = input(c, "dy", (size_t)n * ch, -1, 1);
    output(c, "y", (size_t)n * ch, dy);
    grad(c, "dx", x);
    set_op(c, mean_pool_forward, mean_pool_backward, mean_pool_check);
    c->fd = FD_POINTWISE;
}

enum { DO_X, DO_DY, DO_Y, DO_DX };

static void dropout_forward(const OpCase *c, OpRun *r) {
    r->be->dropout_forward(F(DO_Y), F(DO_X), c->n, (size_t)c->h * c->ch, c->p, c->key);
}
static void dropout_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->dropout_backward(F(DO_DX), beta, F(DO_DY), c->n, (size_t)c->h * c->ch, c->p, c->key);
}

static void dropout_check(const OpCase *c, OpRun *r) {
    size_t per = (size_t)c->h * c->ch, total = c->n * per;
    int exact = 1, kept = 0;
    for (int s = 0; s < c->n; s++)
        for (size_t k = 0; k < per; k++) {
            size_t i = s * per + k;
            int keep = philox_uniform(c->key, s, k) >= c->p;
            kept += keep;
            exact &= F(DO_Y)[i] == (keep ? F(DO_X)[i] * (1.0f / (1.0f - c->p)) : 0.0f);
        }
    CHECK(exact, "%s: forward does not follow philox_uniform >= p", c->name);
    if (c->p == 0.0f) CHECK(!memcmp(F(DO_Y), F(DO_X), total * 4), "dropout p=0 is not a copy");
    else CHECK(kept > 0.55 * total && kept < 0.85 * total, "dropout kept %d of %zu", kept, total);
}

/* per sample hw*ch elements */
static void dropout_case(unsigned modes, int n, int hw, int ch, float p, RngKey key) {
    OpCase *c = add_case(modes, "dropout n%d per-sample %d p%g", n, hw * ch, p);
    c->n = n, c->h = hw, c->ch = ch, c->p = p, c->key = key;
    size_t total = (size_t)n * hw * ch;
    int x = input(c, "x", total, 0.5f, 1.5f), dy = input(c, "dy", total, -1, 1);
    set_tol(c, output(c, "y", total, dy), 0.0);   /* the same mask */
    grad(c, "dx", x);
    set_op(c, dropout_forward, dropout_backward, dropout_check);
    c->fd = FD_POINTWISE;
}

static void elementwise_cases(void) {
    elementwise_case(MODE_ALL, "silu", 300, -8, 8, 0);
    elementwise_case(MODE_CUDA | MODE_BENCH, "silu", 10007, -6, 6, 0);
    elementwise_case(MODE_ALL, "add", 120, -1, 1, 1);
    elementwise_case(MODE_CUDA | MODE_BENCH, "add", 10007, -1, 1, 1);
    add_bias_case(MODE_ALL, 2, 5, 300);   /* c > 256: more than one channel block */
    add_bias_case_channel(MODE_ALL, 2, 5, 40, 1);
    add_bias_case_channel(MODE_CUDA | MODE_BENCH, 3, 50, 40, 1);
    add_bias_case(MODE_CUDA | MODE_BENCH, 3, 50, 40);
    add_bias_case(MODE_CUDA | MODE_BENCH, 2, 4096, 8);   /* several chunks per sample */
    mean_pool_case(MODE_ALL, 3, 7, 5);
    mean_pool_case(MODE_CUDA | MODE_BENCH, 4, 64, 256);
    /* 315 per sample: over one 256-element run, not a multiple of 4 */
    RngKey key = {42, RNG_STREAM_DROPOUT + 3, 17, 0};
    dropout_case(MODE_ALL, 3, 7, 45, 0.3f, key);
    dropout_case(MODE_ALL, 3, 7, 45, 0.0f, key);
    RngKey key2 = {42, RNG_STREAM_DROPOUT + 5, 9, 0};
    dropout_case(MODE_CUDA | MODE_BENCH, 3, 35, 3, 0.3f, key2);
    dropout_case(MODE_BENCH, 16, 1024, 128, 0.1f, key2);   /* the ResBlock's, at C = 128 */
}

/* ---- layout ---- */

enum { LA_A, LA_B, LA_DY, LA_Y, LA_DA, LA_DB };

static void upsample_forward(const OpCase *c, OpRun *r) {
    r->be->upsample2x_forward(F(LA_Y), F(LA_A), c->n, c->h, c->w, c->ch);
}
static void upsample_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->upsample2x_backward(F(LA_DA), beta, F(LA_DY), c->n, c->h, c->w, c->ch);
}

static void upsample_check(const OpCase *c, OpRun *r) {
    int exact = 1, h = c->h, w = c->w, ch = c->ch;
    for (int s = 0; s < c->n; s++)
        for (int oy = 0; oy < 2 * h; oy++)
            for (int ox = 0; ox < 2 * w; ox++)
                for (int k = 0; k < ch; k++)
                    exact &= F(LA_Y)[(((size_t)s * 2 * h + oy) * 2 * w + ox) * ch + k] ==
                             F(LA_A)[(((size_t)s * h + oy / 2) * w + ox / 2) * ch + k];
    CHECK(exact, "upsample2x forward is not nearest-neighbour");
}

static void upsample_case(unsigned modes, int n, int h, int w, int ch) {
    OpCase *c = add_case(modes, "upsample2x n%d %dx%d c%d", n, h, w, ch);
    c->n = n, c->h = h, c->w = w, c->ch = ch;
    size_t in = (size_t)n * h * w * ch;
    int x = input(c, "x", in, -1, 1);
    absent(c);
    int dy = input(c, "dy", 4 * in, -1, 1);
    set_tol(c, output(c, "y", 4 * in, dy), 0.0);
    grad(c, "dx", x);
    set_op(c, upsample_forward, upsample_backward, upsample_check);
    c->fd = FD_POINTWISE;
}

/* rows c->n, channels c->ch | c->oc */
static void concat_forward(const OpCase *c, OpRun *r) {
    r->be->concat_forward(F(LA_Y), F(LA_A), F(LA_B), (size_t)c->n, c->ch, c->oc);
}
static void concat_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->concat_backward(F(LA_DA), beta, F(LA_DB), beta, F(LA_DY), (size_t)c->n, c->ch, c->oc);
}

static void concat_check(const OpCase *c, OpRun *r) {
    int exact = 1, ca = c->ch, cb = c->oc;
    for (size_t row = 0; row < (size_t)c->n; row++)
        for (int k = 0; k < ca + cb; k++)
            exact &= F(LA_Y)[row * (ca + cb) + k] ==
                     (k < ca ? F(LA_A)[row * ca + k] : F(LA_B)[row * cb + k - ca]);
    CHECK(exact, "concat forward is not [a | b] per row");
}

static void concat_case(unsigned modes, int rows, int ca, int cb) {
    OpCase *c = add_case(modes, "concat rows%d %d|%d", rows, ca, cb);
    c->n = rows, c->ch = ca, c->oc = cb;
    int a = input(c, "a", (size_t)rows * ca, -1, 1), b = input(c, "b", (size_t)rows * cb, -1, 1);
    int dy = input(c, "dy", (size_t)rows * (ca + cb), -1, 1);
    output(c, "y", c->t[dy].n, dy);
    grad(c, "da", a);
    grad(c, "db", b);
    c->tol = 0.0;   /* copies */
    set_op(c, concat_forward, concat_backward, concat_check);
    c->fd = FD_POINTWISE;
}

static void layout_cases(void) {
    upsample_case(MODE_ALL, 2, 3, 5, 4);
    upsample_case(MODE_CUDA | MODE_BENCH, 2, 5, 3, 6);
    concat_case(MODE_ALL, 14, 3, 5);
    concat_case(MODE_CUDA | MODE_BENCH, 37, 5, 11);
}

/* ---- embeddings ---- */

enum { TE_T, TE_Y };

static void timestep_embedding_forward(const OpCase *c, OpRun *r) {
    r->be->timestep_embedding(F(TE_Y), F(TE_T), c->n, c->k);
}

/* The formula, in the arithmetic the op documents: diffusers forms the exponent from a
 * float32 arange, in float; frequency and argument in double. For integer t this is
 * what the op computed from int32 timesteps, so it must hold bit for bit. */
static void timestep_embedding_check(const OpCase *c, OpRun *r) {
    int dim = c->k, half = dim / 2, exact = 1;
    double worst_exact_exponent = 0;
    const float *t = F(TE_T), *y = F(TE_Y);
    for (int s = 0; s < c->n; s++)
        for (int i = 0; i < half; i++) {
            float exponent = (float)i * (float)-log(10000.0) / (float)(half - 1);
            double arg = (double)t[s] * exp((double)exponent);
            double exact_arg = t[s] * exp(-log(10000.0) * i / (half - 1));
            exact &= y[s * dim + i] == (float)sin(arg) && y[s * dim + half + i] == (float)cos(arg);
            worst_exact_exponent =
                fmax(worst_exact_exponent, fabs(y[s * dim + i] - sin(exact_arg)));
        }
    CHECK(exact, "%s: differs from the formula", c->name);
    /* the float exponent moves the phase at t=999 by at most ~1e-4 */
    CHECK(worst_exact_exponent <= 1e-3, "%s vs an all-double exponent: %g", c->name,
          worst_exact_exponent);
    if (t[0] == 0.0f)
        CHECK(y[0] == 0.0f && y[half] == 1.0f, "t=0 must embed as sin 0 = 0, cos 0 = 1");
}

static void timestep_embedding_case(unsigned modes, const char *what, int n, const float *t,
                                    int dim) {
    OpCase *c = add_case(modes, "timestep_embedding %s n%d dim%d", what, n, dim);
    c->n = n, c->k = dim;
    input_bytes(c, "t", (size_t)n, 4, t);
    output(c, "y", (size_t)n * dim, -1);
    set_op(c, timestep_embedding_forward, NULL, timestep_embedding_check);
}

enum { EM_IDS, EM_TABLE, EM_DY, EM_Y, EM_DTABLE };

static void embedding_forward(const OpCase *c, OpRun *r) {
    r->be->embedding_forward(F(EM_Y), I32(EM_IDS), F(EM_TABLE), c->n, c->k);
}
static void embedding_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->embedding_backward(F(EM_DTABLE), F(EM_DY), I32(EM_IDS), c->n, c->oc, c->k);
}

static void embedding_check(const OpCase *c, OpRun *r) {
    int dim = c->k, exact_y = 1, exact_d = 1;
    float *sum = calloc((size_t)c->oc * dim, sizeof(float));
    for (int i = 0; i < c->n; i++) {
        int id = I32(EM_IDS)[i];
        for (int j = 0; j < dim; j++) {
            exact_y &= F(EM_Y)[(size_t)i * dim + j] == F(EM_TABLE)[(size_t)id * dim + j];
            sum[(size_t)id * dim + j] += F(EM_DY)[(size_t)i * dim + j];   /* in sample order */
        }
    }
    for (size_t k = 0; k < (size_t)c->oc * dim; k++) exact_d &= F(EM_DTABLE)[k] == sum[k];
    CHECK(exact_y, "%s: forward is not the row gather", c->name);
    CHECK(exact_d, "%s: dtable is not the in-order row sum of dy (unused rows 0)", c->name);
    free(sum);
}

static void embedding_case(unsigned modes, int n, int rows, int dim) {
    OpCase *c = add_case(modes, "embedding n%d rows%d dim%d", n, rows, dim);
    c->n = n, c->oc = rows, c->k = dim;
    int32_t *ids = xmalloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        int id = (i * 7 + i / 3) % rows;
        ids[i] = id == rows - 2 ? 0 : id;
    }
    input_bytes(c, "ids", (size_t)n, 4, ids);   /* row rows-2 never used: its gradient is 0 */
    free(ids);
    int table = input(c, "table", (size_t)rows * dim, -1, 1);
    int dy = input(c, "dy", (size_t)n * dim, -1, 1);
    output(c, "y", (size_t)n * dim, dy);
    param_grad(c, "dtable", table);
    c->tol = 0.0;   /* a gather, and the same float sums in the same order */
    set_op(c, embedding_forward, embedding_backward, embedding_check);
    c->fd = FD_POINTWISE;
}

static void embedding_cases(void) {
    static const float ints[6] = {0, 1, 17, 250, 500, 999}, gpu_ints[6] = {0, 1, 10, 500, 998, 999};
    /* flow matching's 1000*sigma */
    static const float reals[6] = {0.0f, 0.5f, 12.25f, 123.456f, 987.654f, 999.9f};
    timestep_embedding_case(MODE_ALL, "integer t", 6, ints, 32);
    timestep_embedding_case(MODE_CUDA | MODE_BENCH, "integer t", 6, gpu_ints, 32);
    timestep_embedding_case(MODE_ALL, "real t", 6, reals, 64);
    embedding_case(MODE_ALL, 9, 5, 7);
    embedding_case(MODE_CUDA | MODE_BENCH, 64, 10, 256);
    embedding_case(MODE_CUDA | MODE_BENCH, 50, 12, 300);   /* columns over one block's threads */
}

/* ---- dense ---- */

enum { LI_X, LI_W, LI_B, LI_DY, LI_Y, LI_DX, LI_DW, LI_DB };

static void linear_forward(const OpCase *c, OpRun *r) {
    r->be->linear_forward(F(LI_Y), F(LI_X), F(LI_W), F(LI_B), c->n, c->k, c->oc);
}
static void linear_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->linear_backward(F(LI_DX), beta, F(LI_DW), F(LI_DB), F(LI_DY), F(LI_X), F(LI_W), c->n,
                           c->k, c->oc);
}

static void linear_check(const OpCase *c, OpRun *r) {
    int m = c->n, k = c->k, n = c->oc;
    const float *x = F(LI_X), *w = F(LI_W), *b = F(LI_B), *dy = F(LI_DY);
    double *y = zeros((size_t)m * n), *dx = zeros((size_t)m * k), *dw = zeros((size_t)n * k);
    double *db = zeros((size_t)n);
    for (int i = 0; i < m; i++)
        for (int o = 0; o < n; o++) {
            size_t yi = (size_t)i * n + o;
            y[yi] = b ? b[o] : 0;
            db[o] += dy[yi];
            for (int j = 0; j < k; j++) {
                y[yi] += (double)x[(size_t)i * k + j] * w[(size_t)o * k + j];
                dx[(size_t)i * k + j] += (double)dy[yi] * w[(size_t)o * k + j];
                dw[(size_t)o * k + j] += (double)dy[yi] * x[(size_t)i * k + j];
            }
        }
    expect_ref(c, "forward", F(LI_Y), y, (size_t)m * n, c->ref_tol);
    expect_ref(c, "dx", F(LI_DX), dx, (size_t)m * k, c->ref_tol);
    expect_ref(c, "dw", F(LI_DW), dw, (size_t)n * k, c->ref_tol);
    if (b) expect_ref(c, "db", F(LI_DB), db, (size_t)n, c->ref_tol);
    free(y), free(dx), free(dw), free(db);
}

static OpCase *linear_case(unsigned modes, int m, int k, int n, int bias) {
    OpCase *c = add_case(modes, "linear %dx%dx%d%s", m, k, n, bias ? "" : " no bias");
    c->n = m, c->k = k, c->oc = n;
    int x = input(c, "x", (size_t)m * k, -1, 1), w = input(c, "w", (size_t)n * k, -1, 1);
    int b = bias ? input(c, "b", (size_t)n, -1, 1) : absent(c);
    int dy = input(c, "dy", (size_t)m * n, -1, 1);
    output(c, "y", (size_t)m * n, dy);
    grad(c, "dx", x);
    param_grad(c, "dw", w);
    if (bias) param_grad(c, "db", b);
    else absent(c);
    set_op(c, linear_forward, linear_backward, linear_check);
    c->ref_tol = 1e-5, c->beta_tol = 1e-6, c->fd = FD_DENSE;
    return c;
}

enum { AT_QKV, AT_DOUT, AT_OUT, AT_PROBS, AT_DQKV };

static void attention_setup(const OpCase *c, OpRun *r) {
    size_t n = (size_t)c->n * c->h * c->h;
    r->workspace = r->be->alloc(n * sizeof(float));
    r->be->fill(r->workspace, NAN, n);
}
static void attention_forward(const OpCase *c, OpRun *r) {
    r->be->attention_forward(F(AT_OUT), F(AT_PROBS), F(AT_QKV), c->n, c->h, c->ch, c->scale);
}
static void attention_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->attention_backward(F(AT_DQKV), F(AT_DOUT), F(AT_QKV), F(AT_PROBS), c->n, c->h, c->ch,
                              c->scale, r->workspace);
}

/* Direct double attention of one sample: out (L, C), probs (L, L), dqkv (L, 3C). */
static void attention_reference(const float *qkv, const float *dout, int l, int c, double scale,
                                double *out, double *probs, double *dqkv) {
    const int ld = 3 * c;
    for (int i = 0; i < l; i++) {
        double *p = probs + (size_t)i * l, max = -INFINITY, sum = 0;
        for (int j = 0; j < l; j++) {
            double dot = 0;
            for (int d = 0; d < c; d++) dot += (double)qkv[i * ld + d] * qkv[j * ld + c + d];
            p[j] = dot * scale;
            max = p[j] > max ? p[j] : max;
        }
        for (int j = 0; j < l; j++) sum += p[j] = exp(p[j] - max);
        for (int j = 0; j < l; j++) p[j] /= sum;
        for (int d = 0; d < c; d++) {
            double acc = 0;
            for (int j = 0; j < l; j++) acc += p[j] * qkv[j * ld + 2 * c + d];
            out[(size_t)i * c + d] = acc;
        }
    }
    for (int i = 0; i < l; i++) {
        const double *p = probs + (size_t)i * l;
        double weighted = 0, *dscore = zeros((size_t)l);
        for (int j = 0; j < l; j++) {
            for (int d = 0; d < c; d++) {
                dscore[j] += (double)dout[i * c + d] * qkv[j * ld + 2 * c + d];
                dqkv[j * ld + 2 * c + d] += p[j] * dout[i * c + d];   /* dv */
            }
            weighted += dscore[j] * p[j];
        }
        for (int j = 0; j < l; j++) {
            double ds = p[j] * (dscore[j] - weighted) * scale;
            for (int d = 0; d < c; d++) {
                dqkv[i * ld + d] += ds * qkv[j * ld + c + d];       /* dq */
                dqkv[j * ld + c + d] += ds * qkv[i * ld + d];       /* dk */
            }
        }
        free(dscore);
    }
}

static void attention_check(const OpCase *c, OpRun *r) {
    int b = c->n, l = c->h, ch = c->ch;
    size_t n_out = c->t[AT_OUT].n, n_probs = c->t[AT_PROBS].n, n_qkv = c->t[AT_QKV].n;
    double *out = zeros(n_out), *probs = zeros(n_probs), *dqkv = zeros(n_qkv);
    for (int s = 0; s < b; s++)
        attention_reference(F(AT_QKV) + (size_t)s * l * 3 * ch, F(AT_DOUT) + (size_t)s * l * ch,
                            l, ch, c->scale, out + (size_t)s * l * ch, probs + (size_t)s * l * l,
                            dqkv + (size_t)s * l * 3 * ch);
    expect_ref(c, "forward", F(AT_OUT), out, n_out, c->ref_tol);
    expect_ref(c, "probs", F(AT_PROBS), probs, n_probs, c->ref_tol);
    expect_ref(c, "dqkv", F(AT_DQKV), dqkv, n_qkv, c->ref_tol);
    free(out), free(probs), free(dqkv);
}

static OpCase *attention_case(unsigned modes, int b, int l, int ch) {
    OpCase *c = add_case(modes, "attention b%d l%d c%d", b, l, ch);
    c->n = b, c->h = l, c->ch = ch, c->scale = 1.0f / sqrtf((float)ch);
    /* amplitude 2 makes the softmax far from uniform */
    int qkv = input(c, "qkv", (size_t)b * l * 3 * ch, -2, 2);
    int dout = input(c, "dout", (size_t)b * l * ch, -1, 1);
    output(c, "out", c->t[dout].n, dout);
    output(c, "probs", (size_t)b * l * l, -1);
    param_grad(c, "dqkv", qkv);   /* overwritten */
    c->setup = attention_setup;
    set_op(c, attention_forward, attention_backward, attention_check);
    c->ref_tol = 1e-5, c->fd = FD_DENSE;
    return c;
}

static void dense_cases(void) {
    linear_case(MODE_ALL, 7, 5, 6, 1);
    linear_case(MODE_ALL, 3, 4, 2, 0);
    linear_case(MODE_ALL, 300, 256, 512, 1)->fd.probes = 0;
    linear_case(MODE_CUDA | MODE_BENCH, 6, 5, 7, 1);
    linear_case(MODE_CUDA | MODE_BENCH, 5000, 24, 40, 1);   /* the bias gradient over chunks */
    attention_case(MODE_ALL, 2, 7, 8);
    attention_case(MODE_ALL, 2, 64, 32)->fd.probes = 0;
    attention_case(MODE_CUDA | MODE_BENCH, 2, 16, 8);
    attention_case(MODE_CUDA | MODE_BENCH, 3, 20, 12);   /* rows shorter than a warp's stride */
    attention_case(MODE_BENCH, 16, 256, 128);
}

/* ---- fused diffusion steps ---- */

enum { QS_IMAGES, QS_T, QS_SA, QS_S1, QS_XT, QS_TARGET, QS_X0 };
enum { QS_STEPS = 1000 };

static void q_sample_forward(const OpCase *c, OpRun *r) {
    r->be->q_sample_images(F(QS_XT), F(QS_TARGET), F(QS_X0), r->t[QS_IMAGES], I32(QS_T),
                           F(QS_SA), F(QS_S1), c->n, c->h, c->w, c->ch, (PredictionType)c->k,
                           c->flag, c->key, c->key2);
}

/* One sample by the op's formulas, evaluated here independently of the backend. */
static void q_sample_expected(const OpCase *c, OpRun *r, int s, float *x_t, float *target) {
    int flipped = c->flag && philox_uniform(c->key, s, 0) < 0.5f, t = I32(QS_T)[s];
    float a = F(QS_SA)[t], b = F(QS_S1)[t];
    const uint8_t *images = r->t[QS_IMAGES];
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            for (int ch = 0; ch < c->ch; ch++) {
                size_t e = ((size_t)y * c->w + x) * c->ch + ch;
                int sx = flipped ? c->w - 1 - x : x;
                uint8_t u8 = images[(((size_t)s * c->h + y) * c->w + sx) * c->ch + ch];
                float x0 = (float)u8 / 127.5f - 1.0f, eps = philox_normal(c->key2, s, e);
                x_t[e] = a * x0 + b * eps;
                target[e] = c->k == PRED_EPS ? eps : c->k == PRED_X0 ? x0 : a * eps - b * x0;
            }
}

/* Without flip (x0 target): the exact scaling; then with flip, about half the samples
 * are the horizontal mirror of these. */
static void q_sample_check_flip(const OpCase *c, OpRun *r, size_t per) {
    size_t total = c->n * per;
    const float *plain = F(QS_TARGET);
    CHECK(plain[0] == -1.0f && plain[1] == 1.0f, "pixel 0 -> %g, 255 -> %g", plain[0], plain[1]);
    CHECK(!memcmp(F(QS_X0), plain, total * 4), "the x0 output equals the x0 target");
    int in_range = 1;
    for (size_t i = 0; i < total; i++) in_range &= plain[i] >= -1.0f && plain[i] <= 1.0f;
    CHECK(in_range, "x0 outside [-1, 1]");
    float *flipped = xmalloc(total * 4), *x_t = xmalloc(total * 4);
    r->be->q_sample_images(x_t, flipped, NULL, r->t[QS_IMAGES], I32(QS_T), F(QS_SA), F(QS_S1),
                           c->n, c->h, c->w, c->ch, PRED_X0, 1, c->key, c->key2);
    int mirrored = 0, consistent = 1;
    for (int s = 0; s < c->n; s++) {
        int same = !memcmp(flipped + s * per, plain + s * per, per * 4);
        mirrored += !same;
        for (int y = 0; y < c->h && !same; y++)
            for (int x = 0; x < c->w; x++)
                consistent &= !memcmp(flipped + s * per + (y * c->w + x) * c->ch,
                                      plain + s * per + (y * c->w + c->w - 1 - x) * c->ch,
                                      c->ch * sizeof(float));
    }
    CHECK(mirrored >= 70 && mirrored <= 130, "flipped %d of %d samples", mirrored, c->n);
    CHECK(consistent, "a flipped sample is not the horizontal mirror");
    free(flipped), free(x_t);
}

static void q_sample_check(const OpCase *c, OpRun *r) {
    size_t per = (size_t)c->h * c->w * c->ch;
    float *ex = xmalloc(per * 4), *et = xmalloc(per * 4);
    int exact = 1;
    for (int s = 0; s < c->n; s++) {
        q_sample_expected(c, r, s, ex, et);
        exact &= !memcmp(F(QS_XT) + s * per, ex, per * 4) &&
                 !memcmp(F(QS_TARGET) + s * per, et, per * 4);
    }
    CHECK(exact, "%s: differs from the formula", c->name);
    if (c->k == PRED_X0 && !c->flag && F(QS_X0)) q_sample_check_flip(c, r, per);
    free(ex), free(et);
}

/* The timesteps (the first and the last among them) and the sqrt tables of a q_sample
 * case: the inputs after its x0. */
static void q_sample_tables(OpCase *c, int n) {
    int32_t *t = xmalloc((size_t)n * sizeof(int32_t));
    for (int s = 0; s < n; s++) t[s] = s == 1 ? 0 : s == 2 ? QS_STEPS - 1 : (s * 389) % QS_STEPS;
    float sqrt_ac[QS_STEPS], sqrt_1m_ac[QS_STEPS];
    for (int k = 0; k < QS_STEPS; k++) {
        double ac = exp(-5.0 * k / QS_STEPS);
        sqrt_ac[k] = (float)sqrt(ac);
        sqrt_1m_ac[k] = (float)sqrt(1 - ac);
    }
    input_bytes(c, "t", (size_t)n, 4, t);
    input_bytes(c, "sqrt_ac", QS_STEPS, 4, sqrt_ac);
    input_bytes(c, "sqrt_1m_ac", QS_STEPS, 4, sqrt_1m_ac);
    free(t);
}

static void q_sample_case(unsigned modes, int n, int h, int w, int ch, PredictionType pred,
                          int flip, int with_x0, uint32_t seed) {
    OpCase *c = add_case(modes, "q_sample_images n%d %dx%dx%d pred %d flip %d%s", n, h, w, ch,
                         pred, flip, with_x0 ? " x0" : "");
    c->n = n, c->h = h, c->w = w, c->ch = ch, c->k = pred, c->flag = flip;
    c->key = (RngKey){seed, RNG_STREAM_FLIP, 3, 0};
    c->key2 = (RngKey){seed, RNG_STREAM_EPS, 3, 0};
    size_t total = (size_t)n * h * w * ch;
    uint8_t *images = xmalloc(total);
    for (size_t i = 0; i < total; i++) images[i] = (uint8_t)((i * 37 + i / 7) % 256);
    images[0] = 0, images[1] = 255;
    input_bytes(c, "images", total, 1, images);
    q_sample_tables(c, n);
    output(c, "x_t", total, -1);
    set_tol(c, output(c, "target", total, -1), pred == PRED_EPS ? 1e-6 : 1e-5);
    if (with_x0) set_tol(c, output(c, "x0", total, -1), 0.0);
    else absent(c);
    set_op(c, q_sample_forward, NULL, q_sample_check);
    free(images);
}

enum { QF_X0, QF_T, QF_SA, QF_S1, QF_XT, QF_TARGET };

static void q_sample_float_forward(const OpCase *c, OpRun *r) {
    r->be->q_sample(F(QF_XT), F(QF_TARGET), F(QF_X0), I32(QF_T), F(QF_SA), F(QF_S1), c->n,
                    (size_t)c->k, (PredictionType)c->flag, c->key2);
}

static void q_sample_float_check(const OpCase *c, OpRun *r) {
    size_t d = (size_t)c->k;
    int exact = 1;
    for (int s = 0; s < c->n; s++) {
        int t = I32(QF_T)[s];
        float a = F(QF_SA)[t], b = F(QF_S1)[t];
        for (size_t e = 0; e < d; e++) {
            float x0 = F(QF_X0)[s * d + e], eps = philox_normal(c->key2, s, e);
            float target = c->flag == PRED_EPS ? eps : c->flag == PRED_X0 ? x0 : a * eps - b * x0;
            exact &= F(QF_XT)[s * d + e] == a * x0 + b * eps &&
                     F(QF_TARGET)[s * d + e] == target;
        }
    }
    CHECK(exact, "%s: differs from the formula", c->name);
}

/* Float data (latents): per sample d values, any channel count. */
static void q_sample_float_case(unsigned modes, int n, int d, PredictionType pred) {
    OpCase *c = add_case(modes, "q_sample float n%d d%d pred %d", n, d, pred);
    c->n = n, c->k = d, c->flag = pred;
    c->key2 = (RngKey){11, RNG_STREAM_EPS, 5, 0};
    input(c, "x0", (size_t)n * d, -3, 3);
    q_sample_tables(c, n);
    output(c, "x_t", (size_t)n * d, -1);
    set_tol(c, output(c, "target", (size_t)n * d, -1), pred == PRED_EPS ? 1e-6 : 1e-5);
    set_op(c, q_sample_float_forward, NULL, q_sample_float_check);
}

enum { MS_PRED, MS_TARGET, MS_W, MS_LOSS, MS_DPRED };

static void mse_forward(const OpCase *c, OpRun *r) {
    r->be->mse_loss(F(MS_LOSS), NULL, F(MS_PRED), F(MS_TARGET), c->n, (size_t)c->k);
}
/* dpred is the gradient of the batch mean: the loss weights are 1/N */
static void mse_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->mse_loss(F(MS_LOSS), F(MS_DPRED), F(MS_PRED), F(MS_TARGET), c->n, (size_t)c->k);
}

static void mse_check(const OpCase *c, OpRun *r) {
    size_t d = (size_t)c->k, total = c->n * d;
    double *loss = zeros(c->n), *dpred = zeros(total);
    for (int s = 0; s < c->n; s++) {
        for (size_t e = 0; e < d; e++) {
            double diff = (double)F(MS_PRED)[s * d + e] - F(MS_TARGET)[s * d + e];
            loss[s] += diff * diff / d;
            dpred[s * d + e] = (float)(2 * diff / total);
        }
    }
    float *eval = xmalloc(c->n * sizeof(float));
    mse_forward(c, &(OpRun){.be = r->be, .t = {[MS_PRED] = r->t[MS_PRED],
                                                [MS_TARGET] = r->t[MS_TARGET], [MS_LOSS] = eval}});
    CHECK(!memcmp(eval, F(MS_LOSS), c->n * sizeof(float)),
          "mse with dpred NULL gives another loss");
    expect_ref(c, "loss", F(MS_LOSS), loss, c->n, c->ref_tol);
    expect_ref(c, "dpred", F(MS_DPRED), dpred, total, c->ref_tol);
    free(loss), free(dpred), free(eval);
}

static void mse_case(unsigned modes, int n, size_t d, float lo, float hi) {
    OpCase *c = add_case(modes, "mse_loss n%d d%zu", n, d);
    c->n = n, c->k = (int)d;
    int pred = input(c, "pred", n * d, lo, hi);
    input(c, "target", n * d, lo, hi);
    float *w = xmalloc(n * sizeof(float));
    for (int s = 0; s < n; s++) w[s] = 1.0f / n;
    int weights = input_bytes(c, "weights", n, 4, w);
    free(w);
    output(c, "loss", n, weights);
    param_grad(c, "dpred", pred);
    set_op(c, mse_forward, mse_backward, mse_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

enum { CE_LOGITS, CE_LABELS, CE_WEIGHTS, CE_LOSS, CE_DLOGITS };

static void cross_entropy_forward(const OpCase *c, OpRun *r) {
    r->be->cross_entropy(F(CE_LOSS), NULL, NULL, F(CE_LOGITS), I32(CE_LABELS), c->n, c->k,
                         1.0f / c->n);
}
/* dlogits is the gradient of the batch mean: the loss weights are 1/N */
static void cross_entropy_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->cross_entropy(F(CE_LOSS), NULL, F(CE_DLOGITS), F(CE_LOGITS), I32(CE_LABELS), c->n,
                         c->k, 1.0f / c->n);
}

/* The float64 softmax, and the accuracy flag against a plain argmax. */
static void cross_entropy_check(const OpCase *c, OpRun *r) {
    const int n = c->n, k = c->k;
    double *loss = zeros(n), *dlogits = zeros((size_t)n * k);
    float *correct = xmalloc(n * sizeof(float));
    int flags_ok = 1;
    r->be->cross_entropy(F(CE_LOSS), correct, NULL, F(CE_LOGITS), I32(CE_LABELS), n, k, 1.0f);
    for (int s = 0; s < n; s++) {
        const float *z = F(CE_LOGITS) + (size_t)s * k;
        double sum = 0;
        int best = 0;
        for (int j = 0; j < k; j++) {
            sum += exp((double)z[j]);
            if (z[j] > z[best]) best = j;
        }
        int y = I32(CE_LABELS)[s];
        loss[s] = log(sum) - z[y];
        for (int j = 0; j < k; j++)
            dlogits[(size_t)s * k + j] = (exp((double)z[j]) / sum - (j == y)) / n;
        flags_ok &= correct[s] == (best == y ? 1.0f : 0.0f);
    }
    CHECK(flags_ok, "%s: correct is not (argmax == label)", c->name);
    expect_ref(c, "loss", F(CE_LOSS), loss, n, c->ref_tol);
    expect_ref(c, "dlogits", F(CE_DLOGITS), dlogits, (size_t)n * k, c->ref_tol);
    free(loss), free(dlogits), free(correct);
}

static void cross_entropy_case(unsigned modes, int n, int classes, float range) {
    OpCase *c = add_case(modes, "cross_entropy n%d classes%d range%g", n, classes, range);
    c->n = n, c->k = classes;
    int logits = input(c, "logits", (size_t)n * classes, -range, range);
    int32_t *labels = xmalloc(n * sizeof(int32_t));
    for (int s = 0; s < n; s++) labels[s] = (s * 3 + 1) % classes;
    input_bytes(c, "labels", n, 4, labels);
    free(labels);
    float *w = xmalloc(n * sizeof(float));
    for (int s = 0; s < n; s++) w[s] = 1.0f / n;
    int weights = input_bytes(c, "weights", n, 4, w);
    free(w);
    output(c, "loss", n, weights);
    param_grad(c, "dlogits", logits);
    set_op(c, cross_entropy_forward, cross_entropy_backward, cross_entropy_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

enum { SU_X_IN, SU_OUT, SU_X };

static void sample_update_forward(const OpCase *c, OpRun *r) {
    r->be->copy(F(SU_X), F(SU_X_IN), c->t[SU_X].n * sizeof(float));
    r->be->sample_update(F(SU_X), F(SU_OUT), c->n, (size_t)c->k, c->update, c->key);
}

/* The update's formula, per element, in float as the op documents it. */
static float sample_update_expected(const OpCase *c, OpRun *r, int s, size_t e) {
    const SampleUpdate *u = &c->update;
    size_t i = s * (size_t)c->k + e;
    float x_in = F(SU_X_IN)[i], z = philox_normal(c->key, s, e);
    if (u->learned_var) {
        size_t pixel = e / u->channels, k = e % u->channels, o = (s * (size_t)c->k / u->channels
                                                                  + pixel) * 2 * u->channels;
        float pred = F(SU_OUT)[o + k], v = F(SU_OUT)[o + u->channels + k];
        float scale = expf(0.5f * (u->post_logvar + 0.5f * (v + 1.0f) * u->log_var_range));
        float x0 = u->x0_from_xt * x_in + u->x0_from_out * pred;
        if (u->clip_x0) x0 = fminf(1.0f, fmaxf(-1.0f, x0));
        return u->coef_x0 * x0 + u->coef_xt * x_in + u->sigma * scale * z;
    }
    float x0 = u->x0_from_xt * x_in + u->x0_from_out * F(SU_OUT)[i];
    if (u->clip_x0) x0 = fminf(1.0f, fmaxf(-1.0f, x0));
    return u->coef_x0 * x0 + u->coef_xt * x_in + u->sigma * z;
}

static void sample_update_check(const OpCase *c, OpRun *r) {
    double worst = 0;
    for (int s = 0; s < c->n; s++)
        for (size_t e = 0; e < (size_t)c->k; e++)
            worst = fmax(worst, fabs(F(SU_X)[s * (size_t)c->k + e] -
                                     sample_update_expected(c, r, s, e)));
    CHECK(worst <= c->ref_tol, "%s: differs from the formula by %g", c->name, worst);
}

/* d elements per sample; learned variances read 2d outputs per sample */
static void sample_update_case(unsigned modes, const char *what, int n, size_t d, SampleUpdate u,
                               double ref_tol) {
    OpCase *c = add_case(modes, "sample_update %s n%d d%zu", what, n, d);
    c->n = n, c->k = (int)d, c->update = u, c->ref_tol = ref_tol;
    c->key = (RngKey){5, RNG_STREAM_SAMPLE_Z, 500, 0};
    input(c, "x", n * d, -2, 2);
    input(c, "model_out", n * d * (u.learned_var ? 2 : 1), u.learned_var ? -1 : -3,
          u.learned_var ? 1 : 3);
    output(c, "x updated", n * d, -1);
    set_op(c, sample_update_forward, NULL, sample_update_check);
}

/* The sampling loop's ops on backend tables: sample_update_indexed is sample_update with
 * table[*step] and the key's step from *step, bit for bit; fill_indexed writes times[*step];
 * advance_step moves the counter. */
enum { SUI_X_IN, SUI_OUT, SUI_TABLE, SUI_TIMES, SUI_STEP_IN, SUI_X, SUI_T, SUI_STEP };
enum { SUI_ROWS = 3, SUI_ROW = 1 };
#define SUI_TABLE_FLOATS (SUI_ROWS * sizeof(SampleUpdate) / sizeof(float))

static void sample_update_indexed_forward(const OpCase *c, OpRun *r) {
    const int32_t *step_in = (const int32_t *)F(SUI_STEP_IN);
    int32_t *step = (int32_t *)F(SUI_STEP);
    r->be->copy(F(SUI_X), F(SUI_X_IN), c->t[SUI_X].n * sizeof(float));
    r->be->sample_update_indexed(F(SUI_X), F(SUI_OUT), c->n, (size_t)c->k,
                                 (const SampleUpdate *)F(SUI_TABLE), step_in,
                                 (RngKey){5, RNG_STREAM_SAMPLE_Z, 0, 0});
    r->be->fill_indexed(F(SUI_T), c->t[SUI_T].n, F(SUI_TIMES), step_in);
    r->be->copy(step, step_in, sizeof *step);
    r->be->advance_step(step, -1);
}

static void sample_update_indexed_check(const OpCase *c, OpRun *r) {
    const SampleUpdate *table = (const SampleUpdate *)F(SUI_TABLE);
    size_t n = c->t[SUI_X].n, bytes = n * sizeof(float);
    float *want = xmalloc(bytes);
    memcpy(want, F(SUI_X_IN), bytes);
    r->be->sample_update(want, F(SUI_OUT), c->n, (size_t)c->k, table[SUI_ROW],
                         (RngKey){5, RNG_STREAM_SAMPLE_Z, SUI_ROW, 0});
    CHECK(!memcmp(want, F(SUI_X), bytes), "%s: not sample_update of row %d with step %d",
          c->name, SUI_ROW, SUI_ROW);
    int same_time = 1;
    for (size_t i = 0; i < c->t[SUI_T].n; i++) same_time &= F(SUI_T)[i] == F(SUI_TIMES)[SUI_ROW];
    CHECK(same_time, "fill_indexed: not times[%d] everywhere", SUI_ROW);
    CHECK(*(const int32_t *)F(SUI_STEP) == SUI_ROW - 1, "advance_step: %d, want %d",
          *(const int32_t *)F(SUI_STEP), SUI_ROW - 1);
    free(want);
}

static void sample_update_indexed_case(unsigned modes, int n, size_t d) {
    OpCase *c = add_case(modes, "sample_update_indexed, fill_indexed, advance_step n%d d%zu", n, d);
    c->n = n, c->k = (int)d;
    SampleUpdate table[SUI_ROWS] = {
        {.x0_from_xt = 1.0f, .coef_x0 = 0.5f},
        {.x0_from_xt = 1.3f, .x0_from_out = -0.7f, .coef_x0 = 0.4f, .coef_xt = 0.55f,
         .sigma = 0.3f, .clip_x0 = 1},
        {.x0_from_out = 1.0f, .coef_xt = 2.0f, .sigma = 0.9f},
    };
    const float times[SUI_ROWS] = {3, 250, 999};
    const int32_t step = SUI_ROW;
    input(c, "x", (size_t)n * d, -2, 2);
    input(c, "model_out", (size_t)n * d, -3, 3);
    input_bytes(c, "update table", SUI_TABLE_FLOATS, sizeof(float), table);
    input_bytes(c, "times", SUI_ROWS, sizeof(float), times);
    input_bytes(c, "step", 1, sizeof(int32_t), &step);
    output(c, "x updated", (size_t)n * d, -1);
    output(c, "time", (size_t)n, -1);
    output(c, "step advanced", 1, -1);
    set_op(c, sample_update_indexed_forward, NULL, sample_update_indexed_check);
    c->tol = 0;
}

enum { GC_PAIR, GC_OUT };

static void guidance_combine_forward(const OpCase *c, OpRun *r) {
    r->be->guidance_combine(F(GC_OUT), F(GC_PAIR), c->n, (size_t)c->k, c->ch, c->flag, c->scale);
}

/* bit for bit: fmaf(s, cond, (1-s) uncond) on the prediction channels, cond's variances */
static void guidance_combine_check(const OpCase *c, OpRun *r) {
    const size_t c_out = (size_t)c->ch * (c->flag ? 2 : 1), per = (size_t)c->k * c_out;
    int exact = 1;
    for (size_t i = 0; i < c->n * per; i++) {
        float cond = F(GC_PAIR)[i], uncond = F(GC_PAIR)[c->n * per + i];
        float want = i % c_out < (size_t)c->ch ? fmaf(c->scale, cond, (1.0f - c->scale) * uncond)
                                               : cond;
        exact &= F(GC_OUT)[i] == want;
    }
    CHECK(exact, "%s: differs from the formula", c->name);
}

static void guidance_combine_case(unsigned modes, int n, int pixels, int ch, int learned_var,
                                  float scale) {
    OpCase *c = add_case(modes, "guidance_combine n%d p%d c%d learned %d s %g", n, pixels, ch,
                         learned_var, scale);
    c->n = n, c->k = pixels, c->ch = ch, c->flag = learned_var, c->scale = scale;
    size_t per = (size_t)pixels * ch * (learned_var ? 2 : 1);
    input(c, "pair", 2 * n * per, -3, 3);
    output(c, "out", n * per, -1);
    set_op(c, guidance_combine_forward, NULL, guidance_combine_check);
    set_tol(c, GC_OUT, 0);   /* one fmaf on both backends */
}

static void normal_fill_forward(const OpCase *c, OpRun *r) {
    r->be->normal_fill(F(0), c->n, (size_t)c->k, c->key);
}

/* The draws are philox_normal's, with the moments of N(0, 1); the uniforms they come
 * from stay inside (0, 1). */
static void normal_fill_check(const OpCase *c, OpRun *r) {
    size_t d = (size_t)c->k, total = c->n * d;
    int exact = 1;
    double sum = 0, sum2 = 0;
    for (int s = 0; s < c->n; s++)
        for (size_t e = 0; e < d; e++) {
            float v = F(0)[s * d + e];
            exact &= v == philox_normal(c->key, s, e);
            sum += v;
            sum2 += (double)v * v;
        }
    double mean = sum / total, var = sum2 / total - mean * mean;
    CHECK(exact, "normal_fill differs from philox_normal");
    CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.01, "normal mean %g variance %g", mean, var);
    CHECK(philox_u01(0) > 0.0f, "philox_u01(0) = %g is not > 0", philox_u01(0));
    CHECK(philox_u01(0xFFFFFFFFu) < 1.0f, "philox_u01(0xFFFFFFFF) = %.9g is not < 1",
          philox_u01(0xFFFFFFFFu));
    int inside = 1;
    double usum = 0;
    for (size_t i = 0; i < total; i++) {
        float u = philox_uniform(c->key, 1, i);
        inside &= u > 0.0f && u < 1.0f;
        usum += u;
    }
    CHECK(inside, "philox_uniform left the open interval (0, 1)");
    CHECK(fabs(usum / total - 0.5) < 0.01, "uniform mean %g", usum / total);
}

static void normal_fill_case(unsigned modes, int n, size_t d, RngKey key) {
    OpCase *c = add_case(modes, "normal_fill n%d d%zu", n, d);
    c->n = n, c->k = (int)d, c->key = key;
    set_tol(c, output(c, "z", n * d, -1), 1e-6);
    set_op(c, normal_fill_forward, NULL, normal_fill_check);
}

/* The fused DDPM losses (checked on the CPU against improved-diffusion by test_vlb and
 * test_torch_reference): L_simple alone, and hybrid L_simple + L_t with learned
 * variances, at timesteps including 0 (the decoder likelihood) and with x0 on the 8-bit
 * grid, its edge bins included. */
enum { DL_TABLE0, DL_T = 7, DL_X0, DL_XT, DL_TARGET, DL_WEIGHT, DL_OUT, DL_MSE, DL_VB, DL_DOUT };
enum { DL_N = 4, DL_HW = 30, DL_C = 3, DL_STEPS = 100 };

static void diffusion_loss_forward(const OpCase *c, OpRun *r) {
    DiffusionTables tb = {F(0), F(1), F(2), F(3), F(4), F(5), F(6)};
    r->be->diffusion_loss(F(DL_MSE), F(DL_VB), F(DL_DOUT), F(DL_OUT), F(DL_TARGET), F(DL_X0),
                          F(DL_XT), I32(DL_T), F(DL_WEIGHT), DL_N, DL_HW, DL_C, c->spec, tb);
}

static void diffusion_loss_case(int k, LossSpec spec) {
    OpCase *c = add_case(MODE_CUDA | MODE_BENCH, "diffusion_loss spec %d", k);
    c->spec = spec;
    float tables[7][DL_STEPS];   /* a, b, coef1, coef2, post_logvar, log_var_range, fixed */
    for (int t = 0; t < DL_STEPS; t++) {
        double beta = 1e-4 + (0.02 - 1e-4) * t / (DL_STEPS - 1);
        double ac = exp(-2.0 * (t + 1) / DL_STEPS);
        tables[0][t] = (float)sqrt(1 / ac);
        tables[1][t] = (float)-sqrt(1 / ac - 1);
        tables[2][t] = (float)(0.3 + 0.6 * t / DL_STEPS);
        tables[3][t] = (float)(0.9 - 0.5 * t / DL_STEPS);
        tables[4][t] = (float)log(beta * 0.8);
        tables[5][t] = (float)(log(beta) - log(beta * 0.8));
        tables[6][t] = (float)log(beta * 0.9);
    }
    for (int i = 0; i < 7; i++) input_bytes(c, "table", DL_STEPS, 4, tables[i]);
    const int32_t t[DL_N] = {0, 1, 50, DL_STEPS - 1};
    input_bytes(c, "t", DL_N, 4, t);
    size_t d = (size_t)DL_HW * DL_C, out_c = spec.learned_var ? 2 * DL_C : DL_C;
    float x0[DL_N * DL_HW * DL_C];
    for (size_t i = 0; i < DL_N * d; i++) x0[i] = (float)(i * 37 % 256) / 127.5f - 1.0f;
    input_bytes(c, "x0", DL_N * d, 4, x0);
    input(c, "x_t", DL_N * d, -2, 2);
    input(c, "target", DL_N * d, -2, 2);
    if (k == 2) input(c, "weight", DL_N, 0.5f, 2.0f);
    else absent(c);
    input(c, "out", DL_N * DL_HW * out_c, -1, 1);
    output(c, "mse", DL_N, -1);
    if (k > 0) output(c, "vb", DL_N, -1);
    else absent(c);
    output(c, "dout", DL_N * DL_HW * out_c, -1);
    set_op(c, diffusion_loss_forward, NULL, NULL);
}

static void diffusion_cases(void) {
    for (int pred = PRED_EPS; pred <= PRED_V; pred++)
        q_sample_case(MODE_ALL, 200, 4, 5, 3, pred, 1, 0, 7);
    q_sample_case(MODE_ALL, 200, 4, 5, 3, PRED_X0, 0, 1, 7);
    for (int pred = PRED_EPS; pred <= PRED_V; pred++)
        q_sample_float_case(MODE_ALL, 5, 4 * 8 * 8, (PredictionType)pred);
    for (int pred = PRED_EPS; pred <= PRED_V; pred++)
        for (int flip = 0; flip < 2; flip++)
            q_sample_case(MODE_CUDA | MODE_BENCH, 4, 6, 5, 3, pred, flip, flip, 3);
    mse_case(MODE_ALL, 4, 50, -1, 1);
    mse_case(MODE_CUDA | MODE_BENCH, 5, 3 * 32 * 32 + 7, -2, 2);
    cross_entropy_case(MODE_ALL, 6, 10, 3);
    cross_entropy_case(MODE_ALL, 5, 4, 40);     /* large logits: the shift by the maximum */
    cross_entropy_case(MODE_CUDA | MODE_BENCH, 300, 1000, 5);
    /* the formula in float: bit for bit, except learned variances (expf of v) */
    sample_update_case(MODE_ALL, "sigma 0", 3, 101,
                       (SampleUpdate){.x0_from_xt = 1.3f, .x0_from_out = -0.7f, .coef_x0 = 0.4f,
                                      .coef_xt = 0.55f}, 0.0);
    sample_update_case(MODE_ALL, "clip", 3, 101,
                       (SampleUpdate){.x0_from_out = 1.0f, .coef_x0 = 1.0f, .clip_x0 = 1}, 0.0);
    sample_update_case(MODE_ALL, "noise", 3, 101, (SampleUpdate){.sigma = 0.8f}, 0.0);
    sample_update_case(MODE_ALL, "learned variance", 3, 101,
                       (SampleUpdate){.x0_from_out = 1.0f, .coef_x0 = 1.0f, .sigma = 1.0f,
                                      .learned_var = 1, .channels = 1, .use_model_var = 1,
                                      .post_logvar = -3.0f, .log_var_range = 0.5f}, 1e-6);
    SampleUpdate clipped = {.x0_from_xt = 1.3f, .x0_from_out = -0.7f, .coef_x0 = 0.4f,
                            .coef_xt = 0.55f, .sigma = 0.2f, .clip_x0 = 1};
    sample_update_case(MODE_CUDA | MODE_BENCH, "sigma > 0, clip", 3, 129, clipped, 0.0);
    sample_update_case(MODE_CUDA | MODE_BENCH, "sigma 0", 3, 129,
                       (SampleUpdate){.x0_from_out = 1.0f, .coef_x0 = 0.9f, .coef_xt = 0.1f},
                       0.0);
    SampleUpdate learned = clipped;
    learned.learned_var = 1, learned.use_model_var = 1, learned.channels = 3;
    learned.post_logvar = -6.5f, learned.log_var_range = 2.5f;
    sample_update_case(MODE_CUDA | MODE_BENCH, "learned variance", 3, 105, learned, 1e-6);
    sample_update_indexed_case(MODE_ALL, 3, 101);
    guidance_combine_case(MODE_ALL, 3, 49, 1, 0, 3.0f);
    guidance_combine_case(MODE_ALL, 2, 37, 3, 1, 7.5f);
    guidance_combine_case(MODE_CUDA | MODE_BENCH, 64, 28 * 28, 1, 0, 2.0f);
    normal_fill_case(MODE_CPU, 4, 250000, (RngKey){2024, RNG_STREAM_SAMPLE_XT, 0, 0});
    normal_fill_case(MODE_CUDA | MODE_BENCH, 3, 129, (RngKey){5, RNG_STREAM_SAMPLE_Z, 123, 0});
    diffusion_loss_case(0, (LossSpec){.learned_var = 0, .mse_weight = 1.0f});
    diffusion_loss_case(1, (LossSpec){.learned_var = 1, .mse_weight = 1.0f, .vb_weight = 0.001f});
    diffusion_loss_case(2, (LossSpec){.clip_x0 = 1, .mse_weight = 0.5f, .vb_weight = 1.0f,
                                      .vb_trains_mean = 1});
}

/* ---- optimizer ---- */

static void global_norm_forward(const OpCase *c, OpRun *r) {
    r->be->global_norm(F(1), F(0), c->t[0].n);
}

/* against double; the same with 1 and 3 threads; 0 for no elements */
static void global_norm_check(const OpCase *c, OpRun *r) {
    size_t n = c->t[0].n;
    const float *g = F(0);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)g[i] * g[i];
    CHECK(fabs(F(1)[0] - sqrt(sum)) <= c->ref_tol * sqrt(sum), "global_norm %g vs %g", F(1)[0],
          sqrt(sum));
    float norm[2], empty;
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        r->be->global_norm(&norm[k], g, n);
    }
    omp_set_num_threads(threads);
    CHECK(norm[0] == norm[1] && norm[0] == F(1)[0], "global_norm differs between 1 and 3 threads");
    r->be->global_norm(&empty, g, 0);
    CHECK(empty == 0.0f, "global_norm of nothing is %g", empty);
}

static void global_norm_case(unsigned modes, size_t n) {
    OpCase *c = add_case(modes, "global_norm n%zu", n);
    input(c, "g", n, -1, 1);
    output(c, "norm", 1, -1);
    set_op(c, global_norm_forward, NULL, global_norm_check);
    c->ref_tol = 1e-6;
}

enum { AD_P0, AD_G, AD_M0, AD_V0, AD_P, AD_M, AD_V, AD_P_BF16 };

static void adamw_forward(const OpCase *c, OpRun *r) {
    size_t n = c->t[AD_P].n, bytes = n * sizeof(float);
    r->be->copy(F(AD_P), F(AD_P0), bytes);
    r->be->copy(F(AD_M), F(AD_M0), bytes);
    r->be->copy(F(AD_V), F(AD_V0), bytes);
    r->be->adamw(F(AD_P), F(AD_P_BF16), F(AD_G), F(AD_M), F(AD_V), n, 2e-4f, 0.9f, 0.999f,
                 1e-8f, 0.01f, 1 - 0.9f * 0.9f, 1 - 0.999f * 0.999f, 0.5f);
}

/* The optional output is bf16_round of the updated p, and asking for it changes nothing
 * else: a second run without it (NULL) gives the same p, m and v bit for bit. */
static void adamw_bf16_check(const OpCase *c, OpRun *r) {
    size_t n = c->t[AD_P].n, bytes = n * sizeof(float);
    adamw_forward(c, r);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        float want = bf16_round(F(AD_P)[i]);
        wrong += memcmp(&F(AD_P_BF16)[i], &want, sizeof want) != 0;
    }
    CHECK(wrong == 0, "adamw: %zu of %zu bf16 weights are not bf16_round(p)", wrong, n);
    const int state[3] = {AD_P, AD_M, AD_V}, initial[3] = {AD_P0, AD_M0, AD_V0};
    float *with[3];
    for (int k = 0; k < 3; k++) {
        with[k] = xmalloc(bytes);
        memcpy(with[k], F(state[k]), bytes);
        memcpy(F(state[k]), F(initial[k]), bytes);
    }
    r->be->adamw(F(AD_P), NULL, F(AD_G), F(AD_M), F(AD_V), n, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.01f,
                 1 - 0.9f * 0.9f, 1 - 0.999f * 0.999f, 0.5f);
    CHECK(memcmp(with[0], F(AD_P), bytes) == 0 && memcmp(with[1], F(AD_M), bytes) == 0 &&
              memcmp(with[2], F(AD_V), bytes) == 0,
          "adamw: p, m, v differ with and without the bf16 output");
    for (int k = 0; k < 3; k++) free(with[k]);
}

/* Three steps from zero moments against torch.optim.AdamW's formula in double. */
static void adamw_check(const OpCase *c, OpRun *r) {
    enum { STEPS = 3 };
    size_t n = c->t[AD_P].n;
    float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, scale = 0.37f;
    float *p = F(AD_P), *m = F(AD_M), *v = F(AD_V);
    double *pd = zeros(n), *md = zeros(n), *vd = zeros(n);
    memcpy(p, F(AD_P0), n * sizeof(float));
    memset(m, 0, n * sizeof(float));
    memset(v, 0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    for (int step = 1; step <= STEPS; step++) {
        float *g = uniform_floats(n, -0.5f, 0.5f, 50 + step);
        float bc1 = 1.0f - powf(b1, step), bc2 = 1.0f - powf(b2, step);
        r->be->adamw(p, NULL, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, scale);
        for (size_t i = 0; i < n; i++) {
            double grad = (double)g[i] * scale;
            pd[i] *= 1.0 - (double)lr * wd;
            md[i] = b1 * md[i] + (1.0 - b1) * grad;
            vd[i] = b2 * vd[i] + (1.0 - b2) * grad * grad;
            pd[i] -= (double)lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt((double)bc2) + eps);
        }
        free(g);
    }
    expect_ref(c, "p after 3 steps", p, pd, n, c->ref_tol);
    expect_ref(c, "m after 3 steps", m, md, n, c->ref_tol);
    expect_ref(c, "v after 3 steps", v, vd, n, c->ref_tol);
    free(pd), free(md), free(vd);
    adamw_bf16_check(c, r);
}

static void adamw_case(unsigned modes, size_t n) {
    OpCase *c = add_case(modes, "adamw n%zu", n);
    input(c, "p", n, -1, 1);
    input(c, "g", n, -1, 1);
    input(c, "m", n, -0.1f, 0.1f);
    input(c, "v", n, 0.0f, 0.01f);
    output(c, "p updated", n, -1);
    output(c, "m updated", n, -1);
    output(c, "v updated", n, -1);
    set_tol(c, output(c, "p bf16", n, -1), 0.0);   /* bf16 of the same p: exact when p is */
    set_op(c, adamw_forward, NULL, adamw_check);
    c->ref_tol = 1e-6;
}

enum { EMA_E0, EMA_P, EMA_E };

static void ema_forward(const OpCase *c, OpRun *r) {
    r->be->copy(F(EMA_E), F(EMA_E0), c->t[EMA_E].n * sizeof(float));
    r->be->ema_update(F(EMA_E), F(EMA_P), c->t[EMA_E].n, c->p);
}

static void ema_check(const OpCase *c, OpRun *r) {
    int exact = 1;
    for (size_t i = 0; i < c->t[EMA_E].n; i++)
        exact &= F(EMA_E)[i] == c->p * F(EMA_E0)[i] + (1.0f - c->p) * F(EMA_P)[i];
    CHECK(exact, "ema_update differs from decay*ema + (1-decay)*p");
}

static void ema_case(unsigned modes, size_t n, float decay) {
    OpCase *c = add_case(modes, "ema_update n%zu decay %g", n, decay);
    c->p = decay;
    input(c, "ema", n, -1, 1);
    input(c, "p", n, -1, 1);
    output(c, "ema updated", n, -1);
    set_op(c, ema_forward, NULL, ema_check);
}

/* ---- the optimizer's control state ---- */

enum { OC_STATE0, OC_NORM, OC_STATS, OC_STATE };
enum { OC_RANKS = 2, OC_KINDS = 2, OC_PER_KIND = 3, OC_BLOCK = OC_KINDS * OC_PER_KIND + 1 };
#define OC_STATE_FLOATS (sizeof(OptimState) / sizeof(float))

static OptimControl control_settings(double warmup, double clip, long fault_step,
                                     uint32_t loss_kinds) {
    return (OptimControl){.lr = 2e-4, .warmup = (int64_t)warmup, .grad_clip = clip,
                          .beta1 = 0.9, .beta2 = 0.999, .fault_step = fault_step,
                          .blocks = OC_RANKS, .per_kind = OC_PER_KIND, .block_stride = OC_BLOCK,
                          .loss_kinds = loss_kinds};
}

static void optimizer_control_forward(const OpCase *c, OpRun *r) {
    r->be->copy(F(OC_STATE), F(OC_STATE0), sizeof(OptimState));
    r->be->optimizer_control((OptimState *)F(OC_STATE), F(OC_NORM), F(OC_STATS),
                             control_settings(c->n, c->p, c->flag, 1u));
}

/* One scenario: the state after one call against the contract, formed in double. */
static void control_scenario(const Backend *be, const char *what, int64_t adam_steps,
                             float norm, int nan_kind, int nan_rank, OptimControl settings,
                             int expect_skip) {
    float stats[OC_RANKS * OC_BLOCK];
    for (int i = 0; i < OC_RANKS * OC_BLOCK; i++) stats[i] = 0.25f * (float)i;
    if (nan_kind >= 0) stats[nan_rank * OC_BLOCK + nan_kind * OC_PER_KIND + 2] = NAN;
    OptimState s = {.step = 7, .adam_steps = adam_steps, .skipped_steps = 2, .lr = -1,
                    .grad_scale = -1, .bias_c1 = -1, .bias_c2 = -1};
    be->optimizer_control(&s, &norm, stats, settings);
    double ramp = settings.warmup > 0 ? (double)(adam_steps + 1) / settings.warmup : 1;
    double lr = settings.lr * (ramp < 1 ? ramp : 1);
    CHECK(s.skip == expect_skip, "optimizer_control %s: skip %d", what, s.skip);
    CHECK(s.step == 8 && s.lr_reported == lr && !memcmp(&s.grad_norm, &norm, sizeof norm),
          "optimizer_control %s: step %ld, lr %.17g (want %.17g)", what, (long)s.step,
          s.lr_reported, lr);
    if (expect_skip) {
        CHECK(s.skipped_steps == 3 && s.adam_steps == adam_steps && s.lr == -1 &&
                  s.grad_scale == -1 && s.bias_c1 == -1 && s.bias_c2 == -1,
              "optimizer_control %s: a skipped step changed the update's scalars", what);
        return;
    }
    int64_t t = adam_steps + 1;
    double scale = settings.grad_clip > 0 ? settings.grad_clip / ((double)norm + 1e-6) : 1;
    CHECK(s.skipped_steps == 2 && s.adam_steps == t && s.lr == (float)lr &&
              s.grad_scale == (float)(scale < 1 ? scale : 1) &&
              s.bias_c1 == (float)(1 - pow(0.9, (double)t)) &&
              s.bias_c2 == (float)(1 - pow(0.999, (double)t)),
          "optimizer_control %s: counters %ld/%ld, lr %g, scale %g, bias %g %g", what,
          (long)s.adam_steps, (long)s.skipped_steps, s.lr, s.grad_scale, s.bias_c1, s.bias_c2);
}

static void optimizer_control_check(const OpCase *c, OpRun *r) {
    const Backend *be = r->be;
    const uint32_t first = 1u, both = 3u;
    control_scenario(be, "warmup", 2, 3.0f, -1, 0, control_settings(10, 0, -1, both), 0);
    control_scenario(be, "warmup ended", 40, 3.0f, -1, 0, control_settings(10, 0, -1, both), 0);
    control_scenario(be, "clipped", 40, 3.0f, -1, 0, control_settings(0, 1.0, -1, both), 0);
    control_scenario(be, "clip above the norm", 40, 0.5f, -1, 0,
                     control_settings(0, 1.0, -1, both), 0);
    control_scenario(be, "NaN norm", 5, NAN, -1, 0, control_settings(0, 1.0, -1, both), 1);
    control_scenario(be, "infinite norm", 5, INFINITY, -1, 0, control_settings(0, 0, -1, both),
                     1);
    control_scenario(be, "NaN loss, second rank", 5, 1.0f, 1, 1,
                     control_settings(0, 0, -1, both), 1);
    control_scenario(be, "NaN outside the loss", 5, 1.0f, 1, 1,
                     control_settings(0, 0, -1, first), 0);
    control_scenario(be, "fault from this step", 5, 1.0f, -1, 0, control_settings(0, 0, 7, both),
                     1);
    control_scenario(be, "fault from a later step", 5, 1.0f, -1, 0,
                     control_settings(0, 0, 8, both), 0);
    (void)c;
}

static void optimizer_control_case(unsigned modes, float norm, int warmup, float clip,
                                   long fault_step, int nan_stat) {
    OpCase *c = add_case(modes, "optimizer_control norm %g warmup %d clip %g fault %ld nan %d",
                         norm, warmup, clip, fault_step, nan_stat);
    OptimState state0 = {.step = 7, .adam_steps = 3, .skipped_steps = 1};
    float stats[OC_RANKS * OC_BLOCK];
    for (int i = 0; i < OC_RANKS * OC_BLOCK; i++) stats[i] = (float)i;
    if (nan_stat >= 0) stats[nan_stat] = NAN;
    input_bytes(c, "state", OC_STATE_FLOATS, sizeof(float), &state0);
    input_bytes(c, "norm", 1, sizeof(float), &norm);
    input_bytes(c, "stats", OC_RANKS * OC_BLOCK, sizeof(float), stats);
    output(c, "state updated", OC_STATE_FLOATS, -1);
    set_op(c, optimizer_control_forward, NULL, optimizer_control_check);
    c->n = warmup, c->p = clip, c->flag = (int)fault_step;
    c->tol = 0;   /* the same bits */
}

/* adamw_state and ema_update_state: adamw and ema_update with the state's scalars, bit for
 * bit, or nothing at all when the state says skip; either way the bf16 output is the
 * bf16 rounding of the weights that come out. */
enum { AS_P0, AS_G, AS_M0, AS_V0, AS_E0, AS_STATE, AS_P, AS_M, AS_V, AS_E, AS_PB };

static void adamw_state_forward(const OpCase *c, OpRun *r) {
    size_t n = c->t[AS_P].n, bytes = n * sizeof(float);
    r->be->copy(F(AS_P), F(AS_P0), bytes);
    r->be->copy(F(AS_M), F(AS_M0), bytes);
    r->be->copy(F(AS_V), F(AS_V0), bytes);
    r->be->copy(F(AS_E), F(AS_E0), bytes);
    const OptimState *state = (const OptimState *)F(AS_STATE);
    r->be->adamw_state(F(AS_P), F(AS_PB), F(AS_G), F(AS_M), F(AS_V), n, state, 0.9f, 0.999f,
                       1e-8f, 0.01f);
    r->be->ema_update_state(F(AS_E), F(AS_P), n, state, 0.999f);
}

static void adamw_state_check(const OpCase *c, OpRun *r) {
    size_t n = c->t[AS_P].n, bytes = n * sizeof(float);
    const OptimState *state = (const OptimState *)F(AS_STATE);
    float *p = xmalloc(bytes), *m = xmalloc(bytes), *v = xmalloc(bytes), *e = xmalloc(bytes);
    memcpy(p, F(AS_P0), bytes), memcpy(m, F(AS_M0), bytes), memcpy(v, F(AS_V0), bytes);
    memcpy(e, F(AS_E0), bytes);
    if (!state->skip) {
        r->be->adamw(p, NULL, F(AS_G), m, v, n, state->lr, 0.9f, 0.999f, 1e-8f, 0.01f,
                     state->bias_c1, state->bias_c2, state->grad_scale);
        r->be->ema_update(e, p, n, 0.999f);
    }
    CHECK(!memcmp(p, F(AS_P), bytes) && !memcmp(m, F(AS_M), bytes) &&
              !memcmp(v, F(AS_V), bytes) && !memcmp(e, F(AS_E), bytes),
          "%s: not adamw and ema_update with the state's scalars", c->name);
    int mirrors = 1;
    for (size_t i = 0; i < n; i++) mirrors &= F(AS_PB)[i] == bf16_round(F(AS_P)[i]);
    CHECK(mirrors, "%s: the bf16 output is not the rounded weights", c->name);
    free(p), free(m), free(v), free(e);
}

static void adamw_state_case(unsigned modes, size_t n, int skip) {
    OpCase *c = add_case(modes, "adamw_state, ema_update_state n%zu skip %d", n, skip);
    OptimState state = {.step = 4, .adam_steps = 3, .lr = 1e-3f, .grad_scale = 0.4f,
                        .bias_c1 = (float)(1 - pow(0.9, 3)), .bias_c2 = (float)(1 - pow(0.999, 3)),
                        .skip = skip};
    input(c, "p", n, -1, 1);
    input(c, "g", n, -1, 1);
    input(c, "m", n, -0.1f, 0.1f);
    input(c, "v", n, 0.0f, 0.01f);
    input(c, "ema", n, -1, 1);
    input_bytes(c, "state", OC_STATE_FLOATS, sizeof(float), &state);
    output(c, "p updated", n, -1);
    output(c, "m updated", n, -1);
    output(c, "v updated", n, -1);
    output(c, "ema updated", n, -1);
    output(c, "p bf16", n, -1);
    set_op(c, adamw_state_forward, NULL, adamw_state_check);
    c->tol = 1e-6;
}

/* to_host_async into alloc_host memory: the bytes are there after wait_host_copies. */
static void to_host_async_forward(const OpCase *c, OpRun *r) {
    size_t bytes = c->t[0].n * sizeof(float);
    float *host = r->be->alloc_host(bytes);
    r->be->to_host_async(host, F(0), bytes);
    r->be->wait_host_copies();
    r->be->to_device(F(1), host, bytes);
    r->be->release_host(host);
}

static void to_host_async_check(const OpCase *c, OpRun *r) {
    CHECK(!memcmp(F(0), F(1), c->t[0].n * sizeof(float)), "to_host_async: the bytes differ");
}

static void to_host_async_case(unsigned modes, size_t n) {
    OpCase *c = add_case(modes, "to_host_async n%zu", n);
    input(c, "x", n, -1, 1);
    output(c, "x through the host", n, -1);
    set_op(c, to_host_async_forward, NULL, to_host_async_check);
    c->tol = 0;
}

/* graph_begin, graph_end, graph_launch, graph_release: a captured accumulate launched three
 * times adds x three times, as three direct calls do (the CPU never captures: NULL). */
static void graph_forward(const OpCase *c, OpRun *r) {
    size_t n = c->t[0].n;
    r->be->fill(F(1), 0.0f, n);
    setenv("DDPM_CUDA_GRAPHS", "1", 1);
    void *capturing = r->be->graph_begin();
    unsetenv("DDPM_CUDA_GRAPHS");
    if (!capturing) {
        for (int k = 0; k < 3; k++) r->be->accumulate(F(1), 1.0f, F(0), n);
        return;
    }
    r->be->accumulate(F(1), 1.0f, F(0), n);
    void *graph = r->be->graph_end();
    for (int k = 0; k < 3; k++) r->be->graph_launch(graph);
    r->be->graph_release(graph);
}

static void graph_check(const OpCase *c, OpRun *r) {
    int exact = 1;
    for (size_t i = 0; i < c->t[0].n; i++) exact &= F(1)[i] == F(0)[i] + F(0)[i] + F(0)[i];
    CHECK(exact, "graph: three runs of accumulate are not x + x + x");
    CHECK(r->be->graph_begin() == NULL, "graph_begin captures without DDPM_CUDA_GRAPHS=1");
}

static void graph_case(unsigned modes, size_t n) {
    OpCase *c = add_case(modes, "graph_begin, graph_end, graph_launch n%zu", n);
    input(c, "x", n, -1, 1);
    output(c, "3 x", n, -1);
    set_op(c, graph_forward, NULL, graph_check);
    c->tol = 0;
}

static void optimizer_cases(void) {
    optimizer_control_case(MODE_ALL, 3.0f, 10, 1.0f, -1, -1);   /* warmup and clipping */
    optimizer_control_case(MODE_CUDA, 0.5f, 0, 1.0f, -1, -1);   /* clip above the norm */
    optimizer_control_case(MODE_CUDA, NAN, 0, 0, -1, -1);       /* non-finite norm */
    optimizer_control_case(MODE_CUDA, 1.0f, 0, 0, -1, OC_BLOCK + 2);   /* rank 1's loss */
    optimizer_control_case(MODE_CUDA, 1.0f, 0, 0, -1, OC_PER_KIND + 1);   /* not a loss kind */
    optimizer_control_case(MODE_CUDA, 1.0f, 0, 0, 7, -1);      /* the fault hook */
    adamw_state_case(MODE_ALL, 4099, 0);
    adamw_state_case(MODE_ALL, 1000, 1);
    to_host_async_case(MODE_ALL, 1 << 16);
    graph_case(MODE_ALL, 4099);

    global_norm_case(MODE_CPU, 300001);   /* several chunks and a ragged tail */
    global_norm_case(MODE_CUDA | MODE_BENCH, 1000);
    global_norm_case(MODE_CUDA | MODE_BENCH, 3000001);   /* every partial-sum block */
    adamw_case(MODE_CPU, 1000);
    adamw_case(MODE_CUDA | MODE_BENCH, 4099);
    ema_case(MODE_CPU, 500, 0.9999f);
    ema_case(MODE_CUDA | MODE_BENCH, 4099, 0.999f);
}

/* ---- the KL autoencoder ---- */

enum { GS_M, GS_NOISE, GS_DZ, GS_Z, GS_DM };

/* c->n samples, c->h pixels, c->ch latent channels: moments (n, h, 2ch) */
static void gaussian_sample_forward(const OpCase *c, OpRun *r) {
    r->be->gaussian_sample_forward(F(GS_Z), F(GS_M), F(GS_NOISE), c->n, c->h, c->ch);
}
static void gaussian_sample_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->gaussian_sample_backward(F(GS_DM), beta, F(GS_DZ), F(GS_M), F(GS_NOISE), c->n, c->h,
                                    c->ch);
}

static void gaussian_sample_check(const OpCase *c, OpRun *r) {
    size_t pixels = (size_t)c->n * c->h, total = pixels * c->ch;
    double *z = zeros(total);
    for (size_t p = 0; p < pixels; p++)
        for (int k = 0; k < c->ch; k++) {
            double lv = F(GS_M)[p * 2 * c->ch + c->ch + k];
            lv = lv < -30 ? -30 : lv > 20 ? 20 : lv;
            z[p * c->ch + k] = F(GS_M)[p * 2 * c->ch + k] + exp(lv / 2) * F(GS_NOISE)[p * c->ch + k];
        }
    expect_ref(c, "z", F(GS_Z), z, total, c->ref_tol);
    free(z);
}

static void gaussian_sample_case(unsigned modes, int n, int hw, int ch) {
    OpCase *c = add_case(modes, "gaussian_sample n%d hw%d c%d", n, hw, ch);
    c->n = n, c->h = hw, c->ch = ch;
    size_t total = (size_t)n * hw * ch;
    int m = input(c, "moments", 2 * total, -3, 3);
    input(c, "noise", total, -2, 2);
    int dz = input(c, "dz", total, -1, 1);
    output(c, "z", total, dz);
    grad(c, "dmoments", m);
    set_op(c, gaussian_sample_forward, gaussian_sample_backward, gaussian_sample_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

enum { KL_M, KL_W, KL_KL, KL_DM };

static void gaussian_kl_forward(const OpCase *c, OpRun *r) {
    r->be->gaussian_kl(F(KL_KL), NULL, F(KL_M), c->n, c->h, c->ch, c->p);
}
/* dmoments is the gradient of p * (1/N) sum kl: the loss weights are 1/N, scaled by p */
static void gaussian_kl_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->gaussian_kl(F(KL_KL), F(KL_DM), F(KL_M), c->n, c->h, c->ch, c->p);
}

/* the float64 closed form (test_vae.c checks the clamp's gradient) */
static void gaussian_kl_check(const OpCase *c, OpRun *r) {
    double *kl = zeros(c->n);
    for (int s = 0; s < c->n; s++)
        for (int p = 0; p < c->h; p++)
            for (int k = 0; k < c->ch; k++) {
                size_t im = ((size_t)s * c->h + p) * 2 * c->ch + k;
                double mean = F(KL_M)[im], lv = F(KL_M)[im + c->ch];
                kl[s] += 0.5 * (mean * mean + exp(lv) - 1 - lv);
            }
    expect_ref(c, "kl", F(KL_KL), kl, c->n, c->ref_tol);
    free(kl);
}

static void gaussian_kl_case(unsigned modes, int n, int hw, int ch, float weight) {
    OpCase *c = add_case(modes, "gaussian_kl n%d hw%d c%d weight %g", n, hw, ch, weight);
    c->n = n, c->h = hw, c->ch = ch, c->p = weight;
    int m = input(c, "moments", (size_t)n * hw * 2 * ch, -2, 2);
    float *w = xmalloc(n * sizeof(float));
    for (int s = 0; s < n; s++) w[s] = weight / n;
    int weights = input_bytes(c, "weights", n, 4, w);
    free(w);
    output(c, "kl", n, weights);
    param_grad(c, "dmoments", m);
    set_op(c, gaussian_kl_forward, gaussian_kl_backward, gaussian_kl_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

enum { RL_OUT, RL_TARGET, RL_LOGVAR, RL_W, RL_LOSS, RL_DOUT, RL_DLOGVAR };

/* c->flag: l1; c->k: D; the logvar slot absent or one float */
static void recon_forward(const OpCase *c, OpRun *r) {
    r->be->recon_loss(F(RL_LOSS), NULL, NULL, F(RL_OUT), F(RL_TARGET), F(RL_LOGVAR), c->n,
                      (size_t)c->k, c->flag);
}
static void recon_backward(const OpCase *c, OpRun *r, float beta) {
    r->be->recon_loss(F(RL_LOSS), F(RL_DOUT), F(RL_DLOGVAR), F(RL_OUT), F(RL_TARGET),
                      F(RL_LOGVAR), c->n, (size_t)c->k, c->flag);
}

static void recon_check(const OpCase *c, OpRun *r) {
    size_t d = (size_t)c->k;
    double lv = F(RL_LOGVAR) ? F(RL_LOGVAR)[0] : 0.0, *loss = zeros(c->n);
    for (int s = 0; s < c->n; s++) {
        for (size_t e = 0; e < d; e++) {
            double diff = (double)F(RL_OUT)[s * d + e] - F(RL_TARGET)[s * d + e];
            loss[s] += c->flag ? fabs(diff) : diff * diff;
        }
        loss[s] = loss[s] / exp(lv) + (double)d * lv;
    }
    expect_ref(c, "loss", F(RL_LOSS), loss, c->n, c->ref_tol);
    free(loss);
}

/* target = out's range + shift: with |shift| > 2 every l1 difference has one sign, away
 * from the kink that a finite difference cannot see through */
static void recon_case(unsigned modes, int n, size_t d, int l1, int logvar, float shift) {
    OpCase *c = add_case(modes, "recon_loss %s n%d d%zu%s", l1 ? "l1" : "l2", n, d,
                         logvar ? " learned logvar" : "");
    c->n = n, c->k = (int)d, c->flag = l1;
    int out = input(c, "out", n * d, -1, 1);
    input(c, "target", n * d, -1 + shift, 1 + shift);
    int lv = logvar ? input(c, "logvar", 1, -0.5f, 0.5f) : absent(c);
    float *w = xmalloc(n * sizeof(float));
    for (int s = 0; s < n; s++) w[s] = 1.0f / n;
    int weights = input_bytes(c, "weights", n, 4, w);
    free(w);
    output(c, "loss", n, weights);
    param_grad(c, "dout", out);
    if (logvar) param_grad(c, "dlogvar", lv);
    set_op(c, recon_forward, recon_backward, recon_check);
    c->ref_tol = 1e-6, c->fd = FD_POINTWISE;
}

static void vae_cases(void) {
    gaussian_sample_case(MODE_ALL, 2, 5, 3);
    gaussian_sample_case(MODE_CUDA | MODE_BENCH, 4, 64, 4);
    gaussian_kl_case(MODE_ALL, 3, 5, 2, 0.7f);
    gaussian_kl_case(MODE_CUDA | MODE_BENCH, 4, 300, 4, 1e-6f);   /* more than one block's worth */
    recon_case(MODE_ALL, 3, 40, 0, 0, 0.0f);
    recon_case(MODE_ALL, 3, 40, 0, 1, 0.0f);
    recon_case(MODE_ALL, 3, 40, 1, 1, 2.1f);
    recon_case(MODE_ALL, 3, 40, 1, 0, -2.1f);
    recon_case(MODE_CUDA | MODE_BENCH, 4, 3 * 32 * 32 + 7, 1, 1, 0.0f);
    recon_case(MODE_CUDA | MODE_BENCH, 4, 3 * 32 * 32 + 7, 0, 0, 0.0f);
}

/* ---- the table ---- */

static int op_cases(OpCase *cases, int cap) {
    table = cases, capacity = cap, n_cases = 0;
    memory_cases();
    round_bf16_cases();
    conv_cases();
    groupnorm_cases();
    elementwise_cases();
    layout_cases();
    embedding_cases();
    dense_cases();
    diffusion_cases();
    optimizer_cases();
    vae_cases();
    return n_cases;
}

int main(int argc, char **argv) {
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    if (argc > 1 && !bench) die("usage: %s [--bench]", argv[0]);
    unsetenv("DDPM_TF32");                 /* strict fp32: the tolerances assume it */
    setenv("DDPM_CONV_CACHE", "0", 1);     /* measure every conv afresh, keep nothing */
    static OpCase cases[MAX_CASES];
    int n = op_cases(cases, MAX_CASES);
    atexit(free_kept_host);
    const Backend *cuda = backend_cuda();
    for (int i = 0; i < n; i++)
        if (bench ? cases[i].modes & MODE_BENCH : cases[i].modes & (MODE_CPU | MODE_CUDA))
            run_case(&cases[i], i, bench, cuda);
    if (bench) return 0;
    if (!cuda) printf("SKIP: no CUDA device: %d CPU-vs-CUDA case comparisons not run\n",
                      tests_skipped);
    return test_summary("ops");
}
