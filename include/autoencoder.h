/* The KL autoencoder of latent diffusion (Rombach et al. 2022), in diffusers'
 * AutoencoderKL layout and parameter names, so that its weights load into
 * AutoencoderKL: a builder over the graph (graph.h).
 *
 * Config -> AutoencoderKL: block_out_channels[i] = ch * ch_mult[i], layers_per_block =
 * num_res_blocks, norm_num_groups = groups, latent_channels, in/out_channels,
 * sample_size = image_size; down/up blocks are DownEncoderBlock2D/UpDecoderBlock2D, the
 * only attention is the middle block's (attn_resolutions is not used). The latent is
 * (image_size / 2^(levels-1))^2 x latent_channels.
 *
 *   encoder: conv_in; per level num_res_blocks resnets (GroupNorm eps 1e-6, no time
 *            embedding), then a stride-2 3x3 conv padded (0,1,0,1) except on the last
 *            level; mid block (resnet, single-head attention, resnet); GroupNorm, SiLU,
 *            conv_out to 2*latent_channels; quant_conv (1x1): the moments [mean | logvar]
 *   posterior: z = mean + exp(logvar/2) * noise, logvar clamped to [-30, 20]
 *   decoder: post_quant_conv (1x1); conv_in; mid block; per level num_res_blocks + 1
 *            resnets, then nearest x2 and a conv except on the last; GroupNorm, SiLU,
 *            conv_out.
 *
 * The downsampler's asymmetric padding is the conv op's own (ConvShape's four pads): the
 * CPU reference pads implicitly, the CUDA backend copies the input into an explicitly
 * zero-padded buffer in its workspace and runs a padding-0 cuDNN convolution (see
 * kernels/conv_algo_cache.h): the same design as a separate pad op, without a second
 * activation kept for backward. */
#ifndef DDPM_AUTOENCODER_H
#define DDPM_AUTOENCODER_H

#include "config.h"
#include "graph.h"

/* The latent's side: image_size / 2^(levels-1). */
int autoencoder_latent_size(const Config *cfg);

/* The whole autoencoder for training: inputs "sample" (H, W, in_channels) and "noise"
 * (h, w, latent_channels, the posterior's eps); outputs "sample" (the reconstruction)
 * and "moments" (h, w, 2*latent_channels). With learn_logvar, a parameter "logvar" (1)
 * that no node reads: the objective's loss writes its gradient. */
Net *autoencoder_build(const Backend *be, const Config *cfg, int max_batch, int input_grad);
/* The encoder alone: input "sample", output "moments". */
Net *autoencoder_encoder_build(const Backend *be, const Config *cfg, int max_batch);
/* The decoder alone: input "latent" (h, w, latent_channels), output "sample". */
Net *autoencoder_decoder_build(const Backend *be, const Config *cfg, int max_batch);

/* `ddpm export` of an autoencoder checkpoint: DIR/config.json and
 * DIR/diffusion_pytorch_model.safetensors for AutoencoderKL.from_pretrained(DIR), from the
 * EMA weights, without the loss's "logvar" (src/io/vae_export.c). */
int autoencoder_export(const char *ckpt_path, const Config *cfg, const char *dir, char *err,
                       size_t err_size);

#endif
