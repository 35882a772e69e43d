/* Tests of the CPU backend's non-GEMM ops: GroupNorm, the elementwise and layout
 * ops, the timestep embedding, the fused diffusion steps, Philox moments and the
 * optimizer. Backward ops are checked by finite differences (gradcheck) and their
 * `beta` semantics; GroupNorm also against a naive double implementation; the
 * random ops bit for bit against philox.h; AdamW against PyTorch's formula in double. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "testing.h"

/* gradcheck: probes per tensor, step, and the pass threshold on its score */
#define FD_PROBES 48
#define FD_STEP 1e-2f
#define FD_ATOL 1e-2
#define FD_MAX_SCORE 1e-2

static const RngKey data_key = {12345, 99, 0, 0};

static float *new_floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* Deterministic test data: uniform in [lo, hi), drawn from Philox stream `tag`. */
static float *random_floats(size_t n, float lo, float hi, uint32_t tag) {
    float *x = new_floats(n);
    RngKey key = data_key;
    key.step = tag;
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * philox_uniform(key, 0, i);
    return x;
}

static void check_grad(const char *what, const char *wrt, ForwardFn forward, void *ctx,
                       size_t n_out, const float *weights, float *x, size_t n_x,
                       const float *analytic) {
    float *out = new_floats(n_out);
    double score = gradcheck(forward, ctx, out, n_out, weights, x, n_x, analytic, FD_PROBES,
                             FD_STEP, FD_ATOL);
    CHECK(score <= FD_MAX_SCORE, "%s wrt %s: finite-difference score %g", what, wrt, score);
    free(out);
}

static int all_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ---------------------------------------------------------------- beta semantics */

/* Runs one backward op writing `grad` (n floats) with the given beta. */
typedef void (*BackwardFn)(void *ctx, float *grad, float beta);

/* beta 0 must overwrite (NaN garbage ignored); beta 1 must add to what is there. */
static void check_beta(const char *what, BackwardFn backward, void *ctx, size_t n) {
    float *fresh = new_floats(n), *prefilled = random_floats(n, -1, 1, 777);
    float *expected = new_floats(n);
    for (size_t i = 0; i < n; i++) fresh[i] = NAN;
    backward(ctx, fresh, 0.0f);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(fresh[i]) != 0;
    CHECK(finite, "%s: beta=0 did not overwrite a NaN-filled gradient", what);
    for (size_t i = 0; i < n; i++) expected[i] = prefilled[i] + fresh[i];
    backward(ctx, prefilled, 1.0f);
    CHECK(all_equal(prefilled, expected, n), "%s: beta=1 did not add to the gradient", what);
    free(fresh);
    free(prefilled);
    free(expected);
}

/* ---------------------------------------------------------------- GroupNorm */

typedef struct {
    float *x, *gamma, *shift, *mean, *rstd;
    int n, hw, c, groups, fuse;
    const float *dy;    /* for the beta check */
} GroupNormCase;

static void groupnorm_fwd(void *ctx, float *out) {
    GroupNormCase *g = ctx;
    cpu_groupnorm_forward(out, g->mean, g->rstd, g->x, g->gamma, g->shift, g->n, g->hw, g->c,
                          g->groups, 1e-6f, g->fuse);
}

static void groupnorm_bwd_dx(void *ctx, float *dx, float beta) {
    GroupNormCase *g = ctx;
    cpu_groupnorm_backward(dx, beta, NULL, NULL, g->dy, g->x, g->mean, g->rstd, g->gamma, g->shift,
                           g->n, g->hw, g->c, g->groups, g->fuse);
}

/* Naive double GroupNorm: y (and, when dy is given, dx, dgamma, dshift). */
static void groupnorm_naive(double *y, double *dx, double *dgamma, double *dshift,
                            const float *dy, const GroupNormCase *g) {
    int cg = g->c / g->groups;
    double count = (double)g->hw * cg;
    if (dgamma) memset(dgamma, 0, g->c * sizeof(double));
    if (dshift) memset(dshift, 0, g->c * sizeof(double));
    for (int s = 0; s < g->n; s++) {
        for (int grp = 0; grp < g->groups; grp++) {
#define AT(p, j) ((size_t)s * g->hw * g->c + (size_t)(p) * g->c + grp * cg + (j))
            double mu = 0, var = 0, mean_g = 0, mean_gx = 0;
            for (int p = 0; p < g->hw; p++)
                for (int j = 0; j < cg; j++) mu += g->x[AT(p, j)] / count;
            for (int p = 0; p < g->hw; p++)
                for (int j = 0; j < cg; j++) var += pow(g->x[AT(p, j)] - mu, 2) / count;
            double rstd = 1.0 / sqrt(var + 1e-6);
            /* pass 0: y; pass 1: the group means of the gradient; pass 2: dx */
            for (int pass = 0; pass < 3; pass++) {
                for (int p = 0; p < g->hw; p++) {
                    for (int j = 0; j < cg; j++) {
                        int ch = grp * cg + j;
                        size_t i = AT(p, j);
                        double xhat = (g->x[i] - mu) * rstd;
                        double pre = xhat * g->gamma[ch] + g->shift[ch];
                        double sig = 1.0 / (1.0 + exp(-pre));
                        if (pass == 0 && y) y[i] = g->fuse ? pre * sig : pre;
                        if (!dy) continue;
                        double dpre = g->fuse ? dy[i] * sig * (1 + pre * (1 - sig)) : dy[i];
                        double gr = dpre * g->gamma[ch];
                        if (pass == 1) {
                            mean_g += gr / count;
                            mean_gx += gr * xhat / count;
                            dgamma[ch] += dpre * xhat;
                            dshift[ch] += dpre;
                        }
                        if (pass == 2) dx[i] = rstd * (gr - mean_g - xhat * mean_gx);
                    }
                }
            }
#undef AT
        }
    }
}

static float *to_floats(const double *v, size_t n) {
    float *f = new_floats(n);
    for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}

static void test_groupnorm_case(int n, int hw, int c, int groups, int fuse) {
    char what[96];
    size_t total = (size_t)n * hw * c;
    GroupNormCase g = {random_floats(total, -1.5f, 2.5f, 1), random_floats(c, 0.5f, 1.5f, 2),
                       random_floats(c, -0.5f, 0.5f, 3), new_floats(n * groups),
                       new_floats(n * groups), n, hw, c, groups, fuse, NULL};
    float *y = new_floats(total), *dy = random_floats(total, -1, 1, 4);
    float *dx = new_floats(total), *dgamma = new_floats(c), *dshift = new_floats(c);
    g.dy = dy;
    for (int ch = 0; ch < c; ch++) dgamma[ch] = dshift[ch] = NAN;  /* must be overwritten */

    double *y_ref = calloc(total, sizeof(double)), *dx_ref = calloc(total, sizeof(double));
    double *dgamma_ref = calloc(c, sizeof(double)), *dshift_ref = calloc(c, sizeof(double));
    groupnorm_naive(y_ref, dx_ref, dgamma_ref, dshift_ref, dy, &g);
    float *yr = to_floats(y_ref, total), *dxr = to_floats(dx_ref, total);
    float *dgr = to_floats(dgamma_ref, c), *dsr = to_floats(dshift_ref, c);

    snprintf(what, sizeof what, "groupnorm n%d hw%d c%d g%d silu%d", n, hw, c, groups, fuse);
    groupnorm_fwd(&g, y);
    cpu_groupnorm_backward(dx, 0.0f, dgamma, dshift, dy, g.x, g.mean, g.rstd, g.gamma, g.shift,
                           n, hw, c, groups, fuse);
    CHECK(rel_error(y, yr, total, 0) <= 1e-5, "%s forward vs naive: %g", what,
          rel_error(y, yr, total, 0));
    CHECK(rel_error(dx, dxr, total, 0) <= 1e-5, "%s dx vs naive: %g", what,
          rel_error(dx, dxr, total, 0));
    CHECK(rel_error(dgamma, dgr, c, 0) <= 1e-5, "%s dgamma vs naive: %g", what,
          rel_error(dgamma, dgr, c, 0));
    CHECK(rel_error(dshift, dsr, c, 0) <= 1e-5, "%s dshift vs naive: %g", what,
          rel_error(dshift, dsr, c, 0));

    check_grad(what, "x", groupnorm_fwd, &g, total, dy, g.x, total, dx);
    check_grad(what, "gamma", groupnorm_fwd, &g, total, dy, g.gamma, c, dgamma);
    check_grad(what, "shift", groupnorm_fwd, &g, total, dy, g.shift, c, dshift);
    groupnorm_fwd(&g, y);   /* restore mean/rstd of the unperturbed x */
    check_beta(what, groupnorm_bwd_dx, &g, total);

    free(g.x), free(g.gamma), free(g.shift), free(g.mean), free(g.rstd), free(y), free(dy);
    free(dx), free(dgamma), free(dshift), free(y_ref), free(dx_ref), free(dgamma_ref);
    free(dshift_ref), free(yr), free(dxr), free(dgr), free(dsr);
}

/* Statistics of an activation with a large mean must not lose the variance. */
static void test_groupnorm_large_mean(void) {
    int n = 1, hw = 256, c = 4, groups = 1;
    size_t total = (size_t)n * hw * c;
    GroupNormCase g = {random_floats(total, 999.0f, 1001.0f, 5), random_floats(c, 1, 1, 0),
                       random_floats(c, 0, 0, 0), new_floats(1), new_floats(1), n, hw, c,
                       groups, 0, NULL};
    float *y = new_floats(total);
    double *y_ref = calloc(total, sizeof(double));
    groupnorm_fwd(&g, y);
    groupnorm_naive(y_ref, NULL, NULL, NULL, NULL, &g);
    float *yr = to_floats(y_ref, total);
    CHECK(rel_error(y, yr, total, 0) <= 1e-4, "groupnorm large mean: %g",
          rel_error(y, yr, total, 0));
    free(g.x), free(g.gamma), free(g.shift), free(g.mean), free(g.rstd), free(y), free(y_ref);
    free(yr);
}

/* Parameter gradients must not depend on the number of threads. */
static void test_groupnorm_deterministic(void) {
    int n = 6, hw = 64, c = 32, groups = 8;
    size_t total = (size_t)n * hw * c;
    GroupNormCase g = {random_floats(total, -1, 1, 6), random_floats(c, 0.5f, 1.5f, 7),
                       random_floats(c, -0.5f, 0.5f, 8), new_floats(n * groups),
                       new_floats(n * groups), n, hw, c, groups, 1, NULL};
    float *y = new_floats(total), *dy = random_floats(total, -1, 1, 9);
    float *dx[2] = {new_floats(total), new_floats(total)};
    float *dgamma[2] = {new_floats(c), new_floats(c)};
    groupnorm_fwd(&g, y);
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        cpu_groupnorm_backward(dx[k], 0.0f, dgamma[k], NULL, dy, g.x, g.mean, g.rstd, g.gamma,
                               g.shift, n, hw, c, groups, 1);
    }
    omp_set_num_threads(threads);
    CHECK(all_equal(dx[0], dx[1], total) && all_equal(dgamma[0], dgamma[1], c),
          "groupnorm backward differs between 1 and 3 threads");
    free(g.x), free(g.gamma), free(g.shift), free(g.mean), free(g.rstd), free(y), free(dy);
    free(dx[0]), free(dx[1]), free(dgamma[0]), free(dgamma[1]);
}

static void test_groupnorm(void) {
    test_groupnorm_case(2, 6, 8, 2, 0);
    test_groupnorm_case(2, 6, 8, 2, 1);
    test_groupnorm_case(3, 5, 4, 4, 0);
    test_groupnorm_case(3, 5, 4, 4, 1);
    test_groupnorm_case(2, 9, 12, 1, 1);
    test_groupnorm_large_mean();
    test_groupnorm_deterministic();
}

/* ---------------------------------------------------------------- elementwise */

typedef struct {
    float *x, *b;           /* inputs (b: second operand, bias) */
    const float *dy;
    int n, hw, c;           /* add_bias; silu/accumulate use n*hw*c elements */
    float p;
    RngKey key;
} EltCase;

static size_t elt_size(const EltCase *e) { return (size_t)e->n * e->hw * e->c; }

static void silu_fwd(void *ctx, float *out) {
    EltCase *e = ctx;
    cpu_silu_forward(out, e->x, elt_size(e));
}
static void silu_bwd(void *ctx, float *dx, float beta) {
    EltCase *e = ctx;
    cpu_silu_backward(dx, beta, e->dy, e->x, elt_size(e));
}
static void add_fwd(void *ctx, float *out) {
    EltCase *e = ctx;
    cpu_add_forward(out, e->x, e->b, elt_size(e));
}
static void add_bwd(void *ctx, float *dx, float beta) {
    EltCase *e = ctx;
    cpu_accumulate(dx, beta, e->dy, elt_size(e));
}
static void add_bias_fwd(void *ctx, float *out) {
    EltCase *e = ctx;
    cpu_add_bias_forward(out, e->x, e->b, e->n, e->hw, e->c);
}
static void add_bias_bwd(void *ctx, float *dbias, float beta) {
    EltCase *e = ctx;
    cpu_add_bias_backward(dbias, beta, e->dy, e->n, e->hw, e->c);
}
static void dropout_fwd(void *ctx, float *out) {
    EltCase *e = ctx;
    cpu_dropout_forward(out, e->x, e->n, (size_t)e->hw * e->c, e->p, e->key);
}
static void dropout_bwd(void *ctx, float *dx, float beta) {
    EltCase *e = ctx;
    cpu_dropout_backward(dx, beta, e->dy, e->n, (size_t)e->hw * e->c, e->p, e->key);
}

static void test_silu(void) {
    EltCase e = {.x = random_floats(300, -8, 8, 10), .dy = random_floats(300, -1, 1, 11),
                 .n = 3, .hw = 10, .c = 10};
    size_t n = elt_size(&e);
    float *y = new_floats(n), *dx = new_floats(n);
    silu_fwd(&e, y);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = e.x[i] / (1.0 + exp(-(double)e.x[i]));
        worst = fmax(worst, fabs(y[i] - ref) / fmax(fabs(ref), 1e-3));
    }
    CHECK(worst <= 1e-6, "silu forward vs double: %g", worst);
    /* far tails: no overflow to inf or NaN in forward or backward */
    float tails[4] = {-1000.0f, -90.0f, 90.0f, 1000.0f}, ones[4] = {1, 1, 1, 1};
    float tail_y[4], tail_dx[4];
    cpu_silu_forward(tail_y, tails, 4);
    cpu_silu_backward(tail_dx, 0.0f, ones, tails, 4);
    CHECK(fabsf(tail_y[0]) < 1e-30f && fabsf(tail_y[1]) < 1e-30f && tail_y[2] == 90.0f &&
              tail_y[3] == 1000.0f,
          "silu tails: %g %g %g %g", tail_y[0], tail_y[1], tail_y[2], tail_y[3]);
    CHECK(fabsf(tail_dx[0]) < 1e-30f && fabsf(tail_dx[1]) < 1e-30f && tail_dx[2] == 1.0f &&
              tail_dx[3] == 1.0f,
          "silu' tails: %g %g %g %g", tail_dx[0], tail_dx[1], tail_dx[2], tail_dx[3]);
    silu_bwd(&e, dx, 0.0f);
    check_grad("silu", "x", silu_fwd, &e, n, e.dy, e.x, n, dx);
    check_beta("silu", silu_bwd, &e, n);
    free(e.x), free((float *)e.dy), free(y), free(dx);
}

static void test_add(void) {
    EltCase e = {.x = random_floats(120, -1, 1, 12), .b = random_floats(120, -1, 1, 13),
                 .dy = random_floats(120, -1, 1, 14), .n = 2, .hw = 6, .c = 10};
    size_t n = elt_size(&e);
    float *y = new_floats(n), *d = new_floats(n);
    add_fwd(&e, y);
    int exact = 1;
    for (size_t i = 0; i < n; i++) exact &= y[i] == e.x[i] + e.b[i];
    CHECK(exact, "add_forward is not a + b");
    add_bwd(&e, d, 0.0f);   /* the gradient of a sum is dy for both operands */
    check_grad("add", "a", add_fwd, &e, n, e.dy, e.x, n, d);
    check_grad("add", "b", add_fwd, &e, n, e.dy, e.b, n, d);
    check_beta("accumulate", add_bwd, &e, n);
    free(e.x), free(e.b), free((float *)e.dy), free(y), free(d);
}

static void test_add_bias(void) {
    /* c > 256 exercises more than one channel block of the backward */
    int n = 2, hw = 5, c = 300;
    EltCase e = {.x = random_floats((size_t)n * hw * c, -1, 1, 15),
                 .b = random_floats((size_t)n * c, -1, 1, 16),
                 .dy = random_floats((size_t)n * hw * c, -1, 1, 17), .n = n, .hw = hw, .c = c};
    size_t total = elt_size(&e);
    float *y = new_floats(total), *dx = new_floats(total), *dbias = new_floats((size_t)n * c);
    add_bias_fwd(&e, y);
    int exact = 1;
    for (int s = 0; s < n; s++)
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++) {
                size_t i = ((size_t)s * hw + p) * c + ch;
                exact &= y[i] == e.x[i] + e.b[(size_t)s * c + ch];
            }
    CHECK(exact, "add_bias forward is not x + bias[sample]");
    add_bias_bwd(&e, dbias, 0.0f);
    memcpy(dx, e.dy, total * sizeof(float));    /* identity for x */
    check_grad("add_bias", "x", add_bias_fwd, &e, total, e.dy, e.x, total, dx);
    check_grad("add_bias", "bias", add_bias_fwd, &e, total, e.dy, e.b, (size_t)n * c, dbias);
    check_beta("add_bias", add_bias_bwd, &e, (size_t)n * c);
    free(e.x), free(e.b), free((float *)e.dy), free(y), free(dx), free(dbias);
}

static void test_dropout(void) {
    RngKey key = {42, RNG_STREAM_DROPOUT + 3, 17, 0};
    int n = 3, hw = 7, c = 45;  /* 315 per sample: over one 256-element run, not a multiple of 4 */
    size_t per = (size_t)hw * c, total = (size_t)n * per;
    EltCase e = {.x = random_floats(total, 0.5f, 1.5f, 18), .dy = random_floats(total, -1, 1, 19),
                 .n = n, .hw = hw, .c = c, .p = 0.3f, .key = key};
    float *y = new_floats(total), *dx = new_floats(total);
    dropout_fwd(&e, y);
    int exact = 1, kept = 0;
    for (int s = 0; s < n; s++)
        for (size_t k = 0; k < per; k++) {
            size_t i = s * per + k;
            int keep = philox_uniform(key, s, k) >= 0.3f;
            kept += keep;
            exact &= y[i] == (keep ? e.x[i] * (1.0f / 0.7f) : 0.0f);
        }
    CHECK(exact, "dropout forward does not follow philox_uniform >= p");
    CHECK(kept > 0.55 * total && kept < 0.85 * total, "dropout kept %d of %zu", kept, total);
    dropout_bwd(&e, dx, 0.0f);
    check_grad("dropout", "x", dropout_fwd, &e, total, e.dy, e.x, total, dx);
    check_beta("dropout", dropout_bwd, &e, total);
    e.p = 0.0f;
    dropout_fwd(&e, y);
    CHECK(all_equal(y, e.x, total), "dropout p=0 is not a copy");
    check_beta("dropout p=0", dropout_bwd, &e, total);
    free(e.x), free((float *)e.dy), free(y), free(dx);
}

/* ---------------------------------------------------------------- layout */

typedef struct {
    float *x, *b;
    const float *dy;
    int n, h, w, c;     /* upsample input; concat: p = n*h*w, ca = c, cb = w */
} LayoutCase;

static void upsample_fwd(void *ctx, float *out) {
    LayoutCase *l = ctx;
    cpu_upsample2x_forward(out, l->x, l->n, l->h, l->w, l->c);
}
static void upsample_bwd(void *ctx, float *dx, float beta) {
    LayoutCase *l = ctx;
    cpu_upsample2x_backward(dx, beta, l->dy, l->n, l->h, l->w, l->c);
}

static void test_upsample(void) {
    int n = 2, h = 3, w = 5, c = 4;
    size_t in = (size_t)n * h * w * c, out = 4 * in;
    LayoutCase l = {random_floats(in, -1, 1, 20), NULL, random_floats(out, -1, 1, 21), n, h, w, c};
    float *y = new_floats(out), *dx = new_floats(in);
    upsample_fwd(&l, y);
    int exact = 1;
    for (int s = 0; s < n; s++)
        for (int oy = 0; oy < 2 * h; oy++)
            for (int ox = 0; ox < 2 * w; ox++)
                for (int ch = 0; ch < c; ch++)
                    exact &= y[(((size_t)s * 2 * h + oy) * 2 * w + ox) * c + ch] ==
                             l.x[(((size_t)s * h + oy / 2) * w + ox / 2) * c + ch];
    CHECK(exact, "upsample2x forward is not nearest-neighbour");
    upsample_bwd(&l, dx, 0.0f);
    check_grad("upsample2x", "x", upsample_fwd, &l, out, l.dy, l.x, in, dx);
    check_beta("upsample2x", upsample_bwd, &l, in);
    free(l.x), free((float *)l.dy), free(y), free(dx);
}

static size_t concat_rows(const LayoutCase *l) { return (size_t)l->n * l->h; }

static void concat_fwd(void *ctx, float *out) {
    LayoutCase *l = ctx;
    cpu_concat_forward(out, l->x, l->b, concat_rows(l), l->c, l->w);
}
static void concat_bwd_a(void *ctx, float *da, float beta) {
    LayoutCase *l = ctx;
    cpu_concat_backward(da, beta, NULL, 0.0f, l->dy, concat_rows(l), l->c, l->w);
}
static void concat_bwd_b(void *ctx, float *db, float beta) {
    LayoutCase *l = ctx;
    cpu_concat_backward(NULL, 0.0f, db, beta, l->dy, concat_rows(l), l->c, l->w);
}

static void test_concat(void) {
    int ca = 3, cb = 5;
    LayoutCase l = {random_floats(14 * ca, -1, 1, 22), random_floats(14 * cb, -1, 1, 23),
                    random_floats(14 * (ca + cb), -1, 1, 24), 2, 7, cb, ca};
    size_t p = concat_rows(&l), out = p * (ca + cb);
    float *y = new_floats(out), *da = new_floats(p * ca), *db = new_floats(p * cb);
    concat_fwd(&l, y);
    int exact = 1;
    for (size_t r = 0; r < p; r++)
        for (int k = 0; k < ca + cb; k++)
            exact &= y[r * (ca + cb) + k] == (k < ca ? l.x[r * ca + k] : l.b[r * cb + k - ca]);
    CHECK(exact, "concat forward is not [a | b] per row");
    cpu_concat_backward(da, 0.0f, db, 0.0f, l.dy, p, ca, cb);
    check_grad("concat", "a", concat_fwd, &l, out, l.dy, l.x, p * ca, da);
    check_grad("concat", "b", concat_fwd, &l, out, l.dy, l.b, p * cb, db);
    check_beta("concat a", concat_bwd_a, &l, p * ca);
    check_beta("concat b", concat_bwd_b, &l, p * cb);
    free(l.x), free(l.b), free((float *)l.dy), free(y), free(da), free(db);
}

/* ---------------------------------------------------------------- timestep embedding */

static void test_timestep_embedding(void) {
    enum { N = 6, DIM = 32, HALF = DIM / 2 };
    int32_t t[N] = {0, 1, 17, 250, 500, 999};
    float y[N * DIM];
    cpu_timestep_embedding(y, t, N, DIM);
    double worst = 0, worst_exact_exponent = 0;
    for (int s = 0; s < N; s++) {
        for (int i = 0; i < HALF; i++) {
            /* diffusers forms the exponent from a float32 arange, in float */
            float exponent = (float)i * (float)-log(10000.0) / (float)(HALF - 1);
            double arg = t[s] * exp((double)exponent);
            double exact_arg = t[s] * exp(-log(10000.0) * i / (HALF - 1));
            worst = fmax(worst, fabs(y[s * DIM + i] - sin(arg)));
            worst = fmax(worst, fabs(y[s * DIM + HALF + i] - cos(arg)));
            worst_exact_exponent =
                fmax(worst_exact_exponent, fabs(y[s * DIM + i] - sin(exact_arg)));
        }
    }
    CHECK(worst <= 1e-6, "timestep embedding vs double: %g", worst);
    /* the float exponent moves the phase at t=999 by at most ~1e-4 */
    CHECK(worst_exact_exponent <= 1e-3, "timestep embedding vs all-double exponent: %g",
          worst_exact_exponent);
    CHECK(y[0] == 0.0f && y[HALF] == 1.0f, "t=0 must embed as sin 0 = 0, cos 0 = 1");
}

/* ---------------------------------------------------------------- diffusion ops */

enum { QS_N = 200, QS_H = 4, QS_W = 5, QS_C = 3, QS_T = 1000 };

typedef struct {
    uint8_t *images;
    int32_t t[QS_N];
    float sqrt_ac[QS_T], sqrt_1m_ac[QS_T];
} QSampleCase;

static void qsample_case_init(QSampleCase *q) {
    size_t per = QS_H * QS_W * QS_C;
    q->images = malloc(QS_N * per);
    for (size_t i = 0; i < QS_N * per; i++) q->images[i] = (uint8_t)((i * 37 + i / 7) % 256);
    q->images[0] = 0;
    q->images[1] = 255;
    for (int k = 0; k < QS_T; k++) {
        double ac = exp(-5.0 * k / QS_T);
        q->sqrt_ac[k] = (float)sqrt(ac);
        q->sqrt_1m_ac[k] = (float)sqrt(1 - ac);
    }
    for (int s = 0; s < QS_N; s++) q->t[s] = (s * 389) % QS_T;
    q->t[1] = 0;
    q->t[2] = QS_T - 1;
}

/* The spec's formulas, evaluated here independently of the backend. */
static void qsample_expected(float *x_t, float *target, const QSampleCase *q, int s, int flipped,
                             PredictionType pred, RngKey eps_key) {
    float a = q->sqrt_ac[q->t[s]], b = q->sqrt_1m_ac[q->t[s]];
    for (int y = 0; y < QS_H; y++)
        for (int x = 0; x < QS_W; x++)
            for (int ch = 0; ch < QS_C; ch++) {
                size_t e = ((size_t)y * QS_W + x) * QS_C + ch;
                int sx = flipped ? QS_W - 1 - x : x;
                uint8_t u8 = q->images[(((size_t)s * QS_H + y) * QS_W + sx) * QS_C + ch];
                float x0 = (float)u8 / 127.5f - 1.0f;
                float eps = philox_normal(eps_key, s, e);
                x_t[e] = a * x0 + b * eps;
                target[e] = pred == PRED_EPS ? eps : pred == PRED_X0 ? x0 : a * eps - b * x0;
            }
}

static void test_q_sample(void) {
    static QSampleCase q;
    qsample_case_init(&q);
    size_t per = QS_H * QS_W * QS_C, total = QS_N * per;
    RngKey flip_key = {7, RNG_STREAM_FLIP, 3, 0}, eps_key = {7, RNG_STREAM_EPS, 3, 0};
    float *x_t = new_floats(total), *target = new_floats(total);
    float *ex = new_floats(per), *et = new_floats(per);
    float *x0 = new_floats(total);
    for (int pred = PRED_EPS; pred <= PRED_V; pred++) {
        cpu_q_sample_images(x_t, target, NULL, q.images, q.t, q.sqrt_ac, q.sqrt_1m_ac, QS_N, QS_H, QS_W,
                            QS_C, pred, 1, flip_key, eps_key);
        int exact = 1;
        for (int s = 0; s < QS_N; s++) {
            qsample_expected(ex, et, &q, s, philox_uniform(flip_key, s, 0) < 0.5f, pred, eps_key);
            exact &= all_equal(x_t + s * per, ex, per) && all_equal(target + s * per, et, per);
        }
        CHECK(exact, "q_sample_images (pred %d) differs from the formula", pred);
    }

    /* x0 targets without flip: the exact scaling; with flip: about half are mirrored */
    float *plain = new_floats(total);
    cpu_q_sample_images(x_t, plain, x0, q.images, q.t, q.sqrt_ac, q.sqrt_1m_ac, QS_N, QS_H, QS_W, QS_C,
                        PRED_X0, 0, flip_key, eps_key);
    CHECK(plain[0] == -1.0f && plain[1] == 1.0f, "pixel 0 -> %g, 255 -> %g", plain[0], plain[1]);
    CHECK(all_equal(x0, plain, total), "the x0 output equals the x0 target");
    int in_range = 1;
    for (size_t i = 0; i < total; i++) in_range &= plain[i] >= -1.0f && plain[i] <= 1.0f;
    CHECK(in_range, "x0 outside [-1, 1]");
    cpu_q_sample_images(x_t, target, NULL, q.images, q.t, q.sqrt_ac, q.sqrt_1m_ac, QS_N, QS_H,
                        QS_W, QS_C, PRED_X0, 1, flip_key, eps_key);
    int mirrored = 0, consistent = 1;
    for (int s = 0; s < QS_N; s++) {
        int same = all_equal(target + s * per, plain + s * per, per);
        mirrored += !same;
        /* a mirrored sample is the plain one with columns reversed */
        for (int y = 0; y < QS_H && !same; y++)
            for (int x = 0; x < QS_W; x++)
                consistent &= !memcmp(target + s * per + (y * QS_W + x) * QS_C,
                                      plain + s * per + (y * QS_W + QS_W - 1 - x) * QS_C,
                                      QS_C * sizeof(float));
    }
    CHECK(mirrored >= 70 && mirrored <= 130, "flipped %d of %d samples", mirrored, QS_N);
    CHECK(consistent, "a flipped sample is not the horizontal mirror");
    free(q.images), free(x_t), free(target), free(ex), free(et), free(plain), free(x0);
}

typedef struct {
    float *pred, *target;
    int n;
    size_t d;
} MseCase;

static void mse_fwd(void *ctx, float *out) {
    MseCase *m = ctx;
    cpu_mse_loss(out, NULL, m->pred, m->target, m->n, m->d);
}

static void test_mse(void) {
    MseCase m = {random_floats(4 * 50, -1, 1, 30), random_floats(4 * 50, -1, 1, 31), 4, 50};
    size_t total = m.n * m.d;
    float loss[4], eval_loss[4], loss_ref[4], weights[4];
    float *dpred = new_floats(total), *dpred_ref = new_floats(total);
    cpu_mse_loss(loss, dpred, m.pred, m.target, m.n, m.d);
    for (int s = 0; s < m.n; s++) {
        double sum = 0;
        for (size_t e = 0; e < m.d; e++) {
            double diff = (double)m.pred[s * m.d + e] - m.target[s * m.d + e];
            sum += diff * diff;
            dpred_ref[s * m.d + e] = (float)(2 * diff / total);
        }
        loss_ref[s] = (float)(sum / m.d);
        weights[s] = 1.0f / m.n;    /* dpred is the gradient of the batch mean */
    }
    CHECK(rel_error(loss, loss_ref, m.n, 0) <= 1e-6, "mse loss vs double: %g",
          rel_error(loss, loss_ref, m.n, 0));
    CHECK(rel_error(dpred, dpred_ref, total, 0) <= 1e-6, "mse dpred vs 2(pred-target)/(N*D): %g",
          rel_error(dpred, dpred_ref, total, 0));
    check_grad("mse", "pred", mse_fwd, &m, m.n, weights, m.pred, total, dpred);
    mse_fwd(&m, eval_loss);
    CHECK(!memcmp(eval_loss, loss, sizeof loss), "mse with dpred NULL gives another loss");
    free(m.pred), free(m.target), free(dpred), free(dpred_ref);
}

static void test_sample_update(void) {
    int n = 3;
    size_t d = 101, total = n * d;
    RngKey z_key = {5, RNG_STREAM_SAMPLE_Z, 500, 0};
    float *x0_init = random_floats(total, -2, 2, 40), *out = random_floats(total, -3, 3, 41);
    float *x = new_floats(total);

    SampleUpdate u = {.x0_from_xt = 1.3f, .x0_from_out = -0.7f, .coef_x0 = 0.4f, .coef_xt = 0.55f};
    memcpy(x, x0_init, total * sizeof(float));
    cpu_sample_update(x, out, n, d, u, z_key);
    int exact = 1;
    for (size_t i = 0; i < total; i++) {
        float x0 = u.x0_from_xt * x0_init[i] + u.x0_from_out * out[i];
        exact &= x[i] == u.coef_x0 * x0 + u.coef_xt * x0_init[i];
    }
    CHECK(exact, "sample_update (sigma 0) differs from the formula");

    SampleUpdate clip = {.x0_from_out = 1.0f, .coef_x0 = 1.0f, .clip_x0 = 1};   /* x <- clip(out) */
    cpu_sample_update(x, out, n, d, clip, z_key);
    int clipped = 1;
    for (size_t i = 0; i < total; i++) clipped &= x[i] == fminf(1.0f, fmaxf(-1.0f, out[i]));
    CHECK(clipped, "sample_update clip_x0 does not clamp x0 to [-1, 1]");

    SampleUpdate noise = {.sigma = 0.8f};  /* x <- sigma z */
    cpu_sample_update(x, out, n, d, noise, z_key);
    int same_noise = 1;
    for (int s = 0; s < n; s++)
        for (size_t e = 0; e < d; e++)
            same_noise &= x[s * d + e] == 0.8f * philox_normal(z_key, s, e);
    CHECK(same_noise, "sample_update noise is not sigma * philox_normal(z_key, s, e)");

    /* learned variances: out interleaves [prediction (C) | v (C)] per pixel; d = 101 pixels
     * of C = 1 read 202 outputs per sample, and the noise scale follows v */
    float *out2 = random_floats(2 * total, -1, 1, 42);
    SampleUpdate learned = {.x0_from_out = 1.0f, .coef_x0 = 1.0f, .sigma = 1.0f, .learned_var = 1,
                            .channels = 1, .use_model_var = 1, .post_logvar = -3.0f,
                            .log_var_range = 0.5f};
    cpu_sample_update(x, out2, n, d, learned, z_key);
    double worst = 0;
    for (int s = 0; s < n; s++)
        for (size_t e = 0; e < d; e++) {
            float pred = out2[(s * d + e) * 2], v = out2[(s * d + e) * 2 + 1];
            float scale = expf(0.5f * (-3.0f + 0.5f * (v + 1.0f) * 0.5f));
            float want = pred + scale * philox_normal(z_key, s, e);
            worst = fmax(worst, fabs(x[s * d + e] - want));
        }
    CHECK(worst < 1e-6, "sample_update with learned variances: error %g", worst);
    free(x0_init), free(out), free(x), free(out2);
}

/* ---------------------------------------------------------------- Philox */

static void test_philox_moments(void) {
    int n = 4;
    size_t d = 250000, total = n * d;
    RngKey key = {2024, RNG_STREAM_SAMPLE_XT, 0, 0};
    float *z = new_floats(total);
    cpu_normal_fill(z, n, d, key);
    int exact = 1;
    double sum = 0, sum2 = 0;
    for (int s = 0; s < n; s++)
        for (size_t e = 0; e < d; e++) {
            float v = z[s * d + e];
            exact &= v == philox_normal(key, s, e);
            sum += v;
            sum2 += (double)v * v;
        }
    double mean = sum / total, var = sum2 / total - mean * mean;
    CHECK(exact, "normal_fill differs from philox_normal");
    CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.01, "normal mean %g variance %g", mean, var);

    /* the extreme words must map strictly inside (0, 1) */
    CHECK(philox_u01(0) > 0.0f, "philox_u01(0) = %g is not > 0", philox_u01(0));
    CHECK(philox_u01(0xFFFFFFFFu) < 1.0f, "philox_u01(0xFFFFFFFF) = %.9g is not < 1",
          philox_u01(0xFFFFFFFFu));
    int inside = 1;
    double usum = 0;
    for (size_t i = 0; i < total; i++) {
        float u = philox_uniform(key, 1, i);
        inside &= u > 0.0f && u < 1.0f;
        usum += u;
    }
    CHECK(inside, "philox_uniform left the open interval (0, 1)");
    CHECK(fabs(usum / total - 0.5) < 0.01, "uniform mean %g", usum / total);
    free(z);
}

/* ---------------------------------------------------------------- optimizer */

static void test_adamw(void) {
    enum { N = 1000, STEPS = 3 };
    float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, scale = 0.37f;
    float *p = random_floats(N, -1, 1, 50), *m = new_floats(N), *v = new_floats(N);
    double pd[N], md[N] = {0}, vd[N] = {0};
    for (int i = 0; i < N; i++) pd[i] = p[i];
    for (int step = 1; step <= STEPS; step++) {
        float *g = random_floats(N, -0.5f, 0.5f, 50 + step);
        float bc1 = 1.0f - powf(b1, step), bc2 = 1.0f - powf(b2, step);
        cpu_adamw(p, g, m, v, N, lr, b1, b2, eps, wd, bc1, bc2, scale);
        for (int i = 0; i < N; i++) {   /* torch.optim.AdamW, in double */
            double grad = (double)g[i] * scale;
            pd[i] *= 1.0 - (double)lr * wd;
            md[i] = b1 * md[i] + (1.0 - b1) * grad;
            vd[i] = b2 * vd[i] + (1.0 - b2) * grad * grad;
            double denom = sqrt(vd[i]) / sqrt((double)bc2) + eps;
            pd[i] -= (double)lr / bc1 * md[i] / denom;
        }
        free(g);
    }
    float *pf = to_floats(pd, N), *mf = to_floats(md, N), *vf = to_floats(vd, N);
    CHECK(rel_error(p, pf, N, 0) <= 1e-6, "adamw params vs double: %g", rel_error(p, pf, N, 0));
    CHECK(rel_error(m, mf, N, 0) <= 1e-6, "adamw m vs double: %g", rel_error(m, mf, N, 0));
    CHECK(rel_error(v, vf, N, 0) <= 1e-6, "adamw v vs double: %g", rel_error(v, vf, N, 0));
    free(p), free(m), free(v), free(pf), free(mf), free(vf);
}

static void test_ema(void) {
    float *ema = random_floats(500, -1, 1, 60), *p = random_floats(500, -1, 1, 61);
    float *expected = new_floats(500), decay = 0.9999f;
    for (int i = 0; i < 500; i++) expected[i] = decay * ema[i] + (1.0f - decay) * p[i];
    cpu_ema_update(ema, p, 500, decay);
    CHECK(all_equal(ema, expected, 500), "ema_update differs from decay*ema + (1-decay)*p");
    free(ema), free(p), free(expected);
}

static void test_global_norm(void) {
    size_t n = 300001;  /* several chunks and a ragged tail */
    float *g = random_floats(n, -1, 1, 70), norm[2], empty;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)g[i] * g[i];
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        cpu_global_norm(&norm[k], g, n);
    }
    omp_set_num_threads(threads);
    CHECK(fabs(norm[0] - sqrt(sum)) <= 1e-6 * sqrt(sum), "global_norm %g vs %g", norm[0],
          sqrt(sum));
    CHECK(norm[0] == norm[1], "global_norm differs between 1 and 3 threads");
    cpu_global_norm(&empty, g, 0);
    CHECK(empty == 0.0f, "global_norm of nothing is %g", empty);
    free(g);
}

int main(void) {
    test_groupnorm();
    test_silu();
    test_add();
    test_add_bias();
    test_dropout();
    test_upsample();
    test_concat();
    test_timestep_embedding();
    test_q_sample();
    test_mse();
    test_sample_update();
    test_philox_moments();
    test_adamw();
    test_ema();
    test_global_norm();
    return test_summary("cpu_pointwise_ops");
}
