/* The samplers on a toy problem with a known answer: data x0 ~ N(mu, s^2) per element,
 * for which the optimal noise predictor is exact,
 *   E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
 * Checks: respacing with S = T is the plain sampler bit for bit; DDIM with eta = 1 over
 * every step matches ancestral sampling in distribution (moments); DDIM eta = 0 is
 * deterministic and its inversion followed by sampling gives x0 back; and the importance
 * timestep sampler. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "sample.h"
#include "testing.h"
#include "timestep_sampler.h"
#include "util.h"

#define MU 0.3
#define S 0.5
#define D 5000

typedef struct {
    Denoiser base;
    const GaussianDiffusion *process;   /* the model's timesteps index the base process */
    float out[D];
} ToyModel;

static const float *toy_denoise(Denoiser *self, const float *x, int n, float model_t) {
    ToyModel *toy = (ToyModel *)self;
    double ab = toy->process->alphas_cumprod[(int)model_t];
    double k = sqrt(1 - ab) / (ab * S * S + 1 - ab);
    for (size_t i = 0; i < (size_t)n * D; i++) toy->out[i] = (float)(k * (x[i] - sqrt(ab) * MU));
    return toy->out;
}

static void run(const GaussianDiffusion *base, const SamplerOptions *opt, float *x, int inversion,
                uint32_t z_stream) {
    static ToyModel toy;
    toy.base = (Denoiser){.predict = toy_denoise, .be = backend_cpu(), .max_batch = 1,
                          .sample_size = D, .output = {.prediction = PRED_EPS, .channels = 1}};
    toy.process = base;
    SamplerPlan plan;
    char err[256];
    int rc = inversion ? sampler_plan_inversion(&plan, base, opt, &toy.base.output, err, sizeof err)
                       : sampler_plan_init(&plan, base, opt, &toy.base.output, err, sizeof err);
    if (rc != 0) die("%s", err);
    sampler_run(&plan, &toy.base, x, 1, (RngKey){9, z_stream, 0, 0}, 0);
    sampler_plan_free(&plan);
}

static void moments(const float *x, double *mean, double *var) {
    double s = 0, s2 = 0;
    for (int i = 0; i < D; i++) s += x[i], s2 += (double)x[i] * x[i];
    *mean = s / D;
    *var = s2 / D - *mean * *mean;
}

static void start_noise(float *x, uint32_t stream) {
    cpu_normal_fill(x, 1, D, (RngKey){4, stream, 0, 0});
}

int main(void) {
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    static float a[D], b[D], x0[D], back[D];

    SamplerOptions plain = {.kind = SAMPLER_ANCESTRAL}, spaced = {.kind = SAMPLER_ANCESTRAL, .spacing = "1000"};
    start_noise(a, 1), start_noise(b, 1);
    run(&d, &plain, a, 0, 1);
    run(&d, &spaced, b, 0, 1);
    CHECK(memcmp(a, b, sizeof a) == 0, "respacing with S = T changes the samples");

    double ma, va, mb, vb;
    moments(a, &ma, &va);
    SamplerOptions ddim1 = {.kind = SAMPLER_DDIM, .eta = 1.0};
    start_noise(b, 2);
    run(&d, &ddim1, b, 0, 2);
    moments(b, &mb, &vb);
    printf("  ancestral: mean %.4f var %.4f; DDIM eta=1: mean %.4f var %.4f; data: %.4f %.4f\n",
           ma, va, mb, vb, MU, S * S);
    /* 5000 draws: the standard error of the mean is 0.0071 and of the variance 0.005 */
    CHECK(fabs(ma - MU) < 0.025 && fabs(va - S * S) < 0.02, "ancestral sampler moments");
    CHECK(fabs(mb - MU) < 0.025 && fabs(vb - S * S) < 0.02, "DDIM eta=1 moments");
    CHECK(fabs(ma - mb) < 0.035 && fabs(va - vb) < 0.025, "the two samplers agree");

    /* with 100 steps the posterior variance (fixedsmall) is the low end of the right
     * variance, so the samples come out narrower (Nichol & Dhariwal 2021, sec. 3.1) */
    SamplerOptions respaced = {.kind = SAMPLER_ANCESTRAL, .spacing = "100"};
    start_noise(b, 3);
    run(&d, &respaced, b, 0, 3);
    moments(b, &mb, &vb);
    printf("  100 respaced ancestral steps: mean %.4f var %.4f\n", mb, vb);
    CHECK(fabs(mb - MU) < 0.025 && vb > 0.8 * S * S && vb < S * S, "100 respaced steps");

    SamplerOptions ddim0 = {.kind = SAMPLER_DDIM, .eta = 0.0, .spacing = "ddim50"};
    start_noise(a, 4), start_noise(b, 4);
    run(&d, &ddim0, a, 0, 4);
    run(&d, &ddim0, b, 0, 5);   /* other z keys must not matter */
    CHECK(memcmp(a, b, sizeof a) == 0, "DDIM eta=0 is deterministic given x_T");

    /* Inversion uses the prediction at t for the step to t+1, a first-order scheme: the
     * round trip's error shrinks in proportion to the step count. */
    cpu_normal_fill(x0, 1, D, (RngKey){4, 99, 0, 0});
    for (int i = 0; i < D; i++) x0[i] = (float)(MU + S * x0[i]);
    const char *spacings[2] = {"ddim50", "1000"};
    double bounds[2] = {0.08, 0.005}, rms[2];
    for (int k = 0; k < 2; k++) {
        SamplerOptions o = {.kind = SAMPLER_DDIM, .spacing = spacings[k]};
        memcpy(back, x0, sizeof x0);
        run(&d, &o, back, 1, 6);   /* x0 -> x_T */
        run(&d, &o, back, 0, 6);   /* x_T -> x0 */
        double sq = 0;
        for (int i = 0; i < D; i++) sq += (double)(back[i] - x0[i]) * (back[i] - x0[i]);
        rms[k] = sqrt(sq / D);
        printf("  DDIM %s inversion then sampling: rms |x0' - x0| = %.2e (bound %.0e)\n",
               spacings[k], rms[k], bounds[k]);
        CHECK(rms[k] < bounds[k], "DDIM %s round trip", spacings[k]);
    }
    CHECK(rms[1] < rms[0] / 10, "the round trip converges with the step count");

    TimestepSampler ts;
    timestep_sampler_init(&ts, 4, 1);
    int32_t t[4000];
    float w[4000];
    double probs[4];
    timestep_sampler_probs(&ts, probs);
    CHECK(probs[0] == 0.25 && probs[3] == 0.25, "uniform until every t has 10 losses");
    for (int round = 0; round < 12; round++) {
        int32_t all[4] = {0, 1, 2, 3};
        float losses[4] = {1, 1, 3, 3};
        timestep_sampler_update(&ts, all, losses, 4);
    }
    timestep_sampler_probs(&ts, probs);
    double want_low = 0.125 * 0.999 + 0.001 / 4, want_high = 0.375 * 0.999 + 0.001 / 4;
    CHECK(fabs(probs[0] - want_low) < 1e-12 && fabs(probs[2] - want_high) < 1e-12,
          "probabilities follow sqrt(E[loss^2]) with the floor: %g %g", probs[0], probs[2]);
    timestep_sampler_draw(&ts, (RngKey){1, RNG_STREAM_TIMESTEP, 0, 0}, 4000, t, w);
    int high = 0;
    double weighted = 0;
    for (int i = 0; i < 4000; i++) high += t[i] >= 2, weighted += w[i];
    CHECK(abs(high - 3000) < 120, "draws follow the probabilities (%d of 4000 high)", high);
    CHECK(fabs(weighted / 4000 - 1.0) < 0.05, "weights 1/(T p) average to 1 (%g)", weighted / 4000);
    timestep_sampler_free(&ts);
    diffusion_free(&d);
    return test_summary("samplers");
}
