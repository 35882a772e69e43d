/* Class conditioning and classifier-free guidance (guidance.h).
 *  - Label dropout: over 1e5 draws the null fraction is within 4 sigma of p; p = 0 drops
 *    nothing; kept labels are unchanged; the draws depend only on (seed, step, sample).
 *  - Guidance algebra on a small class-conditional U-Net: s = 1 is bit-identical to the
 *    conditional model and runs no unconditional pass; s = 0 runs the null class alone;
 *    s = 3 gives exactly 3 eps_c - 2 eps_u (rounded once); the doubled batch equals two
 *    separate passes to 4e-6 (the convolutions' blocking may differ by batch); with learned variances the variance channels are the
 *    conditional half's; sampling hands the labels through unchanged.
 *  - Exact guided sampling: conditional data N(1, 0.5^2), unconditional N(0, 1.25), the
 *    exact per-class eps, linear schedule, T = 1000. Every step of ancestral, respaced and
 *    DDIM sampling is affine in x plus Gaussian noise, so the law of the output is
 *    propagated exactly (in double, with the plan's own coefficients); the samples' mean
 *    and variance must fall within 4 standard errors of it, at s = 1 and s = 2. At s = 1
 *    with 1000 DDIM steps the law is mean 0.9968, std 0.4985. */
#include <stdlib.h>
#include <string.h>

#include "guidance.h"
#include "sample.h"
#include "testing.h"
#include "unet.h"
#include "util.h"

/* ---------------- label dropout ---------------- */

static void test_label_dropout(void) {
    enum { N = 100000, NULL_CLASS = 10 };
    int32_t *labels = xmalloc(N * sizeof(int32_t)), *out = xmalloc(N * sizeof(int32_t));
    for (int i = 0; i < N; i++) labels[i] = i % NULL_CLASS;
    const double p = 0.1;
    RngKey key = {5, RNG_STREAM_LABEL_DROP, 17, 0};
    label_dropout(out, labels, N, 0, p, NULL_CLASS, key);
    int nulls = 0, changed = 0;
    for (int i = 0; i < N; i++) {
        nulls += out[i] == NULL_CLASS;
        changed += out[i] != NULL_CLASS && out[i] != labels[i];
    }
    double sigma = sqrt(p * (1 - p) / N), fraction = (double)nulls / N;
    printf("  label dropout p = %.2f: null fraction %.5f over %d draws (4 sigma = %.5f)\n", p,
           fraction, N, 4 * sigma);
    CHECK(fabs(fraction - p) < 4 * sigma, "null fraction %.5f is not within 4 sigma of %.2f",
          fraction, p);
    CHECK(changed == 0, "%d kept labels changed", changed);
    /* a rank's share draws what one process draws for the same samples */
    int32_t part[100];
    label_dropout(part, labels + 5000, 100, 5000, p, NULL_CLASS, key);
    CHECK(memcmp(part, out + 5000, sizeof part) == 0, "a share of the batch draws differently");
    key.step = 18;
    label_dropout(part, labels, 100, 0, p, NULL_CLASS, key);
    CHECK(memcmp(part, out, sizeof part) != 0, "the next step draws the same drops");
    label_dropout(out, labels, N, 0, 0.0, NULL_CLASS, key);
    CHECK(memcmp(out, labels, N * sizeof(int32_t)) == 0, "p = 0 dropped a label");
    free(labels);
    free(out);
}

/* ---------------- guidance algebra on a U-Net ---------------- */

/* Forwards to the network and records what it was asked. */
typedef struct {
    Denoiser base;
    Denoiser *inner;
    int calls, samples, null_samples, null_class;
    int32_t seen[64];
} Recorder;

static const float *record_predict(Denoiser *self, const float *x, int n, float t) {
    Recorder *r = (Recorder *)self;
    r->calls++;
    r->samples += n;
    for (int i = 0; i < n; i++) {
        r->null_samples += self->labels[i] == r->null_class;
        if (i < 64) r->seen[i] = self->labels[i];
    }
    r->inner->labels = self->labels;
    return r->inner->predict(r->inner, x, n, t);
}

static Config small_config(int learn_sigma) {
    Config c;
    char err[256];
    config_defaults(&c);
    c.image_size = 8, c.ch = 16, c.n_ch_mult = 2, c.ch_mult[0] = 1, c.ch_mult[1] = 2;
    c.num_res_blocks = 1, c.n_attn_resolutions = 0, c.groups = 8, c.dropout = 0;
    c.num_class_embeds = 4, c.class_dropout = 0.1;
    c.learn_sigma = learn_sigma, c.out_channels = learn_sigma ? 2 : 1;
    if (learn_sigma) c.loss = LOSS_HYBRID;
    if (config_validate(&c, err, sizeof err) != 0) die("%s", err);
    return c;
}

enum { B = 3 };

/* inner's output for x (n samples) with the given labels, copied to out */
static void predict_into(Denoiser *d, const float *x, int n, float t, const int32_t *labels,
                         float *out, size_t out_size) {
    d->labels = labels;
    memcpy(out, d->predict(d, x, n, t), (size_t)n * out_size * sizeof(float));
}

static void test_guidance_algebra(int learn_sigma) {
    const Backend *be = backend_cpu();
    Config c = small_config(learn_sigma);
    const int null_class = config_null_class(&c);
    Net *net = unet_build(be, &c, 2 * B, 0);
    net_init_weights(net, 3, NULL);
    ModelOutput output = {.prediction = PRED_EPS, .learned_var = learn_sigma, .channels = 1};
    NetDenoiser nd;
    net_denoiser_init(&nd, net, NULL, output);
    Recorder rec = {.base = nd.base, .inner = &nd.base, .null_class = null_class};
    rec.base.predict = record_predict;
    rec.base.predict_at = NULL;
    const size_t D = nd.base.sample_size, out_size = D * (learn_sigma ? 2 : 1);
    float x[2 * B * 64], cond[B * 128], uncond[B * 128], pair[2 * B * 128], got[B * 128];
    RngKey key = {1, 77, 0, 0};
    be->normal_fill(x, B, D, key);
    memcpy(x + B * D, x, B * D * sizeof(float));
    const int32_t labels[B] = {0, 2, 1}, nulls[B] = {null_class, null_class, null_class};
    int32_t pair_labels[2 * B];
    for (int i = 0; i < B; i++) pair_labels[i] = labels[i], pair_labels[B + i] = null_class;
    const float t = 421;
    predict_into(&nd.base, x, B, t, labels, cond, out_size);
    predict_into(&nd.base, x, B, t, nulls, uncond, out_size);
    predict_into(&nd.base, x, 2 * B, t, pair_labels, pair, out_size);
    const char *what = learn_sigma ? "learned variances" : "eps";

    GuidedDenoiser g;
    char err[256];
    float scales[3] = {1.0f, 0.0f, 3.0f};
    for (int k = 0; k < 3; k++) {
        float s = scales[k];
        if (guided_denoiser_init(&g, &rec.base, s, null_class, err, sizeof err) != 0) die("%s", err);
        rec.calls = rec.samples = rec.null_samples = 0;
        predict_into(&g.base, x, B, t, labels, got, out_size);
        if (s == 1.0f) {
            CHECK(memcmp(got, cond, B * out_size * sizeof(float)) == 0,
                  "%s: s = 1 differs from the conditional model", what);
            CHECK(rec.calls == 1 && rec.samples == B && rec.null_samples == 0,
                  "%s: s = 1 ran %d passes of %d samples, %d of them null", what, rec.calls,
                  rec.samples, rec.null_samples);
            CHECK(memcmp(rec.seen, labels, sizeof labels) == 0, "%s: s = 1 changed the labels",
                  what);
        } else if (s == 0.0f) {
            CHECK(memcmp(got, uncond, B * out_size * sizeof(float)) == 0,
                  "%s: s = 0 differs from the null class", what);
            CHECK(rec.calls == 1 && rec.samples == B && rec.null_samples == B,
                  "%s: s = 0 is not one unconditional pass", what);
        } else {
            CHECK(rec.calls == 1 && rec.samples == 2 * B && rec.null_samples == B,
                  "%s: s = 3 is not one pass of the doubled batch (%d passes, %d samples)",
                  what, rec.calls, rec.samples);
            CHECK(memcmp(rec.seen, labels, sizeof labels) == 0,
                  "%s: the conditional half's labels changed", what);
            int exact = 1, var_from_cond = 1;
            for (int i = 0; i < B; i++)
                for (size_t e = 0; e < out_size; e++) {
                    size_t at = i * out_size + e;
                    float c_ = pair[at], u_ = pair[B * out_size + at];
                    if (learn_sigma && e % 2 == 1) var_from_cond &= got[at] == c_;
                    else exact &= got[at] == (float)(3.0 * c_ - 2.0 * u_);
                }
            CHECK(exact, "%s: s = 3 is not exactly 3 eps_c - 2 eps_u", what);
            CHECK(var_from_cond, "%s: the variance channels are not the conditional half's",
                  what);
            double e_c = rel_error(pair, cond, B * out_size, 1e-3);
            double e_u = rel_error(pair + B * out_size, uncond, B * out_size, 1e-3);
            printf("  %s: doubled batch vs two passes: conditional %.1e, unconditional %.1e\n",
                   what, e_c, e_u);
            /* a batch of 2N may run convolution kernels blocked differently from N's (oneDNN
             * picks per shape), so the sums round differently: a few ulp, never more */
            CHECK(e_c < 4e-6 && e_u < 4e-6, "%s: the doubled batch differs from two passes",
                  what);
        }
        guided_denoiser_free(&g);
    }
    CHECK(guided_denoiser_init(&g, &rec.base, 2.0f, -1, err, sizeof err) != 0 &&
              strstr(err, "null class"),
          "guidance without a null class was accepted");
    CHECK(guided_denoiser_init(&g, &rec.base, 1.0f, -1, err, sizeof err) == 0,
          "s = 1 without a null class was refused");
    guided_denoiser_free(&g);
    net_denoiser_free(&nd);
    net_free(net);
}

/* ---------------- exact guided sampling ---------------- */

#define COND_MEAN 1.0
#define COND_VAR 0.25
#define UNCOND_MEAN 0.0
#define UNCOND_VAR 1.25
#define NULL_ID 1
#define ELEMENTS 20000

/* The exact eps of Gaussian data N(m, v) is affine in x_t: k (x - sqrt(ab) m). */
typedef struct {
    Denoiser base;
    const GaussianDiffusion *process;
    float out[2 * ELEMENTS];
} GaussianPair;

static void eps_coefs(double ab, double m, double v, double *slope, double *at_zero) {
    *slope = sqrt(1 - ab) / (ab * v + 1 - ab);
    *at_zero = -*slope * sqrt(ab) * m;
}

static const float *pair_predict(Denoiser *self, const float *x, int n, float model_t) {
    GaussianPair *p = (GaussianPair *)self;
    double ab = p->process->alphas_cumprod[(int)model_t];
    for (int s = 0; s < n; s++) {
        int cond = self->labels[s] != NULL_ID;
        double k, k0;
        eps_coefs(ab, cond ? COND_MEAN : UNCOND_MEAN, cond ? COND_VAR : UNCOND_VAR, &k, &k0);
        for (int e = 0; e < ELEMENTS; e++)
            p->out[s * ELEMENTS + e] = (float)(k * x[s * ELEMENTS + e] + k0);
    }
    return p->out;
}

/* The law of x after the plan, from x_T ~ N(0, 1): each step is
 * x <- coef_x0 (a x + b eps(x)) + coef_xt x + sigma z, with eps the guided affine map. */
static void propagate(const SamplerPlan *plan, const GaussianDiffusion *base, double s,
                      double *mean, double *var) {
    double m = 0, v = 1;
    for (int k = 0; k < plan->count; k++) {
        int i = plan->count - 1 - k;
        const SampleUpdate *u = &plan->update[i];
        double ab = base->alphas_cumprod[plan->model_t[i]], kc, kc0, ku, ku0;
        eps_coefs(ab, COND_MEAN, COND_VAR, &kc, &kc0);
        eps_coefs(ab, UNCOND_MEAN, UNCOND_VAR, &ku, &ku0);
        double slope = s * kc + (1 - s) * ku, at_zero = s * kc0 + (1 - s) * ku0;
        double alpha = u->coef_x0 * (u->x0_from_xt + u->x0_from_out * slope) + u->coef_xt;
        double beta = u->coef_x0 * u->x0_from_out * at_zero;
        m = alpha * m + beta;
        v = alpha * alpha * v + (double)u->sigma * u->sigma;
    }
    *mean = m, *var = v;
}

static void test_exact_guided(const GaussianDiffusion *base, SamplerOptions opt, const char *name,
                              double s, int check_published) {
    static GaussianPair pair;
    pair.base = (Denoiser){.predict = pair_predict, .be = backend_cpu(), .max_batch = 2,
                           .sample_size = ELEMENTS, .output = {.prediction = PRED_EPS, .channels = 1}};
    pair.process = base;
    GuidedDenoiser g;
    char err[256];
    if (guided_denoiser_init(&g, &pair.base, (float)s, NULL_ID, err, sizeof err) != 0) die("%s", err);
    SamplerPlan plan;
    if (sampler_plan_init(&plan, base, &opt, &pair.base.output, err, sizeof err) != 0) die("%s", err);
    static float x[ELEMENTS];
    const int32_t label = 0;
    sample_images(&g.base, &plan, 1, 11, NULL, &label, x, 0);
    double mean, var, sm = 0, sq = 0;
    propagate(&plan, base, s, &mean, &var);
    for (int i = 0; i < ELEMENTS; i++) sm += x[i];
    sm /= ELEMENTS;
    for (int i = 0; i < ELEMENTS; i++) sq += (x[i] - sm) * (x[i] - sm);
    double sv = sq / (ELEMENTS - 1);
    double se_mean = sqrt(var / ELEMENTS), se_var = var * sqrt(2.0 / (ELEMENTS - 1));
    printf("  %s s = %g: exact mean %.4f std %.4f; samples mean %.4f std %.4f\n", name, s, mean,
           sqrt(var), sm, sqrt(sv));
    CHECK(fabs(sm - mean) < 4 * se_mean, "%s s = %g: mean %.4f is not within 4 SE of %.4f", name,
          s, sm, mean);
    CHECK(fabs(sv - var) < 4 * se_var, "%s s = %g: variance %.4f is not within 4 SE of %.4f",
          name, s, sv, var);
    if (check_published)
        CHECK(fabs(mean - 0.9968) < 1e-4 && fabs(sqrt(var) - 0.4985) < 1e-4,
              "the propagated law at s = 1 is not mean 0.9968, std 0.4985");
    sampler_plan_free(&plan);
    guided_denoiser_free(&g);
}

int main(void) {
    test_label_dropout();
    test_guidance_algebra(0);
    test_guidance_algebra(1);
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    SamplerOptions ddim = {.kind = SAMPLER_DDIM, .eta = 0.0};
    test_exact_guided(&d, ddim, "DDIM 1000", 1.0, 1);
    test_exact_guided(&d, ddim, "DDIM 1000", 2.0, 0);
    SamplerOptions ancestral = {.kind = SAMPLER_ANCESTRAL};
    test_exact_guided(&d, ancestral, "ancestral", 2.0, 0);
    SamplerOptions respaced = {.kind = SAMPLER_ANCESTRAL, .spacing = "100"};
    test_exact_guided(&d, respaced, "respaced 100", 2.0, 0);
    SamplerOptions ddim50 = {.kind = SAMPLER_DDIM, .eta = 0.0, .spacing = "ddim50"};
    test_exact_guided(&d, ddim50, "DDIM 50", 4.0, 0);
    diffusion_free(&d);
    return test_summary("guidance");
}
