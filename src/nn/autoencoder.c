/* The KL autoencoder as a builder over the graph (see autoencoder.h). */
#include "autoencoder.h"

#include <stdio.h>

#include "nn_blocks.h"
#include "util.h"

#define VAE_GN_EPS 1e-6f

static BlockNorm vae_norm(const Config *cfg) {
    return (BlockNorm){.groups = cfg->groups, .eps = VAE_GN_EPS, .dropout = 0.0f};
}

static int level_channels(const Config *cfg, int level) { return cfg->ch * cfg->ch_mult[level]; }

int autoencoder_latent_size(const Config *cfg) { return cfg->image_size >> (cfg->n_ch_mult - 1); }

static int mid_block(Net *net, const char *prefix, int x, BlockNorm norm) {
    char name[96];
    int c = net_channels(net, x);
    snprintf(name, sizeof name, "%s.mid_block.resnets.0", prefix);
    x = block_resnet(net, name, x, -1, c, norm);
    snprintf(name, sizeof name, "%s.mid_block.attentions.0", prefix);
    x = block_attention(net, name, x, norm);
    snprintf(name, sizeof name, "%s.mid_block.resnets.1", prefix);
    return block_resnet(net, name, x, -1, c, norm);
}

/* image -> moments (after quant_conv) */
static int encoder(Net *net, const Config *cfg, int x) {
    const BlockNorm norm = vae_norm(cfg);
    const int levels = cfg->n_ch_mult;
    char name[96];
    x = net_conv(net, "encoder.conv_in", x, level_channels(cfg, 0), 3, 1, 1, 1);
    for (int i = 0; i < levels; i++) {
        for (int j = 0; j < cfg->num_res_blocks; j++) {
            snprintf(name, sizeof name, "encoder.down_blocks.%d.resnets.%d", i, j);
            x = block_resnet(net, name, x, -1, level_channels(cfg, i), norm);
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            x = block_downsample(net, name, x);
        }
    }
    x = mid_block(net, "encoder", x, norm);
    x = net_groupnorm(net, "encoder.conv_norm_out", x, cfg->groups, VAE_GN_EPS, 1);
    x = net_conv(net, "encoder.conv_out", x, 2 * cfg->latent_channels, 3, 1, 1, 1);
    return net_conv(net, "quant_conv", x, 2 * cfg->latent_channels, 1, 1, 0, 0);
}

/* latent z -> image */
static int decoder(Net *net, const Config *cfg, int z) {
    const BlockNorm norm = vae_norm(cfg);
    const int levels = cfg->n_ch_mult;
    char name[96];
    z = net_conv(net, "post_quant_conv", z, cfg->latent_channels, 1, 1, 0, 0);
    int x = net_conv(net, "decoder.conv_in", z, level_channels(cfg, levels - 1), 3, 1, 1, 1);
    x = mid_block(net, "decoder", x, norm);
    for (int i = 0; i < levels; i++) {
        int level = levels - 1 - i;
        for (int j = 0; j <= cfg->num_res_blocks; j++) {
            snprintf(name, sizeof name, "decoder.up_blocks.%d.resnets.%d", i, j);
            x = block_resnet(net, name, x, -1, level_channels(cfg, level), norm);
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            x = block_upsample(net, name, x);
        }
    }
    x = net_groupnorm(net, "decoder.conv_norm_out", x, cfg->groups, VAE_GN_EPS, 1);
    return net_conv(net, "decoder.conv_out", x, cfg->out_channels, 3, 1, 1, 1);
}

static int image_input(Net *net, const Config *cfg, int needs_grad) {
    return net_add_input(net, "sample", NET_F32, cfg->image_size, cfg->image_size,
                         cfg->in_channels, needs_grad);
}

Net *autoencoder_build(const Backend *be, const Config *cfg, int max_batch, int input_grad) {
    const int side = autoencoder_latent_size(cfg);
    Net *net = net_create(be, max_batch);
    int x = image_input(net, cfg, input_grad);
    int noise = net_add_input(net, "noise", NET_F32, side, side, cfg->latent_channels, 0);
    int moments = encoder(net, cfg, x);
    int z = net_gaussian_sample(net, moments, noise);
    net_add_output(net, "sample", decoder(net, cfg, z));
    net_add_output(net, "moments", moments);
    if (cfg->learn_logvar) net_param(net, PARAM_PLAIN, 0, 1, (int64_t[]){1}, "logvar");
    net_finish(net);
    return net;
}

Net *autoencoder_encoder_build(const Backend *be, const Config *cfg, int max_batch) {
    Net *net = net_create(be, max_batch);
    net_add_output(net, "moments", encoder(net, cfg, image_input(net, cfg, 0)));
    net_finish(net);
    return net;
}

Net *autoencoder_decoder_build(const Backend *be, const Config *cfg, int max_batch) {
    const int side = autoencoder_latent_size(cfg);
    Net *net = net_create(be, max_batch);
    int z = net_add_input(net, "latent", NET_F32, side, side, cfg->latent_channels, 0);
    net_add_output(net, "sample", decoder(net, cfg, z));
    net_finish(net);
    return net;
}
