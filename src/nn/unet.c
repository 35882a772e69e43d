/* The DDPM U-Net as a tape of backend ops (see unet.h).
 *
 * Building: each layer helper registers its parameters under the diffusers name,
 * appends nodes, and returns the id of its output tensor. Tensor sizes are per
 * sample; the batch is supplied at run time. Backward walks the tape in reverse;
 * a tensor read by several nodes gets its gradient summed: the first node to
 * reach it in reverse order overwrites (beta 0), the others add (beta 1). */
#include "unet.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef enum {
    OP_CONV, OP_GROUPNORM, OP_SILU, OP_LINEAR, OP_ATTENTION, OP_UPSAMPLE, OP_CONCAT, OP_ADD,
    OP_ADD_BIAS, OP_DROPOUT, OP_TIMESTEP_EMBEDDING
} OpKind;

struct Tensor {
    int h, w, c;              /* per sample; vectors have h = w = 1 */
    int needs_grad;
    size_t offset, grad_offset;
    float *data, *grad;       /* (max_batch, h, w, c) */
};

struct Node {
    OpKind op;
    int in[2], out;           /* tensor ids; -1 when unused */
    int param[2];             /* weight, bias (or gamma, shift); -1 when unused */
    float in_beta[2];         /* 0: overwrite the input gradient, 1: add to it */
    ConvShape conv;           /* OP_CONV, with n = max_batch */
    int groups, fuse_silu;    /* OP_GROUPNORM */
    size_t stats_offset;
    float *mean, *rstd;       /* OP_GROUPNORM (max_batch, groups) */
    size_t probs_offset;
    float *probs;             /* OP_ATTENTION (max_batch, L, L) */
    int rows, k, n;           /* OP_LINEAR: rows per sample, in and out features */
    uint32_t layer;           /* OP_DROPOUT: index for the mask's RNG stream */
};

#define GN_EPS 1e-6f
#define ARENA_ALIGN 16        /* floats: 64 bytes */

/* ---------------- building ---------------- */

static void *grow(void *array, int *capacity, int needed, size_t item) {
    if (needed <= *capacity) return array;
    *capacity = needed * 2;
    void *p = realloc(array, (size_t)*capacity * item);
    if (!p) die("out of memory building the network");
    return p;
}

static int new_tensor(UNet *m, int h, int w, int c) {
    m->tensors = grow(m->tensors, &m->cap_tensors, m->n_tensors + 1, sizeof(Tensor));
    m->tensors[m->n_tensors] = (Tensor){.h = h, .w = w, .c = c, .needs_grad = 1};
    return m->n_tensors++;
}

static Node *new_node(UNet *m, OpKind op, int in0, int in1, int out) {
    m->nodes = grow(m->nodes, &m->cap_nodes, m->n_nodes + 1, sizeof(Node));
    Node *node = &m->nodes[m->n_nodes++];
    *node = (Node){.op = op, .in = {in0, in1}, .out = out, .param = {-1, -1}};
    return node;
}

static int add_param(UNet *m, ParamLayout layout, int fan_in, int ndim, const int64_t *shape,
                     const char *fmt, ...) {
    int cap = m->n_params;   /* capacity tracked through n_params powers of two */
    if ((cap & (cap - 1)) == 0) {
        m->params = realloc(m->params, (size_t)(cap ? 2 * cap : 1) * sizeof(ParamInfo));
        if (!m->params) die("out of memory building the network");
    }
    ParamInfo *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->layout = layout;
    p->fan_in = fan_in;
    p->offset = m->num_parameters;
    m->num_parameters += p->numel;
    return m->n_params++;
}

static int tensor_c(const UNet *m, int t) { return m->tensors[t].c; }

static int conv(UNet *m, const char *prefix, int x, int oc, int kernel, int stride, int pad_lo,
                int pad_hi) {
    const Tensor in = m->tensors[x];   /* a copy: new_tensor may move the array */
    int ic = in.c, fan_in = ic * kernel * kernel;
    Node *node = new_node(m, OP_CONV, x, -1, -1);
    node->param[0] = add_param(m, PARAM_CONV, fan_in, 4, (int64_t[]){oc, ic, kernel, kernel},
                               "%s.weight", prefix);
    node->param[1] = add_param(m, PARAM_PLAIN, fan_in, 1, (int64_t[]){oc}, "%s.bias", prefix);
    node->conv = (ConvShape){.n = m->max_batch, .h = in.h, .w = in.w, .c = ic, .oc = oc,
                             .kh = kernel, .kw = kernel, .stride = stride, .pad_top = pad_lo,
                             .pad_left = pad_lo, .pad_bottom = pad_hi, .pad_right = pad_hi};
    conv_shape_finish(&node->conv);
    m->be->conv2d_prepare(&node->conv);
    if (node->conv.workspace_bytes > m->workspace_bytes)
        m->workspace_bytes = node->conv.workspace_bytes;
    int out = new_tensor(m, node->conv.oh, node->conv.ow, oc);
    node->out = out;
    return out;
}

static int conv3x3(UNet *m, const char *prefix, int x, int oc) {
    return conv(m, prefix, x, oc, 3, 1, 1, 1);
}

static int groupnorm(UNet *m, const char *prefix, int x, int fuse_silu) {
    int c = tensor_c(m, x);
    int out = new_tensor(m, m->tensors[x].h, m->tensors[x].w, c);
    Node *node = new_node(m, OP_GROUPNORM, x, -1, out);
    node->groups = m->groups;
    node->fuse_silu = fuse_silu;
    int gamma = add_param(m, PARAM_PLAIN, 0, 1, (int64_t[]){c}, "%s.weight", prefix);
    m->params[gamma].is_norm_weight = 1;
    node->param[0] = gamma;
    node->param[1] = add_param(m, PARAM_PLAIN, 0, 1, (int64_t[]){c}, "%s.bias", prefix);
    return out;
}

static int unary(UNet *m, OpKind op, int x) {
    const Tensor t = m->tensors[x];
    int out = new_tensor(m, t.h, t.w, t.c);
    new_node(m, op, x, -1, out);
    return out;
}

static int binary(UNet *m, OpKind op, int a, int b, int out_c) {
    int out = new_tensor(m, m->tensors[a].h, m->tensors[a].w, out_c);
    new_node(m, op, a, b, out);
    return out;
}

/* Linear over the last dimension; weight and bias are registered by the caller. */
static int linear_node(UNet *m, int x, int n_out, int weight, int bias) {
    const Tensor t = m->tensors[x];
    int out = new_tensor(m, t.h, t.w, n_out);
    Node *node = new_node(m, OP_LINEAR, x, -1, out);
    node->rows = t.h * t.w;
    node->k = t.c;
    node->n = n_out;
    node->param[0] = weight;
    node->param[1] = bias;
    return out;
}

static int linear(UNet *m, const char *prefix, int x, int n_out) {
    int k = tensor_c(m, x);
    int w = add_param(m, PARAM_PLAIN, k, 2, (int64_t[]){n_out, k}, "%s.weight", prefix);
    int b = add_param(m, PARAM_PLAIN, k, 1, (int64_t[]){n_out}, "%s.bias", prefix);
    return linear_node(m, x, n_out, w, b);
}

static int resnet_block(UNet *m, const char *prefix, int x, int temb_act, int cout) {
    char name[96];
    snprintf(name, sizeof name, "%s.norm1", prefix);
    int h = groupnorm(m, name, x, 1);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    h = conv3x3(m, name, h, cout);
    snprintf(name, sizeof name, "%s.time_emb_proj", prefix);
    int proj = linear(m, name, temb_act, cout);
    h = binary(m, OP_ADD_BIAS, h, proj, cout);
    snprintf(name, sizeof name, "%s.norm2", prefix);
    h = groupnorm(m, name, h, 1);
    if (m->dropout > 0) {
        h = unary(m, OP_DROPOUT, h);
        m->nodes[m->n_nodes - 1].layer = (uint32_t)(m->n_nodes - 1);
    }
    snprintf(name, sizeof name, "%s.conv2", prefix);
    h = conv3x3(m, name, h, cout);
    int shortcut = x;
    if (tensor_c(m, x) != cout) {
        snprintf(name, sizeof name, "%s.conv_shortcut", prefix);
        shortcut = conv(m, name, x, cout, 1, 1, 0, 0);
    }
    return binary(m, OP_ADD, shortcut, h, cout);
}

/* q, k and v are registered back to back, so their weights form one (3C, C)
 * matrix and their biases one (3C) vector: a single GEMM projects all three. */
static int attention_block(UNet *m, const char *prefix, int x) {
    int c = tensor_c(m, x);
    char name[96];
    snprintf(name, sizeof name, "%s.group_norm", prefix);
    int h = groupnorm(m, name, x, 0);
    int wq = -1, bq = -1;
    const char *proj[3] = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) {
        int w = add_param(m, PARAM_PLAIN, c, 2, (int64_t[]){c, c}, "%s.%s.weight", prefix, proj[i]);
        if (i == 0) wq = w;
    }
    for (int i = 0; i < 3; i++) {
        int b = add_param(m, PARAM_PLAIN, c, 1, (int64_t[]){c}, "%s.%s.bias", prefix, proj[i]);
        if (i == 0) bq = b;
    }
    int qkv = linear_node(m, h, 3 * c, wq, bq);
    int att = new_tensor(m, m->tensors[x].h, m->tensors[x].w, c);
    new_node(m, OP_ATTENTION, qkv, -1, att);
    snprintf(name, sizeof name, "%s.to_out.0", prefix);
    int out = linear(m, name, att, c);
    return binary(m, OP_ADD, out, x, c);
}

static int downsample(UNet *m, const char *prefix, int x) {
    /* DDPM pads only the right and bottom before a stride-2, padding-0 conv */
    return conv(m, prefix, x, tensor_c(m, x), 3, 2, 0, 1);
}

static int upsample(UNet *m, const char *prefix, int x) {
    const Tensor t = m->tensors[x];
    int up = new_tensor(m, 2 * t.h, 2 * t.w, t.c);
    new_node(m, OP_UPSAMPLE, x, -1, up);
    return conv3x3(m, prefix, up, m->tensors[x].c);
}

static int time_embedding(UNet *m) {
    int sinusoid = new_tensor(m, 1, 1, m->ch);
    m->tensors[sinusoid].needs_grad = 0;
    new_node(m, OP_TIMESTEP_EMBEDDING, -1, -1, sinusoid);
    int h = linear(m, "time_embedding.linear_1", sinusoid, m->temb_dim);
    h = unary(m, OP_SILU, h);
    h = linear(m, "time_embedding.linear_2", h, m->temb_dim);
    /* every ResNet block applies SiLU to the embedding first: compute it once */
    return unary(m, OP_SILU, h);
}

static int has_attention(const Config *cfg, int resolution) {
    for (int i = 0; i < cfg->n_attn_resolutions; i++)
        if (cfg->attn_resolutions[i] == resolution) return 1;
    return 0;
}

static void build(UNet *m, const Config *cfg) {
    int levels = cfg->n_ch_mult;
    int skips[64], n_skips = 0;
    char name[96];
    m->input = new_tensor(m, cfg->image_size, cfg->image_size, cfg->in_channels);
    m->tensors[m->input].needs_grad = 0;
    int temb = time_embedding(m);
    int x = conv3x3(m, "conv_in", m->input, m->ch);
    skips[n_skips++] = x;
    for (int i = 0; i < levels; i++) {
        int cout = cfg->ch * cfg->ch_mult[i];
        int attn = has_attention(cfg, cfg->image_size >> i);
        for (int j = 0; j < cfg->num_res_blocks; j++) {
            snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
            x = resnet_block(m, name, x, temb, cout);
            snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
            if (attn) x = attention_block(m, name, x);
            skips[n_skips++] = x;
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
            x = downsample(m, name, x);
            skips[n_skips++] = x;
        }
    }
    int cmid = tensor_c(m, x);
    x = resnet_block(m, "mid_block.resnets.0", x, temb, cmid);
    x = attention_block(m, "mid_block.attentions.0", x);
    x = resnet_block(m, "mid_block.resnets.1", x, temb, cmid);
    for (int i = 0; i < levels; i++) {
        int level = levels - 1 - i;
        int cout = cfg->ch * cfg->ch_mult[level];
        int attn = has_attention(cfg, cfg->image_size >> level);
        for (int j = 0; j <= cfg->num_res_blocks; j++) {
            int skip = skips[--n_skips];
            int cat = binary(m, OP_CONCAT, x, skip, tensor_c(m, x) + tensor_c(m, skip));
            snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
            x = resnet_block(m, name, cat, temb, cout);
            snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
            if (attn) x = attention_block(m, name, x);
        }
        if (i + 1 < levels) {
            snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
            x = upsample(m, name, x);
        }
    }
    x = groupnorm(m, "conv_norm_out", x, 1);
    m->output = conv3x3(m, "conv_out", x, cfg->out_channels);
}

/* ---------------- memory ---------------- */

static size_t tensor_floats(const UNet *m, const Tensor *t) {
    return (size_t)m->max_batch * (size_t)t->h * (size_t)t->w * (size_t)t->c;
}

static size_t reserve(size_t *cursor, size_t floats) {
    size_t at = *cursor;
    *cursor += (floats + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    return at;
}

/* Lays out every buffer in one arena; returns its size in floats. */
static size_t plan_arena(UNet *m) {
    size_t cursor = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = &m->tensors[i];
        t->offset = reserve(&cursor, tensor_floats(m, t));
        if (t->needs_grad) t->grad_offset = reserve(&cursor, tensor_floats(m, t));
    }
    for (int i = 0; i < m->n_nodes; i++) {
        Node *node = &m->nodes[i];
        if (node->op == OP_GROUPNORM)
            node->stats_offset = reserve(&cursor, 2 * (size_t)m->max_batch * node->groups);
        if (node->op == OP_ATTENTION) {
            size_t l = (size_t)m->tensors[node->out].h * m->tensors[node->out].w;
            node->probs_offset = reserve(&cursor, (size_t)m->max_batch * l * l);
            size_t ws = (size_t)m->max_batch * l * l * sizeof(float);
            if (ws > m->workspace_bytes) m->workspace_bytes = ws;
        }
    }
    return cursor;
}

static void bind_arena(UNet *m) {
    float *base = m->arena;
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = &m->tensors[i];
        t->data = base + t->offset;
        t->grad = t->needs_grad ? base + t->grad_offset : NULL;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        Node *node = &m->nodes[i];
        if (node->op == OP_GROUPNORM) {
            node->mean = base + node->stats_offset;
            node->rstd = node->mean + (size_t)m->max_batch * node->groups;
        }
        if (node->op == OP_ATTENTION) node->probs = base + node->probs_offset;
    }
}

/* Decides, for each node input, whether backward overwrites or adds to its gradient. */
static void plan_gradient_sums(UNet *m) {
    char *reached = xcalloc((size_t)m->n_tensors, 1);
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        Node *node = &m->nodes[i];
        for (int j = 0; j < 2; j++) {
            int t = node->in[j];
            if (t < 0) continue;
            node->in_beta[j] = reached[t] ? 1.0f : 0.0f;
            reached[t] = 1;
        }
    }
    free(reached);
}

/* End of the highest gradient range node writes (0 if it has no parameters). */
static size_t node_params_end(const UNet *m, const Node *node) {
    size_t end = 0;
    for (int j = 0; j < 2; j++) {
        if (node->param[j] < 0) continue;
        const ParamInfo *p = &m->params[node->param[j]];
        /* the fused qkv projection writes its three registered weights (or biases) */
        size_t numel = node->op == OP_LINEAR ? (j == 0 ? (size_t)node->n * node->k
                                                       : (size_t)node->n)
                                             : p->numel;
        if (p->offset + numel > end) end = p->offset + numel;
    }
    return end;
}

/* Backward runs nodes n-1 .. 0, and each gradient is written by one node only: after
 * node i, the gradients no earlier node writes are final, i.e. those at or above the
 * highest end written by nodes 0 .. i-1. */
static void plan_final_gradients(UNet *m) {
    m->final_from = xmalloc((size_t)(m->n_nodes > 0 ? m->n_nodes : 1) * sizeof(size_t));
    size_t highest = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        m->final_from[i] = highest;
        size_t end = node_params_end(m, &m->nodes[i]);
        if (end > highest) highest = end;
    }
}

UNet *unet_create(const Backend *be, const Config *cfg, int max_batch) {
    UNet *m = xcalloc(1, sizeof *m);
    m->be = be;
    m->image_size = cfg->image_size;
    m->in_channels = cfg->in_channels;
    m->out_channels = cfg->out_channels;
    m->ch = cfg->ch;
    m->temb_dim = 4 * cfg->ch;
    m->groups = cfg->groups;
    m->dropout = (float)cfg->dropout;
    m->max_batch = max_batch;
    m->training = 1;
    build(m, cfg);
    plan_gradient_sums(m);
    plan_final_gradients(m);
    size_t floats = plan_arena(m);
    m->arena = be->alloc(floats * sizeof(float));
    bind_arena(m);
    m->workspace = m->workspace_bytes ? be->alloc(m->workspace_bytes) : NULL;
    m->weights = be->alloc(m->num_parameters * sizeof(float));
    m->grads = be->alloc(m->num_parameters * sizeof(float));
    m->timesteps = be->alloc((size_t)max_batch * sizeof(int32_t));
    m->timesteps_float = be->alloc((size_t)max_batch * sizeof(float));
    m->timesteps_staging = xmalloc((size_t)max_batch * sizeof(float));
    return m;
}

void unet_set_timesteps(UNet *m, const int32_t *t, int n) {
    for (int i = 0; i < n; i++) m->timesteps_staging[i] = (float)t[i];
    m->be->to_device(m->timesteps, t, (size_t)n * sizeof(int32_t));
    m->be->to_device(m->timesteps_float, m->timesteps_staging, (size_t)n * sizeof(float));
}

void unet_free(UNet *m) {
    if (!m) return;
    const Backend *be = m->be;
    be->release(m->arena);
    be->release(m->workspace);
    be->release(m->weights);
    be->release(m->grads);
    be->release(m->timesteps);
    be->release(m->timesteps_float);
    free(m->timesteps_staging);
    free(m->final_from);
    free(m->nodes);
    free(m->tensors);
    free(m->params);
    free(m);
}

/* ---------------- running ---------------- */

static size_t per_sample(const Tensor *t) { return (size_t)t->h * t->w * t->c; }

static float *param_ptr(const UNet *m, float *base, int param) {
    return param < 0 ? NULL : base + m->params[param].offset;
}

/* What a node reads and writes, resolved for a batch of n. */
typedef struct {
    const Tensor *a, *b, *y;   /* inputs (NULL when unused) and output */
    float *w, *bias;           /* parameters (NULL when unused) */
    size_t count;              /* output elements */
    RngKey dropout_key;        /* this layer's dropout stream */
} NodeIO;

static NodeIO node_io(const UNet *m, const Node *node, int n, RngKey dropout_key) {
    NodeIO io = {
        .a = node->in[0] >= 0 ? &m->tensors[node->in[0]] : NULL,
        .b = node->in[1] >= 0 ? &m->tensors[node->in[1]] : NULL,
        .y = &m->tensors[node->out],
        .w = param_ptr(m, m->weights, node->param[0]),
        .bias = param_ptr(m, m->weights, node->param[1]),
        .dropout_key = dropout_key,
    };
    io.count = (size_t)n * per_sample(io.y);
    io.dropout_key.stream = RNG_STREAM_DROPOUT + node->layer;
    return io;
}

static void forward_node(UNet *m, const Node *node, int n, RngKey dropout_key) {
    const Backend *be = m->be;
    NodeIO io = node_io(m, node, n, dropout_key);
    const Tensor *a = io.a, *b = io.b, *y = io.y;
    float *w = io.w, *bias = io.bias;
    size_t count = io.count;
    switch (node->op) {
    case OP_CONV: {
        ConvShape s = node->conv;
        s.n = n;
        be->conv2d_forward(&s, y->data, a->data, w, bias, m->workspace);
        break;
    }
    case OP_GROUPNORM:
        be->groupnorm_forward(y->data, node->mean, node->rstd, a->data, w, bias, n, a->h * a->w,
                              a->c, node->groups, GN_EPS, node->fuse_silu);
        break;
    case OP_SILU: be->silu_forward(y->data, a->data, count); break;
    case OP_LINEAR:
        be->linear_forward(y->data, a->data, w, bias, n * node->rows, node->k, node->n);
        break;
    case OP_ATTENTION:
        be->attention_forward(y->data, node->probs, a->data, n, y->h * y->w, y->c,
                              1.0f / sqrtf((float)y->c));
        break;
    case OP_UPSAMPLE: be->upsample2x_forward(y->data, a->data, n, a->h, a->w, a->c); break;
    case OP_CONCAT:
        be->concat_forward(y->data, a->data, b->data, (size_t)n * y->h * y->w, a->c, b->c);
        break;
    case OP_ADD: be->add_forward(y->data, a->data, b->data, count); break;
    case OP_ADD_BIAS: be->add_bias_forward(y->data, a->data, b->data, n, a->h * a->w, a->c); break;
    case OP_DROPOUT:
        if (m->training)
            be->dropout_forward(y->data, a->data, n, per_sample(y), m->dropout, io.dropout_key);
        else
            be->copy(y->data, a->data, count * sizeof(float));
        break;
    case OP_TIMESTEP_EMBEDDING: be->timestep_embedding(y->data, m->timesteps_float, n, y->c); break;
    }
}

static void backward_node(UNet *m, const Node *node, int n, RngKey dropout_key) {
    const Backend *be = m->be;
    NodeIO io = node_io(m, node, n, dropout_key);
    const Tensor *a = io.a, *b = io.b, *y = io.y;
    float *w = io.w, *bias = io.bias;
    size_t count = io.count;
    float *dw = param_ptr(m, m->grads, node->param[0]);
    float *dbias = param_ptr(m, m->grads, node->param[1]);
    float *da = a ? a->grad : NULL, *db = b ? b->grad : NULL;
    float beta_a = node->in_beta[0], beta_b = node->in_beta[1];
    switch (node->op) {
    case OP_CONV: {
        ConvShape s = node->conv;
        s.n = n;
        be->conv2d_backward(&s, da, beta_a, dw, dbias, y->grad, a->data, w, m->workspace);
        break;
    }
    case OP_GROUPNORM:
        be->groupnorm_backward(da, beta_a, dw, dbias, y->grad, a->data, node->mean, node->rstd, w,
                               bias, n, a->h * a->w, a->c, node->groups, node->fuse_silu);
        break;
    case OP_SILU: be->silu_backward(da, beta_a, y->grad, a->data, count); break;
    case OP_LINEAR:
        be->linear_backward(da, beta_a, dw, dbias, y->grad, a->data, w, n * node->rows, node->k,
                            node->n);
        break;
    case OP_ATTENTION:
        /* the qkv projection output has no other reader, so its gradient is overwritten */
        be->attention_backward(da, y->grad, a->data, node->probs, n, y->h * y->w, y->c,
                               1.0f / sqrtf((float)y->c), m->workspace);
        break;
    case OP_UPSAMPLE: be->upsample2x_backward(da, beta_a, y->grad, n, a->h, a->w, a->c); break;
    case OP_CONCAT:
        be->concat_backward(da, beta_a, db, beta_b, y->grad, (size_t)n * y->h * y->w, a->c, b->c);
        break;
    case OP_ADD:
        be->accumulate(da, beta_a, y->grad, count);
        be->accumulate(db, beta_b, y->grad, count);
        break;
    case OP_ADD_BIAS:
        be->accumulate(da, beta_a, y->grad, count);
        be->add_bias_backward(db, beta_b, y->grad, n, a->h * a->w, a->c);
        break;
    case OP_DROPOUT:
        be->dropout_backward(da, beta_a, y->grad, n, per_sample(y), m->dropout, io.dropout_key);
        break;
    case OP_TIMESTEP_EMBEDDING: break;
    }
}

void unet_forward(UNet *m, int n, RngKey dropout_key) {
    if (n < 1 || n > m->max_batch) die("batch %d outside [1, %d]", n, m->max_batch);
    for (int i = 0; i < m->n_nodes; i++) forward_node(m, &m->nodes[i], n, dropout_key);
}

void unet_backward(UNet *m, int n, RngKey dropout_key) {
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        backward_node(m, &m->nodes[i], n, dropout_key);
        if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, m->final_from[i]);
    }
}

float *unet_input(UNet *m) { return m->tensors[m->input].data; }
float *unet_output(UNet *m) { return m->tensors[m->output].data; }
float *unet_output_grad(UNet *m) { return m->tensors[m->output].grad; }
size_t unet_sample_size(const UNet *m) { return per_sample(&m->tensors[m->input]); }
size_t unet_output_sample_size(const UNet *m) { return per_sample(&m->tensors[m->output]); }

/* ---------------- parameters ---------------- */

const ParamInfo *unet_find_param(const UNet *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

/* (OC, IC, KH, KW) <-> (OC, KH, KW, IC); plain parameters are copied. */
static void convert_layout(const ParamInfo *p, const float *src, float *dst, int to_torch) {
    if (p->layout == PARAM_PLAIN) {
        memcpy(dst, src, p->numel * sizeof(float));
        return;
    }
    size_t oc = (size_t)p->shape[0], ic = (size_t)p->shape[1];
    size_t taps = (size_t)p->shape[2] * (size_t)p->shape[3];
    for (size_t o = 0; o < oc; o++)
        for (size_t i = 0; i < ic; i++)
            for (size_t k = 0; k < taps; k++) {
                size_t torch_index = (o * ic + i) * taps + k;
                size_t internal_index = (o * taps + k) * ic + i;
                if (to_torch) dst[torch_index] = src[internal_index];
                else dst[internal_index] = src[torch_index];
            }
}

void param_to_torch(const ParamInfo *p, const float *internal, float *torch) {
    convert_layout(p, internal, torch, 1);
}

void param_from_torch(const ParamInfo *p, const float *torch, float *internal) {
    convert_layout(p, torch, internal, 0);
}

void unet_init_weights(UNet *m, uint64_t seed, float *host_weights) {
    float *host = host_weights ? host_weights : xmalloc(m->num_parameters * sizeof(float));
    float *torch_order = NULL;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        torch_order = realloc(torch_order, p->numel * sizeof(float));
        RngKey key = {seed, RNG_STREAM_INIT, (uint32_t)i, 0};
        float bound = p->fan_in ? 1.0f / sqrtf((float)p->fan_in) : 0.0f;
        for (size_t e = 0; e < p->numel; e++)
            torch_order[e] = p->fan_in ? bound * (2.0f * philox_uniform(key, 0, e) - 1.0f)
                                       : (p->is_norm_weight ? 1.0f : 0.0f);
        param_from_torch(p, torch_order, host + p->offset);
    }
    free(torch_order);
    if (!host_weights) {
        m->be->to_device(m->weights, host, m->num_parameters * sizeof(float));
        free(host);
    }
}
