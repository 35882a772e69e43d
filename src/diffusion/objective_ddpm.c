/* The DDPM objective (objective.h): q_sample of the batch at drawn timesteps, then
 * L_simple, hybrid (L_simple + lambda L_vlb) or kl (the bound itself), with uniform or
 * importance-sampled timesteps (Nichol & Dhariwal 2021). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion.h"
#include "guidance.h"
#include "objective.h"
#include "sample.h"
#include "timestep_sampler.h"
#include "util.h"

/* Per-sample statistics: [mse (b) | L_t in bits/dim (b)]. */
enum { STAT_MSE = 0, STAT_VB = 1, DDPM_STATS };

typedef struct {
    const Backend *be;
    Config cfg;
    GaussianDiffusion diffusion;
    DeviceSchedule schedule;         /* per-timestep tables in backend memory */
    TimestepSampler timestep_sampler;
    LossSpec loss;                   /* for the fused diffusion_loss (hybrid, kl) */
    int simple_loss;                 /* mse without learned variances: the plain MSE op */
    /* b = local batch, B = global batch, D = H*W*C */
    float *target;                   /* (b, D) backend */
    float *x0;                       /* (b, D) backend: x0 of image data */
    const float *step_x0;            /* this step's x0: x0, or the batch's float data */
    int32_t *t;                      /* (b) backend: the timesteps the loss gathers by */
    float *sample_weight;            /* (b) backend: 1/(T p_t) of the timestep sampler */
    int32_t *host_t;                 /* (B) */
    float *host_time;                /* (B) host_t as the network's float time input */
    float *host_weight;              /* (B) */
    float *host_loss;                /* (B) the per-sample training loss */
    int32_t *host_class;             /* (b) class-conditional: this step's labels after dropout */
    int32_t *grid_labels;            /* (sample_n) class-conditional: the training grids' classes */
} Ddpm;

/* hybrid: L_simple + (T/1000) L_t, i.e. lambda = 0.001 on L_vlb = T E_t[L_t], with the
 * VLB gradient stopped at the mean; kl: T L_t, the bound itself, through everything. */
static LossSpec loss_spec(const Config *c) {
    LossSpec spec = {.learned_var = c->learn_sigma, .mse_weight = 1.0f};
    if (c->loss == LOSS_HYBRID) spec.vb_weight = (float)(c->timesteps / 1000.0);
    if (c->loss == LOSS_KL) {
        spec.mse_weight = 0.0f;
        spec.vb_weight = (float)c->timesteps;
        spec.vb_trains_mean = 1;
    }
    return spec;
}

static void ddpm_draw(Objective *o, long step, int B) {
    Ddpm *d = o->state;
    RngKey t_key = {d->cfg.seed, RNG_STREAM_TIMESTEP, (uint32_t)step, 0};
    timestep_sampler_draw(&d->timestep_sampler, t_key, B, d->host_t, d->host_weight);
    for (int i = 0; i < B; i++) d->host_time[i] = (float)d->host_t[i];
}

static void ddpm_prepare(Objective *o, Net *net, const StepBatch *batch) {
    Ddpm *d = o->state;
    const Backend *be = d->be;
    const Config *c = &d->cfg;
    const int b = batch->b;
    const uint32_t step = (uint32_t)batch->step;
    be->to_device(d->t, d->host_t + batch->sample0, (size_t)b * sizeof(int32_t));
    be->to_device(net_input_data(net, "timestep"), d->host_time + batch->sample0,
                  (size_t)b * sizeof(float));
    RngKey flip_key = {c->seed, RNG_STREAM_FLIP, step, batch->sample0};
    RngKey eps_key = {c->seed, RNG_STREAM_EPS, step, batch->sample0};
    float *x_t = net_input_data(net, "sample");
    if (c->num_class_embeds > 0) feed_class_labels(d->be, net, &d->cfg, batch, d->host_class);
    if (batch->values) {
        be->q_sample(x_t, d->target, batch->values, d->t, d->schedule.sqrt_ac,
                     d->schedule.sqrt_1m_ac, b, net_per_sample(net, net_input(net, "sample")),
                     d->diffusion.pred, eps_key);
        d->step_x0 = batch->values;
        return;
    }
    be->q_sample_images(x_t, d->target, d->simple_loss ? NULL : d->x0, batch->images, d->t,
                        d->schedule.sqrt_ac, d->schedule.sqrt_1m_ac, b, c->image_size,
                        c->image_size, c->in_channels, d->diffusion.pred, c->hflip, flip_key,
                        eps_key);
    d->step_x0 = d->x0;
}

static void ddpm_loss(Objective *o, Net *net, const StepBatch *batch, float *stats) {
    Ddpm *d = o->state;
    const Backend *be = d->be;
    const Config *c = &d->cfg;
    const int b = batch->b;
    const int out = net_output(net, "sample");
    float *mse = stats + (size_t)STAT_MSE * b, *vb = stats + (size_t)STAT_VB * b;
    if (d->simple_loss) {
        be->mse_loss(mse, net_grad(net, out), net_data(net, out), d->target, b,
                     net_per_sample(net, net_input(net, "sample")));
        return;
    }
    be->to_device(d->sample_weight, d->host_weight + batch->sample0, (size_t)b * sizeof(float));
    be->diffusion_loss(mse, vb, net_grad(net, out), net_data(net, out), d->target, d->step_x0,
                       net_data(net, net_input(net, "sample")), d->t, d->sample_weight, b,
                       c->image_size * c->image_size, c->in_channels, d->loss,
                       d->schedule.tables);
}

static void ddpm_report(Objective *o, float *const *stats, int B, ObjectiveReport *out) {
    Ddpm *d = o->state;
    float *mse = stats[STAT_MSE], *vb = stats[STAT_VB];
    for (int i = 0; i < B; i++) {
        if (d->simple_loss) vb[i] = NAN;
        d->host_loss[i] = d->simple_loss ? mse[i]
                                         : d->loss.mse_weight * mse[i] + d->loss.vb_weight * vb[i];
    }
    if (!d->simple_loss)
        timestep_sampler_update(&d->timestep_sampler, d->host_t, d->host_loss, B);
    double loss = 0, aux = 0;
    for (int i = 0; i < B; i++) {
        loss += d->host_loss[i];
        aux += vb[i];
    }
    *out = (ObjectiveReport){.loss = loss / B, .aux = aux / B, .loss_per_sample = d->host_loss,
                             .t = d->host_t};
}

/* The importance sampler's loss history: needed for a bit-identical resume. */
static int ddpm_extras(Objective *o, CheckpointExtra *extras, int max) {
    TimestepSampler *s = &((Ddpm *)o->state)->timestep_sampler;
    if (!s->importance || max < 2) return 0;
    extras[0] = (CheckpointExtra){"timestep_sampler.history", ST_F64, 2,
                                  {s->num_timesteps, LOSS_HISTORY}, s->history};
    extras[1] = (CheckpointExtra){"timestep_sampler.count", ST_I32, 1, {s->num_timesteps, 0},
                                  s->count};
    return 2;
}

static void ddpm_sample(Objective *o, Net *net, const float *weights, int n, uint64_t seed,
                        float *out) {
    Ddpm *d = o->state;
    const int32_t *labels = NULL;
    if (d->cfg.num_class_embeds > 0) {   /* the grid cycles through the classes */
        free(d->grid_labels);
        d->grid_labels = xmalloc((size_t)n * sizeof(int32_t));
        grid_class_labels(&d->cfg, n, d->grid_labels);
        labels = d->grid_labels;
    }
    sample_images_default(net, weights, &d->diffusion, d->cfg.learn_sigma, n, seed,
                          d->cfg.clip_denoised, labels, out);
}

static void ddpm_free(Objective *o) {
    Ddpm *d = o->state;
    const Backend *be = d->be;
    device_schedule_free(&d->schedule);
    timestep_sampler_free(&d->timestep_sampler);
    diffusion_free(&d->diffusion);
    be->release(d->target);
    be->release(d->x0);
    be->release(d->t);
    be->release(d->sample_weight);
    free(d->host_t);
    free(d->host_time);
    free(d->host_weight);
    free(d->host_loss);
    free(d->host_class);
    free(d->grid_labels);
    free(d);
}

static const ObjectiveOps ddpm_ops = {
    .name = "ddpm",
    .aux_format = "L_t %.4f bits/dim",
    .aux_column = "vb_bpd",
    .draw = ddpm_draw,
    .prepare = ddpm_prepare,
    .loss = ddpm_loss,
    .report = ddpm_report,
    .extras = ddpm_extras,
    .sample = ddpm_sample,
    .free = ddpm_free,
};

Objective *objective_ddpm_create(const Backend *be, const Config *cfg, int b, int B) {
    Ddpm *d = xcalloc(1, sizeof *d);
    d->be = be;
    d->cfg = *cfg;
    char err[512];
    if (diffusion_from_config(&d->diffusion, cfg, err, sizeof err) != 0) die("config: %s", err);
    device_schedule_init(&d->schedule, be, &d->diffusion);
    timestep_sampler_init(&d->timestep_sampler, cfg->timesteps,
                          cfg->timestep_sampler == TIMESTEPS_LOSS_SECOND_MOMENT);
    d->loss = loss_spec(cfg);
    d->simple_loss = cfg->loss == LOSS_MSE && !cfg->learn_sigma;
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    d->target = be->alloc((size_t)b * D * sizeof(float));
    d->x0 = be->alloc((size_t)b * D * sizeof(float));
    d->t = be->alloc((size_t)b * sizeof(int32_t));
    d->sample_weight = be->alloc((size_t)b * sizeof(float));
    d->host_t = xmalloc((size_t)B * sizeof(int32_t));
    d->host_time = xmalloc((size_t)B * sizeof(float));
    d->host_weight = xmalloc((size_t)B * sizeof(float));
    d->host_loss = xmalloc((size_t)B * sizeof(float));
    d->host_class = xmalloc((size_t)b * sizeof(int32_t));
    Objective *o = xcalloc(1, sizeof *o);
    *o = (Objective){.ops = &ddpm_ops, .stats_per_sample = DDPM_STATS,
                     .loss_kinds = d->simple_loss ? 1u << STAT_MSE : 1u << STAT_MSE | 1u << STAT_VB, .state = d};
    return o;
}
