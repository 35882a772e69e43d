/* The variational bound against independent float64 references (tools/make_vlb_ref.py):
 * normal_kl, the discretized Gaussian log-likelihood and their derivatives, the posterior,
 * L_t in bits/dim with gradients for fixed and learned variances through the fused loss op,
 * the prior term, respacing and DDIM coefficients; and the full bound of a single-point
 * data set with the exact model, against a direct enumeration. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "diffusion.h"
#include "ref_io.h"
#include "testing.h"
#include "vlb_math.h"

#define REF "tests/ref/vlb.safetensors"

static void check_scalar_functions(const StFile *f) {
    size_t n;
    double *m1 = ref_doubles(f, "normal_kl.mean1", &n), *lv1 = ref_doubles(f, "normal_kl.logvar1", 0);
    double *m2 = ref_doubles(f, "normal_kl.mean2", 0), *lv2 = ref_doubles(f, "normal_kl.logvar2", 0);
    double *kl = ref_doubles(f, "normal_kl.out", 0), *mine = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) mine[i] = normal_kl(m1[i], lv1[i], m2[i], lv2[i]);
    CHECK(rel_error_d(mine, kl, n, 1e-300) < 1e-13, "normal_kl");
    free(m1), free(lv1), free(m2), free(lv2), free(kl), free(mine);

    double *x = ref_doubles(f, "dgll.x", &n), *mean = ref_doubles(f, "dgll.means", 0);
    double *ls = ref_doubles(f, "dgll.log_scales", 0), *out = ref_doubles(f, "dgll.out", 0);
    double *dm = ref_doubles(f, "dgll.dmeans", 0), *dls = ref_doubles(f, "dgll.dlog_scales", 0);
    double *v = xmalloc(n * sizeof(double)), *g_m = xmalloc(n * sizeof(double));
    double *g_ls = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        v[i] = discretized_gaussian_log_likelihood(x[i], mean[i], ls[i], &g_m[i], &g_ls[i]);
    printf("  dgll: value %.2e, d/dmean %.2e, d/dlog_scale %.2e relative error\n",
           rel_error_d(v, out, n, 1e-300), rel_error_d(g_m, dm, n, 1e-300),
           rel_error_d(g_ls, dls, n, 1e-300));
    CHECK(rel_error_d(v, out, n, 1e-300) < 1e-12, "discretized_gaussian_log_likelihood");
    CHECK(rel_error_d(g_m, dm, n, 1e-300) < 1e-9, "its derivative by the mean");
    /* the bin probability is a difference of two CDFs: in the tails both sides round in
     * double, and the reference agrees with exact arithmetic only to about 5e-7 there */
    CHECK(rel_error_d(g_ls, dls, n, 1e-300) < 1e-7, "its derivative by the log scale");
    free(x), free(mean), free(ls), free(out), free(dm), free(dls), free(v), free(g_m), free(g_ls);
}

static void check_posterior(const StFile *f) {
    GaussianDiffusion d;
    char err[256];
    diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err);
    float *x0 = ref_floats(f, "posterior.x0", NULL), *xt = ref_floats(f, "posterior.xt", NULL);
    double *t = ref_doubles(f, "posterior.t", NULL), *mean = ref_doubles(f, "posterior.mean", NULL);
    double *var = ref_doubles(f, "posterior.var", NULL), *lv = ref_doubles(f, "posterior.logvar", NULL);
    for (int row = 0; row < 5; row++) {
        float m[16];
        double v, l, md[16];
        q_posterior_mean_variance(&d, x0 + 16 * row, xt + 16 * row, (int)t[row], m, &v, &l, 16);
        for (int i = 0; i < 16; i++) md[i] = m[i];
        CHECK(rel_error_d(md, mean + 16 * row, 16, 1e-3) < 1e-6, "posterior mean at t=%d", (int)t[row]);
        CHECK(fabs(v - var[row]) <= 1e-12 * fabs(var[row]) && fabs(l - lv[row]) <= 1e-12 * fabs(lv[row]),
              "posterior variance at t=%d", (int)t[row]);
    }
    free(x0), free(xt), free(t), free(mean), free(var), free(lv);
    diffusion_free(&d);
}

/* Runs the fused loss op on one reference case and compares vb and its gradients. */
static void check_vb_case(const StFile *f, const char *kind, int t) {
    VarianceType var = strcmp(kind, "fixedlarge") == 0 ? VAR_FIXED_LARGE : VAR_FIXED_SMALL;
    int learned = strcmp(kind, "learned") == 0, N = 2, HW = 16, C = 3, oc = learned ? 6 : 3;
    GaussianDiffusion d;
    DeviceSchedule sched;
    char err[256], name[96];
    diffusion_init(&d, "linear", 50, PRED_EPS, var, err, sizeof err);
    device_schedule_init(&sched, backend_cpu(), &d);
#define LOAD(field) (snprintf(name, sizeof name, "vb.t%d.%s", t, field), ref_floats(f, name, NULL))
    float *x0 = LOAD("x0"), *xt = LOAD("x_t"), *eps = LOAD("eps"), *v = LOAD("v");
    float *out = xmalloc((size_t)N * HW * oc * sizeof(float)), *dout = xmalloc((size_t)N * HW * oc * sizeof(float));
    for (int p = 0; p < N * HW; p++)
        for (int c = 0; c < C; c++) {
            out[p * oc + c] = eps[p * C + c];
            if (learned) out[p * oc + C + c] = v[p * C + c];
        }
    int32_t ts[2] = {t, t};
    float vb[2], mse[2];
    LossSpec spec = {.learned_var = learned, .vb_weight = 1.0f, .vb_trains_mean = 1};
    cpu_diffusion_loss(mse, vb, dout, out, eps, x0, xt, ts, NULL, N, HW, C, spec, sched.tables);
    snprintf(name, sizeof name, "vb.%s.t%d.vb", kind, t);
    double *ref_vb = ref_doubles(f, name, NULL), vbd[2] = {vb[0], vb[1]};
    double e = rel_error_d(vbd, ref_vb, 2, 1e-12);
    CHECK(e < 2e-6, "vb %s t=%d: relative error %.3g", kind, t, e);
    float *d_eps = xmalloc((size_t)N * HW * C * sizeof(float)), *d_v = xmalloc((size_t)N * HW * C * sizeof(float));
    for (int p = 0; p < N * HW; p++)        /* dout holds (1/N) d vb_s / d out */
        for (int c = 0; c < C; c++) {
            d_eps[p * C + c] = N * dout[p * oc + c];
            if (learned) d_v[p * C + c] = N * dout[p * oc + C + c];
        }
    snprintf(name, sizeof name, "vb.%s.t%d.d_eps", kind, t);
    float *ref_d_eps = ref_floats(f, name, NULL);
    double ge = rel_error(d_eps, ref_d_eps, (size_t)N * HW * C, 1e-12);
    CHECK(ge < 1e-5, "d vb / d eps %s t=%d: relative error %.3g", kind, t, ge);
    double gv = 0;
    if (learned) {
        snprintf(name, sizeof name, "vb.learned.t%d.d_v", t);
        float *ref_d_v = ref_floats(f, name, NULL);
        gv = rel_error(d_v, ref_d_v, (size_t)N * HW * C, 1e-12);
        CHECK(gv < 1e-5, "d vb / d v t=%d: relative error %.3g", t, gv);
        free(ref_d_v);
    }
    printf("  vb %-10s t=%-2d vb %.2e  d/deps %.2e  d/dv %.2e\n", kind, t, e, ge, gv);
    free(x0), free(xt), free(eps), free(v), free(out), free(dout), free(ref_vb), free(d_eps),
        free(d_v), free(ref_d_eps);
    device_schedule_free(&sched);
    diffusion_free(&d);
}

static void check_prior_and_spacing(const StFile *f) {
    GaussianDiffusion d;
    char err[256];
    diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err);
    float *x0 = ref_floats(f, "prior.x0", NULL);
    double *prior = ref_doubles(f, "prior.out", NULL), mine[4];
    for (int i = 0; i < 4; i++) mine[i] = prior_bpd(&d, x0 + i * 192, 192);
    CHECK(rel_error_d(mine, prior, 4, 1e-300) < 1e-6, "prior_bpd");
    struct { int T; const char *spec, *name; } cases[] = {
        {1000, "10", "s10"}, {1000, "ddim50", "ddim50"}, {1000, "10,10,20", "s10_10_20"},
        {4000, "ddim25", "ddim25"}, {1000, "25", "s25"}};
    int keep[4000];
    for (int c = 0; c < 5; c++) {
        char name[64];
        size_t n;
        snprintf(name, sizeof name, "respace.T%d.%s", cases[c].T, cases[c].name);
        double *ref = ref_doubles(f, name, &n);
        int count = space_timesteps(cases[c].T, cases[c].spec, keep, err, sizeof err);
        int same = count == (int)n;
        for (int i = 0; same && i < count; i++) same = keep[i] == (int)ref[i];
        CHECK(same, "space_timesteps(%d, %s)", cases[c].T, cases[c].spec);
        free(ref);
    }
    int count = space_timesteps(1000, "10,10,20", keep, err, sizeof err);
    GaussianDiffusion r;
    diffusion_respace(&r, &d, keep, count);
    double *betas = ref_doubles(f, "respace.linear.T1000.s10_10_20.betas", NULL);
    CHECK(rel_error_d(r.betas, betas, (size_t)count, 1e-300) < 1e-12, "respaced betas");
    CHECK(space_timesteps(1000, "ddim300", keep, err, sizeof err) == -1, "ddim300 has no stride");
    CHECK(space_timesteps(10, "20", keep, err, sizeof err) == -1, "more steps than timesteps");
    free(betas);
    diffusion_free(&r);
    free(x0), free(prior);
    diffusion_free(&d);
}

/* The reference gives the DDIM mean as coef_x0*x0 + coef_eps*eps; the engine folds eps
 * into x_t: coef_x0' = coef_x0 - coef_eps/srm1, coef_xt = coef_eps*sra/srm1. */
static void check_ddim(const StFile *f) {
    GaussianDiffusion d, r;
    char err[256], name[96];
    int keep[1000];
    diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err);
    int count = space_timesteps(1000, "ddim50", keep, err, sizeof err);
    diffusion_respace(&r, &d, keep, count);
    for (int eta = 0; eta <= 1; eta++) {
#define DDIM(field) (snprintf(name, sizeof name, "ddim.linear.T1000.ddim50.eta%d.%s", eta, field), ref_doubles(f, name, NULL))
        double *cx0 = DDIM("coef_x0"), *ceps = DDIM("coef_eps"), *sigma = DDIM("sigma");
        int ok = 1;
        for (int t = 0; t < count; t++) {
            SampleUpdate u = ddim_sample_update(&r, t, eta, 0);
            double sra = r.sqrt_recip_alphas_cumprod[t], srm1 = r.sqrt_recipm1_alphas_cumprod[t];
            ok &= fabs(u.coef_x0 - (cx0[t] - ceps[t] / srm1)) < 1e-5;
            ok &= fabs(u.coef_xt - ceps[t] * sra / srm1) < 1e-5 * fmax(1, fabs(ceps[t] * sra / srm1));
            ok &= fabs(u.sigma - sigma[t]) < 1e-6;
        }
        CHECK(ok, "DDIM coefficients, eta %d", eta);
        free(cx0), free(ceps), free(sigma);
    }
    diffusion_free(&r);
    diffusion_free(&d);
}

/* Data that is a single point x0 and a model that predicts the true noise: every KL term
 * is 0, so the bound is the prior plus the decoder term, enumerated here directly.
 * T = 10 uses the cosine schedule: the linear one's 1000/T scaling passes beta = 1 there. */
static void check_single_point_bound(void) {
    enum { T = 10, D = 16 };
    GaussianDiffusion d;
    DeviceSchedule sched;
    char err[256];
    if (diffusion_init(&d, "cosine", T, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err) != 0)
        die("%s", err);
    device_schedule_init(&sched, backend_cpu(), &d);
    float x0[D], noise[D], xt[D], vb;
    for (int i = 0; i < D; i++) x0[i] = (float)((17 * i % 256) / 127.5 - 1.0);
    x0[0] = -1.0f, x0[1] = 1.0f;   /* both open edge bins */
    double engine = prior_bpd(&d, x0, D);
    LossSpec spec = {.vb_weight = 1.0f};
    for (int t = 0; t < T; t++) {
        RngKey key = {3, RNG_STREAM_EPS, (uint32_t)t, 0};
        for (int i = 0; i < D; i++) noise[i] = philox_normal(key, 0, (uint64_t)i);
        q_sample(&d, x0, t, noise, xt, D);
        int32_t tt = t;
        cpu_diffusion_loss(NULL, &vb, NULL, noise, noise, x0, xt, &tt, NULL, 1, D, 1, spec, sched.tables);
        engine += vb;
    }
    /* direct: the decoder's Gaussian is N(x0, posterior_variance[1]) at t = 0 */
    double sigma = sqrt(d.posterior_variance[1]), direct = 0, prior = 0;
    double ab = d.alphas_cumprod[T - 1];
    for (int i = 0; i < D; i++) {
        double half_bin = (1.0 / 255.0) / sigma, p;
        if (x0[i] < -0.999 || x0[i] > 0.999) p = approx_standard_normal_cdf(half_bin);
        else p = approx_standard_normal_cdf(half_bin) - approx_standard_normal_cdf(-half_bin);
        direct += -log(p);
        double m = sqrt(ab) * x0[i], var = 1 - ab;
        prior += 0.5 * (var + m * m - 1 - log(var));
    }
    direct = (direct + prior) / D / log(2.0);
    printf("  single-point bound: engine %.9f, direct %.9f bits/dim\n", engine, direct);
    CHECK(fabs(engine - direct) < 1e-6 * direct, "single-point bound %.9f vs %.9f", engine, direct);
    device_schedule_free(&sched);
    diffusion_free(&d);
}

int main(void) {
    StFile f;
    char err[1024];
    if (st_read(&f, REF, err, sizeof err) != 0) die("%s", err);
    check_scalar_functions(&f);
    check_posterior(&f);
    const char *kinds[] = {"fixedsmall", "fixedlarge", "learned"};
    int ts[] = {0, 1, 25, 49};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) check_vb_case(&f, kinds[k], ts[i]);
    check_prior_and_spacing(&f);
    check_ddim(&f);
    check_single_point_bound();
    st_free(&f);
    return test_summary("vlb");
}
