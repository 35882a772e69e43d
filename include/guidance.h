/* Class conditioning and classifier-free guidance (Ho & Salimans 2021).
 *
 * Training: each label is replaced by the null class (the last row of the class
 * embedding) with probability class_dropout, drawn from its own Philox stream, so the
 * network learns the conditional and the unconditional model at once.
 *
 * Sampling: a guided denoiser wraps a class-conditional denoiser. At scale s it runs
 * the conditional and the unconditional (null-class) halves as one forward pass of a
 * doubled batch and returns eps_u + s (eps_c - eps_u) (diffusers' convention; one fused
 * op, guidance_combine). s = 1 is the conditional model alone (no unconditional pass),
 * s = 0 the unconditional one (no conditional pass). With learned variances only the
 * prediction channels are guided; the variance channels are the conditional half's.
 * The samplers never know: every sampler (ancestral, respaced, DDIM) guides. */
#ifndef DDPM_GUIDANCE_H
#define DDPM_GUIDANCE_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "denoiser.h"
#include "graph.h"
#include "objective.h"
#include "philox.h"

/* out[i] = null_class where philox_uniform(key, sample0 + i, 0) < p, else labels[i], for
 * the n samples starting at global index sample0. key = {seed, RNG_STREAM_LABEL_DROP,
 * step, 0}. p = 0 keeps every label. */
void label_dropout(int32_t *out, const int32_t *labels, int n, uint32_t sample0, double p,
                   int null_class, RngKey key);

/* A class-conditional network's "class_labels" input for this rank's share of the batch:
 * its labels after label_dropout (key {seed, RNG_STREAM_LABEL_DROP, step, 0}), staged in
 * host_class (b). Shared by every objective that trains a class-conditional U-Net. */
void feed_class_labels(const Backend *be, Net *net, const Config *c, const StepBatch *batch,
                       int32_t *host_class);
/* n labels cycling through the classes of c (the training-time grids), into out. */
void grid_class_labels(const Config *c, int n, int32_t *out);

/* Every label of d must be in [0, num_classes); returns 0, or -1 with err naming the file
 * the labels came from (data_path's label file), the sample and the label. Data without
 * labels is an error too. */
int dataset_check_classes(const Dataset *d, const char *data_path, int num_classes, char *err,
                          size_t err_size);

typedef struct {
    Denoiser base;
    Denoiser *inner;          /* the class-conditional denoiser */
    float scale;
    int null_class;
    int doubled;              /* both halves run: 0 at s = 0 and s = 1 */
    int32_t *pair_labels;     /* (inner max_batch) host: the labels of the pass */
    float *pair_x;            /* (inner max_batch, D) backend: x twice */
    float *out;               /* (max_batch, D_out) backend: the combined output */
} GuidedDenoiser;

/* Wraps inner (planned for 2x the batch when 0 != s != 1: base.max_batch is then half
 * inner's). null_class < 0 (a model trained without label dropout) is an error unless
 * s = 1. Returns 0, or -1 with err. */
int guided_denoiser_init(GuidedDenoiser *g, Denoiser *inner, float scale, int null_class,
                         char *err, size_t err_size);
void guided_denoiser_free(GuidedDenoiser *g);

#endif
