/* Samplers as plans of (model timestep, fused update) steps, the loop that runs a plan,
 * and `ddpm sample`. */
#include "sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------- plans ---------------- */

static void with_output_layout(SampleUpdate *u, const GaussianDiffusion *p, int t,
                               const SamplerOptions *opt, int use_model_var) {
    u->learned_var = opt->learned_var;
    u->channels = opt->channels;
    u->use_model_var = opt->learned_var && use_model_var;
    if (u->use_model_var) {
        u->sigma = t > 0 ? 1.0f : 0.0f;   /* the per-element scale comes from v */
        u->post_logvar = (float)p->posterior_log_variance_clipped[t];
        u->log_var_range = (float)(log(p->betas[t]) - p->posterior_log_variance_clipped[t]);
    }
}

static int plan_process(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                        char *err, size_t err_size) {
    memset(plan, 0, sizeof *plan);
    int T = base->num_timesteps;
    int *keep = xmalloc((size_t)T * sizeof(int));
    int count = T;
    if (opt->spacing && *opt->spacing) {
        count = space_timesteps(T, opt->spacing, keep, err, err_size);
    } else {
        for (int t = 0; t < T; t++) keep[t] = t;
    }
    int rc = count < 1 ? -1 : diffusion_respace(&plan->process, base, keep, count, err, err_size);
    free(keep);
    if (rc != 0) return -1;
    plan->count = count;
    plan->model_t = xmalloc((size_t)count * sizeof(int));
    plan->update = xcalloc((size_t)count, sizeof(SampleUpdate));
    for (int i = 0; i < count; i++) plan->model_t[i] = model_timestep(&plan->process, i);
    return 0;
}

int sampler_plan_init(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                      char *err, size_t err_size) {
    int ddim = opt->kind && strcmp(opt->kind, "ddim") == 0;
    if (opt->kind && !ddim && strcmp(opt->kind, "ancestral") != 0) {
        snprintf(err, err_size, "unknown sampler '%s' (ancestral or ddim)", opt->kind);
        return -1;
    }
    if (!(opt->eta >= 0 && opt->eta <= 1)) {
        snprintf(err, err_size, "eta = %g is outside [0, 1]", opt->eta);
        return -1;
    }
    if (plan_process(plan, base, opt, err, err_size) != 0) return -1;
    const GaussianDiffusion *p = &plan->process;
    for (int t = 0; t < plan->count; t++) {
        plan->update[t] = ddim ? ddim_sample_update(p, t, opt->eta, opt->clip_denoised)
                               : p_sample_update(p, t, opt->clip_denoised);
        with_output_layout(&plan->update[t], p, t, opt, !ddim);
    }
    return 0;
}

int sampler_plan_inversion(SamplerPlan *plan, const GaussianDiffusion *base,
                           const SamplerOptions *opt, char *err, size_t err_size) {
    if (plan_process(plan, base, opt, err, err_size) != 0) return -1;
    plan->ascending = 1;
    for (int t = 0; t < plan->count; t++) {
        plan->update[t] = ddim_reverse_update(&plan->process, t);
        with_output_layout(&plan->update[t], &plan->process, t, opt, 0);
    }
    return 0;
}

void sampler_plan_free(SamplerPlan *plan) {
    diffusion_free(&plan->process);
    free(plan->model_t);
    free(plan->update);
    memset(plan, 0, sizeof *plan);
}

/* ---------------- the loop ---------------- */

const volatile sig_atomic_t *sampler_cancel;

void sampler_run(const Backend *be, const SamplerPlan *plan, DenoiseFn denoise, void *ctx,
                 float *x, int n, size_t d, RngKey z_key, int verbose) {
    double started = now_seconds();
    for (int k = 0; k < plan->count && !(sampler_cancel && *sampler_cancel); k++) {
        int i = plan->ascending ? k : plan->count - 1 - k;
        const float *out = denoise(ctx, x, n, plan->model_t[i]);
        RngKey key = {z_key.seed, z_key.stream, (uint32_t)i, 0};
        be->sample_update(x, out, n, d, plan->update[i], key);
        if (verbose && (k + 1) % 50 == 0) {
            double elapsed = now_seconds() - started;
            fprintf(stderr, "\rstep %d/%d  %.1f steps/s", k + 1, plan->count,
                    (k + 1) / (elapsed > 0 ? elapsed : 1e-9));
        }
    }
    if (verbose) fputc('\n', stderr);
}

typedef struct {
    UNet *model;
    int32_t *t_host;   /* (max_batch) */
} UNetDenoiser;

/* x is the U-Net's own input buffer: the sampler updates it in place. */
static const float *unet_denoise(void *ctx, const float *x, int n, int model_t) {
    UNetDenoiser *u = ctx;
    (void)x;
    for (int i = 0; i < n; i++) u->t_host[i] = model_t;
    u->model->be->to_device(u->model->timesteps, u->t_host, (size_t)n * sizeof(int32_t));
    unet_forward(u->model, n, (RngKey){0});
    return unet_output(u->model);
}

/* The chunk index is folded into the stream so that chunks draw distinct noise. */
static RngKey chunk_key(uint64_t seed, uint32_t stream, int chunk) {
    RngKey key = {seed, stream + ((uint32_t)chunk << 8), 0, 0};
    return key;
}

void sample_initial_noise(UNet *m, int n, uint64_t seed, float *out) {
    size_t D = unet_sample_size(m);
    for (int first = 0, chunk = 0; first < n; first += m->max_batch, chunk++) {
        int count = n - first < m->max_batch ? n - first : m->max_batch;
        m->be->normal_fill(unet_input(m), count, D, chunk_key(seed, RNG_STREAM_SAMPLE_XT, chunk));
        m->be->to_host(out + (size_t)first * D, unet_input(m), (size_t)count * D * sizeof(float));
    }
}

void sample_images_share(UNet *m, const SamplerPlan *plan, int n, uint64_t seed,
                         const float *x_T, float *out, int verbose, int rank, int world_size) {
    const Backend *be = m->be;
    size_t D = unet_sample_size(m);
    UNetDenoiser ctx = {m, xmalloc((size_t)m->max_batch * sizeof(int32_t))};
    int was_training = m->training;
    m->training = 0;
    for (int first = 0, chunk = 0; first < n; first += m->max_batch, chunk++) {
        if (chunk % world_size != rank) continue;
        int count = n - first < m->max_batch ? n - first : m->max_batch;
        float *x = unet_input(m);
        if (x_T) be->to_device(x, x_T + (size_t)first * D, (size_t)count * D * sizeof(float));
        else be->normal_fill(x, count, D, chunk_key(seed, RNG_STREAM_SAMPLE_XT, chunk));
        if (verbose) fprintf(stderr, "images %d-%d of %d\n", first + 1, first + count, n);
        sampler_run(be, plan, unet_denoise, &ctx, x, count, D,
                    chunk_key(seed, RNG_STREAM_SAMPLE_Z, chunk), verbose);
        be->to_host(out + (size_t)first * D, x, (size_t)count * D * sizeof(float));
    }
    m->training = was_training;
    free(ctx.t_host);
}

void sample_images(UNet *m, const SamplerPlan *plan, int n, uint64_t seed, const float *x_T,
                   float *out, int verbose) {
    sample_images_share(m, plan, n, seed, x_T, out, verbose, 0, 1);
}

void sample_images_default(UNet *m, const GaussianDiffusion *d, int learned_var, int n,
                           uint64_t seed, int clip_denoised, float *out) {
    SamplerOptions opt = {.kind = "ancestral", .clip_denoised = clip_denoised,
                          .learned_var = learned_var, .channels = m->in_channels};
    SamplerPlan plan;
    char err[256];
    if (sampler_plan_init(&plan, d, &opt, err, sizeof err) != 0) die("%s", err);
    sample_images(m, &plan, n, seed, NULL, out, 0);
    sampler_plan_free(&plan);
}
