/* The noisy classifier of classifier guidance (Dhariwal & Nichol 2021): the U-Net's
 * encoder half (time embedding, conv_in, down blocks, middle block; unet.h) followed by
 * GroupNorm + SiLU ("out.0"), mean pooling over the positions and a linear head
 * ("out.2"), as a graph network. Inputs "sample" (H, W, in_channels) and "timestep"
 * (one float per sample); output "logits" (1, 1, num_classes). At timestep 0 (or when
 * trained with classifier_t_max = 1) it is the clean classifier that `ddpm evaluate`
 * uses to score samples. */
#ifndef DDPM_CLASSIFIER_H
#define DDPM_CLASSIFIER_H

#include "config.h"
#include "graph.h"

/* Builds and plans the classifier of cfg (cfg->num_classes outputs) for batches up to
 * max_batch. input_grad: also the gradient with respect to "sample" (guidance).
 * features, when not NULL, receives the tensor of the pooled features (1, 1, C) that
 * feed the head: the penultimate features of the Frechet distance (read its data after
 * a forward; it is not an output, so backward never reads a gradient for it). */
Net *classifier_build(const Backend *be, const Config *cfg, int max_batch, int input_grad,
                      int *features);

/* A trained classifier from a checkpoint (objective=classifier; its EMA weights), for
 * batches up to max_batch. cfg receives its config. Dies with a message naming the file. */
Net *classifier_load(const char *ckpt, const Backend *be, int max_batch, int input_grad,
                     Config *cfg, int *features);
#endif
