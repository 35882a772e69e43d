/* The noisy classifier (classifier.h) over the U-Net's encoder half. */
#include "classifier.h"

#include "unet.h"
#include "util.h"

#define CLASSIFIER_GN_EPS 1e-6f
#define CLASSIFIER_MAX_SKIPS 64

Net *classifier_build(const Backend *be, const Config *cfg, int max_batch, int input_grad,
                      int *features) {
    if (cfg->num_classes < 2) die("config: a classifier needs num_classes >= 2");
    if (cfg->n_ch_mult * (cfg->num_res_blocks + 1) + 1 > CLASSIFIER_MAX_SKIPS)
        die("config: %d levels of %d blocks are too many for the classifier", cfg->n_ch_mult,
            cfg->num_res_blocks);
    Net *net = net_create(be, max_batch);
    int x = net_add_input(net, "sample", NET_F32, cfg->image_size, cfg->image_size,
                          cfg->in_channels, input_grad);
    int t = net_add_input(net, "timestep", NET_F32, 1, 1, 1, 0);
    int skips[CLASSIFIER_MAX_SKIPS], n_skips, temb;
    int h = unet_encoder(net, cfg, x, t, &temb, skips, &n_skips);
    h = net_groupnorm(net, "out.0", h, cfg->groups, CLASSIFIER_GN_EPS, 1);
    int pooled = net_mean_pool(net, h);
    net_add_output(net, "logits", net_linear(net, "out.2", pooled, cfg->num_classes));
    net_finish(net);
    if (features) *features = pooled;
    return net;
}
