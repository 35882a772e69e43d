/* Blocks shared by the networks (see nn_blocks.h). */
#include "nn_blocks.h"

#include <stdio.h>

/* The fused form (norm.unfused = 0) computes the same as the plain chain, in fewer passes:
 * conv1's bias is added with the time embedding's projection in one add_bias; norm2,
 * SiLU and dropout are one node; the skip add is done by the last conv as it writes its
 * output (conv2, or conv_shortcut with conv2's output as its residual). Parameters are
 * registered in the same order either way. */
int block_resnet(Net *net, const char *prefix, int x, int temb_act, int cout, BlockNorm norm) {
    const int fused = !norm.unfused;
    char name[96];
    snprintf(name, sizeof name, "%s.norm1", prefix);
    int h = net_groupnorm(net, name, x, norm.groups, norm.eps, 1);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    int fold_bias = fused && temb_act >= 0, conv1_bias = -1;
    h = net_conv_fused(net, name, h, cout, 3, 1, 1, 1, -1, fold_bias ? &conv1_bias : NULL);
    if (temb_act >= 0) {
        snprintf(name, sizeof name, "%s.time_emb_proj", prefix);
        int proj = net_linear(net, name, temb_act, cout);
        h = net_add_bias_with(net, h, proj, conv1_bias);
    }
    snprintf(name, sizeof name, "%s.norm2", prefix);
    if (fused) {
        h = net_groupnorm_dropout(net, name, h, norm.groups, norm.eps, 1, norm.dropout);
    } else {
        h = net_groupnorm(net, name, h, norm.groups, norm.eps, 1);
        if (norm.dropout > 0) h = net_dropout(net, h, norm.dropout);
    }
    const int project = net_channels(net, x) != cout;
    snprintf(name, sizeof name, "%s.conv2", prefix);
    h = net_conv_fused(net, name, h, cout, 3, 1, 1, 1, fused && !project ? x : -1, NULL);
    if (fused && !project) return h;
    int shortcut = x;
    if (project) {
        snprintf(name, sizeof name, "%s.conv_shortcut", prefix);
        shortcut = net_conv_fused(net, name, x, cout, 1, 1, 0, 0, fused ? h : -1, NULL);
        if (fused) return shortcut;
    }
    return net_add(net, shortcut, h);
}

/* q, k and v are registered back to back, so their weights form one (3C, C)
 * matrix and their biases one (3C) vector: a single GEMM projects all three. */
int block_attention(Net *net, const char *prefix, int x, BlockNorm norm) {
    int c = net_channels(net, x);
    char name[96];
    snprintf(name, sizeof name, "%s.group_norm", prefix);
    int h = net_groupnorm(net, name, x, norm.groups, norm.eps, 0);
    int wq = -1, bq = -1;
    const char *proj[3] = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) {
        int w = net_param(net, PARAM_PLAIN, c, 2, (int64_t[]){c, c}, "%s.%s.weight", prefix,
                          proj[i]);
        if (i == 0) wq = w;
    }
    for (int i = 0; i < 3; i++) {
        int b = net_param(net, PARAM_PLAIN, c, 1, (int64_t[]){c}, "%s.%s.bias", prefix, proj[i]);
        if (i == 0) bq = b;
    }
    int qkv = net_linear_with(net, h, 3 * c, wq, bq);
    int att = net_attention(net, qkv);
    snprintf(name, sizeof name, "%s.to_out.0", prefix);
    int out = net_linear(net, name, att, c);
    return net_add(net, out, x);
}

int block_downsample(Net *net, const char *prefix, int x) {
    return net_conv(net, prefix, x, net_channels(net, x), 3, 2, 0, 1);
}

int block_upsample(Net *net, const char *prefix, int x) {
    int up = net_upsample2x(net, x);
    return net_conv(net, prefix, up, net_channels(net, x), 3, 1, 1, 1);
}

int block_time_embedding(Net *net, int t, int ch, int temb_dim) {
    return block_time_class_embedding(net, t, ch, temb_dim, -1, 0);
}

int block_time_class_embedding(Net *net, int t, int ch, int temb_dim, int class_ids,
                               int class_rows) {
    int sinusoid = net_timestep_embedding(net, t, ch);
    int h = net_linear(net, "time_embedding.linear_1", sinusoid, temb_dim);
    h = net_silu(net, h);
    h = net_linear(net, "time_embedding.linear_2", h, temb_dim);
    if (class_ids >= 0)
        h = net_add(net, h, net_embedding(net, "class_embedding", class_ids, class_rows, temb_dim));
    return net_silu(net, h);
}
