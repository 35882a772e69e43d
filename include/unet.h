/* The DDPM U-Net (diffusers UNet2DModel, as for google/ddpm-cifar10-32): a builder
 * over the graph (graph.h). Inputs "sample" (H, W, in_channels) and "timestep" (one
 * float per sample: DDPM's integer t, or a continuous time); output "sample"
 * (H, W, out_channels). With num_class_embeds > 0 also "class_labels" (one int32 per
 * sample, a row of class_embedding.weight), whose embedding joins the time embedding. */
#ifndef DDPM_UNET_H
#define DDPM_UNET_H

#include "config.h"
#include "graph.h"

/* Builds and plans the network for cfg for batches up to max_batch. input_grad: also
 * compute the gradient with respect to the "sample" input. Weights start at zero. */
Net *unet_build(const Backend *be, const Config *cfg, int max_batch, int input_grad);

/* Whether conv_in and conv_out compute on channels padded to a multiple of 8 (config
 * pad_io_channels; auto: the CUDA backend with mixed_precision=bf16). The parameters
 * keep their diffusers shapes either way. */
int unet_pads_io_channels(const Backend *be, const Config *cfg);

/* The U-Net's encoder half on an existing graph: the time embedding of t, conv_in, the
 * down blocks and the middle block over x. Returns the middle block's output. Shared
 * by the U-Net and by networks that stop halfway (a noisy classifier). With
 * cfg->num_class_embeds > 0 the net must already have the "class_labels" input. */
int unet_encoder(Net *net, const Config *cfg, int x, int t, int *temb_out, int *skips,
                 int *n_skips);

#endif
