/* The DDPM U-Net (diffusers UNet2DModel, as for google/ddpm-cifar10-32), defined once.
 *
 * unet_create() builds the network as a tape of backend ops over NHWC tensors,
 * allocating every activation, gradient and workspace buffer up front for
 * max_batch. unet_forward() runs the tape, unet_backward() runs it in reverse.
 * The same tape runs on every backend.
 *
 * Parameters live in one flat buffer, in registration order, under diffusers
 * state-dict names. Conv weights are stored (OC, KH, KW, IC) internally and
 * converted to PyTorch's (OC, IC, KH, KW) at the checkpoint boundary. */
#ifndef DDPM_UNET_H
#define DDPM_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"

typedef enum { PARAM_PLAIN = 0, PARAM_CONV = 1 } ParamLayout;

typedef struct {
    char name[96];          /* diffusers state-dict key */
    int ndim;
    int64_t shape[4];       /* PyTorch layout */
    size_t offset, numel;   /* in the flat parameter buffer */
    ParamLayout layout;
    int fan_in;             /* for PyTorch's default init; 0 for norm parameters */
    int is_norm_weight;     /* GroupNorm weights start at 1 */
} ParamInfo;

typedef struct Node Node;
typedef struct Tensor Tensor;

/* Called during unet_backward each time more gradients are final: every gradient at a
 * flat offset >= final_from will not change again this step (data-parallel buckets). */
typedef void (*GradsReadyFn)(void *ctx, size_t final_from);

typedef struct {
    const Backend *be;
    int image_size, in_channels, out_channels, ch, temb_dim, groups;
    float dropout;
    int max_batch;

    ParamInfo *params;
    int n_params;
    size_t num_parameters;
    float *weights;           /* (num_parameters) backend memory */
    float *grads;             /* (num_parameters) backend memory */

    Node *nodes;
    int n_nodes, cap_nodes;
    Tensor *tensors;
    int n_tensors, cap_tensors;
    int input, output;        /* tensor ids of x_t (B,H,W,in) and the output (B,H,W,out) */
    int32_t *timesteps;       /* (max_batch) backend memory; set with unet_set_timesteps */
    float *timesteps_float;   /* (max_batch) backend memory: the same, the embedding's input */
    float *timesteps_staging; /* (max_batch) host: timesteps_float before its upload */
    void *arena;              /* every activation, gradient and saved statistic */
    void *workspace;
    size_t workspace_bytes;
    int training;             /* dropout active */
    size_t *final_from;       /* (n_nodes) grads at offsets >= final_from[i] are final once
                                 node i's backward has run */
    GradsReadyFn grads_ready; /* NULL, or the data-parallel gradient reducer */
    void *grads_ready_ctx;
} UNet;

/* Builds the network for cfg and allocates everything for batches up to max_batch.
 * Weights are zero until unet_init_weights or a checkpoint load. */
UNet *unet_create(const Backend *be, const Config *cfg, int max_batch);
void unet_free(UNet *m);
/* PyTorch's default initialisation, drawn from Philox so that it is the same on
 * every backend: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for conv and linear weights and
 * biases, 1 and 0 for GroupNorm. Writes host_weights when non-NULL, else m->weights. */
void unet_init_weights(UNet *m, uint64_t seed, float *host_weights);

float *unet_input(UNet *m);          /* x_t (max_batch, H, W, in_channels) */
float *unet_output(UNet *m);         /* (max_batch, H, W, out_channels) */
float *unet_output_grad(UNet *m);    /* dL/doutput, filled by the loss */
size_t unet_sample_size(const UNet *m);          /* H*W*in_channels */
size_t unet_output_sample_size(const UNet *m);   /* H*W*out_channels */

/* Uploads the timesteps (host, n <= max_batch) of the next forward pass: m->timesteps,
 * which the diffusion ops read, and its float copy, which the timestep embedding reads. */
void unet_set_timesteps(UNet *m, const int32_t *t, int n);
/* Runs the network on the first n samples of the input with timesteps m->timesteps.
 * dropout_key: key for the dropout masks (training); ignored when !m->training. */
void unet_forward(UNet *m, int n, RngKey dropout_key);
/* Gradients of the loss whose output gradient is in unet_output_grad, into m->grads. */
void unet_backward(UNet *m, int n, RngKey dropout_key);

const ParamInfo *unet_find_param(const UNet *m, const char *name);
/* Layout conversion of one parameter between the internal and the PyTorch layout (host). */
void param_to_torch(const ParamInfo *p, const float *internal, float *torch);
void param_from_torch(const ParamInfo *p, const float *torch, float *internal);

#endif
