/* Latent diffusion's first stage at inference: a KL autoencoder checkpoint (objective
 * vae) opened as an encoder (images -> scaled latents, `ddpm encode`) or a decoder
 * (scaled latents -> images, `ddpm sample --vae`). Both use the checkpoint's EMA weights,
 * as sampling and `ddpm export` do (its plain weights when it has none).
 *
 * The order is the one diffusers' pipelines use: encode z = scaling_factor * q(z|x)'s mean
 * (or a sample of it); decode x = decoder(z / scaling_factor). The diffusion model trains
 * on and samples z. */
#ifndef DDPM_LATENT_H
#define DDPM_LATENT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "graph.h"

typedef struct {
    Config cfg;             /* the autoencoder's config (scaling_factor included) */
    const Backend *be;
    Net *net;               /* encoder (input "sample") or decoder (input "latent") */
    int batch;
    int side;               /* the latent's side */
    float *z;               /* (batch, side, side, latent_channels) backend: encoder's z */
    float *noise;           /* likewise: the posterior's eps (zeros: the mean) */
} FirstStage;

/* Opens path as an encoder (decoder = 0) or a decoder, for batches up to batch. Returns
 * 0, or -1 with err naming the file and the problem (not a VAE checkpoint, ...). */
int first_stage_open(FirstStage *fs, const char *path, const Backend *be, int batch,
                     int decoder, char *err, size_t err_size);
void first_stage_free(FirstStage *fs);
size_t first_stage_latent_size(const FirstStage *fs);   /* side*side*latent_channels */
size_t first_stage_image_size(const FirstStage *fs);    /* image_size^2 * in_channels */
/* latents (n, side, side, L) = scale * (mean + sample * std * eps) of images (n, H, W, C)
 * in [-1, 1] (host); eps = philox_normal({seed, RNG_STREAM_POSTERIOR, 0, first + i}, e)
 * for image i, so any batching draws the same. */
void first_stage_encode(FirstStage *fs, const float *images, int n, int sample, uint64_t seed,
                        uint32_t first, float scale, float *latents);
/* images (n, H, W, C) = decoder(latents / scale) (host). */
void first_stage_decode(FirstStage *fs, const float *latents, int n, float scale,
                        float *images);
/* Rewrites the checkpoint at path with scaling_factor in its config (atomically; tensors
 * and other metadata unchanged). */
int first_stage_record_scaling_factor(const char *path, double scaling_factor, char *err,
                                      size_t err_size);

#endif
