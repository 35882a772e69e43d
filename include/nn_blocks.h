/* Blocks shared by the networks built on the graph, under diffusers' module names:
 * ResnetBlock2D, Attention (single head), the DDPM/AutoencoderKL down- and upsamplers,
 * and the U-Net's time embedding. Each returns the id of its output tensor. */
#ifndef DDPM_NN_BLOCKS_H
#define DDPM_NN_BLOCKS_H

#include "graph.h"

typedef struct {
    int groups;        /* GroupNorm groups */
    float eps;         /* GroupNorm eps */
    float dropout;     /* before conv2; 0: no dropout */
    int unfused;       /* 1: the ResBlock as separate nodes (the fused form's test oracle) */
} BlockNorm;

/* norm1+SiLU, conv1, (+ time_emb_proj(temb_act) when temb_act >= 0), norm2+SiLU, dropout,
 * conv2, plus the input (through a 1x1 conv_shortcut when the channels change). */
int block_resnet(Net *net, const char *prefix, int x, int temb_act, int cout, BlockNorm norm);
/* group_norm, one GEMM for to_q/to_k/to_v, softmax attention, to_out.0, plus the input. */
int block_attention(Net *net, const char *prefix, int x, BlockNorm norm);
/* 3x3 stride-2 conv that pads only the right and bottom (DDPM, AutoencoderKL). */
int block_downsample(Net *net, const char *prefix, int x);
/* nearest x2, then a 3x3 conv. */
int block_upsample(Net *net, const char *prefix, int x);
/* sinusoid(t) -> linear_1 -> SiLU -> linear_2 -> SiLU: the last SiLU is the one every
 * ResNet block applies to the embedding first, computed once. */
int block_time_embedding(Net *net, int t, int ch, int temb_dim);
/* The same with a class: row class_ids of "class_embedding.weight" (class_rows, temb_dim)
 * added after linear_2, before the SiLU (diffusers' UNet2DModel with num_class_embeds).
 * class_ids < 0: no class, as block_time_embedding. */
int block_time_class_embedding(Net *net, int t, int ch, int temb_dim, int class_ids,
                               int class_rows);

#endif
