/* The training loop: batches, the L_simple step, AdamW with clipping and warmup,
 * EMA, non-finite step skipping, logging, samples and checkpoints. */
#include "train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image_io.h"
#include "sample.h"
#include "util.h"

/* ---------------- data order ---------------- */

static long batches_per_epoch(const Trainer *tr) {
    return tr->data.count / tr->cfg.batch_size;
}

/* Fisher-Yates with Philox draws keyed by the epoch: any epoch's order can be
 * recomputed from the seed alone, which is what makes resuming exact. */
static void shuffle_epoch(Trainer *tr, long epoch) {
    RngKey key = {tr->cfg.seed, RNG_STREAM_SHUFFLE, (uint32_t)epoch};
    for (int i = 0; i < tr->data.count; i++) tr->order[i] = (uint32_t)i;
    for (int i = tr->data.count - 1; i > 0; i--) {
        uint32_t j = philox_below(key, 0, (uint64_t)i, (uint32_t)i + 1);
        uint32_t tmp = tr->order[i];
        tr->order[i] = tr->order[j];
        tr->order[j] = tmp;
    }
    tr->order_epoch = epoch;
}

static void gather_batch(Trainer *tr, long step) {
    const Config *c = &tr->cfg;
    long epoch = step / batches_per_epoch(tr);
    long first = (step % batches_per_epoch(tr)) * c->batch_size;
    if (epoch != tr->order_epoch) shuffle_epoch(tr, epoch);
    size_t image_bytes = (size_t)tr->data.height * tr->data.width * tr->data.channels;
    for (int i = 0; i < c->batch_size; i++) {
        uint32_t index = tr->order[first + i];
        memcpy(tr->host_images + i * image_bytes, tr->data.images + index * image_bytes,
               image_bytes);
    }
    RngKey t_key = {c->seed, RNG_STREAM_TIMESTEP, (uint32_t)step};
    timestep_sampler_draw(&tr->timestep_sampler, t_key, c->batch_size, tr->host_t,
                          tr->host_weight);
    tr->progress.data_epoch = (step + 1) / batches_per_epoch(tr);
    tr->progress.data_index = ((step + 1) % batches_per_epoch(tr)) * c->batch_size;
}

/* ---------------- set-up ---------------- */

/* hybrid: L_simple + (T/1000) L_t, i.e. lambda = 0.001 on L_vlb = T E_t[L_t], with the
 * VLB gradient stopped at the mean; kl: T L_t, the bound itself, through everything. */
static LossSpec loss_spec(const Config *c) {
    LossSpec spec = {.learned_var = c->learn_sigma, .mse_weight = 1.0f};
    if (strcmp(c->loss, "hybrid") == 0) spec.vb_weight = (float)(c->timesteps / 1000.0);
    if (strcmp(c->loss, "kl") == 0) {
        spec.mse_weight = 0.0f;
        spec.vb_weight = (float)c->timesteps;
        spec.vb_trains_mean = 1;
    }
    return spec;
}

void trainer_init(Trainer *tr, const Backend *be, const Config *cfg, Dataset *data) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    tr->be = be;
    tr->data = *data;
    memset(data, 0, sizeof *data);
    if (tr->data.count < cfg->batch_size)
        die("the dataset has %d images, fewer than batch_size %d", tr->data.count,
            cfg->batch_size);
    char err[512];
    if (diffusion_init(&tr->diffusion, cfg->beta_schedule, cfg->timesteps,
                       prediction_from_name(cfg->prediction), variance_from_name(cfg->variance),
                       err, sizeof err) != 0)
        die("config: %s", err);
    int B = cfg->batch_size;
    tr->model = unet_create(be, cfg, B);
    size_t P = tr->model->num_parameters, D = unet_sample_size(tr->model);
    tr->ema = be->alloc(P * sizeof(float));
    tr->adam_m = be->alloc(P * sizeof(float));
    tr->adam_v = be->alloc(P * sizeof(float));
    device_schedule_init(&tr->schedule, be, &tr->diffusion);
    timestep_sampler_init(&tr->timestep_sampler, cfg->timesteps,
                          strcmp(cfg->timestep_sampler, "loss_second_moment") == 0);
    tr->loss = loss_spec(cfg);
    tr->simple_loss = strcmp(cfg->loss, "mse") == 0 && !cfg->learn_sigma;
    tr->target = be->alloc((size_t)B * D * sizeof(float));
    tr->x0 = be->alloc((size_t)B * D * sizeof(float));
    tr->vb_per_sample = be->alloc((size_t)B * sizeof(float));
    tr->sample_weight = be->alloc((size_t)B * sizeof(float));
    tr->host_mse = xmalloc((size_t)B * sizeof(float));
    tr->host_vb = xmalloc((size_t)B * sizeof(float));
    tr->host_weight = xmalloc((size_t)B * sizeof(float));
    tr->images = be->alloc((size_t)B * D);
    tr->loss_per_sample = be->alloc((size_t)B * sizeof(float));
    tr->grad_norm = be->alloc(sizeof(float));
    tr->host_images = xmalloc((size_t)B * D);
    tr->host_t = xmalloc((size_t)B * sizeof(int32_t));
    tr->host_loss = xmalloc((size_t)B * sizeof(float));
    tr->order = xmalloc((size_t)tr->data.count * sizeof(uint32_t));
    tr->order_epoch = -1;
    tr->progress.world_size = 1;
    const char *fault = getenv("DDPM_FAULT_NONFINITE_FROM_STEP");
    tr->fault_step = fault ? atol(fault) : -1;
    unet_init_weights(tr->model, cfg->seed, NULL);
    be->copy(tr->ema, tr->model->weights, P * sizeof(float));
}

void trainer_free(Trainer *tr) {
    const Backend *be = tr->be;
    be->release(tr->ema);
    be->release(tr->adam_m);
    be->release(tr->adam_v);
    device_schedule_free(&tr->schedule);
    timestep_sampler_free(&tr->timestep_sampler);
    be->release(tr->target);
    be->release(tr->x0);
    be->release(tr->vb_per_sample);
    be->release(tr->sample_weight);
    free(tr->host_mse);
    free(tr->host_vb);
    free(tr->host_weight);
    be->release(tr->images);
    be->release(tr->loss_per_sample);
    be->release(tr->grad_norm);
    free(tr->host_images);
    free(tr->host_t);
    free(tr->host_loss);
    free(tr->order);
    unet_free(tr->model);
    diffusion_free(&tr->diffusion);
    dataset_free(&tr->data);
}

/* ---------------- the step ---------------- */

double learning_rate(const Config *cfg, long adam_steps) {
    if (cfg->warmup <= 0) return cfg->lr;
    double ramp = (double)(adam_steps + 1) / cfg->warmup;
    return cfg->lr * (ramp < 1 ? ramp : 1);
}

void adamw_step(const Backend *be, const Config *c, float *weights, const float *grads,
                float *adam_m, float *adam_v, size_t n, long t, double lr, double grad_norm) {
    /* clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1 */
    double scale = c->grad_clip > 0 ? c->grad_clip / (grad_norm + 1e-6) : 1.0;
    if (scale > 1) scale = 1;
    be->adamw(weights, grads, adam_m, adam_v, n, (float)lr, (float)c->beta1, (float)c->beta2,
              (float)c->adam_eps, (float)c->weight_decay, (float)(1 - pow(c->beta1, (double)t)),
              (float)(1 - pow(c->beta2, (double)t)), (float)scale);
}

static void apply_update(Trainer *tr, double grad_norm, double lr) {
    UNet *m = tr->model;
    long t = ++tr->progress.adam_steps;
    adamw_step(tr->be, &tr->cfg, m->weights, m->grads, tr->adam_m, tr->adam_v,
               m->num_parameters, t, lr, grad_norm);
    tr->be->ema_update(tr->ema, m->weights, m->num_parameters, (float)tr->cfg.ema_decay);
}

/* The loss and dL/doutput for the batch; fills the per-sample host arrays. */
static void compute_loss(Trainer *tr, int B) {
    const Backend *be = tr->be;
    UNet *m = tr->model;
    const Config *c = &tr->cfg;
    if (tr->simple_loss) {
        be->mse_loss(tr->loss_per_sample, unet_output_grad(m), unet_output(m), tr->target, B,
                     unet_sample_size(m));
        be->to_host(tr->host_mse, tr->loss_per_sample, (size_t)B * sizeof(float));
        for (int i = 0; i < B; i++) {
            tr->host_loss[i] = tr->host_mse[i];
            tr->host_vb[i] = NAN;
        }
        return;
    }
    be->to_device(tr->sample_weight, tr->host_weight, (size_t)B * sizeof(float));
    be->diffusion_loss(tr->loss_per_sample, tr->vb_per_sample, unet_output_grad(m), unet_output(m),
                       tr->target, tr->x0, unet_input(m), m->timesteps, tr->sample_weight, B,
                       c->image_size * c->image_size, c->in_channels, tr->loss,
                       tr->schedule.tables);
    be->to_host(tr->host_mse, tr->loss_per_sample, (size_t)B * sizeof(float));
    be->to_host(tr->host_vb, tr->vb_per_sample, (size_t)B * sizeof(float));
    for (int i = 0; i < B; i++)
        tr->host_loss[i] = tr->loss.mse_weight * tr->host_mse[i] + tr->loss.vb_weight * tr->host_vb[i];
    timestep_sampler_update(&tr->timestep_sampler, tr->host_t, tr->host_loss, B);
}

StepResult trainer_step(Trainer *tr) {
    const Config *c = &tr->cfg;
    const Backend *be = tr->be;
    UNet *m = tr->model;
    int B = c->batch_size;
    size_t D = unet_sample_size(m);
    long step = tr->progress.step;
    gather_batch(tr, step);
    be->to_device(tr->images, tr->host_images, (size_t)B * D);
    be->to_device(m->timesteps, tr->host_t, (size_t)B * sizeof(int32_t));
    RngKey flip_key = {c->seed, RNG_STREAM_FLIP, (uint32_t)step};
    RngKey eps_key = {c->seed, RNG_STREAM_EPS, (uint32_t)step};
    RngKey dropout_key = {c->seed, RNG_STREAM_DROPOUT, (uint32_t)step};
    be->q_sample_images(unet_input(m), tr->target, tr->simple_loss ? NULL : tr->x0, tr->images,
                        m->timesteps, tr->schedule.sqrt_ac, tr->schedule.sqrt_1m_ac, B,
                        c->image_size, c->image_size, c->in_channels, tr->diffusion.pred,
                        c->hflip, flip_key, eps_key);
    m->training = 1;
    unet_forward(m, B, dropout_key);
    compute_loss(tr, B);
    unet_backward(m, B, dropout_key);
    be->global_norm(tr->grad_norm, m->grads, m->num_parameters);
    float norm;
    be->to_host(&norm, tr->grad_norm, sizeof norm);
    double loss = 0, vb = 0;
    for (int i = 0; i < B; i++) {
        loss += tr->host_loss[i];
        vb += tr->host_vb[i];
    }
    StepResult r = {.loss = loss / B, .vb = vb / B, .grad_norm = norm,
                    .lr = learning_rate(c, tr->progress.adam_steps),
                    .loss_per_sample = tr->host_loss, .t = tr->host_t};
    if (tr->fault_step >= 0 && step >= tr->fault_step) r.loss = NAN;
    r.skipped = !isfinite(r.loss) || !isfinite(norm);
    if (r.skipped) {
        tr->progress.skipped_steps++;
        tr->bad_streak++;
    } else {
        tr->bad_streak = 0;
        apply_update(tr, norm, r.lr);
    }
    tr->progress.step++;
    return r;
}

/* ---------------- checkpoints ---------------- */

static void optimizer_buffers(Trainer *tr, float *bufs[CKPT_BUFFERS]) {
    bufs[CKPT_WEIGHTS] = tr->model->weights;
    bufs[CKPT_EMA] = tr->ema;
    bufs[CKPT_ADAM_M] = tr->adam_m;
    bufs[CKPT_ADAM_V] = tr->adam_v;
}

/* The importance sampler's loss history: needed for a bit-identical resume. */
static int sampler_extras(Trainer *tr, CheckpointExtra extras[2]) {
    TimestepSampler *s = &tr->timestep_sampler;
    if (!s->importance) return 0;
    extras[0] = (CheckpointExtra){"timestep_sampler.history", ST_F64, 2,
                                  {s->num_timesteps, LOSS_HISTORY}, s->history};
    extras[1] = (CheckpointExtra){"timestep_sampler.count", ST_I32, 1, {s->num_timesteps, 0},
                                  s->count};
    return 2;
}

int trainer_save(Trainer *tr, const char *path, char *err, size_t err_size) {
    float *bufs[CKPT_BUFFERS];
    CheckpointExtra extras[2];
    optimizer_buffers(tr, bufs);
    return checkpoint_write(path, tr->model, &tr->cfg, bufs, &tr->progress, extras,
                            sampler_extras(tr, extras), err, err_size);
}

int trainer_load(Trainer *tr, const char *path, char *err, size_t err_size) {
    float *bufs[CKPT_BUFFERS];
    optimizer_buffers(tr, bufs);
    TrainProgress progress;
    if (checkpoint_read(path, tr->model, bufs, &progress, err, err_size) != 0) return -1;
    CheckpointExtra extras[2];
    int n_extras = sampler_extras(tr, extras);
    if (checkpoint_read_extras(path, extras, n_extras, err, err_size) < 0) return -1;
    tr->progress = progress;
    tr->progress.world_size = 1;
    return 0;
}
