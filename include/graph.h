/* The graph: one generic tape of backend ops that every network is built on.
 *
 * A network (the U-Net, a noisy classifier, an autoencoder) is a builder that calls
 * the net_* helpers below: each registers its parameters under their diffusers
 * state-dict names, appends nodes, and returns the id of its output tensor. Tensor
 * sizes are per sample; the batch is given at run time, up to max_batch.
 *
 * net_finish() then plans everything up front: which backward writes overwrite and
 * which add (a tensor read by several nodes gets its gradient summed), from which
 * flat offset the parameter gradients are final after each backward node (for the
 * data-parallel buckets), and one arena holding every activation, gradient and saved
 * statistic. Nothing is allocated after that. The caller writes each output's gradient
 * before net_backward; a node that also reads an output adds its gradient to that one.
 *
 * Parameters live in one flat buffer, in registration order. Conv weights are stored
 * (OC, KH, KW, IC) internally and converted to PyTorch's (OC, IC, KH, KW) at the
 * checkpoint boundary (param_to_torch / param_from_torch). Activations are NHWC. */
#ifndef DDPM_GRAPH_H
#define DDPM_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "profile.h"

typedef enum { PARAM_PLAIN = 0, PARAM_CONV = 1 } ParamLayout;

typedef struct {
    char name[96];          /* diffusers state-dict key */
    int ndim;
    int64_t shape[4];       /* PyTorch layout */
    size_t offset, numel;   /* in the flat parameter buffer */
    ParamLayout layout;
    int fan_in;             /* for PyTorch's default init; 0 for norm parameters */
    int is_norm_weight;     /* GroupNorm weights start at 1 */
    int is_embedding;       /* nn.Embedding: starts N(0, 1) */
} ParamInfo;

/* What an input holds per sample: floats (images, latents, timesteps) or int32 ids. */
typedef enum { NET_F32 = 0, NET_I32 = 1 } NetDType;

typedef struct Node Node;
typedef struct Tensor Tensor;

#define NET_MAX_PORTS 8

typedef struct {
    char name[32];
    int tensor;
} NetPort;

/* Called during net_backward each time more gradients are final: every gradient at a
 * flat offset >= final_from will not change again this step (data-parallel buckets). */
typedef void (*GradsReadyFn)(void *ctx, size_t final_from);

typedef struct {
    const Backend *be;
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
    NetPort inputs[NET_MAX_PORTS], outputs[NET_MAX_PORTS];
    int n_inputs, n_outputs;
    void *arena;              /* every activation, gradient and saved statistic */
    void *workspace;
    size_t workspace_bytes;
    int finished;             /* net_finish has run: no more building */
    int training;             /* dropout active */
    size_t *final_from;       /* (n_nodes) grads at offsets >= final_from[i] are final once
                                 node i's backward has run */
    Profile *profile;         /* NULL, or where each node's time goes (benchmarks) */
    GradsReadyFn grads_ready; /* NULL, or the data-parallel gradient reducer */
    void *grads_ready_ctx;
    size_t zeros_offset;      /* a region of the arena nothing writes: padding's zeros */
    float *zeros;
    /* bf16 emulation (net_use_bf16): NULL when off */
    float *compute_weights;   /* (num_parameters) bf16_round of the weights forward uses */
    const float *compute_source; /* the fp32 weights compute_weights mirrors; NULL: stale */
} Net;

/* ---------------- building ---------------- */

Net *net_create(const Backend *be, int max_batch);
/* A named input of (h, w, c) per sample. needs_grad: its gradient is computed by
 * net_backward (a classifier's gradient with respect to its image). */
int net_add_input(Net *net, const char *name, NetDType dtype, int h, int w, int c, int needs_grad);
void net_add_output(Net *net, const char *name, int tensor);
/* Plans and allocates everything for batches up to max_batch; weights start at zero. */
void net_finish(Net *net);
void net_free(Net *net);

int net_channels(const Net *net, int tensor);
/* The shapes of the network's convolutions in node order (n = max_batch), *count of them,
 * in an array the caller frees: the convolution tests and benchmarks. */
ConvShape *net_conv_shapes(const Net *net, int *count);
/* The multiply-adds of one sample's forward pass, counted as 2 FLOPs each, in its
 * convolutions, linear layers and attention products (what PyTorch's FlopCounterMode
 * counts); a training step is 3 times that. */
double net_forward_flops(const Net *net);
int net_height(const Net *net, int tensor);
int net_width(const Net *net, int tensor);

/* Registers a parameter; the name is printf-formatted. Returns its index. */
int net_param(Net *net, ParamLayout layout, int fan_in, int ndim, const int64_t *shape,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Convolution with "<prefix>.weight" and "<prefix>.bias"; padding lo on top/left, hi on
 * bottom/right (DDPM's and AutoencoderKL's downsamplers pad (0, 1)). */
int net_conv(Net *net, const char *prefix, int x, int oc, int kernel, int stride, int pad_lo,
             int pad_hi);
/* The general form of net_conv, for fusions: residual >= 0 is a tensor of the output's
 * shape added where the output is written (y = conv(x) + b + residual: a ResBlock's skip
 * add without a pass of its own); with deferred_bias non-NULL the bias is registered but
 * not applied, its parameter index returned there for net_add_bias_with to fold in. */
int net_conv_fused(Net *net, const char *prefix, int x, int oc, int kernel, int stride,
                   int pad_lo, int pad_hi, int residual, int *deferred_bias);
/* The same parameters (shapes ic -> oc, ic = x's channels), computed as a conv of
 * compute_ic -> compute_oc channels: x gets zero channels appended, the weights zero
 * input channels and zero output rows, the bias zero entries, and the output keeps the
 * first oc channels (tensor cores want channel counts that are multiples of 8). The
 * padding lives in compute buffers only; its gradients are dropped. */
int net_conv_padded(Net *net, const char *prefix, int x, int oc, int kernel, int stride,
                    int pad_lo, int pad_hi, int compute_ic, int compute_oc);
int net_groupnorm(Net *net, const char *prefix, int x, int groups, float eps, int fuse_silu);
/* GroupNorm (+ SiLU), then inverted dropout with probability p while training, in one
 * node: the same masks and values as net_groupnorm then net_dropout. */
int net_groupnorm_dropout(Net *net, const char *prefix, int x, int groups, float eps,
                          int fuse_silu, float p);
/* Linear over the last dimension, "<prefix>.weight" (n_out, C) and "<prefix>.bias". */
int net_linear(Net *net, const char *prefix, int x, int n_out);
/* Linear with parameters registered by the caller (weight (n_out, C), bias (n_out) or -1). */
int net_linear_with(Net *net, int x, int n_out, int weight, int bias);
int net_silu(Net *net, int x);
int net_add(Net *net, int a, int b);
/* x (H, W, C) + bias (1, 1, C) per sample, broadcast over H*W */
int net_add_bias(Net *net, int x, int bias);
/* The same plus the parameter channel_bias (C) (-1: none), a conv bias deferred by
 * net_conv_fused: one pass adds both. */
int net_add_bias_with(Net *net, int x, int bias, int channel_bias);
int net_concat(Net *net, int a, int b);
int net_upsample2x(Net *net, int x);
/* Inverted dropout while training; in evaluation the output shares its input's memory. */
int net_dropout(Net *net, int x, float p);
/* Single-head attention over the H*W positions of qkv (H, W, 3C), rows [q | k | v]. */
int net_attention(Net *net, int qkv);
/* (1, 1, dim): row ids[i] of "<prefix>.weight" (rows, dim), for an int32 (1, 1, 1) input
 * of ids in [0, rows) (a class label); only the rows a batch uses get a gradient. */
int net_embedding(Net *net, const char *prefix, int ids, int rows, int dim);
/* (1, 1, C): the mean over the H*W positions (a classifier's pooling). */
int net_mean_pool(Net *net, int x);
/* (H, W, C): a sample mean + exp(logvar/2) * noise of the diagonal Gaussian whose moments
 * (H, W, 2C) are [mean | logvar] per pixel (logvar clamped to [-30, 20]); noise (H, W, C)
 * is an input the caller fills (the autoencoder's posterior). */
int net_gaussian_sample(Net *net, int moments, int noise);
/* Sinusoidal embedding (1, 1, dim) of a (1, 1, 1) timestep input. */
int net_timestep_embedding(Net *net, int t, int dim);

/* ---------------- running ---------------- */

/* Runs the tape on the first n samples of the inputs, with the given weights (backend
 * memory, num_parameters floats; NULL: net->weights, e.g. the EMA weights for sampling).
 * dropout_key: key for the dropout masks (training); ignored when !net->training. */
void net_forward(Net *net, int n, const float *weights, RngKey dropout_key);
/* Gradients of the loss whose output gradients were written by the caller: parameters
 * into net->grads, inputs that need them into their gradient buffers. */
void net_backward(Net *net, int n, RngKey dropout_key);

/* ---------------- bf16 mixed precision, emulated ----------------
 * After net_use_bf16 (config mixed_precision=bf16), forward and backward run on a bf16
 * copy of the weights (compute_weights), and every node's output and every activation
 * gradient is rounded to bf16 in place (round_bf16), so each conv and GEMM reads bf16
 * values and accumulates in fp32, as tensor cores do. The weights the caller owns (the
 * fp32 masters, the EMA), the parameter gradients and all reductions stay fp32. A conv
 * or linear that reads a network input (conv_in reads x_t) reads a bf16 copy of it, as
 * autocast casts it; the input itself stays as given (the sampler's chain, the loss's
 * x_t). net_forward rounds the weights it is given into
 * compute_weights unless they already mirror them: the trainer's AdamW writes them in
 * its pass and says so with net_compute_weights_match; whoever changes weights in place
 * otherwise (a load) calls net_weights_changed. */
void net_use_bf16(Net *net);   /* after net_finish; allocates compute_weights */
void net_weights_changed(Net *net);
void net_compute_weights_match(Net *net, const float *source);

/* Ports by name: the tensor id, or -1 when the network has no such port. */
int net_input(const Net *net, const char *name);
int net_output(const Net *net, const char *name);
/* A tensor's data and gradient (backend memory, (max_batch, h, w, c)); grad is NULL
 * when the tensor has none. */
void *net_data(const Net *net, int tensor);
float *net_grad(const Net *net, int tensor);
size_t net_per_sample(const Net *net, int tensor);   /* h*w*c */
/* Shorthands by port name; a missing port is an error in the caller's code (dies). */
void *net_input_data(const Net *net, const char *name);
float *net_input_grad(const Net *net, const char *name);
float *net_output_data(const Net *net, const char *name);
float *net_output_grad(const Net *net, const char *name);

/* ---------------- parameters ---------------- */

/* PyTorch's default initialisation, drawn from Philox so that it is the same on every
 * backend: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for conv and linear weights and biases,
 * 1 and 0 for GroupNorm, N(0, 1) for embeddings. Parameter i draws from stream {seed, RNG_STREAM_INIT, i}.
 * Writes host_weights when non-NULL, else net->weights. */
void net_init_weights(Net *net, uint64_t seed, float *host_weights);
const ParamInfo *net_find_param(const Net *net, const char *name);
/* Layout conversion of one parameter between the internal and the PyTorch layout (host). */
void param_to_torch(const ParamInfo *p, const float *internal, float *torch);
void param_from_torch(const ParamInfo *p, const float *torch, float *internal);

#endif
