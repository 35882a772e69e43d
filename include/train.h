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
#include "timestep_sampler.h"
#include "unet.h"

typedef struct {
    Config cfg;
    const Backend *be;
    UNet *model;
    GaussianDiffusion diffusion;
    Dataset data;
    TrainProgress progress;
    float *ema, *adam_m, *adam_v;          /* (P) backend */
    DeviceSchedule schedule;               /* per-timestep tables in backend memory */
    TimestepSampler timestep_sampler;
    LossSpec loss;                         /* for the fused diffusion_loss (hybrid, kl) */
    int simple_loss;                       /* mse without learned variances: the plain MSE op */
    float *target;                         /* (B, H, W, C) backend */
    float *x0;                             /* (B, H, W, C) backend */
    uint8_t *images;                       /* (B, H, W, C) backend: the batch's raw pixels */
    float *loss_per_sample;                /* (B) backend: mse */
    float *vb_per_sample;                  /* (B) backend: L_t in bits/dim */
    float *sample_weight;                  /* (B) backend: 1/(T p_t) of the timestep sampler */
    float *grad_norm;                      /* (1) backend */
    uint8_t *host_images;                  /* (B, H, W, C) */
    int32_t *host_t;                       /* (B) */
    float *host_loss;                      /* (B) the per-sample training loss */
    float *host_mse, *host_vb, *host_weight;   /* (B) */
    uint32_t *order;                       /* (data.count) permutation of the current epoch */
    long order_epoch;
    int bad_streak;
    long fault_step;    /* test hook: DDPM_FAULT_NONFINITE_FROM_STEP makes losses NaN from there */
} Trainer;

typedef struct {
    int skipped;            /* non-finite loss or gradient: no update */
    double loss;            /* batch mean of the per-sample losses */
    double vb;              /* batch mean of L_t in bits/dim (NaN for the plain MSE loss) */
    double grad_norm;       /* before clipping */
    double lr;
    const float *loss_per_sample;    /* (B) host */
    const int32_t *t;                /* (B) host */
} StepResult;

/* Sets up the model, optimizer state and schedule for cfg, with the data already
 * loaded (data is taken over). Weights are initialised from cfg->seed. */
void trainer_init(Trainer *tr, const Backend *be, const Config *cfg, Dataset *data);
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
