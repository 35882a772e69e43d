/* Tests of the CPU conv, linear and attention ops (src/cpu_conv.c, src/cpu_dense.c).
 *
 * Each op is checked three ways:
 *  - forward and backward against direct double-precision loops written here;
 *  - backward against central finite differences of the forward (gradcheck);
 *  - the gradient contract: beta = 0 overwrites (garbage and NaN in dx are ignored),
 *    beta = 1 adds to dx, parameter gradients are overwritten, NULL gradients are
 *    skipped, and a repeated call gives bitwise the same result.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "testing.h"

#define EXACT_TOL 1e-5    /* float op vs double loops, relative to the tensor's max */
#define BETA_TOL 1e-6     /* beta = 1 result vs prefill + gradient, both in float */
#define FD_STEP 1e-2f
#define FD_TOL 2e-3       /* |fd - analytic| / (rms gradient + |analytic|) */
#define FD_PROBES 40

/* ---- buffers ---- */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

/* Uniform in [-1, 1] from xorshift64*: deterministic, no library dependence. */
static float uniform_pm1(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t bits = (rng_state * 0x2545F4914F6CDD1Dull) >> 40;   /* 24 bits */
    return (float)bits / (float)(1 << 23) - 1.0f;
}

static float *random_buffer(size_t n, float amplitude) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = amplitude * uniform_pm1();
    return p;
}

static float *nan_buffer(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float *copy_buffer(const float *src, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    memcpy(p, src, n * sizeof(float));
    return p;
}

/* Rounds a double reference to float so rel_error can compare it. */
static float *to_float(const double *src, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)src[i];
    return p;
}

static int all_finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

static void check_close(const char *what, const char *name, const float *got, const float *want,
                        size_t n, double tol) {
    double err = rel_error(got, want, n, 1e-6);
    CHECK(err <= tol, "%s %s: relative error %.3g > %.3g", name, what, err, tol);
}

/* prefill + grad, computed in float, against what beta = 1 produced */
static void check_accumulated(const char *name, const float *got, const float *prefill,
                              const float *grad, size_t n) {
    float *want = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) want[i] = prefill[i] + grad[i];
    check_close("beta=1 accumulation", name, got, want, n, BETA_TOL);
    free(want);
}

static double rms(const float *p, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)p[i] * p[i];
    return sqrt(s / (double)(n ? n : 1));
}

/* gradcheck with the gradient's own scale as atol, so the score is a relative error. */
static void check_fd(const char *what, const char *name, ForwardFn forward, void *ctx,
                     size_t n_out, const float *weights, float *x, size_t n_x,
                     const float *analytic) {
    float *out = malloc(n_out * sizeof(float));
    double atol = rms(analytic, n_x) + 1e-6;
    double score = gradcheck(forward, ctx, out, n_out, weights, x, n_x, analytic, FD_PROBES,
                             FD_STEP, atol);
    CHECK(score <= FD_TOL, "%s %s: finite-difference score %.3g > %.3g", name, what, score, FD_TOL);
    free(out);
}

/* ---- convolution ---- */

typedef struct {
    const char *name;
    int n, h, w, c, oc, k, stride, pad_top, pad_left, pad_bottom, pad_right;
    int bias, finite_differences;
} ConvCase;

static size_t conv_in_size(const ConvShape *s) { return (size_t)s->n * s->h * s->w * s->c; }
static size_t conv_out_size(const ConvShape *s) { return (size_t)s->n * s->oh * s->ow * s->oc; }
static size_t conv_w_size(const ConvShape *s) { return (size_t)s->oc * s->kh * s->kw * s->c; }

/* Calls visit(ctx, y index, x index, w index) for every multiply of the convolution,
 * so the double-precision forward and backward share one loop nest. */
typedef void (*ConvVisit)(void *ctx, size_t yi, size_t xi, size_t wi);

static void conv_for_each_tap(const ConvShape *s, ConvVisit visit, void *ctx) {
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
                            for (int c = 0; c < s->c; c++) visit(ctx, yi, xi + c, wi + c);
                        }
}

typedef struct {
    const float *x, *w, *dy;
    double *y, *dx, *dw;
} ConvRef;

static void ref_forward_tap(void *p, size_t yi, size_t xi, size_t wi) {
    ConvRef *r = p;
    r->y[yi] += (double)r->x[xi] * r->w[wi];
}

static void ref_backward_tap(void *p, size_t yi, size_t xi, size_t wi) {
    ConvRef *r = p;
    r->dx[xi] += (double)r->dy[yi] * r->w[wi];
    r->dw[wi] += (double)r->dy[yi] * r->x[xi];
}

static float *naive_conv_forward(const ConvShape *s, const float *x, const float *w,
                                 const float *b) {
    size_t ny = conv_out_size(s);
    double *y = calloc(ny, sizeof(double));
    for (size_t i = 0; i < ny && b; i++) y[i] = b[i % s->oc];
    ConvRef r = {.x = x, .w = w, .y = y};
    conv_for_each_tap(s, ref_forward_tap, &r);
    float *yf = to_float(y, ny);
    free(y);
    return yf;
}

/* dx, dw, db (each malloc'ed float) from direct double loops. */
static void naive_conv_backward(const ConvShape *s, const float *dy, const float *x,
                                const float *w, float **dx, float **dw, float **db) {
    size_t nx = conv_in_size(s), nw = conv_w_size(s), ny = conv_out_size(s);
    ConvRef r = {.x = x, .w = w, .dy = dy, .dx = calloc(nx, sizeof(double)),
                 .dw = calloc(nw, sizeof(double))};
    conv_for_each_tap(s, ref_backward_tap, &r);
    double *dbd = calloc((size_t)s->oc, sizeof(double));
    for (size_t i = 0; i < ny; i++) dbd[i % s->oc] += dy[i];
    *dx = to_float(r.dx, nx);
    *dw = to_float(r.dw, nw);
    *db = to_float(dbd, (size_t)s->oc);
    free(r.dx);
    free(r.dw);
    free(dbd);
}

typedef struct {
    const ConvShape *s;
    const float *x, *w, *b;
    void *workspace;
} ConvCtx;

static void conv_forward_fn(void *p, float *out) {
    ConvCtx *c = p;
    cpu_conv2d_forward(c->s, out, c->x, c->w, c->b, c->workspace);
}

static ConvShape conv_shape_of(const ConvCase *t) {
    ConvShape s = {.n = t->n, .h = t->h, .w = t->w, .c = t->c, .oc = t->oc, .kh = t->k,
                   .kw = t->k, .stride = t->stride, .pad_top = t->pad_top,
                   .pad_left = t->pad_left, .pad_bottom = t->pad_bottom,
                   .pad_right = t->pad_right};
    conv_shape_finish(&s);
    cpu_conv2d_prepare(&s);
    return s;
}

/* Workspace full of NaN bytes: the op must not depend on what it holds. */
static void *garbage_workspace(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes);
    return p;
}

static void test_conv(const ConvCase *t) {
    ConvShape s = conv_shape_of(t);
    size_t nx = conv_in_size(&s), ny = conv_out_size(&s), nw = conv_w_size(&s);
    size_t nb = (size_t)s.oc;
    void *ws = garbage_workspace(s.workspace_bytes);
    float *x = random_buffer(nx, 1), *w = random_buffer(nw, 1);
    float *b = t->bias ? random_buffer(nb, 1) : NULL;
    float *dy = random_buffer(ny, 1);

    /* forward */
    float *y = nan_buffer(ny), *y_ref = naive_conv_forward(&s, x, w, b);
    cpu_conv2d_forward(&s, y, x, w, b, ws);
    check_close("forward", t->name, y, y_ref, ny, EXACT_TOL);

    /* backward, beta = 0, into NaN-filled gradients */
    float *dx = nan_buffer(nx), *dw = nan_buffer(nw), *db = t->bias ? nan_buffer(nb) : NULL;
    float *dx_ref, *dw_ref, *db_ref;
    naive_conv_backward(&s, dy, x, w, &dx_ref, &dw_ref, &db_ref);
    cpu_conv2d_backward(&s, dx, 0.0f, dw, db, dy, x, w, ws);
    CHECK(all_finite(dx, nx), "%s dx: beta=0 let NaN through", t->name);
    check_close("dx", t->name, dx, dx_ref, nx, EXACT_TOL);
    check_close("dw", t->name, dw, dw_ref, nw, EXACT_TOL);
    if (db) check_close("db", t->name, db, db_ref, nb, EXACT_TOL);

    /* beta = 1 adds to dx; dw and db are overwritten again, bitwise the same */
    float *prefill = random_buffer(nx, 1), *dx_acc = copy_buffer(prefill, nx);
    float *dw2 = nan_buffer(nw), *db2 = t->bias ? nan_buffer(nb) : NULL;
    cpu_conv2d_backward(&s, dx_acc, 1.0f, dw2, db2, dy, x, w, ws);
    check_accumulated(t->name, dx_acc, prefill, dx, nx);
    CHECK(!memcmp(dw, dw2, nw * sizeof(float)), "%s dw: not deterministic", t->name);
    CHECK(!db || !memcmp(db, db2, nb * sizeof(float)), "%s db: not deterministic", t->name);

    /* dx = NULL skips the input gradient only */
    float *dw3 = nan_buffer(nw);
    cpu_conv2d_backward(&s, NULL, 0.0f, dw3, NULL, dy, x, w, ws);
    CHECK(!memcmp(dw, dw3, nw * sizeof(float)), "%s dw: changed when dx is NULL", t->name);

    if (t->finite_differences) {
        ConvCtx ctx = {&s, x, w, b, ws};
        check_fd("dx", t->name, conv_forward_fn, &ctx, ny, dy, x, nx, dx);
        check_fd("dw", t->name, conv_forward_fn, &ctx, ny, dy, w, nw, dw);
        if (b) check_fd("db", t->name, conv_forward_fn, &ctx, ny, dy, b, nb, db);
    }

    free(ws); free(x); free(w); free(b); free(dy); free(y); free(y_ref);
    free(dx); free(dw); free(db); free(dx_ref); free(dw_ref); free(db_ref);
    free(prefill); free(dx_acc); free(dw2); free(db2); free(dw3);
}

/* The workspace holds fewer samples than the batch, so the batch is chunked. */
static void check_chunked(const ConvCase *t) {
    ConvShape s = conv_shape_of(t);
    size_t whole_batch = (size_t)s.n * s.oh * s.ow * s.kh * s.kw * s.c * sizeof(float);
    CHECK(s.workspace_bytes > 0 && s.workspace_bytes < whole_batch,
          "%s: workspace %zu bytes does not chunk a %zu-byte column matrix", t->name,
          s.workspace_bytes, whole_batch);
}

static void test_convs(void) {
    static const ConvCase cases[] = {
        /* name                      n  h   w   c  oc k s  pads        bias fd */
        {"conv3x3 odd",              2, 5,  7,  3, 4, 3, 1, 1, 1, 1, 1, 1, 1},
        {"conv3x3 no bias",          1, 4,  4,  5, 3, 3, 1, 1, 1, 1, 1, 0, 1},
        {"conv1x1",                  2, 5,  7,  6, 5, 1, 1, 0, 0, 0, 0, 1, 1},
        {"conv3x3 s2 downsample",    2, 6,  8,  3, 4, 3, 2, 0, 0, 1, 1, 1, 1},
        {"conv3x3 s2 odd downsample",2, 5,  7,  4, 3, 3, 2, 0, 0, 1, 1, 1, 1},
        {"conv3x3 s2 uncovered edge",2, 6,  6,  2, 3, 3, 2, 0, 0, 0, 0, 1, 1},
        {"conv1x1 s2",               2, 5,  5,  3, 2, 1, 2, 0, 0, 0, 0, 1, 1},
        {"conv3x3 chunked batch",    4, 64, 64, 64, 8, 3, 1, 1, 1, 1, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_conv(&cases[i]);
    check_chunked(&cases[sizeof cases / sizeof cases[0] - 1]);
}

/* ---- linear ---- */

typedef struct {
    const float *x, *w, *b;
    int m, k, n;
} LinearCtx;

static void linear_forward_fn(void *p, float *out) {
    LinearCtx *c = p;
    cpu_linear_forward(out, c->x, c->w, c->b, c->m, c->k, c->n);
}

static void test_linear(const char *name, int m, int k, int n, int bias, int finite_differences) {
    float *x = random_buffer((size_t)m * k, 1), *w = random_buffer((size_t)n * k, 1);
    float *b = bias ? random_buffer((size_t)n, 1) : NULL, *dy = random_buffer((size_t)m * n, 1);
    double *yd = calloc((size_t)m * n, sizeof(double));
    double *dxd = calloc((size_t)m * k, sizeof(double));
    double *dwd = calloc((size_t)n * k, sizeof(double)), *dbd = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < m; i++)
        for (int o = 0; o < n; o++) {
            size_t yi = (size_t)i * n + o;
            yd[yi] = b ? b[o] : 0;
            dbd[o] += dy[yi];
            for (int j = 0; j < k; j++) {
                yd[yi] += (double)x[(size_t)i * k + j] * w[(size_t)o * k + j];
                dxd[(size_t)i * k + j] += (double)dy[yi] * w[(size_t)o * k + j];
                dwd[(size_t)o * k + j] += (double)dy[yi] * x[(size_t)i * k + j];
            }
        }
    float *y_ref = to_float(yd, (size_t)m * n), *dx_ref = to_float(dxd, (size_t)m * k);
    float *dw_ref = to_float(dwd, (size_t)n * k), *db_ref = to_float(dbd, (size_t)n);

    float *y = nan_buffer((size_t)m * n);
    cpu_linear_forward(y, x, w, b, m, k, n);
    check_close("forward", name, y, y_ref, (size_t)m * n, EXACT_TOL);

    float *dx = nan_buffer((size_t)m * k), *dw = nan_buffer((size_t)n * k);
    float *db = bias ? nan_buffer((size_t)n) : NULL;
    cpu_linear_backward(dx, 0.0f, dw, db, dy, x, w, m, k, n);
    CHECK(all_finite(dx, (size_t)m * k), "%s dx: beta=0 let NaN through", name);
    check_close("dx", name, dx, dx_ref, (size_t)m * k, EXACT_TOL);
    check_close("dw", name, dw, dw_ref, (size_t)n * k, EXACT_TOL);
    if (db) check_close("db", name, db, db_ref, (size_t)n, EXACT_TOL);

    float *prefill = random_buffer((size_t)m * k, 1), *dx_acc = copy_buffer(prefill, (size_t)m * k);
    float *dw2 = nan_buffer((size_t)n * k);
    cpu_linear_backward(dx_acc, 1.0f, dw2, NULL, dy, x, w, m, k, n);
    check_accumulated(name, dx_acc, prefill, dx, (size_t)m * k);
    CHECK(!memcmp(dw, dw2, (size_t)n * k * sizeof(float)), "%s dw: not deterministic", name);

    float *dw3 = nan_buffer((size_t)n * k);
    cpu_linear_backward(NULL, 0.0f, dw3, NULL, dy, x, w, m, k, n);
    CHECK(!memcmp(dw, dw3, (size_t)n * k * sizeof(float)), "%s dw: changed when dx is NULL", name);

    if (finite_differences) {
        LinearCtx ctx = {x, w, b, m, k, n};
        size_t ny = (size_t)m * n;
        check_fd("dx", name, linear_forward_fn, &ctx, ny, dy, x, (size_t)m * k, dx);
        check_fd("dw", name, linear_forward_fn, &ctx, ny, dy, w, (size_t)n * k, dw);
        if (b) check_fd("db", name, linear_forward_fn, &ctx, ny, dy, b, (size_t)n, db);
    }

    free(x); free(w); free(b); free(dy); free(yd); free(dxd); free(dwd); free(dbd);
    free(y_ref); free(dx_ref); free(dw_ref); free(db_ref); free(y); free(dx); free(dw); free(db);
    free(prefill); free(dx_acc); free(dw2); free(dw3);
}

/* ---- attention ---- */

/* Direct double-precision attention of one sample; returns out (L, C) and probs (L, L)
 * in double, and when dout is given, dqkv (L, 3C). */
static void naive_attention(const float *qkv, const float *dout, int l, int c, double scale,
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
    if (!dout) return;
    memset(dqkv, 0, (size_t)l * ld * sizeof(double));
    double *dscore = malloc((size_t)l * sizeof(double));
    for (int i = 0; i < l; i++) {
        const double *p = probs + (size_t)i * l;
        double weighted = 0;
        for (int j = 0; j < l; j++) {
            double dp = 0;
            for (int d = 0; d < c; d++) {
                dp += (double)dout[i * c + d] * qkv[j * ld + 2 * c + d];
                dqkv[j * ld + 2 * c + d] += p[j] * dout[i * c + d];   /* dv */
            }
            dscore[j] = dp;
            weighted += dp * p[j];
        }
        for (int j = 0; j < l; j++) {
            double ds = p[j] * (dscore[j] - weighted) * scale;
            for (int d = 0; d < c; d++) {
                dqkv[i * ld + d] += ds * qkv[j * ld + c + d];       /* dq */
                dqkv[j * ld + c + d] += ds * qkv[i * ld + d];       /* dk */
            }
        }
    }
    free(dscore);
}

typedef struct {
    const float *qkv;
    float *probs;
    int b, l, c;
    float scale;
} AttentionCtx;

static void attention_forward_fn(void *p, float *out) {
    AttentionCtx *a = p;
    cpu_attention_forward(out, a->probs, a->qkv, a->b, a->l, a->c, a->scale);
}

static void test_attention(const char *name, int b, int l, int c, int finite_differences) {
    const float scale = 1.0f / sqrtf((float)c);
    size_t n_qkv = (size_t)b * l * 3 * c, n_out = (size_t)b * l * c, n_probs = (size_t)b * l * l;
    /* amplitude 2 makes the softmax far from uniform */
    float *qkv = random_buffer(n_qkv, 2), *dout = random_buffer(n_out, 1);
    double *out_d = malloc(n_out * sizeof(double)), *probs_d = malloc(n_probs * sizeof(double));
    double *dqkv_d = malloc(n_qkv * sizeof(double));
    for (int s = 0; s < b; s++)
        naive_attention(qkv + (size_t)s * l * 3 * c, dout + (size_t)s * l * c, l, c, scale,
                        out_d + (size_t)s * l * c, probs_d + (size_t)s * l * l,
                        dqkv_d + (size_t)s * l * 3 * c);
    float *out_ref = to_float(out_d, n_out), *probs_ref = to_float(probs_d, n_probs);
    float *dqkv_ref = to_float(dqkv_d, n_qkv);

    float *out = nan_buffer(n_out), *probs = nan_buffer(n_probs);
    cpu_attention_forward(out, probs, qkv, b, l, c, scale);
    check_close("forward", name, out, out_ref, n_out, EXACT_TOL);
    check_close("probs", name, probs, probs_ref, n_probs, EXACT_TOL);

    float *dqkv = nan_buffer(n_qkv), *workspace = nan_buffer(n_probs);
    cpu_attention_backward(dqkv, dout, qkv, probs, b, l, c, scale, workspace);
    CHECK(all_finite(dqkv, n_qkv), "%s dqkv: not fully overwritten", name);
    check_close("dqkv", name, dqkv, dqkv_ref, n_qkv, EXACT_TOL);

    float *dqkv2 = nan_buffer(n_qkv);
    cpu_attention_backward(dqkv2, dout, qkv, probs, b, l, c, scale, workspace);
    CHECK(!memcmp(dqkv, dqkv2, n_qkv * sizeof(float)), "%s dqkv: not deterministic", name);

    if (finite_differences) {
        AttentionCtx ctx = {qkv, probs, b, l, c, scale};
        check_fd("dqkv", name, attention_forward_fn, &ctx, n_out, dout, qkv, n_qkv, dqkv);
    }

    free(qkv); free(dout); free(out_d); free(probs_d); free(dqkv_d); free(out_ref);
    free(probs_ref); free(dqkv_ref); free(out); free(probs); free(dqkv); free(workspace);
    free(dqkv2);
}

int main(void) {
    test_convs();
    test_linear("linear odd", 7, 5, 6, 1, 1);
    test_linear("linear no bias", 3, 4, 2, 0, 1);
    test_linear("linear large", 300, 256, 512, 1, 0);
    test_attention("attention small", 2, 7, 8, 1);
    test_attention("attention large", 2, 64, 32, 0);
    return test_summary("cpu_dense_ops");
}
