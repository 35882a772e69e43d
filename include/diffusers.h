/* diffusers interop: a checkpoint's EMA weights as a folder that diffusers'
 * DDPMPipeline.from_pretrained loads, and such a folder back into a checkpoint.
 *
 *   DIR/model_index.json                         DDPMPipeline: unet + scheduler
 *   DIR/unet/config.json                         UNet2DModel config
 *   DIR/unet/diffusion_pytorch_model.safetensors the weights, diffusers names, F32
 *   DIR/scheduler/scheduler_config.json          DDPMScheduler config
 *
 * The U-Net is diffusers' UNet2DModel with the DDPM settings (see unet.h); a folder
 * whose config or tensors do not fit that model is refused with the key named. */
#ifndef DDPM_DIFFUSERS_H
#define DDPM_DIFFUSERS_H

#include <stddef.h>

#define DIFFUSERS_VERSION "0.30.3"   /* the version the export is tested against */

/* Writes the folder from a checkpoint's EMA weights (or its plain weights when it has
 * none). Returns 0, or -1 with err naming the file and the problem. */
int diffusers_export(const char *ckpt_path, const char *dir, char *err, size_t err_size);
/* Reads a folder into a checkpoint at step 0: weights and EMA weights both hold the
 * folder's weights, the AdamW moments are zero. Returns 0, or -1 with err filled. */
int diffusers_import(const char *dir, const char *ckpt_path, char *err, size_t err_size);

#endif
