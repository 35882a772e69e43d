/* Classifier guidance (classifier_guidance.h) with an exact model and an exact classifier,
 * on a two-class mixture: x0 = mu_y + s z, mu = -1 (class 0) or +1 (class 1), s = 0.5,
 * p(y) = 1/2, one value per sample. Then, with ab = alphabar_t and v = ab s^2 + 1 - ab,
 *   eps_y(x)  = sqrt(1 - ab) (x - sqrt(ab) mu_y) / v          (the exact class model)
 *   p(y | x)  = N(x; sqrt(ab) mu_y, v) / sum_y' N(x; sqrt(ab) mu_y', v)
 *   eps_u(x)  = sum_y p(y | x) eps_y(x)                       (the exact unconditional one)
 * Checks:
 *  - Bayes: eps_u - sqrt(1 - ab) grad log p(y | x) = eps_y at every t, through the
 *    wrapper at scale 1 (DDIM's condition_score), and at scale s it equals classifier-free
 *    guidance eps_u + s (eps_y - eps_u);
 *  - under respacing the classifier is asked at the original timesteps;
 *  - sampling: the fraction of class-1 samples landing at x > 0 rises with the scale,
 *    for DDIM and for ancestral sampling (condition_mean); at scale 1 it is the class's
 *    own P(x0 > 0 | y = 1) = Phi(2) = 0.97725, within 4 standard errors plus the
 *    discretisation's small bias. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier_guidance.h"
#include "cpu_backend.h"
#include "testing.h"
#include "util.h"

#define S 0.5
#define N 4000

static double class_mean(int y) { return y ? 1.0 : -1.0; }

typedef struct {
    const GaussianDiffusion *process;   /* the base process: model times index it */
} Mixture;

static double posterior_class1(const Mixture *m, double x, int t) {
    double ab = m->process->alphas_cumprod[t], v = ab * S * S + 1 - ab, r = sqrt(ab);
    double l0 = -(x + r) * (x + r) / (2 * v), l1 = -(x - r) * (x - r) / (2 * v);
    return 1.0 / (1.0 + exp(l0 - l1));
}

static double eps_class(const Mixture *m, double x, int t, int y) {
    double ab = m->process->alphas_cumprod[t], v = ab * S * S + 1 - ab;
    return sqrt(1 - ab) * (x - sqrt(ab) * class_mean(y)) / v;
}

static double eps_uncond(const Mixture *m, double x, int t) {
    double p1 = posterior_class1(m, x, t);
    return (1 - p1) * eps_class(m, x, t, 0) + p1 * eps_class(m, x, t, 1);
}

/* d/dx log p(y | x) = d log N_y - sum_y' p(y'|x) d log N_y' */
static double grad_log_posterior(const Mixture *m, double x, int t, int y) {
    double ab = m->process->alphas_cumprod[t], v = ab * S * S + 1 - ab, r = sqrt(ab);
    double p1 = posterior_class1(m, x, t);
    double d0 = -(x + r) / v, d1 = -(x - r) / v;
    return (y ? d1 : d0) - ((1 - p1) * d0 + p1 * d1);
}

typedef struct {
    Denoiser base;
    Mixture mix;
    float out[N];
} ExactModel;

static const float *exact_uncond(Denoiser *self, const float *x, int n, float t) {
    ExactModel *m = (ExactModel *)self;
    for (int i = 0; i < n; i++) m->out[i] = (float)eps_uncond(&m->mix, x[i], (int)t);
    return m->out;
}

typedef struct {
    ClassGradient base;
    Mixture mix;
    int calls, times[1000];
} ExactClassifier;

static void exact_grad(ClassGradient *self, const float *x, int n, float t, const int32_t *labels,
                       float scale, float *out) {
    ExactClassifier *c = (ExactClassifier *)self;
    if (c->calls < 1000) c->times[c->calls] = (int)t;
    c->calls++;
    for (int i = 0; i < n; i++)
        out[i] = (float)(scale * grad_log_posterior(&c->mix, x[i], (int)t, labels[i]));
}

static GaussianDiffusion base_process(void) {
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err) != 0)
        die("%s", err);
    return d;
}

static void models(const GaussianDiffusion *d, ExactModel *model, ExactClassifier *clf) {
    memset(clf, 0, sizeof *clf);
    model->base = (Denoiser){.predict = exact_uncond, .be = backend_cpu(), .max_batch = N,
                             .sample_size = 1, .output = {.prediction = PRED_EPS, .channels = 1}};
    model->mix.process = d;
    clf->base.grad = exact_grad;
    clf->mix.process = d;
}

static void plan_for(SamplerPlan *plan, const GaussianDiffusion *d, SamplerKind kind,
                     const char *spacing, const ModelOutput *output) {
    SamplerOptions opt = {.kind = kind, .spacing = spacing};
    char err[256];
    if (sampler_plan_init(plan, d, &opt, output, err, sizeof err) != 0) die("%s", err);
}

static void test_bayes_identity(const GaussianDiffusion *d) {
    static ExactModel model;
    static ExactClassifier clf;
    models(d, &model, &clf);
    SamplerPlan plan;
    plan_for(&plan, d, SAMPLER_DDIM, NULL, &model.base.output);
    static const int times[] = {1, 10, 100, 400, 999};
    static const float scales[] = {1.0f, 2.5f};
    enum { POINTS = 61 };
    float x[POINTS];
    int32_t labels[POINTS];
    for (int i = 0; i < POINTS; i++) x[i] = -3.0f + 0.1f * i, labels[i] = i % 2;
    for (int si = 0; si < 2; si++) {
        ClassifierGuidance g;
        char err[256];
        if (classifier_guidance_init(&g, &model.base, &clf.base, &plan, SAMPLER_DDIM, 1000,
                                     scales[si], err, sizeof err) != 0)
            die("%s", err);
        double worst = 0;
        for (size_t k = 0; k < sizeof times / sizeof *times; k++) {
            int t = times[k];
            g.base.labels = labels;
            const float *out = g.base.predict(&g.base, x, POINTS, (float)t);
            for (int i = 0; i < POINTS; i++) {
                double eu = eps_uncond(&model.mix, x[i], t), ey = eps_class(&model.mix, x[i], t, labels[i]);
                double cfg = eu + scales[si] * (ey - eu);   /* classifier-free guidance */
                worst = fmax(worst, fabs(out[i] - cfg) / (1e-3 + fabs(cfg)));
            }
        }
        CHECK(worst <= 2e-5, "scale %g: guided eps differs from eps_u + s (eps_y - eps_u) by %.3g "
              "(relative)", scales[si], worst);
        classifier_guidance_free(&g);
    }
    sampler_plan_free(&plan);
}

static void test_respaced_times(const GaussianDiffusion *d) {
    static ExactModel model;
    static ExactClassifier clf;
    models(d, &model, &clf);
    SamplerPlan plan;
    plan_for(&plan, d, SAMPLER_ANCESTRAL, "50", &model.base.output);
    ClassifierGuidance g;
    char err[256];
    if (classifier_guidance_init(&g, &model.base, &clf.base, &plan, SAMPLER_ANCESTRAL, 1000, 1.0f,
                                 err, sizeof err) != 0)
        die("%s", err);
    float x[1] = {0.3f};
    int32_t y[1] = {1};
    g.base.labels = y;
    sampler_run(&plan, &g.base, x, 1, (RngKey){1, 2, 0, 0}, 0);
    int same = clf.calls == plan.count - 1;   /* the last step has no variance: no call */
    for (int i = 0; same && i < clf.calls; i++) same = clf.times[i] == plan.model_t[plan.count - 1 - i];
    CHECK(same && plan.model_t[plan.count - 1] == 999,
          "respaced: the classifier saw %d calls, not the %d original timesteps 999 ... (skipping "
          "t with no variance)", clf.calls, plan.count - 1);
    classifier_guidance_free(&g);
    sampler_plan_free(&plan);
}

/* Fraction of N class-1 samples at x > 0 after guided sampling at scale s. */
static double landed_right(const GaussianDiffusion *d, SamplerKind kind, float scale) {
    static ExactModel model;
    static ExactClassifier clf;
    static float x[N];
    static int32_t labels[N];
    models(d, &model, &clf);
    SamplerPlan plan;
    plan_for(&plan, d, kind, NULL, &model.base.output);
    ClassifierGuidance g;
    char err[256];
    if (classifier_guidance_init(&g, &model.base, &clf.base, &plan, kind, 1000, scale, err,
                                 sizeof err) != 0)
        die("%s", err);
    cpu_normal_fill(x, N, 1, (RngKey){7, 1, 0, 0});
    for (int i = 0; i < N; i++) labels[i] = 1;
    g.base.labels = labels;
    sampler_run(&plan, &g.base, x, N, (RngKey){7, 2, 0, 0}, 0);
    int right = 0;
    for (int i = 0; i < N; i++) right += x[i] > 0;
    classifier_guidance_free(&g);
    sampler_plan_free(&plan);
    return (double)right / N;
}

static void test_sampling(const GaussianDiffusion *d) {
    static const float scales[] = {0.0f, 0.5f, 1.0f, 2.0f};
    static const char *names[] = {"ancestral", "ddim"};
    const double phi2 = 0.97725, se = sqrt(phi2 * (1 - phi2) / N);
    for (int kind = 0; kind < 2; kind++) {
        double f[4];
        for (int i = 0; i < 4; i++) f[i] = landed_right(d, (SamplerKind)kind, scales[i]);
        printf("  %-9s class 1 at x > 0: s=0 %.4f  s=0.5 %.4f  s=1 %.4f  s=2 %.4f\n",
               names[kind], f[0], f[1], f[2], f[3]);
        CHECK(f[0] < f[1] && f[1] < f[2] && f[2] < f[3],
              "%s: the fraction does not rise with the scale", names[kind]);
        CHECK(fabs(f[0] - 0.5) <= 4 * sqrt(0.25 / N), "%s: unguided, class 1 lands right %.4f of "
              "the time, not 0.5", names[kind], f[0]);
        CHECK(fabs(f[2] - phi2) <= 4 * se + 0.005, "%s: at scale 1, %.4f, not Phi(2) = %.5f",
              names[kind], f[2], phi2);
    }
}

int main(void) {
    GaussianDiffusion d = base_process();
    test_bayes_identity(&d);
    test_respaced_times(&d);
    test_sampling(&d);
    diffusion_free(&d);
    return test_summary("classifier_guidance");
}
