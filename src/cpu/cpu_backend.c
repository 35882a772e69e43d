/* The CPU backend table: host memory, and the reference ops of cpu_backend.h. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "util.h"

static void *cpu_alloc(size_t bytes) { return xcalloc(1, bytes); }
static void cpu_release(void *p) { free(p); }
static void cpu_memcpy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_fill(float *x, float value, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}
static void cpu_synchronize(void) {}

void conv_shape_finish(ConvShape *s) {
    s->oh = (s->h + s->pad_top + s->pad_bottom - s->kh) / s->stride + 1;
    s->ow = (s->w + s->pad_left + s->pad_right - s->kw) / s->stride + 1;
}

static const Backend cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .to_device = cpu_memcpy,
    .to_host = cpu_memcpy,
    .copy = cpu_memcpy,
    .fill = cpu_fill,
    .synchronize = cpu_synchronize,
    .conv2d_prepare = cpu_conv2d_prepare,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .groupnorm_forward = cpu_groupnorm_forward,
    .groupnorm_backward = cpu_groupnorm_backward,
    .silu_forward = cpu_silu_forward,
    .silu_backward = cpu_silu_backward,
    .add_forward = cpu_add_forward,
    .accumulate = cpu_accumulate,
    .add_bias_forward = cpu_add_bias_forward,
    .add_bias_backward = cpu_add_bias_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .upsample2x_forward = cpu_upsample2x_forward,
    .upsample2x_backward = cpu_upsample2x_backward,
    .concat_forward = cpu_concat_forward,
    .concat_backward = cpu_concat_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .timestep_embedding = cpu_timestep_embedding,
    .q_sample_images = cpu_q_sample_images,
    .mse_loss = cpu_mse_loss,
    .diffusion_loss = cpu_diffusion_loss,
    .sample_update = cpu_sample_update,
    .normal_fill = cpu_normal_fill,
    .global_norm = cpu_global_norm,
    .adamw = cpu_adamw,
    .ema_update = cpu_ema_update,
};

const Backend *backend_cpu(void) { return &cpu; }
