/* The denoiser: the model as the samplers see it (after stable-diffusion.cpp's
 * denoiser.hpp and improved-diffusion's _WrappedModel). A sampler calls predict()
 * as often as it needs per step, and never sees the network. Guidance, conditioning
 * and conversions between parameterisations wrap a denoiser in another denoiser;
 * the samplers stay as they are. */
#ifndef DDPM_DENOISER_H
#define DDPM_DENOISER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "graph.h"

/* What predict() returns per pixel: the prediction (eps, x0 or v) in C channels,
 * followed by C channels of v (improved-diffusion's variance interpolation) when
 * learned_var. The samplers turn it into x0 with the prediction's coefficients. */
typedef struct {
    PredictionType prediction;
    int learned_var;
    int channels;
} ModelOutput;

typedef struct Denoiser Denoiser;
struct Denoiser {
    /* The model's output for x (n, sample_size, backend memory; n <= max_batch) at the
     * model's time t (DDPM: the integer timestep). Backend memory, valid until the next
     * call; x is only read. */
    const float *(*predict)(Denoiser *self, const float *x, int n, float t);
    /* The same at the time times[*step] (both backend memory), so that the sampling loop
     * sends nothing from the host; NULL when the denoiser has no such path. A wrapper that
     * copies another Denoiser and replaces predict must set it to NULL. */
    const float *(*predict_at)(Denoiser *self, const float *x, int n, const float *times,
                               const int32_t *step);
    const Backend *be;
    int max_batch;
    size_t sample_size;     /* floats per sample of x: H*W*C */
    ModelOutput output;
    const int32_t *labels;  /* (n) host: the class of each sample of the current predict() call,
                               or NULL: unconditional */
};

/* A network with inputs "sample" and "timestep" and output "sample", run in eval mode
 * on the given weights (backend memory; e.g. the EMA weights). A class-conditional
 * network (an int32 input "class_labels") gets base.labels there; it must have labels,
 * each a row of its class embedding. */
typedef struct {
    Denoiser base;
    Net *net;
    const float *weights;
    float *t_host;          /* (max_batch) the time input, staged on the host */
    int class_rows;         /* rows of class_embedding.weight; 0: unconditional network */
} NetDenoiser;

void net_denoiser_init(NetDenoiser *d, Net *net, const float *weights, ModelOutput output);
void net_denoiser_free(NetDenoiser *d);

#endif
