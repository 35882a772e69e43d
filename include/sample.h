/* Samplers: ancestral (Ho et al. 2020, Algorithm 2), respaced ancestral (Nichol &
 * Dhariwal 2021) and DDIM (Song et al. 2021) with its inversion. A sampler is a plan
 * of steps, each a model call and one fused backend update; the same loop runs them all. */
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <signal.h>
#include <stdint.h>

#include "diffusion.h"
#include "unet.h"

typedef struct {
    const char *kind;        /* "ancestral" or "ddim" */
    const char *spacing;     /* NULL or "": every timestep; else "50", "ddim50", "10,10,20" */
    double eta;              /* DDIM noise, in [0, 1] */
    int clip_denoised;
    int learned_var, channels;   /* the model outputs [prediction | v] per pixel */
} SamplerOptions;

typedef struct {
    GaussianDiffusion process;   /* the (respaced) process the steps run on */
    int count;
    int ascending;               /* inversion runs t = 0 .. count-1 */
    int *model_t;                /* (count) the model's timestep at step i */
    SampleUpdate *update;        /* (count) */
} SamplerPlan;

int sampler_plan_init(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                      char *err, size_t err_size);
/* DDIM inversion x0 -> x_T over the same spacing. */
int sampler_plan_inversion(SamplerPlan *plan, const GaussianDiffusion *base,
                           const SamplerOptions *opt, char *err, size_t err_size);
void sampler_plan_free(SamplerPlan *plan);

/* The model: returns its output (backend memory) for x (n, d) at model timestep t. */
typedef const float *(*DenoiseFn)(void *ctx, const float *x, int n, int model_t);

/* Runs the plan on x (n, d) in place; the noise of step i is philox_normal with
 * key {z_key.seed, z_key.stream, i}. */
/* When set and non-zero, sampler_run stops before its next step (the images are then
 * unfinished): training points it at its signal flag, so a stop never waits for a grid. */
extern const volatile sig_atomic_t *sampler_cancel;
void sampler_run(const Backend *be, const SamplerPlan *plan, DenoiseFn denoise, void *ctx,
                 float *x, int n, size_t d, RngKey z_key, int verbose);

/* Generates n images into out (n, H, W, C) host floats with the U-Net's current weights,
 * in chunks of at most m->max_batch. x_T is drawn from (seed, chunk) unless x_T (host,
 * n*H*W*C) is given. The same seed and batch size give the same images. */
void sample_images(UNet *m, const SamplerPlan *plan, int n, uint64_t seed, const float *x_T,
                   float *out, int verbose);
/* The chunks c (of m->max_batch images) with c % world_size == rank, into their places
 * in out: world_size ranks together produce what one process does. */
void sample_images_share(UNet *m, const SamplerPlan *plan, int n, uint64_t seed,
                         const float *x_T, float *out, int verbose, int rank, int world_size);
/* The x_T that sample_images draws for (n, seed) when none is given. */
void sample_initial_noise(UNet *m, int n, uint64_t seed, float *out);
/* The ancestral sampler over every timestep, for a config (training-time grids). */
void sample_images_default(UNet *m, const GaussianDiffusion *d, int learned_var, int n,
                           uint64_t seed, int clip_denoised, float *out);

/* `ddpm sample`. */
int sample_main(int argc, char **argv, const Backend *be);

#endif

/* A checkpoint's config, process and EMA weights, ready for sampling or evaluation. */
typedef struct {
    Config cfg;
    GaussianDiffusion diffusion;
    UNet *model;
} Inference;

/* Loads ckpt for batches up to `batch`; dies with a message naming the file on error. */
void inference_load(Inference *inf, const char *ckpt, const Backend *be, int batch);
void inference_free(Inference *inf);

/* `ddpm invert`: DDIM inversion of images (a float32 .npy in [-1, 1]) to x_T. */
int invert_main(int argc, char **argv, const Backend *be);
