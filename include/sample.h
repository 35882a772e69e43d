/* Samplers over a denoiser (denoiser.h): ancestral (Ho et al. 2020, Algorithm 2),
 * respaced ancestral (Nichol & Dhariwal 2021) and DDIM (Song et al. 2021) with its
 * inversion. A sampler is a plan: per step, the model's time and a step function
 * that calls the denoiser (once or more) and updates x; one loop runs every plan. */
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "denoiser.h"
#include "diffusion.h"
#include "graph.h"

/* EULER and HEUN are the flow samplers (flow.h): they run a PRED_VELOCITY denoiser. */
typedef enum { SAMPLER_ANCESTRAL = 0, SAMPLER_DDIM = 1, SAMPLER_EULER = 2, SAMPLER_HEUN = 3 } SamplerKind;

typedef struct {
    SamplerKind kind;
    const char *spacing;     /* NULL or "": every timestep; else "50", "ddim50", "10,10,20" */
    double eta;              /* DDIM noise, in [0, 1] */
    int clip_denoised;
    double shift;            /* flow samplers: the sigma grid's shift (> 0; 0 means 1) */
} SamplerOptions;

/* "ancestral", "ddim", "euler" or "heun"; returns -1 for anything else. */
int sampler_kind_from_name(const char *name, SamplerKind *kind);

typedef struct SamplerPlan SamplerPlan;
/* One step i of a plan on x (n, D) in place; z_key is that step's noise key. */
typedef void (*SamplerStepFn)(const SamplerPlan *plan, int i, Denoiser *den, float *x, int n,
                              RngKey z_key);

struct SamplerPlan {
    GaussianDiffusion process;   /* the (respaced) process the steps run on */
    int count;
    int ascending;               /* inversion runs t = 0 .. count-1 */
    int *model_t;                /* (count) the model's timestep at step i */
    SampleUpdate *update;        /* (count) the fused update of an affine step */
    SamplerStepFn step;
    /* flow samplers (flow.h): step i goes from sigmas[i] to sigmas[i + 1] (ascending = 1) */
    double *sigmas;              /* (count + 1), or NULL */
    int heun, heun_last_euler;
    float *scratch;              /* (2, max_batch, D) backend: Heun's first velocity and its
                                    Euler point, or NULL */
    const Backend *scratch_be;
    /* Affine plans (ancestral, DDIM) on a backend whose denoiser has predict_at: update and
     * model_t as backend tables and the loop's step counter, built by the first sampler_run
     * on that backend and kept, so the loop sends no parameters from the host. */
    SampleUpdate *device_update;     /* (count) */
    float *device_time;              /* (count) the model's time at each step */
    int32_t *device_step;            /* (1) the step counter advance_step moves */
    const Backend *device_be;
};

/* The plan for a model whose output is laid out as `model` says (its parameterisation
 * decides how x0 is recovered). */
int sampler_plan_init(SamplerPlan *plan, const GaussianDiffusion *base, const SamplerOptions *opt,
                      const ModelOutput *model, char *err, size_t err_size);
/* DDIM inversion x0 -> x_T over the same spacing. */
int sampler_plan_inversion(SamplerPlan *plan, const GaussianDiffusion *base,
                           const SamplerOptions *opt, const ModelOutput *model, char *err,
                           size_t err_size);
void sampler_plan_free(SamplerPlan *plan);

/* When set and non-zero, sampler_run stops before its next step (the images are then
 * unfinished): training points it at its signal flag, so a stop never waits for a grid. */
extern const volatile sig_atomic_t *sampler_cancel;
/* Runs the plan on x (n, d) in place; the noise of step i is philox_normal with key
 * {z_key.seed, z_key.stream, i}. */
void sampler_run(SamplerPlan *plan, Denoiser *den, float *x, int n, RngKey z_key,
                 int verbose);

/* Generates n images into out (n, H, W, C) host floats, in chunks of at most
 * den->max_batch. x_T is drawn from (seed, chunk) unless x_T (host, n*D) is given.
 * labels: (n) host, the class of each image, or NULL (unconditional); each chunk's
 * share is handed to the denoiser as den->labels. The same seed and batch size give
 * the same images. */
void sample_images(Denoiser *den, SamplerPlan *plan, int n, uint64_t seed,
                   const float *x_T, const int32_t *labels, float *out, int verbose);
/* The chunks c (of max_batch images) with c % world_size == rank, into their places
 * in out: world_size ranks together produce what one process does. */
void sample_images_share(Denoiser *den, SamplerPlan *plan, int n, uint64_t seed,
                         const float *x_T, const int32_t *labels, float *out, int verbose,
                         int rank, int world_size);
/* The x_T that sample_images draws for (n, seed) when none is given. */
void sample_initial_noise(Denoiser *den, int n, uint64_t seed, float *out);
/* The ancestral sampler over every timestep, for a U-Net with the given weights
 * (training-time grids); labels (n) host or NULL as for sample_images. */
void sample_images_default(Net *net, const float *weights, const GaussianDiffusion *d,
                           int learned_var, int n, uint64_t seed, int clip_denoised,
                           const int32_t *labels, float *out);

/* `ddpm sample`. */
int sample_main(int argc, char **argv, const Backend *be);

/* A checkpoint's config, process, U-Net and its EMA weights as a denoiser, ready for
 * sampling or evaluation. */
typedef struct {
    Config cfg;
    GaussianDiffusion diffusion;
    Net *model;
    NetDenoiser denoiser;
} Inference;

/* Loads ckpt for batches up to `batch`; dies with a message naming the file on error. */
void inference_load(Inference *inf, const char *ckpt, const Backend *be, int batch);
void inference_free(Inference *inf);

/* `ddpm invert`: DDIM inversion of images (a float32 .npy in [-1, 1]) to x_T. */
int invert_main(int argc, char **argv, const Backend *be);

#endif
