/* Ancestral sampling (Ho et al. 2020, Algorithm 2) through the fused backend update. */
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <stdint.h>

#include "diffusion.h"
#include "unet.h"

/* Generates n images into out (n, H, W, C) host floats, in chunks of at most
 * m->max_batch, with the model's current weights in eval mode. Image i's noise
 * depends on (seed, its chunk of the batch size, i): the same seed and batch size
 * give the same images. verbose prints progress to stderr. */
void sample_images(UNet *m, const GaussianDiffusion *d, int n, uint64_t seed, int clip_denoised,
                   float *out, int verbose);

/* `ddpm sample`: loads a checkpoint's EMA weights and writes a PNG grid and samples.npz. */
int sample_main(int argc, char **argv, const Backend *be);

#endif
