/* The schedules and every per-timestep array against values computed
 * independently in numpy float64 (tools/make_schedule_ref.py), to 1e-12; and the
 * host diffusion math against the identities it must satisfy. */
#include <stdlib.h>
#include <string.h>

#include "diffusion.h"
#include "safetensors.h"
#include "testing.h"
#include "util.h"

#define REF "tests/ref/schedule.safetensors"

static void check_schedule(const StFile *f, const char *schedule, int T) {
    GaussianDiffusion d;
    char err[256], name[128];
    CHECK(diffusion_init(&d, schedule, T, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err) == 0,
          "%s", err);
    int count;
    const char *const *names = diffusion_array_names(&count);
    double worst = 0;
    for (int a = 0; a < count; a++) {
        snprintf(name, sizeof name, "%s.T%d.%s", schedule, T, names[a]);
        const StTensor *t = st_find(f, name);
        CHECK(t && t->dtype == ST_F64 && st_numel(t) == (size_t)T, "%s missing or wrong", name);
        if (!t) continue;
        double *ref = xmalloc(t->nbytes);
        memcpy(ref, t->data, t->nbytes);
        const double *mine = diffusion_array(&d, a);
        for (int i = 0; i < T; i++) {
            double e = fabs(mine[i] - ref[i]) / fmax(fabs(ref[i]), 1e-300);
            if (e > worst) worst = e;
            CHECK(e <= 1e-12, "%s[%d] = %.17g, reference %.17g", name, i, mine[i], ref[i]);
            if (e > 1e-12) break;
        }
        free(ref);
    }
    printf("  %-9s T=%-4d worst relative error %.2e\n", schedule, T, worst);
    diffusion_free(&d);
}

/* x_t built from x0 and eps gives back x0 (eps) and eps (x0); the posterior mean
 * at x0 equals the reverse mean when the model predicts the true eps. */
static void check_identities(void) {
    GaussianDiffusion d;
    char err[256];
    CHECK(diffusion_init(&d, "cosine", 100, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err) == 0, "%s",
          err);
    float x0[4] = {0.5f, -0.25f, 0.9f, -1.0f}, eps[4] = {1.0f, -0.3f, 0.2f, 2.0f};
    float xt[4], back[4], mean_q[4], mean_p[4], pred[4];
    double var_q, logvar_q, var_p, logvar_p;
    int t = 57;
    q_sample(&d, x0, t, eps, xt, 4);
    predict_xstart_from_eps(&d, xt, t, eps, back, 4);
    CHECK(rel_error(back, x0, 4, 1) < 1e-6, "predict_xstart_from_eps inverts q_sample");
    predict_eps_from_xstart(&d, xt, t, x0, back, 4);
    CHECK(rel_error(back, eps, 4, 1) < 1e-5, "predict_eps_from_xstart inverts q_sample");
    q_posterior_mean_variance(&d, x0, xt, t, mean_q, &var_q, &logvar_q, 4);
    p_mean_variance(&d, eps, xt, t, 0, mean_p, &var_p, &logvar_p, pred, 4);
    CHECK(rel_error(mean_p, mean_q, 4, 1) < 1e-6, "p mean with the true eps is the posterior mean");
    CHECK(fabs(var_p - var_q) <= 1e-15 && fabs(logvar_p - logvar_q) <= 1e-12,
          "fixedsmall variance is the posterior variance");
    SampleUpdate u = p_sample_update(&d, t, 0);
    for (int i = 0; i < 4; i++) {
        float x0_hat = u.x0_from_xt * xt[i] + u.x0_from_out * eps[i];
        float mean = u.coef_x0 * x0_hat + u.coef_xt * xt[i];
        CHECK(fabsf(mean - mean_q[i]) < 1e-5f, "fused-update coefficients give the mean");
    }
    CHECK(fabs(u.sigma - sqrt(var_q)) < 1e-7, "sigma is sqrt(posterior variance)");
    CHECK(p_sample_update(&d, 0, 0).sigma == 0.0f, "no noise added at t = 0");
    d.variance = VAR_FIXED_LARGE;
    CHECK(fabs(model_log_variance(&d, t) - log(d.betas[t])) < 1e-15, "fixedlarge uses beta_t");
    diffusion_free(&d);
}

int main(void) {
    StFile f;
    char err[1024];
    if (st_read(&f, REF, err, sizeof err) != 0) die("%s", err);
    const char *schedules[] = {"linear", "cosine", "quadratic", "sigmoid"};
    for (int s = 0; s < 4; s++) {
        check_schedule(&f, schedules[s], 1000);
        check_schedule(&f, schedules[s], 50);
    }
    double betas[10];
    CHECK(get_named_beta_schedule("nonsense", 10, betas) == -1, "unknown schedule rejected");
    check_identities();
    st_free(&f);
    return test_summary("schedule");
}
