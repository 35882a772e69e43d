/* Training: the DDPM objective L_simple with AdamW, gradient clipping, LR warmup
 * and an EMA of the weights. Every random draw is keyed by (seed, step, sample),
 * so a run resumed from a checkpoint continues bit-identically. */
#ifndef DDPM_TRAIN_H
#define DDPM_TRAIN_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "diffusion.h"
#include "dist.h"
#include "timestep_sampler.h"
#include "unet.h"

/* Data parallelism: cfg.batch_size is the global batch B; each of the W ranks runs
 * B/W of its samples (global indices [sample0, sample0 + B/W)), and every rank holds
 * the whole batch's timesteps and, after each step's all-gather, its losses. */
typedef struct {
    Config cfg;
    const Backend *be;
    Dist *dist;                            /* NULL: one process */
    int rank, world_size, local_batch;
    uint32_t sample0;                      /* rank * local_batch */
    UNet *model;                           /* for local_batch samples */
    GaussianDiffusion diffusion;
    Dataset data;
    TrainProgress progress;
    float *ema, *adam_m, *adam_v;          /* (P) backend */
    DeviceSchedule schedule;               /* per-timestep tables in backend memory */
    TimestepSampler timestep_sampler;
    LossSpec loss;                         /* for the fused diffusion_loss (hybrid, kl) */
    int simple_loss;                       /* mse without learned variances: the plain MSE op */
    /* b = local_batch, B = cfg.batch_size, W = world_size */
    float *target;                         /* (b, H, W, C) backend */
    float *x0;                             /* (b, H, W, C) backend */
    uint8_t *images;                       /* (b, H, W, C) backend: the batch's raw pixels */
    float *step_stats;                     /* (W, 2b + 1) backend: per rank [mse | L_t | stop] */
    float *loss_per_sample;                /* (b) backend, in this rank's step_stats block */
    float *vb_per_sample;                  /* (b) backend: L_t in bits/dim, likewise */
    float *sample_weight;                  /* (b) backend: 1/(T p_t) of the timestep sampler */
    float *grad_norm;                      /* (1) backend */
    uint8_t *host_images;                  /* (b, H, W, C) */
    float *host_stats;                     /* (W, 2b + 1) */
    int32_t *host_t;                       /* (B) */
    float *host_loss;                      /* (B) the per-sample training loss */
    float *host_mse, *host_vb, *host_weight;   /* (B) */
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
    double vb;              /* batch mean of L_t in bits/dim (NaN for the plain MSE loss) */
    double grad_norm;       /* before clipping */
    double lr;
    int stop;               /* some rank asked to stop: every rank stops after this step */
    const float *loss_per_sample;    /* (B) host */
    const int32_t *t;                /* (B) host */
} StepResult;

/* Sets up the model, optimizer state and schedule for cfg, with the data already
 * loaded (data is taken over). Weights are initialised from cfg->seed, the same on
 * every rank. dist: the data-parallel world, or NULL for one process. */
void trainer_init(Trainer *tr, const Backend *be, const Config *cfg, Dataset *data, Dist *dist);
void trainer_free(Trainer *tr);
/* One training step on the batch for tr->progress.step; advances the step. */
StepResult trainer_step(Trainer *tr);
int trainer_save(Trainer *tr, const char *path, char *err, size_t err_size);
int trainer_load(Trainer *tr, const char *path, char *err, size_t err_size);

/* The learning rate at an optimizer step: linear warmup, then constant. */
double learning_rate(const Config *cfg, long adam_steps);

/* One AdamW update (optimizer step t, from 1) with global-norm clipping to
 * cfg->grad_clip, given the gradient norm before clipping. */
void adamw_step(const Backend *be, const Config *cfg, float *weights, const float *grads,
                float *adam_m, float *adam_v, size_t n, long t, double lr, double grad_norm);

/* `ddpm train`: the whole run with logging, samples and checkpoints. Returns the exit status. */
int train_main(const Config *cfg, const Backend *be, int resume);

#endif
