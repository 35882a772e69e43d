/* The DDPM U-Net as a builder over the graph (see unet.h): diffusers' module names,
 * so that its parameters load into UNet2DModel. */
#include "unet.h"

#include <stdio.h>
#include <string.h>

#include "nn_blocks.h"
#include "util.h"

#define UNET_GN_EPS 1e-6f
#define UNET_MAX_SKIPS 64

static int has_attention(const Config *cfg, int resolution) {
    for (int i = 0; i < cfg->n_attn_resolutions; i++)
        if (cfg->attn_resolutions[i] == resolution) return 1;
    return 0;
}

/* pad_io_channels: auto pads where tensor cores would run the convs (CUDA with bf16). */
int unet_pads_io_channels(const Backend *be, const Config *cfg) {
    if (cfg->pad_io_channels == PAD_IO_YES) return 1;
    if (cfg->pad_io_channels == PAD_IO_NO) return 0;
    return strcmp(be->name, "cuda") == 0 && cfg->mixed_precision == MIXED_PRECISION_BF16;
}

/* The channels the first and last convs compute on: a multiple of 8 when padding. */
static int io_compute_channels(const Net *net, const Config *cfg, int channels) {
    return unet_pads_io_channels(net->be, cfg) ? (channels + 7) / 8 * 8 : channels;
}

static BlockNorm unet_norm(const Config *cfg) {
    return (BlockNorm){.groups = cfg->groups, .eps = UNET_GN_EPS, .dropout = (float)cfg->dropout};
}

int unet_encoder(Net *net, const Config *cfg, int x, int t, int *temb_out, int *skips,
                 int *n_skips) {
    const BlockNorm norm = unet_norm(cfg);
    const int levels = cfg->n_ch_mult;
    char name[96];
    int class_ids = -1;
    if (cfg->num_class_embeds > 0) {
        class_ids = net_input(net, "class_labels");
        if (class_ids < 0) die("internal: a class-conditional encoder needs a class_labels input");
    }
    int temb = block_time_class_embedding(net, t, cfg->ch, 4 * cfg->ch, class_ids,
                                          cfg->num_class_embeds);
    *n_skips = 0;
    x = net_conv_padded(net, "conv_in", x, cfg->ch, 3, 1, 1, 1,
                        io_compute_channels(net, cfg, net_channels(net, x)), cfg->ch);
    skips[(*n_skips)++] = x;
    for (int i = 0; i < levels; i++) {
        int cout = cfg->ch * cfg->ch_mult[i];
        int attn = has_attention(cfg, cfg->image_size >> i);
        for (int j = 0; j < cfg->num_res_blocks; j++) {
            snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
            x = block_resnet(net, name, x, temb, cout, norm);
            snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
            if (attn) x = block_attention(net, name, x, norm);
            skips[(*n_skips)++] = x;
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
            x = block_downsample(net, name, x);
            skips[(*n_skips)++] = x;
        }
    }
    int cmid = net_channels(net, x);
    x = block_resnet(net, "mid_block.resnets.0", x, temb, cmid, norm);
    x = block_attention(net, "mid_block.attentions.0", x, norm);
    x = block_resnet(net, "mid_block.resnets.1", x, temb, cmid, norm);
    *temb_out = temb;
    return x;
}

static int unet_decoder(Net *net, const Config *cfg, int x, int temb, int *skips, int n_skips) {
    const BlockNorm norm = unet_norm(cfg);
    const int levels = cfg->n_ch_mult;
    char name[96];
    for (int i = 0; i < levels; i++) {
        int level = levels - 1 - i;
        int cout = cfg->ch * cfg->ch_mult[level];
        int attn = has_attention(cfg, cfg->image_size >> level);
        for (int j = 0; j <= cfg->num_res_blocks; j++) {
            int cat = net_concat(net, x, skips[--n_skips]);
            snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
            x = block_resnet(net, name, cat, temb, cout, norm);
            snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
            if (attn) x = block_attention(net, name, x, norm);
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
            x = block_upsample(net, name, x);
        }
    }
    x = net_groupnorm(net, "conv_norm_out", x, cfg->groups, UNET_GN_EPS, 1);
    return net_conv_padded(net, "conv_out", x, cfg->out_channels, 3, 1, 1, 1,
                           net_channels(net, x), io_compute_channels(net, cfg, cfg->out_channels));
}

Net *unet_build(const Backend *be, const Config *cfg, int max_batch, int input_grad) {
    if (cfg->n_ch_mult * (cfg->num_res_blocks + 1) + 1 > UNET_MAX_SKIPS)
        die("config: %d levels of %d blocks are more skip connections than %d", cfg->n_ch_mult,
            cfg->num_res_blocks, UNET_MAX_SKIPS);
    Net *net = net_create(be, max_batch);
    int x = net_add_input(net, "sample", NET_F32, cfg->image_size, cfg->image_size,
                          cfg->in_channels, input_grad);
    int t = net_add_input(net, "timestep", NET_F32, 1, 1, 1, 0);
    if (cfg->num_class_embeds > 0) net_add_input(net, "class_labels", NET_I32, 1, 1, 1, 0);
    int skips[UNET_MAX_SKIPS], n_skips, temb;
    int mid = unet_encoder(net, cfg, x, t, &temb, skips, &n_skips);
    net_add_output(net, "sample", unet_decoder(net, cfg, mid, temb, skips, n_skips));
    net_finish(net);
    return net;
}
