/* The KL autoencoder (autoencoder.h, objective=vae):
 *   - parity with diffusers' AutoencoderKL (tools/make_vae_reference.py): moments,
 *     reconstruction, KL, loss and every parameter gradient within 1e-4 relative, for the
 *     l1 loss and for l2 with a learned log variance, through the objective's own
 *     prepare/loss/report and the checkpoint reader (names and layout);
 *   - the KL op against the float64 closed form, 0 at mean 0 / logvar 0, gradient 0
 *     where the logvar clamp is active;
 *   - the downsampler's (0,1,0,1) padding on a known 4x4 case;
 *   - pipeline identity: with an orthogonal linear first stage, latent sampling decoded by
 *     first_stage_decode (what `ddpm sample --vae` runs) gives the pixel model's samples:
 *     exactly for DDIM at scaling factor 1, and in distribution at scaling factor 4, so a
 *     scale applied in the wrong place or order shows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autoencoder.h"
#include "checkpoint.h"
#include "cpu_backend.h"
#include "latent.h"
#include "sample.h"
#include "nn_blocks.h"
#include "objective.h"
#include "ref_io.h"
#include "safetensors.h"
#include "testing.h"
#include "util.h"

#define REF "tests/ref/vae_tiny.safetensors"
#define TOL 1e-4
#define GRAD_FLOOR 1e-3

static const StTensor *need(const StFile *f, const char *name) {
    const StTensor *t = st_find(f, name);
    if (!t) die("%s: reference tensor '%s' missing", REF, name);
    return t;
}

static float *copy_floats(const StTensor *t) {
    float *out = xmalloc(t->nbytes + 4);
    memcpy(out, t->data, t->nbytes);
    return out;
}

static void expect_close(const char *what, const float *got, const StTensor *want, double floor) {
    float *ref = copy_floats(want);
    double e = rel_error(got, ref, want->nbytes / sizeof(float), floor);
    CHECK(e <= TOL, "%s: relative error %.3g > %g", what, e, TOL);
    printf("  %-28s relative error %.3g\n", what, e);
    free(ref);
}

/* Every parameter gradient against <tag>.grad.<name>, PyTorch layout. */
static void compare_grads(const Net *m, const StFile *f, const char *tag) {
    float *host = xmalloc(m->num_parameters * sizeof(float));
    m->be->to_host(host, m->grads, m->num_parameters * sizeof(float));
    double worst = 0, smallest = INFINITY;
    const char *worst_name = "";
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        char name[160];
        snprintf(name, sizeof name, "%s.grad.%s", tag, p->name);
        float *ref = copy_floats(need(f, name)), *mine = xmalloc(p->numel * sizeof(float));
        param_to_torch(p, host + p->offset, mine);
        /* floor: the to_k biases' gradient is 0 in exact arithmetic (softmax ignores a
         * shift shared by a row), rounding noise on both sides; every other gradient
         * tensor here has max |g| above the floor (checked), so it loosens nothing else */
        double e = rel_error(mine, ref, p->numel, GRAD_FLOOR);
        double ref_max = 0;
        for (size_t k = 0; k < p->numel; k++) ref_max = fmax(ref_max, fabs(ref[k]));
        if (!strstr(p->name, "to_k.bias") && ref_max < smallest) smallest = ref_max;
        CHECK(e <= TOL, "%s gradient of %s: relative error %.3g", tag, p->name, e);
        if (!(e <= worst)) worst = e, worst_name = p->name;
        free(ref), free(mine);
    }
    printf("  %s: %d gradients, worst relative error %.3g (%s); smallest max |g| but "
           "to_k.bias %.3g\n", tag, m->n_params, worst, worst_name, smallest);
    CHECK(smallest > GRAD_FLOOR, "%s: a gradient tensor below the floor", tag);
    free(host);
}

static void check_parity(const char *tag, int l1, int learn_logvar) {
    StFile f;
    char err[1024];
    Config cfg = ref_open(&f, REF);
    cfg.dataset = DATASET_CIFAR10;   /* three channels */
    cfg.recon_loss = l1 ? RECON_L1 : RECON_L2;
    cfg.learn_logvar = learn_logvar;
    cfg.kl_weight = atof(st_meta(&f, "kl_weight"));
    CHECK(config_validate(&cfg, err, sizeof err) == 0, "reference config: %s", err);
    const Backend *be = backend_cpu();
    const StTensor *x = need(&f, "input.x"), *eps = need(&f, "input.eps");
    const int B = (int)x->shape[0];
    Net *m = autoencoder_build(be, &cfg, B, 0);
    float *bufs[CKPT_BUFFERS] = {m->weights, NULL, NULL, NULL};
    CHECK(checkpoint_read(REF, m, bufs, NULL, err, sizeof err) == 0, "load: %s", err);
    Objective *o = objective_vae_create(be, &cfg, B, B);
    float *values = be->alloc(x->nbytes);
    be->to_device(values, x->data, x->nbytes);
    StepBatch batch = {.step = 0, .b = B, .B = B, .values = values};
    o->ops->draw(o, 0, B);
    o->ops->prepare(o, m, &batch);
    be->to_device(net_input_data(m, "noise"), eps->data, eps->nbytes);   /* torch's eps */
    net_forward(m, B, NULL, (RngKey){0});
    float *stats = xmalloc((size_t)o->stats_per_sample * B * sizeof(float));
    o->ops->loss(o, m, &batch, stats);
    float *by_kind[2] = {stats, stats + B};
    ObjectiveReport report;
    o->ops->report(o, by_kind, B, &report);
    net_backward(m, B, (RngKey){0});
    char name[96];
    snprintf(name, sizeof name, "%s.moments", tag);
    expect_close(name, net_output_data(m, "moments"), need(&f, name), 1e-12);
    snprintf(name, sizeof name, "%s.recon", tag);
    expect_close(name, net_output_data(m, "sample"), need(&f, name), 1e-12);
    snprintf(name, sizeof name, "%s.kl", tag);
    expect_close(name, stats + B, need(&f, name), 1e-12);
    float loss = (float)report.loss;
    snprintf(name, sizeof name, "%s.loss", tag);
    expect_close(name, &loss, need(&f, name), 1e-12);
    compare_grads(m, &f, tag);
    free(stats);
    be->release(values);
    objective_free(o);
    net_free(m);
    st_free(&f);
}

/* KL(N(mean, exp(lv)) || N(0, 1)) per unit in double, with the clamp; its gradient. */
static double kl_unit(double mean, double lv, double *dmean, double *dlv) {
    double c = lv < -30 ? -30 : lv > 20 ? 20 : lv;
    *dmean = mean;
    *dlv = (lv >= -30 && lv <= 20) ? 0.5 * (exp(c) - 1) : 0.0;
    return 0.5 * (mean * mean + exp(c) - 1 - c);
}

static void check_kl(void) {
    const Backend *be = backend_cpu();
    enum { N = 3, HW = 5, C = 4, M = N * HW * 2 * C };
    float moments[M], dm[M], kl[N];
    RngKey key = {7, 99, 0, 0};
    for (int i = 0; i < M; i++) moments[i] = 4.0f * philox_uniform(key, 0, i) - 2.0f;
    /* clamp active on both sides, and exactly at the bounds (torch passes the gradient) */
    moments[C + 0] = 25.0f, moments[C + 1] = -35.0f, moments[3 * C + 2] = 20.0f;
    moments[3 * C + 3] = -30.0f;
    const float weight = 0.7f;
    be->gaussian_kl(kl, dm, moments, N, HW, C, weight);
    double worst = 0;
    int clamp_zero = 1, bound_passes = 1;
    for (int s = 0; s < N; s++) {
        double want = 0;
        for (int p = 0; p < HW; p++)
            for (int c = 0; c < C; c++) {
                size_t im = ((size_t)s * HW + p) * 2 * C + c, il = im + C;
                double gm, gl;
                want += kl_unit(moments[im], moments[il], &gm, &gl);
                double em = fabs(dm[im] - weight * gm / N) / (fabs(weight * gm / N) + 1e-6);
                double el = fabs(dm[il] - weight * gl / N) / (fabs(weight * gl / N) + 1e-6);
                if (em > worst) worst = em;
                if (el > worst) worst = el;
                if (moments[il] > 20 || moments[il] < -30) clamp_zero &= dm[il] == 0.0f;
                if (moments[il] == 20 || moments[il] == -30) bound_passes &= dm[il] != 0.0f;
            }
        double e = fabs(kl[s] - want) / fabs(want);
        CHECK(e <= 1e-6, "KL of sample %d: %.9g, float64 closed form %.9g", s, kl[s], want);
    }
    CHECK(worst <= 1e-5, "KL gradient: worst relative error %.3g", worst);
    CHECK(clamp_zero, "KL: the gradient of a clamped logvar is not 0");
    CHECK(bound_passes, "KL: the gradient at a clamp bound is 0 (torch.clamp passes it)");
    /* the posterior sample's gradient stops at the clamp too */
    float noise[N * HW * C], dz[N * HW * C];
    for (int i = 0; i < N * HW * C; i++) noise[i] = 1.0f, dz[i] = 1.0f;
    be->gaussian_sample_backward(dm, 0.0f, dz, moments, noise, N, HW, C);
    CHECK(dm[C + 0] == 0.0f && dm[C + 1] == 0.0f && dm[C + 2] != 0.0f,
          "posterior sample: the clamp does not stop the logvar gradient");
    /* 0 at the prior */
    float zero[2 * C] = {0}, kl0;
    be->gaussian_kl(&kl0, NULL, zero, 1, 1, C, 1.0f);
    CHECK(kl0 == 0.0f, "KL at mean 0, logvar 0 is %g, not 0", kl0);
    printf("  KL vs float64: gradient worst relative error %.3g; clamp gradient 0\n", worst);
}

/* The downsampler on x = 1..16 (4x4, one channel), w = 1..9 (3x3), bias 0: padding only
 * the bottom and the right gives [[348, 252], [274, 175]]; a symmetric padding of 1
 * would give [[111, 217], [363, 573]]. */
static void check_padding(void) {
    Net *net = net_create(backend_cpu(), 1);
    int x = net_add_input(net, "x", NET_F32, 4, 4, 1, 1);
    net_add_output(net, "y", block_downsample(net, "conv", x));
    net_finish(net);
    CHECK(net_height(net, net_output(net, "y")) == 2 && net_width(net, net_output(net, "y")) == 2,
          "downsampler: 4x4 does not give 2x2");
    float *in = net_input_data(net, "x");
    for (int i = 0; i < 16; i++) in[i] = (float)(i + 1);
    float torch_w[9];
    for (int i = 0; i < 9; i++) torch_w[i] = (float)(i + 1);
    param_from_torch(net_find_param(net, "conv.weight"), torch_w,
                     net->weights + net_find_param(net, "conv.weight")->offset);
    net_forward(net, 1, NULL, (RngKey){0});
    const float *y = net_output_data(net, "y"), want[4] = {348, 252, 274, 175};
    CHECK(!memcmp(y, want, sizeof want), "downsampler (0,1,0,1) padding: got [[%g, %g], [%g, %g]]",
          y[0], y[1], y[2], y[3]);
    /* backward: each input's gradient counts the windows that read it, weighted */
    float *dy = net_output_grad(net, "y");
    for (int i = 0; i < 4; i++) dy[i] = 1.0f;
    net_backward(net, 1, (RngKey){0});
    const float *dx = net_input_grad(net, "x");
    /* x[0][0] is read only by window (0,0) at tap (0,0): w = 1; x[3][3] only by (1,1) at
     * tap (1,1): w = 5; x[2][2] by all four: w(2,2)+w(2,0)+w(0,2)+w(0,0) = 9+7+3+1 */
    CHECK(dx[0] == 1.0f && dx[15] == 5.0f && dx[10] == 20.0f,
          "downsampler backward: dx[0] %g dx[10] %g dx[15] %g", dx[0], dx[10], dx[15]);
    net_free(net);
}

/* ---- pipeline identity ---- */

/* Toy data x0 ~ N(mu_c, S^2) per element; the optimal noise predictor is exact:
 * E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab S^2 + 1 - ab). */
enum { SIDE = 20, CH = 4, PD = SIDE * SIDE * CH };
#define TOY_S 0.5

typedef struct {
    Denoiser base;
    const GaussianDiffusion *process;
    double mean[CH], sd;
    float out[PD];
} Toy;

static const float *toy_predict(Denoiser *self, const float *x, int n, float t) {
    Toy *toy = (Toy *)self;
    double ab = toy->process->alphas_cumprod[(int)t];
    double k = sqrt(1 - ab) / (ab * toy->sd * toy->sd + 1 - ab);
    for (size_t i = 0; i < (size_t)n * PD; i++)
        toy->out[i] = (float)(k * (x[i] - sqrt(ab) * toy->mean[i % CH]));
    return toy->out;
}

/* A fixed orthogonal channel map (a 4x4 Hadamard matrix / 2): the encoder applies A, the
 * decoder its transpose. */
static double hadamard(int r, int c) { return (__builtin_popcount(r & c) % 2 ? -0.5 : 0.5); }

static void toy_sample(Toy *toy, const GaussianDiffusion *d, SamplerKind kind, float *x) {
    toy->base = (Denoiser){.predict = toy_predict, .be = backend_cpu(), .max_batch = 1,
                           .sample_size = PD, .output = {.prediction = PRED_EPS, .channels = CH}};
    toy->process = d;
    SamplerOptions opt = {.kind = kind, .eta = 0.0};
    SamplerPlan plan;
    char err[256];
    if (sampler_plan_init(&plan, d, &opt, &toy->base.output, err, sizeof err) != 0) die("%s", err);
    sampler_run(&plan, &toy->base, x, 1, (RngKey){5, 77, 0, 0}, 0);
    sampler_plan_free(&plan);
}

/* The decoder A^T as a first stage: input "latent", one linear node, output "sample". */
static void linear_first_stage(FirstStage *fs) {
    memset(fs, 0, sizeof *fs);
    config_defaults(&fs->cfg);
    fs->cfg.image_size = SIDE, fs->cfg.in_channels = CH, fs->cfg.latent_channels = CH;
    fs->be = backend_cpu(), fs->batch = 1, fs->side = SIDE;
    Net *net = net_create(fs->be, 1);
    int z = net_add_input(net, "latent", NET_F32, SIDE, SIDE, CH, 0);
    int w = net_param(net, PARAM_PLAIN, CH, 2, (int64_t[]){CH, CH}, "decode");
    net_add_output(net, "sample", net_linear_with(net, z, CH, w, -1));
    net_finish(net);
    for (int r = 0; r < CH; r++)   /* y = W x with W = A^T */
        for (int c = 0; c < CH; c++) net->weights[r * CH + c] = (float)hadamard(c, r);
    fs->net = net;
}

static void check_pipeline_identity(void) {
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    const double mu[CH] = {0.3, -0.2, 0.1, 0.5};
    static Toy pixel, latent;
    static float x[PD], z[PD], decoded[PD];
    FirstStage fs;
    linear_first_stage(&fs);
    for (int factor_case = 0; factor_case < 2; factor_case++) {
        const double s = factor_case ? 4.0 : 1.0;
        const SamplerKind kind = factor_case ? SAMPLER_ANCESTRAL : SAMPLER_DDIM;
        pixel.sd = TOY_S, latent.sd = s * TOY_S;   /* z0 = s A x0 */
        for (int r = 0; r < CH; r++) {
            pixel.mean[r] = mu[r], latent.mean[r] = 0;
            for (int c = 0; c < CH; c++) latent.mean[r] += s * hadamard(r, c) * mu[c];
        }
        cpu_normal_fill(x, 1, PD, (RngKey){3, 1, 0, 0});
        for (int p = 0; p < SIDE * SIDE; p++)   /* the same noise, mapped: z_T = A x_T */
            for (int r = 0; r < CH; r++) {
                double v = 0;
                for (int c = 0; c < CH; c++) v += hadamard(r, c) * x[p * CH + c];
                z[p * CH + r] = (float)v;
            }
        toy_sample(&pixel, &d, kind, x);
        toy_sample(&latent, &d, kind, z);
        first_stage_decode(&fs, z, 1, (float)s, decoded);
        if (!factor_case) {
            double e = rel_error(decoded, x, PD, 1e-6);
            CHECK(e <= 1e-5, "DDIM, scaling factor 1: decoded latent samples differ from the "
                  "pixel samples by %.3g relative", e);
            printf("  pipeline identity, DDIM, factor 1: relative difference %.3g\n", e);
            continue;
        }
        for (int c = 0; c < CH; c++) {   /* ancestral, factor 4: the same distribution */
            double m = 0, v = 0;
            for (int p = 0; p < SIDE * SIDE; p++) m += decoded[p * CH + c];
            m /= SIDE * SIDE;
            for (int p = 0; p < SIDE * SIDE; p++) v += pow(decoded[p * CH + c] - m, 2);
            double sd = sqrt(v / (SIDE * SIDE - 1));
            CHECK(fabs(m - mu[c]) < 0.1 && fabs(sd / TOY_S - 1) < 0.15,
                  "factor 4, channel %d: decoded samples have mean %.3f sd %.3f, the pixel "
                  "model's data %.3f %.3f", c, m, sd, mu[c], TOY_S);
            if (c == 0) printf("  pipeline identity, ancestral, factor 4: channel 0 mean %.3f "
                               "(data %.3f), sd %.3f (data %.3f)\n", m, mu[0], sd, TOY_S);
        }
    }
    net_free(fs.net);
    diffusion_free(&d);
}

int main(void) {
    check_parity("l1", 1, 0);
    check_parity("l2lv", 0, 1);
    check_kl();
    check_padding();
    check_pipeline_identity();
    return test_summary("vae");
}
