/* Every op of the CUDA backend against the CPU reference backend.
 *
 * Each case builds random inputs once, uploads the same bytes to both backends,
 * poisons every output with NaN (so an output an op forgets to write, or a beta-0
 * gradient it reads, shows up), runs the op on both and compares: relative error
 * (max |gpu - cpu| / max |cpu|) at most 1e-5 in strict fp32 (DDPM_TF32 is unset
 * here). Backward ops run with beta 0 (poisoned gradient) and beta 1 (the same
 * random gradient on both). Convolutions also run prepared at a larger batch than
 * they run at, and with each backward-data method forced (DDPM_CONV_BWD_DATA). The noise of the fused ops is checked to be the CPU's:
 * dropout masks exactly, Gaussian draws to 1e-6 (the device's logf/sinf/cosf may
 * differ from glibc's in the last ulp).
 *
 * Without a GPU the cases still run, CPU against CPU, only to count the checks that
 * need one; the test then prints SKIP and passes. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/conv_algo_cache.h"
#include "backend.h"
#include "testing.h"
#include "util.h"

#define TOL 1e-5
#define NOISE_TOL 1e-6

enum { CPU = 0, GPU = 1 };
static const Backend *be[2];
static int dry_run;       /* no GPU: count the checks instead of making them */
static int needs_gpu;     /* checks counted in a dry run */

/* ---- buffers on both backends ---- */

typedef struct {
    float *at[2];   /* the same tensor on the CPU and the GPU backend */
    size_t n;
} Pair;

static Pair pair_alloc(size_t n) {
    Pair p = {{be[CPU]->alloc(n * sizeof(float)), be[GPU]->alloc(n * sizeof(float))}, n};
    return p;
}

/* Releases each pair of a NULL-terminated list. */
static void free_pairs(Pair *p, ...) {
    va_list ap;
    va_start(ap, p);
    for (; p; p = va_arg(ap, Pair *)) {
        be[CPU]->release(p->at[CPU]);
        be[GPU]->release(p->at[GPU]);
    }
    va_end(ap);
}

static void upload(void *const at[2], const void *host, size_t bytes) {
    for (int side = CPU; side <= GPU; side++) be[side]->to_device(at[side], host, bytes);
}

/* Uniform in [lo, hi), the same on both sides; seed picks the stream. */
static Pair pair_random(size_t n, uint32_t seed, float lo, float hi) {
    Pair p = pair_alloc(n);
    float *host = xmalloc(n * sizeof(float));
    RngKey key = {0x5eed, 77, seed, 0};
    for (size_t i = 0; i < n; i++) host[i] = lo + (hi - lo) * philox_uniform(key, 0, i);
    upload((void *const *)p.at, host, n * sizeof(float));
    free(host);
    return p;
}

static Pair pair_poisoned(size_t n) {
    Pair p = pair_alloc(n);
    for (int side = CPU; side <= GPU; side++) be[side]->fill(p.at[side], NAN, n);
    return p;
}

/* An input gradient for beta: poisoned for 0, random (same both sides) for 1. */
static Pair pair_grad(size_t n, float beta, uint32_t seed) {
    return beta == 0.0f ? pair_poisoned(n) : pair_random(n, seed, -1.0f, 1.0f);
}

static float *download(const Backend *b, const float *p, size_t n) {
    float *host = xmalloc(n * sizeof(float));
    b->to_host(host, p, n * sizeof(float));
    return host;
}

/* The GPU's copy of p must match the CPU's to within tol; what names it, printf-style. */
static void expect_close(const Pair *p, double tol, const char *what, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_close(const Pair *p, double tol, const char *what, ...) {
    float *cpu = download(be[CPU], p->at[CPU], p->n), *gpu = download(be[GPU], p->at[GPU], p->n);
    double err = rel_error(gpu, cpu, p->n, 1e-6);
    char name[160];
    va_list ap;
    va_start(ap, what);
    vsnprintf(name, sizeof name, what, ap);
    va_end(ap);
    if (dry_run) needs_gpu++;
    else CHECK(err <= tol, "%s: relative error %.3g > %.3g", name, err, tol);
    free(cpu);
    free(gpu);
}

/* ---- convolution ---- */

typedef struct {
    const char *name;
    int n, run_n, h, c, oc, k, stride, pad_lo, pad_hi;
    int bias, bias_grad, input_grad;
    const char *bwd_data;   /* DDPM_CONV_BWD_DATA while the GPU prepares it, or NULL */
} ConvCase;

/* Prepares both sides; the GPU's under DDPM_CONV_BWD_DATA=method when one is given
 * (the variable is read when a shape is first prepared), restored afterwards. */
static void prepare_both(ConvShape shapes[2], const char *method) {
    const char *outer = getenv("DDPM_CONV_BWD_DATA");
    char *saved = outer ? strdup(outer) : NULL;
    if (method) setenv("DDPM_CONV_BWD_DATA", method, 1);
    for (int side = CPU; side <= GPU; side++) be[side]->conv2d_prepare(&shapes[side]);
    if (saved) setenv("DDPM_CONV_BWD_DATA", saved, 1);
    else unsetenv("DDPM_CONV_BWD_DATA");
    free(saved);
}

/* A forced method is used where it applies; elsewhere cuDNN's backward data is. */
static void expect_bwd_data_method(const ConvCase *cc, const ConvShape *gpu_shape) {
    if (!cc->bwd_data) return;
    const int want =
        strcmp(cc->bwd_data, "transposed") == 0 && conv_transposed_applies(gpu_shape);
    const int got = conv_bwd_data_is_transposed(gpu_shape->algo[CONV_BACKWARD_DATA]);
    if (dry_run) needs_gpu++;
    else CHECK(got == want, "conv %s: backward data by %s, expected %s", cc->name,
               got ? "the transposed method" : "cuDNN", want ? "the transposed method" : "cuDNN");
}

static void test_conv(const ConvCase *cc) {
    ConvShape s = {.n = cc->n, .h = cc->h, .w = cc->h, .c = cc->c, .oc = cc->oc, .kh = cc->k,
                   .kw = cc->k, .stride = cc->stride, .pad_top = cc->pad_lo,
                   .pad_left = cc->pad_lo, .pad_bottom = cc->pad_hi, .pad_right = cc->pad_hi};
    conv_shape_finish(&s);
    ConvShape shapes[2] = {s, s};
    prepare_both(shapes, cc->bwd_data);
    expect_bwd_data_method(cc, &shapes[GPU]);
    void *workspace[2];
    for (int side = CPU; side <= GPU; side++) {
        shapes[side].n = cc->run_n;   /* as the U-Net runs a prepared conv on a smaller batch */
        workspace[side] = be[side]->alloc(shapes[side].workspace_bytes);
    }
    const size_t x_n = (size_t)cc->run_n * s.h * s.w * s.c, w_n = (size_t)s.oc * s.kh * s.kw * s.c;
    const size_t y_n = (size_t)cc->run_n * s.oh * s.ow * s.oc;
    Pair x = pair_random(x_n, 1, -1, 1), w = pair_random(w_n, 2, -0.3f, 0.3f);
    Pair b = pair_random(s.oc, 3, -1, 1), y = pair_poisoned(y_n);
    for (int side = CPU; side <= GPU; side++)
        be[side]->conv2d_forward(&shapes[side], y.at[side], x.at[side], w.at[side],
                                 cc->bias ? b.at[side] : NULL, workspace[side]);
    expect_close(&y, TOL, "conv %s forward", cc->name);
    for (int pass = 0; pass < 2; pass++) {
        const float beta = (float)pass;
        Pair dy = pair_random(y_n, 4, -1, 1), dx = pair_grad(x_n, beta, 5);
        Pair dw = pair_poisoned(w_n), db = pair_poisoned(s.oc);
        for (int side = CPU; side <= GPU; side++)
            be[side]->conv2d_backward(&shapes[side], cc->input_grad ? dx.at[side] : NULL, beta,
                                      dw.at[side], cc->bias_grad ? db.at[side] : NULL,
                                      dy.at[side], x.at[side], w.at[side], workspace[side]);
        if (cc->input_grad) expect_close(&dx, TOL, "conv %s dx (beta %g)", cc->name, beta);
        expect_close(&dw, TOL, "conv %s dw (beta %g)", cc->name, beta);
        if (cc->bias_grad) expect_close(&db, TOL, "conv %s db (beta %g)", cc->name, beta);
        free_pairs(&dy, &dx, &dw, &db, NULL);
    }
    free_pairs(&x, &w, &b, &y, NULL);
    for (int side = CPU; side <= GPU; side++) be[side]->release(workspace[side]);
}

/* Each case's shape (batch included) is its own: the plan cache keeps the first choice
 * made for a shape, so a forced method must not meet a shape prepared before. */
static void test_convs(void) {
    static const char T[] = "transposed", CUDNN[] = "cudnn";
    static const ConvCase cases[] = {
        /* name                  n run h   c  oc k s lo hi bias db dx  bwd data */
        {"3x3",                  2, 2, 8,  8, 16, 3, 1, 1, 1, 1, 1, 1, NULL},
        {"3x3 in=3",             2, 2, 8,  3,  8, 3, 1, 1, 1, 1, 1, 0, NULL},
        {"3x3 out=3",            2, 2, 8, 16,  3, 3, 1, 1, 1, 1, 1, 1, NULL},
        {"1x1 shortcut",         2, 2, 8, 16,  8, 1, 1, 0, 0, 1, 1, 1, NULL},
        {"downsample",           2, 2, 8,  8,  8, 3, 2, 0, 1, 1, 1, 1, NULL},
        {"3x3 smaller n",        4, 2, 8,  8, 16, 3, 1, 1, 1, 1, 1, 1, NULL},
        {"down smaller n",       4, 3, 8,  8,  8, 3, 2, 0, 1, 1, 1, 1, NULL},
        {"3x3 no bias",          2, 2, 8,  8,  8, 3, 1, 1, 1, 0, 0, 1, NULL},
        {"3x3 16x16 c32",        3, 3, 16, 32, 32, 3, 1, 1, 1, 1, 1, 1, NULL},
        /* prepared at batch 2, run at 1 (`ddpm sample --n 3 --batch 2` died on the first) */
        {"3x3 oc=1 batch 2->1",  2, 1, 32, 16,  1, 3, 1, 1, 1, 1, 1, 1, NULL},
        {"3x3 batch 2->1",       2, 1, 12, 16, 16, 3, 1, 1, 1, 1, 1, 1, NULL},
        /* backward data as the forward conv of dy with W' */
        {"3x3 transposed",       3, 3, 10,  8, 12, 3, 1, 1, 1, 1, 1, 1, T},
        {"3x3 transposed c>oc",  2, 2, 9,  16,  6, 3, 1, 1, 1, 1, 1, 1, T},
        {"1x1 transposed",       2, 2, 8,  12, 20, 1, 1, 0, 0, 1, 1, 1, T},
        {"3x3 pad 0 transposed", 2, 2, 10,  4,  6, 3, 1, 0, 0, 1, 1, 1, T},
        {"3x3 pad 2 transposed", 2, 2, 7,   5,  3, 3, 1, 2, 2, 1, 1, 1, T},
        {"transposed 3->1",      3, 1, 12,  8, 16, 3, 1, 1, 1, 1, 1, 1, T},
        {"1x1 transposed 2->1",  2, 1, 6,  24,  8, 1, 1, 0, 0, 1, 1, 1, T},
        /* where it does not apply, cuDNN's backward data runs instead */
        {"down, transposed asked", 2, 2, 10, 8, 8, 3, 2, 0, 1, 1, 1, 1, T},
        {"stride 1 asymmetric, transposed asked", 2, 2, 9, 6, 6, 3, 1, 0, 1, 1, 1, 1, T},
        {"3x3 cudnn forced",     2, 2, 11,  8, 12, 3, 1, 1, 1, 1, 1, 1, CUDNN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_conv(&cases[i]);
}

/* ---- group norm ---- */

static void test_groupnorm(int n, int hw, int c, int groups, int fuse_silu) {
    const size_t count = (size_t)n * hw * c, stats = (size_t)n * groups;
    Pair x = pair_random(count, 10, -2, 3), gamma = pair_random(c, 11, 0.5f, 1.5f);
    Pair shift = pair_random(c, 12, -0.5f, 0.5f), y = pair_poisoned(count);
    Pair mean = pair_poisoned(stats), rstd = pair_poisoned(stats);
    for (int side = CPU; side <= GPU; side++)
        be[side]->groupnorm_forward(y.at[side], mean.at[side], rstd.at[side], x.at[side],
                                    gamma.at[side], shift.at[side], n, hw, c, groups, 1e-6f,
                                    fuse_silu);
    expect_close(&y, TOL, "groupnorm n%d hw%d c%d g%d silu%d", n, hw, c, groups, fuse_silu);
    expect_close(&mean, TOL, "groupnorm mean");
    expect_close(&rstd, TOL, "groupnorm rstd");
    for (int pass = 0; pass < 3; pass++) {   /* beta 0, beta 1, no dx */
        const float beta = pass == 1 ? 1.0f : 0.0f;
        const int with_dx = pass < 2;
        Pair dy = pair_random(count, 13, -1, 1), dx = pair_grad(count, beta, 14);
        Pair dgamma = pair_poisoned(c), dshift = pair_poisoned(c);
        for (int side = CPU; side <= GPU; side++)
            be[side]->groupnorm_backward(with_dx ? dx.at[side] : NULL, beta, dgamma.at[side],
                                         dshift.at[side], dy.at[side], x.at[side],
                                         mean.at[side], rstd.at[side], gamma.at[side],
                                         shift.at[side], n, hw, c, groups, fuse_silu);
        if (with_dx)
            expect_close(&dx, TOL, "groupnorm backward silu%d pass %d: dx", fuse_silu, pass);
        expect_close(&dgamma, TOL, "groupnorm dgamma");
        expect_close(&dshift, TOL, "groupnorm dshift");
        free_pairs(&dy, &dx, &dgamma, &dshift, NULL);
    }
    free_pairs(&x, &gamma, &shift, &y, &mean, &rstd, NULL);
}

/* ---- elementwise and layout ---- */

static void test_silu_add_accumulate(void) {
    const size_t n = 10007;
    Pair x = pair_random(n, 20, -6, 6), a = pair_random(n, 21, -1, 1), y = pair_poisoned(n);
    for (int side = CPU; side <= GPU; side++) be[side]->silu_forward(y.at[side], x.at[side], n);
    expect_close(&y, TOL, "silu forward");
    for (int side = CPU; side <= GPU; side++)
        be[side]->add_forward(y.at[side], x.at[side], a.at[side], n);
    expect_close(&y, TOL, "add forward");
    for (int pass = 0; pass < 2; pass++) {
        const float beta = (float)pass;
        Pair dx = pair_grad(n, beta, 22), acc = pair_grad(n, beta, 23);
        for (int side = CPU; side <= GPU; side++) {
            be[side]->silu_backward(dx.at[side], beta, a.at[side], x.at[side], n);
            be[side]->accumulate(acc.at[side], beta, a.at[side], n);
        }
        expect_close(&dx, TOL, "silu backward beta %g", beta);
        expect_close(&acc, TOL, "accumulate beta %g", beta);
        free_pairs(&dx, &acc, NULL);
    }
    free_pairs(&x, &a, &y, NULL);
}

static void test_add_bias(int n, int hw, int c) {
    const size_t count = (size_t)n * hw * c;
    Pair x = pair_random(count, 30, -1, 1), bias = pair_random((size_t)n * c, 31, -1, 1);
    Pair y = pair_poisoned(count);
    for (int side = CPU; side <= GPU; side++)
        be[side]->add_bias_forward(y.at[side], x.at[side], bias.at[side], n, hw, c);
    expect_close(&y, TOL, "add_bias forward");
    for (int pass = 0; pass < 2; pass++) {
        const float beta = (float)pass;
        Pair dbias = pair_grad((size_t)n * c, beta, 32);
        for (int side = CPU; side <= GPU; side++)
            be[side]->add_bias_backward(dbias.at[side], beta, x.at[side], n, hw, c);
        expect_close(&dbias, TOL, "add_bias backward beta %g", beta);
        free_pairs(&dbias, NULL);
    }
    free_pairs(&x, &bias, &y, NULL);
}

static void test_dropout(void) {
    const int n = 3;
    const size_t per_sample = 7 * 5 * 3;   /* not a multiple of 4 */
    const size_t count = n * per_sample;
    RngKey key = {42, RNG_STREAM_DROPOUT + 5, 9, 0};
    Pair x = pair_random(count, 40, -1, 1), y = pair_poisoned(count);
    for (int side = CPU; side <= GPU; side++)
        be[side]->dropout_forward(y.at[side], x.at[side], n, per_sample, 0.3f, key);
    expect_close(&y, 0.0, "dropout forward: the same mask");
    for (int side = CPU; side <= GPU; side++)
        be[side]->dropout_forward(y.at[side], x.at[side], n, per_sample, 0.0f, key);
    expect_close(&y, 0.0, "dropout forward p=0");
    for (int pass = 0; pass < 2; pass++) {
        const float beta = (float)pass;
        Pair dx = pair_grad(count, beta, 41);
        for (int side = CPU; side <= GPU; side++)
            be[side]->dropout_backward(dx.at[side], beta, x.at[side], n, per_sample, 0.3f, key);
        expect_close(&dx, TOL, "dropout backward beta %g", beta);
        free_pairs(&dx, NULL);
    }
    free_pairs(&x, &y, NULL);
}

static void test_upsample(void) {
    const int n = 2, h = 5, w = 3, c = 6;
    const size_t in_n = (size_t)n * h * w * c, out_n = 4 * in_n;
    Pair x = pair_random(in_n, 50, -1, 1), y = pair_poisoned(out_n);
    Pair dy = pair_random(out_n, 51, -1, 1);
    for (int side = CPU; side <= GPU; side++)
        be[side]->upsample2x_forward(y.at[side], x.at[side], n, h, w, c);
    expect_close(&y, 0.0, "upsample forward");
    for (int pass = 0; pass < 2; pass++) {
        const float beta = (float)pass;
        Pair dx = pair_grad(in_n, beta, 52);
        for (int side = CPU; side <= GPU; side++)
            be[side]->upsample2x_backward(dx.at[side], beta, dy.at[side], n, h, w, c);
        expect_close(&dx, TOL, "upsample backward beta %g", beta);
        free_pairs(&dx, NULL);
    }
    free_pairs(&x, &y, &dy, NULL);
}

static void test_concat(void) {
    const size_t p = 37;
    const int ca = 5, cb = 11;
    Pair a = pair_random(p * ca, 60, -1, 1), b = pair_random(p * cb, 61, -1, 1);
    Pair y = pair_poisoned(p * (ca + cb)), dy = pair_random(p * (ca + cb), 62, -1, 1);
    for (int side = CPU; side <= GPU; side++)
        be[side]->concat_forward(y.at[side], a.at[side], b.at[side], p, ca, cb);
    expect_close(&y, 0.0, "concat forward");
    for (int pass = 0; pass < 3; pass++) {   /* betas (0, 1), (1, 0), and no da */
        const float beta_a = pass == 1 ? 1.0f : 0.0f, beta_b = pass == 0 ? 1.0f : 0.0f;
        Pair da = pair_grad(p * ca, beta_a, 63), db = pair_grad(p * cb, beta_b, 64);
        for (int side = CPU; side <= GPU; side++)
            be[side]->concat_backward(pass < 2 ? da.at[side] : NULL, beta_a, db.at[side], beta_b,
                                      dy.at[side], p, ca, cb);
        if (pass < 2) expect_close(&da, 0.0, "concat backward da");
        expect_close(&db, 0.0, "concat backward db");
        free_pairs(&da, &db, NULL);
    }
    free_pairs(&a, &b, &y, &dy, NULL);
}

static void test_timestep_embedding(void) {
    const int n = 6, dim = 32;
    const int32_t t[6] = {0, 1, 10, 500, 998, 999};
    void *t_dev[2] = {be[CPU]->alloc(sizeof t), be[GPU]->alloc(sizeof t)};
    upload(t_dev, t, sizeof t);
    Pair y = pair_poisoned((size_t)n * dim);
    for (int side = CPU; side <= GPU; side++)
        be[side]->timestep_embedding(y.at[side], t_dev[side], n, dim);
    expect_close(&y, TOL, "timestep embedding");
    free_pairs(&y, NULL);
    for (int side = CPU; side <= GPU; side++) be[side]->release(t_dev[side]);
}

/* ---- dense ---- */

static void test_linear(int m, int k, int n) {
    Pair x = pair_random((size_t)m * k, 70, -1, 1), w = pair_random((size_t)n * k, 71, -0.5f, 0.5f);
    Pair b = pair_random(n, 72, -1, 1), y = pair_poisoned((size_t)m * n);
    Pair dy = pair_random((size_t)m * n, 73, -1, 1);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (int side = CPU; side <= GPU; side++)
            be[side]->linear_forward(y.at[side], x.at[side], w.at[side],
                                     with_bias ? b.at[side] : NULL, m, k, n);
        expect_close(&y, TOL, "linear %dx%dx%d forward bias %d", m, k, n, with_bias);
    }
    for (int pass = 0; pass < 3; pass++) {   /* beta 0, beta 1, then no dx and no db */
        const float beta = pass == 1 ? 1.0f : 0.0f;
        const int full = pass < 2;
        Pair dx = pair_grad((size_t)m * k, beta, 74), dw = pair_poisoned((size_t)n * k);
        Pair db = pair_poisoned(n);
        for (int side = CPU; side <= GPU; side++)
            be[side]->linear_backward(full ? dx.at[side] : NULL, beta, dw.at[side],
                                      full ? db.at[side] : NULL, dy.at[side], x.at[side],
                                      w.at[side], m, k, n);
        if (full) expect_close(&dx, TOL, "linear %dx%dx%d backward pass %d: dx", m, k, n, pass);
        expect_close(&dw, TOL, "linear %dx%dx%d backward pass %d: dw", m, k, n, pass);
        if (full) expect_close(&db, TOL, "linear %dx%dx%d backward pass %d: db", m, k, n, pass);
        free_pairs(&dx, &dw, &db, NULL);
    }
    free_pairs(&x, &w, &b, &y, &dy, NULL);
}

static void test_attention(int b, int l, int c) {
    const size_t qkv_n = (size_t)b * l * 3 * c, out_n = (size_t)b * l * c;
    const size_t probs_n = (size_t)b * l * l;
    const float scale = 1.0f / sqrtf((float)c);
    Pair qkv = pair_random(qkv_n, 80, -2, 2), out = pair_poisoned(out_n);
    Pair probs = pair_poisoned(probs_n), dout = pair_random(out_n, 81, -1, 1);
    Pair dqkv = pair_poisoned(qkv_n), workspace = pair_poisoned(probs_n);
    for (int side = CPU; side <= GPU; side++)
        be[side]->attention_forward(out.at[side], probs.at[side], qkv.at[side], b, l, c, scale);
    expect_close(&probs, TOL, "attention b%d l%d c%d probs", b, l, c);
    expect_close(&out, TOL, "attention b%d l%d c%d out", b, l, c);
    for (int side = CPU; side <= GPU; side++)
        be[side]->attention_backward(dqkv.at[side], dout.at[side], qkv.at[side], probs.at[side],
                                     b, l, c, scale, workspace.at[side]);
    expect_close(&dqkv, TOL, "attention b%d l%d c%d dqkv", b, l, c);
    free_pairs(&qkv, &out, &probs, &dout, &dqkv, &workspace, NULL);
}

/* ---- fused diffusion ops ---- */

static void test_q_sample(void) {
    const int n = 4, h = 6, w = 5, c = 3, T = 1000;
    const size_t per_sample = (size_t)h * w * c, count = n * per_sample;
    uint8_t *images = xmalloc(count);
    RngKey pixel_key = {7, 99, 0, 0};
    for (size_t i = 0; i < count; i++) images[i] = (uint8_t)(philox_word(pixel_key, 0, i) >> 24);
    const int32_t t[4] = {0, 17, 500, 999};
    float sqrt_ac[1000], sqrt_1m_ac[1000];
    for (int i = 0; i < T; i++) {
        double ac = exp(-5.0 * i / T);
        sqrt_ac[i] = (float)sqrt(ac);
        sqrt_1m_ac[i] = (float)sqrt(1 - ac);
    }
    void *img[2], *t_dev[2], *sa[2], *s1[2];
    for (int side = CPU; side <= GPU; side++) {
        img[side] = be[side]->alloc(count);
        t_dev[side] = be[side]->alloc(sizeof t);
        sa[side] = be[side]->alloc(sizeof sqrt_ac);
        s1[side] = be[side]->alloc(sizeof sqrt_1m_ac);
    }
    upload(img, images, count);
    upload(t_dev, t, sizeof t);
    upload(sa, sqrt_ac, sizeof sqrt_ac);
    upload(s1, sqrt_1m_ac, sizeof sqrt_1m_ac);
    RngKey flip_key = {3, RNG_STREAM_FLIP, 11, 0}, eps_key = {3, RNG_STREAM_EPS, 11, 0};
    for (int pred = PRED_EPS; pred <= PRED_V; pred++) {
        for (int flip = 0; flip < 2; flip++) {
            Pair x_t = pair_poisoned(count), target = pair_poisoned(count);
            Pair x0 = pair_poisoned(count);
            for (int side = CPU; side <= GPU; side++)
                be[side]->q_sample_images(x_t.at[side], target.at[side],
                                          flip ? x0.at[side] : NULL, img[side], t_dev[side],
                                          sa[side], s1[side], n, h, w, c, (PredictionType)pred,
                                          flip, flip_key, eps_key);
            if (flip) {
                expect_close(&x0, 0.0, "q_sample pred %d x0", pred);
            }
            free_pairs(&x0, NULL);
            expect_close(&x_t, TOL, "q_sample pred %d flip %d x_t", pred, flip);
            expect_close(&target, pred == PRED_EPS ? NOISE_TOL : TOL,
                         "q_sample pred %d flip %d target%s", pred, flip,
                         pred == PRED_EPS ? " (eps: the same noise)" : "");
            free_pairs(&x_t, &target, NULL);
        }
    }
    for (int side = CPU; side <= GPU; side++) {
        be[side]->release(img[side]);
        be[side]->release(t_dev[side]);
        be[side]->release(sa[side]);
        be[side]->release(s1[side]);
    }
    free(images);
}

static void test_mse_loss(void) {
    const int n = 5;
    const size_t d = 3 * 32 * 32 + 7;
    Pair pred = pair_random(n * d, 90, -2, 2), target = pair_random(n * d, 91, -2, 2);
    for (int with_grad = 0; with_grad < 2; with_grad++) {
        Pair loss = pair_poisoned(n), dpred = pair_poisoned(n * d);
        for (int side = CPU; side <= GPU; side++)
            be[side]->mse_loss(loss.at[side], with_grad ? dpred.at[side] : NULL, pred.at[side],
                               target.at[side], n, d);
        expect_close(&loss, TOL, "mse loss per sample");
        if (with_grad) expect_close(&dpred, TOL, "mse dpred");
        free_pairs(&loss, &dpred, NULL);
    }
    free_pairs(&pred, &target, NULL);
}

static void test_sample_update_and_normal_fill(void) {
    const int n = 3;
    const size_t d = 2 * 8 * 8 + 1;
    RngKey key = {5, RNG_STREAM_SAMPLE_Z, 123, 0};
    SampleUpdate updates[2] = {
        {.x0_from_xt = 1.3f, .x0_from_out = -0.7f, .coef_x0 = 0.4f, .coef_xt = 0.55f,
         .sigma = 0.2f, .clip_x0 = 1},
        {.x0_from_xt = 0.0f, .x0_from_out = 1.0f, .coef_x0 = 0.9f, .coef_xt = 0.1f,
         .sigma = 0.0f, .clip_x0 = 0},
    };
    Pair out = pair_random(n * d, 100, -2, 2);
    for (int i = 0; i < 2; i++) {
        Pair x = pair_random(n * d, 101, -2, 2);
        for (int side = CPU; side <= GPU; side++)
            be[side]->sample_update(x.at[side], out.at[side], n, d, updates[i], key);
        expect_close(&x, TOL, "sample_update %s", i == 0 ? "sigma > 0, clip" : "sigma 0");
        free_pairs(&x, NULL);
    }
    /* learned variances: the output has [prediction | v] per pixel, 2C channels */
    SampleUpdate learned = updates[0];
    learned.learned_var = 1;
    learned.use_model_var = 1;
    learned.channels = 3;
    learned.post_logvar = -6.5f;
    learned.log_var_range = 2.5f;
    const size_t d3 = 3 * 5 * 7;
    Pair out2 = pair_random(n * 2 * d3, 102, -1, 1), x = pair_random(n * d3, 103, -2, 2);
    for (int side = CPU; side <= GPU; side++)
        be[side]->sample_update(x.at[side], out2.at[side], n, d3, learned, key);
    expect_close(&x, TOL, "sample_update learned variance");
    free_pairs(&out2, &x, NULL);
    Pair z = pair_poisoned(n * d);
    for (int side = CPU; side <= GPU; side++) be[side]->normal_fill(z.at[side], n, d, key);
    expect_close(&z, NOISE_TOL, "normal_fill: the same noise");
    free_pairs(&z, &out, NULL);
}

/* The fused DDPM losses: L_simple alone, and hybrid L_simple + L_t with learned
 * variances, at timesteps including 0 (the decoder likelihood) and with x0 on the
 * 8-bit grid, its edge bins included. */
static void test_diffusion_loss(void) {
    enum { N = 4, HW = 5 * 6, C = 3, T = 100 };
    const size_t d = (size_t)HW * C;
    float host_tables[7][T];   /* a, b, coef1, coef2, post_logvar, log_var_range, fixed_logvar */
    for (int t = 0; t < T; t++) {
        double beta = 1e-4 + (0.02 - 1e-4) * t / (T - 1), ac = exp(-2.0 * (t + 1) / T);
        host_tables[0][t] = (float)sqrt(1 / ac);
        host_tables[1][t] = (float)-sqrt(1 / ac - 1);
        host_tables[2][t] = (float)(0.3 + 0.6 * t / T);
        host_tables[3][t] = (float)(0.9 - 0.5 * t / T);
        host_tables[4][t] = (float)log(beta * 0.8);
        host_tables[5][t] = (float)(log(beta) - log(beta * 0.8));
        host_tables[6][t] = (float)log(beta * 0.9);
    }
    void *tables[7][2];
    for (int k = 0; k < 7; k++) {
        for (int side = CPU; side <= GPU; side++)
            tables[k][side] = be[side]->alloc(sizeof host_tables[k]);
        upload(tables[k], host_tables[k], sizeof host_tables[k]);
    }
    const int32_t t[N] = {0, 1, 50, T - 1};
    void *t_dev[2] = {be[CPU]->alloc(sizeof t), be[GPU]->alloc(sizeof t)};
    upload(t_dev, t, sizeof t);
    float x0_host[N * 5 * 6 * 3];
    for (size_t i = 0; i < N * d; i++) x0_host[i] = (float)(i * 37 % 256) / 127.5f - 1.0f;
    Pair x0 = pair_alloc(N * d);
    upload((void *const *)x0.at, x0_host, sizeof x0_host);
    Pair x_t = pair_random(N * d, 130, -2, 2), target = pair_random(N * d, 131, -2, 2);
    Pair weight = pair_random(N, 132, 0.5f, 2.0f);
    const LossSpec specs[3] = {
        {.learned_var = 0, .mse_weight = 1.0f},
        {.learned_var = 1, .mse_weight = 1.0f, .vb_weight = 0.001f, .vb_trains_mean = 0},
        {.learned_var = 0, .clip_x0 = 1, .mse_weight = 0.5f, .vb_weight = 1.0f,
         .vb_trains_mean = 1},
    };
    for (int k = 0; k < 3; k++) {
        const LossSpec spec = specs[k];
        const int with_vb = k > 0, out_c = spec.learned_var ? 2 * C : C;
        Pair out = pair_random((size_t)N * HW * out_c, 133, -1, 1);
        Pair mse = pair_poisoned(N), vb = pair_poisoned(N);
        Pair dout = pair_poisoned((size_t)N * HW * out_c);
        for (int side = CPU; side <= GPU; side++) {
            DiffusionTables tb = {tables[0][side], tables[1][side], tables[2][side],
                                  tables[3][side], tables[4][side], tables[5][side],
                                  tables[6][side]};
            be[side]->diffusion_loss(mse.at[side], with_vb ? vb.at[side] : NULL, dout.at[side],
                                     out.at[side], target.at[side], x0.at[side], x_t.at[side],
                                     t_dev[side], k == 2 ? weight.at[side] : NULL, N, HW, C,
                                     spec, tb);
        }
        expect_close(&mse, TOL, "diffusion_loss spec %d: mse", k);
        if (with_vb) expect_close(&vb, TOL, "diffusion_loss spec %d: vb", k);
        expect_close(&dout, TOL, "diffusion_loss spec %d: dout", k);
        free_pairs(&out, &mse, &vb, &dout, NULL);
    }
    for (int side = CPU; side <= GPU; side++) {
        for (int k = 0; k < 7; k++) be[side]->release(tables[k][side]);
        be[side]->release(t_dev[side]);
    }
    free_pairs(&x0, &x_t, &target, &weight, NULL);
}

/* ---- optimizer ---- */

static void test_optimizer(void) {
    const size_t sizes[2] = {1000, 3000001};   /* the second spans every partial-sum block */
    for (int i = 0; i < 2; i++) {
        Pair g = pair_random(sizes[i], 110, -1, 1), norm = pair_poisoned(1);
        for (int side = CPU; side <= GPU; side++)
            be[side]->global_norm(norm.at[side], g.at[side], sizes[i]);
        expect_close(&norm, TOL, "global_norm");
        free_pairs(&g, &norm, NULL);
    }
    const size_t n = 4099;
    Pair p = pair_random(n, 111, -1, 1), g = pair_random(n, 112, -1, 1);
    Pair m = pair_random(n, 113, -0.1f, 0.1f), v = pair_random(n, 114, 0.0f, 0.01f);
    Pair ema = pair_random(n, 115, -1, 1);
    for (int side = CPU; side <= GPU; side++) {
        be[side]->adamw(p.at[side], g.at[side], m.at[side], v.at[side], n, 2e-4f, 0.9f, 0.999f,
                        1e-8f, 0.01f, 1 - 0.9f * 0.9f, 1 - 0.999f * 0.999f, 0.5f);
        be[side]->ema_update(ema.at[side], p.at[side], n, 0.999f);
    }
    expect_close(&p, TOL, "adamw p");
    expect_close(&m, TOL, "adamw m");
    expect_close(&v, TOL, "adamw v");
    expect_close(&ema, TOL, "ema");
    free_pairs(&p, &g, &m, &v, &ema, NULL);
}

/* ---- memory ---- */

static void test_memory(void) {
    const size_t n = 1000;
    Pair a = pair_random(n, 120, -1, 1), b = pair_poisoned(n), c = pair_poisoned(n);
    for (int side = CPU; side <= GPU; side++) {
        be[side]->copy(b.at[side], a.at[side], n * sizeof(float));
        be[side]->fill(c.at[side], 0.25f, n);
    }
    expect_close(&b, 0.0, "copy");
    expect_close(&c, 0.0, "fill");
    Pair zeros = pair_alloc(n);
    expect_close(&zeros, 0.0, "alloc zeroes");
    free_pairs(&a, &b, &c, &zeros, NULL);
}

static void run_all(void) {
    test_memory();
    test_convs();
    for (int fuse = 0; fuse < 2; fuse++) {
        test_groupnorm(2, 16, 32, 8, fuse);
        test_groupnorm(4, 1024, 64, 32, fuse);   /* column sums over several chunks */
    }
    test_silu_add_accumulate();
    test_add_bias(3, 50, 40);
    test_add_bias(2, 4096, 8);   /* several chunks per sample */
    test_dropout();
    test_upsample();
    test_concat();
    test_timestep_embedding();
    test_linear(6, 5, 7);
    test_linear(5000, 24, 40);   /* the bias gradient over several chunks */
    test_attention(2, 16, 8);
    test_attention(3, 20, 12);   /* rows shorter than a warp's stride */
    test_attention(2, 64, 32);
    test_q_sample();
    test_mse_loss();
    test_diffusion_loss();
    test_sample_update_and_normal_fill();
    test_optimizer();
}

int main(void) {
    unsetenv("DDPM_TF32");                 /* strict fp32: the tolerances assume it */
    setenv("DDPM_CONV_CACHE", "0", 1);     /* measure every conv afresh, keep nothing */
    be[CPU] = backend_cpu();
    be[GPU] = backend_cuda();
    if (!be[GPU]) {
        dry_run = 1;
        be[GPU] = backend_cpu();
        run_all();
        printf("test_cuda_ops: SKIP: no CUDA device (%d checks need a GPU)\n", needs_gpu);
        return test_summary("cuda_ops");
    }
    run_all();
    return test_summary("cuda_ops");
}
