/* Which timesteps a training batch uses: uniform, or importance-sampled by the second
 * moment of recent losses per t (improved-diffusion's LossSecondMomentResampler: 10
 * losses kept per t, uniform until every t has 10, a 0.001 uniform floor). Samples come
 * with weights 1/(T p_t) that keep the loss estimate unbiased. */
#ifndef DDPM_TIMESTEP_SAMPLER_H
#define DDPM_TIMESTEP_SAMPLER_H

#include <stdint.h>

#include "philox.h"

#define LOSS_HISTORY 10

typedef struct {
    int num_timesteps;
    int importance;
    double *history;   /* (T, LOSS_HISTORY) most recent losses, oldest first */
    int32_t *count;    /* (T) how many of history's slots are filled */
    double *cdf, *probs;   /* (T) each: draw's scratch, so that a training step allocates nothing */
} TimestepSampler;

void timestep_sampler_init(TimestepSampler *s, int num_timesteps, int importance);
void timestep_sampler_free(TimestepSampler *s);
/* p_t for every t (T). */
void timestep_sampler_probs(const TimestepSampler *s, double *probs);
/* t (n) and weight (n) for one batch, drawn from key (sample i uses philox sample i). */
void timestep_sampler_draw(const TimestepSampler *s, RngKey key, int n, int32_t *t,
                           float *weight);
/* Records per-sample losses (importance sampling only). */
void timestep_sampler_update(TimestepSampler *s, const int32_t *t, const float *losses, int n);

#endif
