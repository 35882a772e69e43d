/* Samplers as plans of steps over a denoiser, the loop that runs a plan, and the
 * chunked image generation built on it (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------- plans ---------------- */

int sampler_kind_from_name(const char *name, SamplerKind *kind) {
    if (strcmp(name, "ancestral") == 0) *kind = SAMPLER_ANCESTRAL;
    else if (strcmp(name, "ddim") == 0) *kind = SAMPLER_DDIM;
    else if (strcmp(name, "euler") == 0) *kind = SAMPLER_EULER;
    else if (strcmp(name, "heun") == 0) *kind = SAMPLER_HEUN;
    else return -1;
    return 0;
}

static void with_output_layout(SampleUpdate *u, const GaussianDiffusion *p, int t,
                               const ModelOutput *model, int use_model_var) {
    u->learned_var = model->learned_var;
    u->channels = model->channels;
    u->use_model_var = model->learned_var && use_model_var;
    if (u->use_model_var) {
        u->sigma = t > 0 ? 1.0f : 0.0f;   /* the per-element scale comes from v */
        u->post_logvar = (float)p->posterior_log_variance_clipped[t];
        u->log_var_range = (float)(log(p->betas[t]) - p->posterior_log_variance_clipped[t]);
    }
}

static void affine_step(const SamplerPlan *plan, int i, Denoiser *den, float *x, int n,
                        RngKey z_key);

/* The process of the plan: base respaced as opt says, with the model's parameterisation. */
static int plan_process(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                        const ModelOutput *model, char *err, size_t err_size) {
    memset(plan, 0, sizeof *plan);
    if (model->prediction == PRED_VELOCITY) {
        snprintf(err, err_size, "the model predicts the flow velocity (objective=flow): sample "
                 "it with euler or heun, or convert it to eps first (ddpm sample --convert)");
        return -1;
    }
    if (opt->kind == SAMPLER_EULER || opt->kind == SAMPLER_HEUN) {
        snprintf(err, err_size, "euler and heun are flow samplers: build their plan with "
                 "flow_plan_init (flow.h)");
        return -1;
    }
    int T = base->num_timesteps;
    int *keep = xmalloc((size_t)T * sizeof(int));
    int count = T;
    if (opt->spacing && *opt->spacing) {
        count = space_timesteps(T, opt->spacing, keep, err, err_size);
    } else {
        for (int t = 0; t < T; t++) keep[t] = t;
    }
    if (count >= 1) diffusion_respace(&plan->process, base, keep, count);
    free(keep);
    if (count < 1) return -1;
    plan->process.pred = model->prediction;
    plan->count = count;
    plan->step = affine_step;
    plan->model_t = xmalloc((size_t)count * sizeof(int));
    plan->update = xcalloc((size_t)count, sizeof(SampleUpdate));
    for (int i = 0; i < count; i++) plan->model_t[i] = model_timestep(&plan->process, i);
    return 0;
}

int sampler_plan_init(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                      const ModelOutput *model, char *err, size_t err_size) {
    int ddim = opt->kind == SAMPLER_DDIM;
    if (!(opt->eta >= 0 && opt->eta <= 1)) {
        snprintf(err, err_size, "eta = %g is outside [0, 1]", opt->eta);
        return -1;
    }
    if (plan_process(plan, base, opt, model, err, err_size) != 0) return -1;
    const GaussianDiffusion *p = &plan->process;
    for (int t = 0; t < plan->count; t++) {
        plan->update[t] = ddim ? ddim_sample_update(p, t, opt->eta, opt->clip_denoised)
                               : p_sample_update(p, t, opt->clip_denoised);
        with_output_layout(&plan->update[t], p, t, model, !ddim);
    }
    return 0;
}

int sampler_plan_inversion(SamplerPlan *plan, const GaussianDiffusion *base,
                           const SamplerOptions *opt, const ModelOutput *model, char *err,
                           size_t err_size) {
    if (plan_process(plan, base, opt, model, err, err_size) != 0) return -1;
    plan->ascending = 1;
    for (int t = 0; t < plan->count; t++) {
        plan->update[t] = ddim_reverse_update(&plan->process, t);
        with_output_layout(&plan->update[t], &plan->process, t, model, 0);
    }
    return 0;
}

static void release_device_tables(SamplerPlan *plan) {
    if (!plan->device_be) return;
    plan->device_be->release(plan->device_update);
    plan->device_be->release(plan->device_time);
    plan->device_be->release(plan->device_step);
    plan->device_be = NULL;
}

void sampler_plan_free(SamplerPlan *plan) {
    diffusion_free(&plan->process);
    free(plan->model_t);
    free(plan->update);
    free(plan->sigmas);
    if (plan->scratch) plan->scratch_be->release(plan->scratch);
    release_device_tables(plan);
    memset(plan, 0, sizeof *plan);
}

/* ---------------- the loop ---------------- */

/* One model call and one fused update: ancestral, respaced and DDIM steps. */
static void affine_step(const SamplerPlan *plan, int i, Denoiser *den, float *x, int n,
                        RngKey z_key) {
    const float *out = den->predict(den, x, n, (float)plan->model_t[i]);
    den->be->sample_update(x, out, n, den->sample_size, plan->update[i], z_key);
}

/* Whether the loop can run from backend tables: an affine plan and a denoiser with
 * predict_at. The tables are built once per plan and backend, before any loop. */
static int use_device_tables(SamplerPlan *plan, const Denoiser *den) {
    if (plan->step != affine_step || !den->predict_at) return 0;
    if (plan->device_be == den->be) return 1;
    release_device_tables(plan);
    const Backend *be = den->be;
    float *times = xmalloc((size_t)plan->count * sizeof(float));
    for (int i = 0; i < plan->count; i++) times[i] = (float)plan->model_t[i];
    plan->device_update = be->alloc((size_t)plan->count * sizeof(SampleUpdate));
    plan->device_time = be->alloc((size_t)plan->count * sizeof(float));
    plan->device_step = be->alloc(sizeof(int32_t));
    be->to_device(plan->device_update, plan->update, (size_t)plan->count * sizeof(SampleUpdate));
    be->to_device(plan->device_time, times, (size_t)plan->count * sizeof(float));
    free(times);
    plan->device_be = be;
    return 1;
}

/* affine_step from the tables at the device's step counter, which it then advances. */
static void affine_step_on_device(const SamplerPlan *plan, Denoiser *den, float *x, int n,
                                  RngKey z_key) {
    const float *out = den->predict_at(den, x, n, plan->device_time, plan->device_step);
    den->be->sample_update_indexed(x, out, n, den->sample_size, plan->device_update,
                                   plan->device_step, z_key);
    den->be->advance_step(plan->device_step, plan->ascending ? 1 : -1);
}

/* Step k of a loop on the tables. With graph capture (DDPM_CUDA_GRAPHS=1 on CUDA) step 0
 * runs directly (warm-up), step 1 is captured once and launched, and every later step
 * launches the same graph: the device's step counter moves the tables on. A
 * class-conditional denoiser copies its labels from the host at each call, so it never
 * captures. */
static void device_step(SamplerPlan *plan, Denoiser *den, float *x, int n, RngKey key, int k,
                        void **graph) {
    const Backend *be = den->be;
    if (*graph) {
        be->graph_launch(*graph);
        return;
    }
    if (k == 1 && !den->labels && be->graph_begin()) {
        affine_step_on_device(plan, den, x, n, key);
        *graph = be->graph_end();
        be->graph_launch(*graph);
        return;
    }
    affine_step_on_device(plan, den, x, n, key);
}

const volatile sig_atomic_t *sampler_cancel;

void sampler_run(SamplerPlan *plan, Denoiser *den, float *x, int n, RngKey z_key,
                 int verbose) {
    double started = now_seconds();
    const int on_device = use_device_tables(plan, den);
    void *graph = NULL;
    if (on_device) {
        const int32_t first = plan->ascending ? 0 : plan->count - 1;
        den->be->to_device(plan->device_step, &first, sizeof first);
    }
    for (int k = 0; k < plan->count && !(sampler_cancel && *sampler_cancel); k++) {
        int i = plan->ascending ? k : plan->count - 1 - k;
        RngKey key = {z_key.seed, z_key.stream, (uint32_t)i, 0};
        if (on_device)   /* the same key, its step from the device's counter */
            device_step(plan, den, x, n, (RngKey){z_key.seed, z_key.stream, 0, 0}, k, &graph);
        else
            plan->step(plan, i, den, x, n, key);
        if (verbose && (k + 1) % 50 == 0) {
            double elapsed = now_seconds() - started;
            fprintf(stderr, "\rstep %d/%d  %.1f steps/s", k + 1, plan->count,
                    (k + 1) / (elapsed > 0 ? elapsed : 1e-9));
        }
    }
    if (graph) den->be->graph_release(graph);
    if (verbose) fputc('\n', stderr);
}

/* The chunk index is folded into the stream so that chunks draw distinct noise. */
static RngKey chunk_key(uint64_t seed, uint32_t stream, int chunk) {
    RngKey key = {seed, stream + ((uint32_t)chunk << 8), 0, 0};
    return key;
}

static int chunk_size(const Denoiser *den, int n, int first) {
    return n - first < den->max_batch ? n - first : den->max_batch;
}

void sample_initial_noise(Denoiser *den, int n, uint64_t seed, float *out) {
    const Backend *be = den->be;
    size_t D = den->sample_size;
    float *x = be->alloc((size_t)den->max_batch * D * sizeof(float));
    for (int first = 0, chunk = 0; first < n; first += den->max_batch, chunk++) {
        int count = chunk_size(den, n, first);
        be->normal_fill(x, count, D, chunk_key(seed, RNG_STREAM_SAMPLE_XT, chunk));
        be->to_host(out + (size_t)first * D, x, (size_t)count * D * sizeof(float));
    }
    be->release(x);
}

void sample_images_share(Denoiser *den, SamplerPlan *plan, int n, uint64_t seed,
                         const float *x_T, const int32_t *labels, float *out, int verbose,
                         int rank, int world_size) {
    const Backend *be = den->be;
    size_t D = den->sample_size;
    float *x = be->alloc((size_t)den->max_batch * D * sizeof(float));
    for (int first = 0, chunk = 0; first < n; first += den->max_batch, chunk++) {
        if (chunk % world_size != rank) continue;
        int count = chunk_size(den, n, first);
        den->labels = labels ? labels + first : NULL;
        if (x_T) be->to_device(x, x_T + (size_t)first * D, (size_t)count * D * sizeof(float));
        else be->normal_fill(x, count, D, chunk_key(seed, RNG_STREAM_SAMPLE_XT, chunk));
        if (verbose) fprintf(stderr, "images %d-%d of %d\n", first + 1, first + count, n);
        sampler_run(plan, den, x, count, chunk_key(seed, RNG_STREAM_SAMPLE_Z, chunk), verbose);
        be->to_host(out + (size_t)first * D, x, (size_t)count * D * sizeof(float));
    }
    den->labels = NULL;
    be->release(x);
}

void sample_images(Denoiser *den, SamplerPlan *plan, int n, uint64_t seed,
                   const float *x_T, const int32_t *labels, float *out, int verbose) {
    sample_images_share(den, plan, n, seed, x_T, labels, out, verbose, 0, 1);
}

void sample_images_default(Net *net, const float *weights, const GaussianDiffusion *d,
                           int learned_var, int n, uint64_t seed, int clip_denoised,
                           const int32_t *labels, float *out) {
    int channels = net_channels(net, net_input(net, "sample"));
    ModelOutput model = {.prediction = d->pred, .learned_var = learned_var, .channels = channels};
    SamplerOptions opt = {.kind = SAMPLER_ANCESTRAL, .clip_denoised = clip_denoised};
    NetDenoiser den;
    net_denoiser_init(&den, net, weights, model);
    SamplerPlan plan;
    char err[256];
    if (sampler_plan_init(&plan, d, &opt, &model, err, sizeof err) != 0) die("%s", err);
    sample_images(&den.base, &plan, n, seed, NULL, labels, out, 0);
    sampler_plan_free(&plan);
    net_denoiser_free(&den);
}
