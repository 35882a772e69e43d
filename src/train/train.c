/* The trainer (train.h): data order, set-up, the step's common part (statistics,
 * clipping, the non-finite skip, AdamW, EMA) and checkpoints. The objective computes
 * the rest. The step is queued on the backend without waiting for it (enqueue), and its
 * figures are read afterwards (collect): the skip, clipping, warmup and Adam's step count
 * live in backend memory (OptimState), so the host never decides anything mid-step. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"
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

/* This rank's share of the step's batch (its shard of the epoch). */
static void gather_batch(Trainer *tr, long step) {
    const Config *c = &tr->cfg;
    long epoch = step / batches_per_epoch(tr);
    long first = (step % batches_per_epoch(tr)) * c->batch_size + tr->sample0;
    if (epoch != tr->order_epoch) shuffle_epoch(tr, epoch);
    size_t D = (size_t)tr->data.height * tr->data.width * tr->data.channels;
    for (int i = 0; i < tr->local_batch; i++) {
        uint32_t index = tr->order[first + i];
        if (tr->data.values)
            memcpy(tr->host_values + i * D, tr->data.values + index * D, D * sizeof(float));
        else
            memcpy(tr->host_images + i * D, tr->data.images + index * D, D);
    }
    /* every rank holds the whole batch's labels, as objective.h's StepBatch says */
    long first_global = first - tr->sample0;
    for (int i = 0; tr->data.labels && i < c->batch_size; i++)
        tr->host_labels[i] = tr->data.labels[tr->order[first_global + i]];
    tr->progress.data_epoch = (step + 1) / batches_per_epoch(tr);
    tr->progress.data_index = ((step + 1) % batches_per_epoch(tr)) * c->batch_size;
}

/* ---------------- set-up ---------------- */

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

static size_t stats_block(const Trainer *tr) {
    return (size_t)tr->objective->stats_per_sample * tr->local_batch + 1;
}

/* The per-step statistics every rank sees: each rank's block is [K blocks of b | stop]. */
static void alloc_step_stats(Trainer *tr) {
    const size_t block = stats_block(tr), W = (size_t)tr->world_size;
    const int K = tr->objective->stats_per_sample;
    tr->step_stats = tr->be->alloc(W * block * sizeof(float));
    tr->own_stats = tr->step_stats + (size_t)tr->rank * block;
    tr->host_stats = tr->be->alloc_host(W * block * sizeof(float));
    tr->stats_by_kind = xmalloc((size_t)K * sizeof(float *));
    for (int k = 0; k < K; k++)
        tr->stats_by_kind[k] = xmalloc((size_t)tr->cfg.batch_size * sizeof(float));
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
    int b = tr->local_batch;
    tr->model = model_build(be, cfg, b, 0);
    tr->objective = objective_create(be, cfg, b, cfg->batch_size);
    size_t P = tr->model->num_parameters;
    size_t image_bytes = (size_t)tr->data.height * tr->data.width * tr->data.channels;
    tr->ema = be->alloc(P * sizeof(float));
    tr->adam_m = be->alloc(P * sizeof(float));
    tr->adam_v = be->alloc(P * sizeof(float));
    alloc_step_stats(tr);
    if (tr->data.values) {
        tr->values = be->alloc((size_t)b * image_bytes * sizeof(float));
        tr->host_values = xmalloc((size_t)b * image_bytes * sizeof(float));
    } else {
        tr->images = be->alloc((size_t)b * image_bytes);
        tr->host_images = xmalloc((size_t)b * image_bytes);
    }
    tr->grad_norm = be->alloc(sizeof(float));
    tr->optim_state = be->alloc(sizeof(OptimState));
    tr->host_optim_state = be->alloc_host(sizeof(OptimState));
    if (tr->data.labels) tr->host_labels = xmalloc((size_t)cfg->batch_size * sizeof(int32_t));
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
    trainer_upload_progress(tr);
    net_init_weights(tr->model, cfg->seed, NULL);
    be->copy(tr->ema, tr->model->weights, P * sizeof(float));
}

void objective_free(Objective *o) {
    if (!o) return;
    o->ops->free(o);
    free(o);
}

void trainer_free(Trainer *tr) {
    const Backend *be = tr->be;
    be->release(tr->ema);
    be->release(tr->adam_m);
    be->release(tr->adam_v);
    be->release(tr->step_stats);
    be->release_host(tr->host_stats);
    be->release(tr->optim_state);
    be->release_host(tr->host_optim_state);
    for (int k = 0; k < tr->objective->stats_per_sample; k++) free(tr->stats_by_kind[k]);
    free(tr->stats_by_kind);
    be->release(tr->images);
    be->release(tr->values);
    be->release(tr->grad_norm);
    free(tr->host_images);
    free(tr->host_values);
    free(tr->host_labels);
    free(tr->order);
    objective_free(tr->objective);
    net_free(tr->model);
    dataset_free(&tr->data);
}

/* ---------------- the step ---------------- */

double learning_rate(const Config *cfg, long adam_steps) {
    if (cfg->warmup <= 0) return cfg->lr;
    double ramp = (double)(adam_steps + 1) / cfg->warmup;
    return cfg->lr * (ramp < 1 ? ramp : 1);
}

void adamw_step(const Backend *be, const Config *c, float *weights, float *weights_bf16,
                const float *grads, float *adam_m, float *adam_v, size_t n, long t, double lr,
                double grad_norm) {
    /* clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1 */
    double scale = c->grad_clip > 0 ? c->grad_clip / (grad_norm + 1e-6) : 1.0;
    if (scale > 1) scale = 1;
    be->adamw(weights, weights_bf16, grads, adam_m, adam_v, n, (float)lr, (float)c->beta1,
              (float)c->beta2, (float)c->adam_eps, (float)c->weight_decay,
              (float)(1 - pow(c->beta1, (double)t)), (float)(1 - pow(c->beta2, (double)t)),
              (float)scale);
}

/* The device's optimizer state from tr->progress (after set-up or a checkpoint's load). */
void trainer_upload_progress(Trainer *tr) {
    OptimState state = {.step = tr->progress.step, .adam_steps = tr->progress.adam_steps,
                        .skipped_steps = tr->progress.skipped_steps};
    tr->be->to_device(tr->optim_state, &state, sizeof state);
}

static OptimControl optim_control(const Trainer *tr) {
    const Config *c = &tr->cfg;
    return (OptimControl){.lr = c->lr, .warmup = c->warmup, .grad_clip = c->grad_clip,
                          .beta1 = c->beta1, .beta2 = c->beta2, .fault_step = tr->fault_step,
                          .blocks = tr->world_size, .per_kind = tr->local_batch,
                          .block_stride = stats_block(tr),
                          .loss_kinds = tr->objective->loss_kinds};
}

/* Decides the skip, clipping, warmup and bias corrections on the backend, then updates. */
static void queue_update(Trainer *tr) {
    const Config *c = &tr->cfg;
    const Backend *be = tr->be;
    Net *m = tr->model;
    be->optimizer_control(tr->optim_state, tr->grad_norm, tr->step_stats, optim_control(tr));
    /* with bf16, the compute copy of the weights comes out of the same pass */
    be->adamw_state(m->weights, m->compute_weights, m->grads, tr->adam_m, tr->adam_v,
                    m->num_parameters, tr->optim_state, (float)c->beta1, (float)c->beta2,
                    (float)c->adam_eps, (float)c->weight_decay);
    if (m->compute_weights) net_compute_weights_match(m, m->weights);
    be->ema_update_state(tr->ema, m->weights, m->num_parameters, tr->optim_state,
                         (float)c->ema_decay);
}

/* Queues the (changed) stop flag and the all-gather of every rank's statistics. */
static void queue_share_stats(Trainer *tr) {
    const int b = tr->local_batch, K = tr->objective->stats_per_sample;
    if (tr->stop_requested != tr->stop_sent) {   /* a copy only when the flag changes */
        const float stop = (float)tr->stop_requested;
        tr->be->to_device(tr->own_stats + (size_t)K * b, &stop, sizeof stop);
        tr->stop_sent = tr->stop_requested;
    }
    if (tr->dist) dist_allgather(tr->dist, tr->step_stats, stats_block(tr));
}

/* The gathered statistics (landed in host_stats), unpacked into the per-kind host arrays
 * in global sample order. Returns whether any rank asked to stop. */
static int unpack_step_stats(Trainer *tr) {
    const int b = tr->local_batch, K = tr->objective->stats_per_sample;
    const size_t block = stats_block(tr);
    int any_stop = 0;
    for (int r = 0; r < tr->world_size; r++) {
        const float *stats = tr->host_stats + (size_t)r * block;
        for (int k = 0; k < K; k++)
            memcpy(tr->stats_by_kind[k] + (size_t)r * b, stats + (size_t)k * b,
                   (size_t)b * sizeof(float));
        any_stop |= stats[(size_t)K * b] != 0.0f;
    }
    return any_stop;
}

void trainer_enqueue_gradients(Trainer *tr) {
    const Config *c = &tr->cfg;
    const Backend *be = tr->be;
    Net *m = tr->model;
    Objective *o = tr->objective;
    const int b = tr->local_batch;
    long step = tr->progress.step;
    gather_batch(tr, step);
    o->ops->draw(o, step, c->batch_size);
    size_t D = (size_t)tr->data.height * tr->data.width * tr->data.channels;
    if (tr->data.values) be->to_device(tr->values, tr->host_values, (size_t)b * D * sizeof(float));
    else be->to_device(tr->images, tr->host_images, (size_t)b * D);
    StepBatch batch = {.step = step, .b = b, .B = c->batch_size, .sample0 = tr->sample0,
                       .images = tr->images, .values = tr->values,
                       .labels = tr->host_labels};
    o->ops->prepare(o, m, &batch);
    RngKey dropout_key = {c->seed, RNG_STREAM_DROPOUT, (uint32_t)step, tr->sample0};
    m->training = 1;
    net_forward(m, b, NULL, dropout_key);
    o->ops->loss(o, m, &batch, tr->own_stats);
    queue_share_stats(tr);
    be->to_host_async(tr->host_stats, tr->step_stats,
                      (size_t)tr->world_size * stats_block(tr) * sizeof(float));
    net_backward(m, b, dropout_key);
    if (tr->dist) dist_grads_finish(tr->dist);
    be->global_norm(tr->grad_norm, m->grads, m->num_parameters);
}

void trainer_enqueue_step(Trainer *tr) {
    trainer_enqueue_gradients(tr);
    queue_update(tr);
    tr->be->to_host_async(tr->host_optim_state, tr->optim_state, sizeof(OptimState));
}

StepResult trainer_collect_step(Trainer *tr) {
    const Config *c = &tr->cfg;
    Objective *o = tr->objective;
    tr->be->wait_host_copies();
    const OptimState *state = tr->host_optim_state;
    int stop = unpack_step_stats(tr);
    ObjectiveReport report;
    o->ops->report(o, tr->stats_by_kind, c->batch_size, &report);
    StepResult r = {.loss = report.loss, .vb = report.aux, .grad_norm = state->grad_norm,
                    .lr = state->lr_reported, .stop = stop, .skipped = state->skip,
                    .loss_per_sample = report.loss_per_sample, .t = report.t};
    if (state->faulted) r.loss = NAN;
    tr->bad_streak = r.skipped ? tr->bad_streak + 1 : 0;
    tr->progress.adam_steps = state->adam_steps;
    tr->progress.skipped_steps = state->skipped_steps;
    tr->progress.step++;
    return r;
}

StepResult trainer_step(Trainer *tr) {
    trainer_enqueue_step(tr);
    return trainer_collect_step(tr);
}

/* ---------------- checkpoints ---------------- */

#define MAX_EXTRAS 8

static void optimizer_buffers(Trainer *tr, float *bufs[CKPT_BUFFERS]) {
    bufs[CKPT_WEIGHTS] = tr->model->weights;
    bufs[CKPT_EMA] = tr->ema;
    bufs[CKPT_ADAM_M] = tr->adam_m;
    bufs[CKPT_ADAM_V] = tr->adam_v;
}

static int objective_extras(Trainer *tr, CheckpointExtra extras[MAX_EXTRAS]) {
    Objective *o = tr->objective;
    return o->ops->extras ? o->ops->extras(o, extras, MAX_EXTRAS) : 0;
}

int trainer_save(Trainer *tr, const char *path, char *err, size_t err_size) {
    float *bufs[CKPT_BUFFERS];
    CheckpointExtra extras[MAX_EXTRAS];
    optimizer_buffers(tr, bufs);
    return checkpoint_write(path, tr->model, &tr->cfg, bufs, &tr->progress, extras,
                            objective_extras(tr, extras), err, err_size);
}

int trainer_load(Trainer *tr, const char *path, char *err, size_t err_size) {
    float *bufs[CKPT_BUFFERS];
    optimizer_buffers(tr, bufs);
    TrainProgress progress;
    if (checkpoint_read(path, tr->model, bufs, &progress, err, err_size) != 0) return -1;
    net_weights_changed(tr->model);   /* the bf16 compute copy is rounded afresh */
    CheckpointExtra extras[MAX_EXTRAS];
    int n_extras = objective_extras(tr, extras);
    if (checkpoint_read_extras(path, extras, n_extras, err, err_size) < 0) return -1;
    tr->progress = progress;   /* global: any world size that splits batch_size resumes it */
    tr->progress.world_size = tr->world_size;
    trainer_upload_progress(tr);
    return 0;
}
