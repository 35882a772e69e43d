/* The op-test harness: one table of op cases (tests/test_ops.c), run in three modes.
 *
 *   cpu   (default) each case on the CPU reference backend: its own reference check
 *         (direct double-precision loops or the op's formula), then for ops with a
 *         backward the gradient contract (beta 0 overwrites a NaN-filled gradient,
 *         beta 1 adds to it, parameter gradients are overwritten bit for bit the same,
 *         NULL gradients are skipped without changing the others) and a central
 *         finite-difference check of every input gradient;
 *   cuda  (default) every case on the CUDA backend against the CPU one, on the same
 *         bytes, every output NaN-poisoned first; counted as skipped without a GPU;
 *   bench (--bench, not run by make test) times each case's forward and backward on
 *         every backend present.
 *
 * A case is a list of tensors (inputs with a value range or fixed host data; outputs;
 * input gradients), the op's forward and backward on one backend, its reference check
 * and its tolerances. Modeled on ggml's tests/test-backend-ops.cpp. */
#ifndef DDPM_OP_HARNESS_H
#define DDPM_OP_HARNESS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "testing.h"
#include "util.h"

enum { MAX_TENSORS = 16 };

enum { MODE_CPU = 1, MODE_CUDA = 2, MODE_BENCH = 4, MODE_ALL = 7 };

typedef enum {
    T_ABSENT = 0,   /* an optional operand left out: the op gets NULL */
    T_IN,           /* input: uniform in [lo, hi), or the bytes of `host` */
    T_OUT,          /* output, NaN-poisoned before the op runs */
    T_GRAD,         /* gradient of input `of`, blended with beta */
    T_PARAM_GRAD,   /* gradient of input `of`, always overwritten (beta ignored) */
} TensorRole;

typedef struct {
    const char *name;
    TensorRole role;
    size_t n;            /* elements */
    size_t elem;         /* bytes per element: 4 (float, int32) or 1 (uint8); 0 means 4 */
    float lo, hi;        /* T_IN without host data */
    const void *host;    /* T_IN: fixed bytes (integers, tables), n*elem of them */
    int of;              /* T_*GRAD: the input; T_OUT: its weight in the loss (a T_IN), or -1 */
    double tol;          /* CPU vs CUDA: max |cuda - cpu| / max |cpu|; < 0: the case's tol */
} TensorSpec;

/* Central differences: `probes` indices spread over each input, step 1e-2; a probe's
 * score is |fd - analytic| / (atol + |analytic|), atol < 0 meaning the gradient's rms. */
typedef struct {
    int probes;          /* 0: no finite-difference check */
    double atol, max_score;
} FdRule;

typedef struct OpCase OpCase;

/* One case on one backend: its tensors (NULL where absent or not asked for). */
typedef struct {
    const Backend *be;
    void *t[MAX_TENSORS];
    ConvShape conv;      /* conv cases: prepared on this backend */
    void *workspace;
} OpRun;

struct OpCase {
    char name[96];
    unsigned modes;
    int nt;
    TensorSpec t[MAX_TENSORS];
    void (*setup)(const OpCase *c, OpRun *r);    /* optional, before the first forward */
    void (*forward)(const OpCase *c, OpRun *r);
    void (*backward)(const OpCase *c, OpRun *r, float beta);   /* NULL: no backward */
    void (*check)(const OpCase *c, OpRun *r);    /* the CPU reference check (host memory) */
    /* the op's parameters */
    int n, h, w, ch, oc, k, stride, pad[4], groups, flag, run_n;
    float p, scale;
    RngKey key, key2;
    SampleUpdate update;
    LossSpec spec;
    const char *conv_bwd_data;   /* DDPM_CONV_BWD_DATA for the CUDA prepare, or NULL */
    /* tolerances */
    double tol;          /* CPU vs CUDA (relative, per tensor) */
    double ref_tol;      /* the reference check */
    double beta_tol;     /* beta 1 against prefill + gradient; 0: bit for bit */
    FdRule fd;
};

enum { BENCH_ITERS = 10 };
#define FD_STEP 1e-2f

static size_t spec_bytes(const TensorSpec *s) { return s->n * (s->elem ? s->elem : 4); }
static int is_grad(const TensorSpec *s) { return s->role == T_GRAD || s->role == T_PARAM_GRAD; }

/* ---- host data, made once per case so both backends get the same bytes ---- */

static float *uniform_floats(size_t n, float lo, float hi, uint32_t stream) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    RngKey key = {0x5eed, 77, stream, 0};
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * philox_uniform(key, 0, i);
    return x;
}

static void *initial_bytes(const OpCase *c, int case_index, int i) {
    const TensorSpec *s = &c->t[i];
    if (s->role != T_IN) return NULL;
    if (s->host) {
        void *p = xmalloc(spec_bytes(s) ? spec_bytes(s) : 1);
        memcpy(p, s->host, spec_bytes(s));
        return p;
    }
    return uniform_floats(s->n, s->lo, s->hi, (uint32_t)(case_index * MAX_TENSORS + i));
}

/* ---- one case on one backend ---- */

static void poison(const Backend *be, void *p, const TensorSpec *s) {
    if (p) be->fill(p, NAN, s->n);
}

static void run_open(const OpCase *c, OpRun *r, const Backend *be, void *const *init) {
    memset(r, 0, sizeof *r);
    r->be = be;
    for (int i = 0; i < c->nt; i++) {
        const TensorSpec *s = &c->t[i];
        if (s->role == T_ABSENT) continue;
        r->t[i] = be->alloc(spec_bytes(s) ? spec_bytes(s) : 4);
        if (init[i]) be->to_device(r->t[i], init[i], spec_bytes(s));
        else poison(be, r->t[i], s);
    }
    if (c->setup) c->setup(c, r);
}

static void run_close(const OpCase *c, OpRun *r) {
    for (int i = 0; i < c->nt; i++) r->be->release(r->t[i]);
    r->be->release(r->workspace);
}

/* The gradients for a backward pass: poisoned for beta 0, else `prefill` (host). */
static void set_grads(const OpCase *c, OpRun *r, float beta, float *const *prefill) {
    for (int i = 0; i < c->nt; i++) {
        const TensorSpec *s = &c->t[i];
        if (!is_grad(s) || !r->t[i]) continue;
        if (beta != 0.0f && s->role == T_GRAD) r->be->to_device(r->t[i], prefill[i], s->n * 4);
        else poison(r->be, r->t[i], s);
    }
}

/* Gradients not in `keep` (a bit per tensor) are NULL for a pass; `hidden` keeps them. */
static void hide_grads(const OpCase *c, OpRun *r, unsigned keep, void **hidden) {
    for (int i = 0; i < c->nt; i++) {
        hidden[i] = NULL;
        if (is_grad(&c->t[i]) && !(keep >> i & 1)) {
            hidden[i] = r->t[i];
            r->t[i] = NULL;
        }
    }
}

static void unhide_grads(const OpCase *c, OpRun *r, void **hidden) {
    for (int i = 0; i < c->nt; i++)
        if (hidden[i]) r->t[i] = hidden[i];
}

static float *download(const OpRun *r, int i, const OpCase *c) {
    float *host = xmalloc(c->t[i].n * sizeof(float) + 4);
    r->be->to_host(host, r->t[i], c->t[i].n * sizeof(float));
    return host;
}

/* ---- cpu mode: the gradient contract ---- */

static int all_finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

static int bits_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* beta 1: T_GRAD = prefill + the beta-0 result; T_PARAM_GRAD bit for bit the same */
static void check_beta_one(const OpCase *c, OpRun *r, float *const *first, float *const *prefill) {
    set_grads(c, r, 1.0f, prefill);
    c->forward(c, r);
    c->backward(c, r, 1.0f);
    for (int i = 0; i < c->nt; i++) {
        const TensorSpec *s = &c->t[i];
        if (!is_grad(s) || !r->t[i]) continue;
        float *got = r->t[i];
        if (s->role == T_PARAM_GRAD) {
            CHECK(bits_equal(got, first[i], s->n), "%s %s: not overwritten the same", c->name,
                  s->name);
            continue;
        }
        float *want = xmalloc(s->n * sizeof(float) + 4);
        for (size_t k = 0; k < s->n; k++) want[k] = prefill[i][k] + first[i][k];
        double err = c->beta_tol == 0 ? (bits_equal(got, want, s->n) ? 0 : INFINITY)
                                      : rel_error(got, want, s->n, 1e-6);
        CHECK(err <= c->beta_tol, "%s %s: beta 1 does not add to the gradient (error %.3g)",
              c->name, s->name, err);
        free(want);
    }
}

/* Each input gradient asked for alone (when there are several), then none of them (when
 * parameter gradients remain): what is computed must not change. */
static void check_null_grads(const OpCase *c, OpRun *r, float *const *first) {
    unsigned params = 0, inputs = 0;
    for (int i = 0; i < c->nt; i++) {
        if (!r->t[i]) continue;
        if (c->t[i].role == T_PARAM_GRAD) params |= 1u << i;
        if (c->t[i].role == T_GRAD) inputs |= 1u << i;
    }
    if (!inputs) return;
    unsigned passes[MAX_TENSORS + 1];
    int n_passes = 0;
    if (inputs & (inputs - 1))
        for (int i = 0; i < c->nt; i++)
            if (inputs >> i & 1) passes[n_passes++] = params | 1u << i;
    if (params) passes[n_passes++] = params;
    for (int k = 0; k < n_passes; k++) {
        void *hidden[MAX_TENSORS];
        set_grads(c, r, 0.0f, NULL);
        hide_grads(c, r, passes[k], hidden);
        c->forward(c, r);
        c->backward(c, r, 0.0f);
        for (int i = 0; i < c->nt; i++)
            if (passes[k] >> i & 1)
                CHECK(bits_equal(r->t[i], first[i], c->t[i].n),
                      "%s %s: changed when other gradients are NULL", c->name, c->t[i].name);
        unhide_grads(c, r, hidden);
    }
}

/* ---- cpu mode: finite differences ---- */

static double loss_of(const OpCase *c, OpRun *r) {
    c->forward(c, r);
    double loss = 0;
    for (int i = 0; i < c->nt; i++) {
        const TensorSpec *s = &c->t[i];
        if (s->role != T_OUT || s->of < 0) continue;
        const float *y = r->t[i], *w = r->t[s->of];
        for (size_t k = 0; k < s->n; k++) loss += (double)w[k] * (double)y[k];
    }
    return loss;
}

static double rms(const float *p, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)p[i] * p[i];
    return sqrt(s / (double)(n ? n : 1));
}

static double fd_score(const OpCase *c, OpRun *r, float *x, size_t n, const float *analytic) {
    double atol = c->fd.atol < 0 ? rms(analytic, n) + 1e-6 : c->fd.atol, worst = 0;
    size_t stride = n > (size_t)c->fd.probes ? n / (size_t)c->fd.probes : 1;
    for (size_t i = (stride > 1 ? stride / 2 : 0); i < n; i += stride) {
        float saved = x[i];
        x[i] = saved + FD_STEP;
        double up = loss_of(c, r);
        x[i] = saved - FD_STEP;
        double down = loss_of(c, r);
        x[i] = saved;
        double fd = (up - down) / (2.0 * ((double)(saved + FD_STEP) - (double)saved));
        double score = fabs(fd - analytic[i]) / (atol + fabs(analytic[i]));
        if (!(score <= worst)) worst = score;
    }
    return worst;
}

static void check_finite_differences(const OpCase *c, OpRun *r, float *const *first) {
    for (int i = 0; i < c->nt; i++) {
        const TensorSpec *s = &c->t[i];
        if (!is_grad(s) || !first[i]) continue;
        double score = fd_score(c, r, r->t[s->of], c->t[s->of].n, first[i]);
        CHECK(score <= c->fd.max_score, "%s %s: finite-difference score %.3g > %.3g", c->name,
              s->name, score, c->fd.max_score);
    }
    c->forward(c, r);   /* saved statistics of the unperturbed inputs */
}

static void run_cpu(const OpCase *c, void *const *init) {
    OpRun r;
    run_open(c, &r, backend_cpu(), init);
    c->forward(c, &r);
    float *first[MAX_TENSORS] = {0}, *prefill[MAX_TENSORS] = {0};
    if (c->backward) {
        c->backward(c, &r, 0.0f);
        for (int i = 0; i < c->nt; i++) {
            if (!is_grad(&c->t[i]) || !r.t[i]) continue;
            first[i] = download(&r, i, c);
            prefill[i] = uniform_floats(c->t[i].n, -1, 1, 777 + i);
            CHECK(all_finite(first[i], c->t[i].n), "%s %s: a NaN-filled gradient kept NaN",
                  c->name, c->t[i].name);
        }
    }
    if (c->check) c->check(c, &r);
    if (c->backward) {
        check_beta_one(c, &r, first, prefill);
        check_null_grads(c, &r, first);
        set_grads(c, &r, 0.0f, NULL);
        c->forward(c, &r);
        if (c->fd.probes) check_finite_differences(c, &r, first);
    }
    for (int i = 0; i < c->nt; i++) {
        free(first[i]);
        free(prefill[i]);
    }
    run_close(c, &r);
}

/* ---- cuda mode ---- */

static void expect_same(const OpCase *c, OpRun *run, int i, const char *pass) {
    const TensorSpec *s = &c->t[i];
    if (!run[0].t[i]) return;
    float *cpu = download(&run[0], i, c), *gpu = download(&run[1], i, c);
    double tol = s->tol >= 0 ? s->tol : c->tol;
    double err = rel_error(gpu, cpu, s->n, 1e-6);
    CHECK(err <= tol, "%s %s%s: CUDA vs CPU relative error %.3g > %.3g", c->name, s->name, pass,
          err, tol);
    free(cpu);
    free(gpu);
}

static void compare_pass(const OpCase *c, OpRun *run, float beta, float *const *prefill,
                         unsigned keep, const char *pass) {
    void *hidden[2][MAX_TENSORS];
    for (int side = 0; side < 2; side++) {
        set_grads(c, &run[side], beta, prefill);
        hide_grads(c, &run[side], keep, hidden[side]);
        c->backward(c, &run[side], beta);
    }
    for (int i = 0; i < c->nt; i++)
        if (is_grad(&c->t[i])) expect_same(c, run, i, pass);
    for (int side = 0; side < 2; side++) unhide_grads(c, &run[side], hidden[side]);
}

static void run_cuda(const OpCase *c, void *const *init, const Backend *cuda) {
    OpRun run[2];
    run_open(c, &run[0], backend_cpu(), init);
    run_open(c, &run[1], cuda, init);
    for (int side = 0; side < 2; side++) c->forward(c, &run[side]);
    for (int i = 0; i < c->nt; i++)
        if (c->t[i].role == T_OUT) expect_same(c, run, i, "");
    if (c->backward) {
        float *prefill[MAX_TENSORS] = {0};
        unsigned all = ~0u, params = 0;
        for (int i = 0; i < c->nt; i++) {
            if (c->t[i].role == T_GRAD) prefill[i] = uniform_floats(c->t[i].n, -1, 1, 900 + i);
            if (c->t[i].role == T_PARAM_GRAD) params |= 1u << i;
        }
        compare_pass(c, run, 0.0f, prefill, all, " (beta 0)");
        compare_pass(c, run, 1.0f, prefill, all, " (beta 1)");
        if (params) compare_pass(c, run, 0.0f, prefill, params, " (input gradients NULL)");
        for (int i = 0; i < c->nt; i++) free(prefill[i]);
    }
    run_close(c, &run[0]);
    run_close(c, &run[1]);
}

/* ---- bench mode ---- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of BENCH_ITERS runs of forward (and backward with beta 0), after one warm-up. */
static void run_bench(const OpCase *c, void *const *init, const Backend *be) {
    OpRun r;
    run_open(c, &r, be, init);
    double ms[BENCH_ITERS];
    for (int it = -1; it < BENCH_ITERS; it++) {
        be->synchronize();
        double start = now_ms();
        c->forward(c, &r);
        if (c->backward) c->backward(c, &r, 0.0f);
        be->synchronize();
        if (it >= 0) ms[it] = now_ms() - start;
    }
    qsort(ms, BENCH_ITERS, sizeof ms[0], compare_doubles);
    printf("%-5s %-52s %10.3f ms\n", be->name, c->name, ms[BENCH_ITERS / 2]);
    run_close(c, &r);
}

/* ---- one case in the mode asked ---- */

static void run_case(const OpCase *c, int index, int bench, const Backend *cuda) {
    void *init[MAX_TENSORS];
    for (int i = 0; i < c->nt; i++) init[i] = initial_bytes(c, index, i);
    if (bench) {
        run_bench(c, init, backend_cpu());
        if (cuda) run_bench(c, init, cuda);
    } else {
        if (c->modes & MODE_CPU) run_cpu(c, init);
        if ((c->modes & MODE_CUDA) && cuda) run_cuda(c, init, cuda);
        else if (c->modes & MODE_CUDA) tests_skipped++;
    }
    for (int i = 0; i < c->nt; i++) free(init[i]);
}

#endif
