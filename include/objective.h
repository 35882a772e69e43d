/* The objective: what a training step computes, behind one interface, so that one
 * trainer (train.h: data order, AdamW, EMA, clipping, warmup, the non-finite skip,
 * data parallelism, checkpoints) trains every model. DDPM (objective_ddpm.c) is the
 * first implementation.
 *
 * A step, on each rank, for its b samples of the global batch of B:
 *   draw(step)            host: the whole batch's random choices (e.g. timesteps)
 *   prepare(batch)        the network's inputs and the targets, on the backend
 *   forward               (the trainer)
 *   loss(batch, stats)    dL/doutput into the network's output gradient, and this
 *                         rank's per-sample statistics: stats_per_sample blocks of b
 *   (all-gather of every rank's statistics by the trainer)
 *   report(stats, B)      host: the per-sample loss and the step's means
 *   backward, optimizer   (the trainer) */
#ifndef DDPM_OBJECTIVE_H
#define DDPM_OBJECTIVE_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "graph.h"

/* This rank's share of one step's batch. */
typedef struct {
    long step;
    int b, B;                   /* this rank's samples, the global batch */
    uint32_t sample0;           /* global index of this rank's first sample */
    const uint8_t *images;      /* (b, H, W, C) backend memory: the samples' pixels, or NULL */
    const float *values;        /* (b, H, W, C) backend memory: float data, or NULL */
    const int32_t *labels;      /* (B) host, or NULL when the data has none */
} StepBatch;

/* What report() gives back for the trainer's log. */
typedef struct {
    double loss;                     /* batch mean of the per-sample losses */
    double aux;                      /* a second statistic (DDPM: L_t in bits/dim), or NaN */
    const float *loss_per_sample;    /* (B) host */
    const int32_t *t;                /* (B) host: each sample's timestep, or NULL */
} ObjectiveReport;

typedef struct Objective Objective;

typedef struct {
    const char *name;
    /* the report's aux in the progress line (printf format of one double, e.g.
     * "L_t %.4f bits/dim") and its log.csv column; NULL: "aux %.4f", "aux" */
    const char *aux_format, *aux_column;
    void (*draw)(Objective *o, long step, int B);
    void (*prepare)(Objective *o, Net *net, const StepBatch *batch);
    void (*loss)(Objective *o, Net *net, const StepBatch *batch, float *stats);
    void (*report)(Objective *o, float *const *stats, int B, ObjectiveReport *out);
    /* Training state saved beside the weights for an exact resume; returns the count. */
    int (*extras)(Objective *o, CheckpointExtra *extras, int max);
    /* n images (host floats, (n, H, W, C)) from the model with the given weights, for
     * the training-time sample grids; NULL when the objective has no sampler. */
    void (*sample)(Objective *o, Net *net, const float *weights, int n, uint64_t seed,
                   float *out);
    void (*free)(Objective *o);
} ObjectiveOps;

struct Objective {
    const ObjectiveOps *ops;
    int stats_per_sample;       /* floats per sample in loss()'s stats */
    /* bit k: statistic kind k enters report()'s per-sample loss, so a non-finite value of it
     * makes the loss non-finite and the device skips the step (optimizer_control) */
    uint32_t loss_kinds;
    void *state;
};

/* The DDPM objective for cfg (L_simple, hybrid or kl; uniform or importance-sampled
 * timesteps), for b local samples of a global batch of B. */
Objective *objective_ddpm_create(const Backend *be, const Config *cfg, int b, int B);
/* The noisy classifier's cross-entropy on x_t (objective=classifier; classifier.h). The
 * report's aux is the batch accuracy. */
Objective *objective_classifier_create(const Backend *be, const Config *cfg, int b, int B);
/* The rectified-flow objective (objective_flow.c, flow.h): the velocity eps - x0 at a
 * uniform or logit-normal t, the network at time 1000 t. */
Objective *objective_flow_create(const Backend *be, const Config *cfg, int b, int B);
/* The KL autoencoder's objective (objective_vae.c): reconstruction + kl_weight * KL. */
Objective *objective_vae_create(const Backend *be, const Config *cfg, int b, int B);
void objective_free(Objective *o);

#endif
