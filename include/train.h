/* The trainer: what every model's training has in common. The data order, AdamW with
 * clipping and warmup, the EMA of the weights, the non-finite step skip, data
 * parallelism and checkpoints live here; what a step computes is an objective
 * (objective.h). Every random draw is keyed by (seed, step, sample), so a run resumed
 * from a checkpoint continues bit-identically. */
#ifndef DDPM_TRAIN_H
#define DDPM_TRAIN_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "graph.h"
#include "objective.h"

/* Data parallelism: cfg.batch_size is the global batch B; each of the W ranks runs
 * B/W of its samples (global indices [sample0, sample0 + B/W)), and every rank sees,
 * after each step's all-gather, the whole batch's statistics. */
typedef struct {
    Config cfg;
    const Backend *be;
    Dist *dist;                            /* NULL: one process */
    int rank, world_size, local_batch;
    uint32_t sample0;                      /* rank * local_batch */
    Net *model;                            /* for local_batch samples */
    Objective *objective;
    Dataset data;
    TrainProgress progress;
    float *ema, *adam_m, *adam_v;          /* (P) backend */
    /* b = local_batch, B = cfg.batch_size, W = world_size, K = objective stats_per_sample */
    uint8_t *images;                       /* (b, H, W, C) backend: the batch's raw pixels */
    float *values;                         /* (b, H, W, C) backend: the batch, for float data */
    float *step_stats;                     /* (W, K*b + 1) backend: per rank [K blocks | stop] */
    float *own_stats;                      /* this rank's block in step_stats */
    float *grad_norm;                      /* (1) backend */
    OptimState *optim_state;               /* backend: the skip, lr, clipping, Adam's t */
    OptimState *host_optim_state;          /* alloc_host: the last collected step's copy */
    uint8_t *host_images;                  /* (b, H, W, C) */
    float *host_values;                    /* (b, H, W, C), for float data */
    int32_t *host_labels;                  /* (B) the global batch's labels, or NULL */
    float *host_stats;                     /* (W, K*b + 1) alloc_host: lands by to_host_async */
    float **stats_by_kind;                 /* (K) host arrays of (B): every rank's, in order */
    uint32_t *order;                       /* (data.count) permutation of the current epoch */
    long order_epoch;
    int bad_streak;
    int stop_requested;    /* this rank was asked to stop (SIGTERM): shared at the next step */
    int stop_sent;         /* the value last written to this rank's flag in step_stats */
    long fault_step;    /* test hook: DDPM_FAULT_NONFINITE_FROM_STEP makes losses NaN from there */
} Trainer;

typedef struct {
    int skipped;            /* non-finite loss or gradient: no update */
    double loss;            /* batch mean of the per-sample losses */
    double vb;              /* the objective's second statistic: DDPM's L_t in bits/dim
                               (NaN for the plain MSE loss) */
    double grad_norm;       /* before clipping */
    double lr;
    int stop;               /* some rank asked to stop: every rank stops after this step */
    const float *loss_per_sample;    /* (B) host */
    const int32_t *t;                /* (B) host, or NULL when the objective has no timesteps */
} StepResult;

/* Sets up the model, the objective, the optimizer state for cfg, with the data already
 * loaded (data is taken over). Weights are initialised from cfg->seed, the same on
 * every rank. dist: the data-parallel world, or NULL for one process. */
void trainer_init(Trainer *tr, const Backend *be, const Config *cfg, Dataset *data, Dist *dist);
void trainer_free(Trainer *tr);
/* One training step on the batch for tr->progress.step; advances the step. It is
 * trainer_enqueue_step then trainer_collect_step. */
StepResult trainer_step(Trainer *tr);
/* Queues the whole step on the backend: no synchronisation, no copy to the host that is
 * waited for, no allocation (tests/test_capture.c checks it), so it can be captured. */
void trainer_enqueue_step(Trainer *tr);
/* The step up to the gradient norm (tr->grad_norm) and the queued copy of the statistics
 * to tr->host_stats; the optimizer's part is not queued (tests/test_optim_control.c). */
void trainer_enqueue_gradients(Trainer *tr);
/* Waits for the step's statistics and optimizer state, and reports them; advances
 * tr->progress (step, adam_steps, skipped_steps) from the device's state. */
StepResult trainer_collect_step(Trainer *tr);
/* Writes tr->progress into the device's optimizer state (after trainer_load or a change
 * of progress made on the host). */
void trainer_upload_progress(Trainer *tr);
int trainer_save(Trainer *tr, const char *path, char *err, size_t err_size);
int trainer_load(Trainer *tr, const char *path, char *err, size_t err_size);
void objective_free(Objective *o);

/* The learning rate at an optimizer step: linear warmup, then constant. */
double learning_rate(const Config *cfg, long adam_steps);

/* One AdamW update (optimizer step t, from 1) with global-norm clipping to
 * cfg->grad_clip, given the gradient norm before clipping. weights_bf16 (or NULL)
 * receives the bf16-rounded updated weights (mixed precision's compute copy). */
void adamw_step(const Backend *be, const Config *cfg, float *weights, float *weights_bf16,
                const float *grads, float *adam_m, float *adam_v, size_t n, long t, double lr,
                double grad_norm);

/* `ddpm train`: the whole run with logging, samples and checkpoints. Returns the exit status. */
int train_main(const Config *cfg, const Backend *be, int resume);

#endif
