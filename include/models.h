/* The registry of what the engine trains: for a config's objective, the network (a
 * builder over the graph) and the objective that trains it. The trainer, checkpoints
 * and tools ask here instead of naming a network, so a new model is one case in each
 * switch of src/train/models.c. */
#ifndef DDPM_MODELS_H
#define DDPM_MODELS_H

#include "backend.h"
#include "config.h"
#include "graph.h"
#include "objective.h"

/* The network cfg->objective trains, planned for batches up to max_batch. input_grad:
 * also the gradient with respect to its first input. Weights start at zero. */
Net *model_build(const Backend *be, const Config *cfg, int max_batch, int input_grad);

/* The objective of cfg->objective for b local samples of a global batch of B. */
Objective *objective_create(const Backend *be, const Config *cfg, int b, int B);

#endif
