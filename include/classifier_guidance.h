/* Classifier guidance (Dhariwal & Nichol 2021) as a denoiser that wraps another: the
 * samplers are not edited. With g = grad_x sum_i log p(y_i | x_t, t) from a noisy
 * classifier and the scale s:
 *  - ancestral and respaced sampling shift the step's mean by s * Sigma_t * g
 *    (guided-diffusion's condition_mean), Sigma_t the fixed model variance of the step;
 *    the wrapper moves the model output by the amount that moves the mean so, which is
 *    exact unless x0 is clipped (then the clip applies to the guided x0);
 *  - DDIM replaces eps by eps - sqrt(1 - alphabar_t) * s * g (condition_score).
 * The classifier sees the timestep the model sees: the original one under respacing.
 * Each sample's class is the denoiser's labels (sample_images hands them down). */
#ifndef DDPM_CLASSIFIER_GUIDANCE_H
#define DDPM_CLASSIFIER_GUIDANCE_H

#include "denoiser.h"
#include "graph.h"
#include "sample.h"

/* What guidance needs of a classifier: out (n, D, backend) = scale * grad_x of
 * sum_i log p(labels[i] | x_i, t). A network (below) or an exact one (tests). */
typedef struct ClassGradient ClassGradient;
struct ClassGradient {
    void (*grad)(ClassGradient *self, const float *x, int n, float t, const int32_t *labels,
                 float scale, float *out);
};

/* A classifier network (classifier.h, built with input_grad) as a ClassGradient. */
typedef struct {
    ClassGradient base;
    Net *net;
    int32_t *labels;        /* (max_batch) backend */
    float *loss;            /* (max_batch) backend: the cross-entropy, unused */
    float *t_host;          /* (max_batch) */
} NetClassGradient;

void net_class_gradient_init(NetClassGradient *g, Net *classifier);
void net_class_gradient_free(NetClassGradient *g);

typedef struct {
    Denoiser base;
    Denoiser *inner;
    ClassGradient *classifier;
    float scale;
    int num_timesteps;      /* of the base process: the model times index k */
    double *k;              /* (num_timesteps) output shift per unit of s * g at model time t */
    float *out;             /* (max_batch, output floats) backend: the guided output */
    float *grad;            /* (max_batch, D) backend */
} ClassifierGuidance;

/* Guidance of inner at scale s for the plan (its steps and process decide k). Returns 0,
 * or -1 with err: learned variances with ancestral sampling, or DDIM with a model that
 * does not predict eps. */
int classifier_guidance_init(ClassifierGuidance *g, Denoiser *inner, ClassGradient *classifier,
                             const SamplerPlan *plan, SamplerKind kind, int num_timesteps,
                             float scale, char *err, size_t err_size);
void classifier_guidance_free(ClassifierGuidance *g);

#endif
