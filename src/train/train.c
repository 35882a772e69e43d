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
    RngKey key = {tr->cfg.seed, RNG_STREAM_SHUFFLE, (uint32_t)epoch, 0};
    for (int i = 0; i < tr->data.count; i++) tr->order[i] = (uint32_t)i;
    for (int i = tr->data.count - 1; i > 0; i--) {
        uint32_t j = philox_below(key, 0, (uint64_t)i, (uint32_t)i + 1);
        uint32_t tmp = tr->order[i];
        tr->order[i] = tr->order[j];
        tr->order[j] = tmp;
    }
    tr->order_epoch = epoch;
}

/* This rank's share of the step's batch (its shard of the epoch), and the whole
 * batch's timesteps, which every rank draws alike. */
static void gather_batch(Trainer *tr, long step) {
    const Config *c = &tr->cfg;
    long epoch = step / batches_per_epoch(tr);
    long first = (step % batches_per_epoch(tr)) * c->batch_size + tr->sample0;
    if (epoch != tr->order_epoch) shuffle_epoch(tr, epoch);
    size_t image_bytes = (size_t)tr->data.height * tr->data.width * tr->data.channels;
    for (int i = 0; i < tr->local_batch; i++) {
        uint32_t index = tr->order[first + i];
        memcpy(tr->host_images + i * image_bytes, tr->data.images + index * image_bytes,
               image_bytes);
    }
    RngKey t_key = {c->seed, RNG_STREAM_TIMESTEP, (uint32_t)step, 0};
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

static void split_batch(Trainer *tr, Dist *dist) {
    const int B = tr->cfg.batch_size;
    tr->dist = dist;
    tr->rank = dist ? dist->env.rank : 0;
    tr->world_size = dist ? dist->env.world_size : 1;
    if (B % tr->world_size != 0)
        die("batch_size %d (the global batch) does not split evenly over %d ranks", B,
            tr->world_size);
    tr->local_batch = B / tr->world_size;
    tr->sample0 = (uint32_t)(tr->rank * tr->local_batch);
}

/* The per-step statistics every rank sees: each rank's block is [mse | L_t | stop]. */
static void alloc_step_stats(Trainer *tr) {
    const size_t block = 2 * (size_t)tr->local_batch + 1, W = (size_t)tr->world_size;
    tr->step_stats = tr->be->alloc(W * block * sizeof(float));
    tr->loss_per_sample = tr->step_stats + (size_t)tr->rank * block;
    tr->vb_per_sample = tr->loss_per_sample + tr->local_batch;
    tr->host_stats = xmalloc(W * block * sizeof(float));
    tr->be->fill(tr->step_stats, 0.0f, W * block);   /* every stop flag starts at 0 */
}

void trainer_init(Trainer *tr, const Backend *be, const Config *cfg, Dataset *data, Dist *dist) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    tr->be = be;
    tr->data = *data;
    memset(data, 0, sizeof *data);
    if (tr->data.count < cfg->batch_size)
        die("the dataset has %d images, fewer than batch_size %d", tr->data.count,
            cfg->batch_size);
    split_batch(tr, dist);
    char err[512];
    if (diffusion_init(&tr->diffusion, cfg->beta_schedule, cfg->timesteps,
                       prediction_from_name(cfg->prediction), variance_from_name(cfg->variance),
                       err, sizeof err) != 0)
        die("config: %s", err);
    int B = cfg->batch_size, b = tr->local_batch;
    tr->model = unet_create(be, cfg, b);
    size_t P = tr->model->num_parameters, D = unet_sample_size(tr->model);
    tr->ema = be->alloc(P * sizeof(float));
    tr->adam_m = be->alloc(P * sizeof(float));
    tr->adam_v = be->alloc(P * sizeof(float));
    device_schedule_init(&tr->schedule, be, &tr->diffusion);
    timestep_sampler_init(&tr->timestep_sampler, cfg->timesteps,
                          strcmp(cfg->timestep_sampler, "loss_second_moment") == 0);
    tr->loss = loss_spec(cfg);
    tr->simple_loss = strcmp(cfg->loss, "mse") == 0 && !cfg->learn_sigma;
    tr->target = be->alloc((size_t)b * D * sizeof(float));
    tr->x0 = be->alloc((size_t)b * D * sizeof(float));
    tr->sample_weight = be->alloc((size_t)b * sizeof(float));
    alloc_step_stats(tr);
    tr->host_mse = xmalloc((size_t)B * sizeof(float));
    tr->host_vb = xmalloc((size_t)B * sizeof(float));
    tr->host_weight = xmalloc((size_t)B * sizeof(float));
    tr->images = be->alloc((size_t)b * D);
    tr->grad_norm = be->alloc(sizeof(float));
    tr->host_images = xmalloc((size_t)b * D);
    tr->host_t = xmalloc((size_t)B * sizeof(int32_t));
    tr->host_loss = xmalloc((size_t)B * sizeof(float));
    tr->order = xmalloc((size_t)tr->data.count * sizeof(uint32_t));
    tr->order_epoch = -1;
    tr->progress.world_size = tr->world_size;
    if (dist) {
        dist_attach_grads(dist, tr->model->grads, P, cfg->bucket_mb);
        tr->model->grads_ready = dist_grads_ready;
        tr->model->grads_ready_ctx = dist;
    }
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
    be->release(tr->step_stats);
    free(tr->host_stats);
    be->release(tr->sample_weight);
    free(tr->host_mse);
    free(tr->host_vb);
    free(tr->host_weight);
    be->release(tr->images);
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

/* Every rank's [mse | L_t | stop] block, gathered; unpacked into the global host arrays.
 * Returns whether any rank asked to stop. */
static int share_step_stats(Trainer *tr) {
    const int b = tr->local_batch;
    const size_t block = 2 * (size_t)b + 1;
    if (tr->stop_requested != tr->stop_sent) {   /* a copy only when the flag changes */
        const float stop = (float)tr->stop_requested;
        tr->be->to_device(tr->loss_per_sample + 2 * b, &stop, sizeof stop);
        tr->stop_sent = tr->stop_requested;
    }
    if (tr->dist) dist_allgather(tr->dist, tr->step_stats, block);
    tr->be->to_host(tr->host_stats, tr->step_stats, (size_t)tr->world_size * block * sizeof(float));
    int any_stop = 0;
    for (int r = 0; r < tr->world_size; r++) {
        const float *stats = tr->host_stats + (size_t)r * block;
        memcpy(tr->host_mse + (size_t)r * b, stats, (size_t)b * sizeof(float));
        memcpy(tr->host_vb + (size_t)r * b, stats + b, (size_t)b * sizeof(float));
        any_stop |= stats[2 * b] != 0.0f;
    }
    return any_stop;
}

/* The loss and dL/doutput for this rank's samples; then every rank's per-sample
 * losses in the host arrays. Returns whether any rank asked to stop. */
static int compute_loss(Trainer *tr) {
    const Backend *be = tr->be;
    UNet *m = tr->model;
    const Config *c = &tr->cfg;
    const int b = tr->local_batch, B = c->batch_size;
    if (tr->simple_loss) {
        be->mse_loss(tr->loss_per_sample, unet_output_grad(m), unet_output(m), tr->target, b,
                     unet_sample_size(m));
    } else {
        be->to_device(tr->sample_weight, tr->host_weight + tr->sample0, (size_t)b * sizeof(float));
        be->diffusion_loss(tr->loss_per_sample, tr->vb_per_sample, unet_output_grad(m),
                           unet_output(m), tr->target, tr->x0, unet_input(m), m->timesteps,
                           tr->sample_weight, b, c->image_size * c->image_size, c->in_channels,
                           tr->loss, tr->schedule.tables);
    }
    int stop = share_step_stats(tr);
    for (int i = 0; i < B; i++) {
        if (tr->simple_loss) tr->host_vb[i] = NAN;
        tr->host_loss[i] = tr->simple_loss ? tr->host_mse[i]
                                           : tr->loss.mse_weight * tr->host_mse[i] +
                                                 tr->loss.vb_weight * tr->host_vb[i];
    }
    if (!tr->simple_loss) timestep_sampler_update(&tr->timestep_sampler, tr->host_t, tr->host_loss, B);
    return stop;
}

StepResult trainer_step(Trainer *tr) {
    const Config *c = &tr->cfg;
    const Backend *be = tr->be;
    UNet *m = tr->model;
    const int B = c->batch_size, b = tr->local_batch;
    size_t D = unet_sample_size(m);
    long step = tr->progress.step;
    gather_batch(tr, step);
    be->to_device(tr->images, tr->host_images, (size_t)b * D);
    unet_set_timesteps(m, tr->host_t + tr->sample0, b);
    RngKey flip_key = {c->seed, RNG_STREAM_FLIP, (uint32_t)step, tr->sample0};
    RngKey eps_key = {c->seed, RNG_STREAM_EPS, (uint32_t)step, tr->sample0};
    RngKey dropout_key = {c->seed, RNG_STREAM_DROPOUT, (uint32_t)step, tr->sample0};
    be->q_sample_images(unet_input(m), tr->target, tr->simple_loss ? NULL : tr->x0, tr->images,
                        m->timesteps, tr->schedule.sqrt_ac, tr->schedule.sqrt_1m_ac, b,
                        c->image_size, c->image_size, c->in_channels, tr->diffusion.pred,
                        c->hflip, flip_key, eps_key);
    m->training = 1;
    unet_forward(m, b, dropout_key);
    int stop = compute_loss(tr);
    unet_backward(m, b, dropout_key);
    if (tr->dist) dist_grads_finish(tr->dist);
    be->global_norm(tr->grad_norm, m->grads, m->num_parameters);
    float norm;
    be->to_host(&norm, tr->grad_norm, sizeof norm);
    double loss = 0, vb = 0;
    for (int i = 0; i < B; i++) {
        loss += tr->host_loss[i];
        vb += tr->host_vb[i];
    }
    StepResult r = {.loss = loss / B, .vb = vb / B, .grad_norm = norm,
                    .lr = learning_rate(c, tr->progress.adam_steps), .stop = stop,
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
    tr->progress = progress;   /* global: any world size that splits batch_size resumes it */
    tr->progress.world_size = tr->world_size;
    return 0;
}
