/* The generic tape (see graph.h): building, planning, the arena, forward, backward,
 * padded convs, the bf16 emulation of mixed precision, initialisation and parameter
 * layout conversion. No network lives here. */
#include "graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef enum {
    OP_CONV, OP_GROUPNORM, OP_SILU, OP_LINEAR, OP_ATTENTION, OP_UPSAMPLE, OP_CONCAT, OP_ADD,
    OP_ADD_BIAS, OP_DROPOUT, OP_TIMESTEP_EMBEDDING, OP_MEAN_POOL, OP_EMBEDDING, OP_GAUSSIAN_SAMPLE
} OpKind;

struct Tensor {
    int h, w, c;              /* per sample; vectors have h = w = 1 */
    NetDType dtype;
    int needs_grad;
    size_t offset, grad_offset;
    float *data, *grad;       /* (max_batch, h, w, c); data holds int32 for NET_I32 */
};

/* A padded conv's compute buffers (net_conv_padded): the input with zero channels
 * appended and its gradient, the output with extra channels and its gradient, the
 * weights and bias padded with zeros and their gradients. NULL where unused. */
typedef enum { PAD_X, PAD_DX, PAD_Y, PAD_DY, PAD_W, PAD_B, PAD_DW, PAD_DB, PAD_BUFFERS } PadBuffer;

struct Node {
    OpKind op;
    int in[2], out;           /* tensor ids; -1 when unused (OP_CONV: in[1] the residual) */
    int param[2];             /* weight, bias (or gamma, shift); -1 when unused */
    float in_beta[2];         /* 0: overwrite the input gradient, 1: add to it */
    ConvShape conv;           /* OP_CONV, with n = max_batch; c and oc are the compute
                                 channels, which padding may make larger than the
                                 parameters' (net_conv_padded) */
    int param_ic, param_oc;   /* OP_CONV: the parameters' channels */
    size_t pad_offset[PAD_BUFFERS]; /* OP_CONV padding buffers; SIZE_MAX: unused */
    float *pad[PAD_BUFFERS];
    float *bf16_input;        /* bf16 emulation, a conv or linear reading a network input:
                                 its bf16-rounded copy (the input itself stays as given) */
    int groups, fuse_silu;    /* OP_GROUPNORM */
    float eps;                /* OP_GROUPNORM */
    size_t stats_offset;
    float *mean, *rstd;       /* OP_GROUPNORM (max_batch, groups) */
    size_t probs_offset;
    float *probs;             /* OP_ATTENTION (max_batch, L, L) */
    int rows, k, n;           /* OP_LINEAR: rows per sample, in and out features;
                                 OP_EMBEDDING: rows = the table's rows */
    float p;                  /* OP_DROPOUT, OP_GROUPNORM: dropout probability */
    uint32_t layer;           /* the mask's RNG stream: the count of dropouts before it */
};

#define ARENA_ALIGN 16        /* floats: 64 bytes */

/* ---------------- building ---------------- */

static void *grow(void *array, int *capacity, int needed, size_t item) {
    if (needed <= *capacity) return array;
    *capacity = needed * 2;
    void *p = realloc(array, (size_t)*capacity * item);
    if (!p) die("out of memory building the network");
    return p;
}

static void check_building(const Net *net) {
    if (net->finished) die("internal: the network is already planned; it cannot grow");
}

static int new_tensor(Net *net, int h, int w, int c) {
    check_building(net);
    net->tensors = grow(net->tensors, &net->cap_tensors, net->n_tensors + 1, sizeof(Tensor));
    net->tensors[net->n_tensors] = (Tensor){.h = h, .w = w, .c = c, .needs_grad = 1};
    return net->n_tensors++;
}

static Node *new_node(Net *net, OpKind op, int in0, int in1, int out) {
    check_building(net);
    net->nodes = grow(net->nodes, &net->cap_nodes, net->n_nodes + 1, sizeof(Node));
    Node *node = &net->nodes[net->n_nodes++];
    *node = (Node){.op = op, .in = {in0, in1}, .out = out, .param = {-1, -1}};
    return node;
}

Net *net_create(const Backend *be, int max_batch) {
    if (max_batch < 1) die("internal: a network needs max_batch >= 1, got %d", max_batch);
    Net *net = xcalloc(1, sizeof *net);
    net->be = be;
    net->max_batch = max_batch;
    net->training = 1;
    return net;
}

static void add_port(NetPort *ports, int *count, const char *kind, const char *name, int tensor) {
    if (*count >= NET_MAX_PORTS) die("internal: more than %d %ss", NET_MAX_PORTS, kind);
    if (strlen(name) >= sizeof ports[0].name) die("internal: %s name '%s' too long", kind, name);
    snprintf(ports[*count].name, sizeof ports[0].name, "%s", name);
    ports[(*count)++].tensor = tensor;
}

int net_add_input(Net *net, const char *name, NetDType dtype, int h, int w, int c, int needs_grad) {
    int t = new_tensor(net, h, w, c);
    net->tensors[t].dtype = dtype;
    net->tensors[t].needs_grad = needs_grad && dtype == NET_F32;
    add_port(net->inputs, &net->n_inputs, "input", name, t);
    return t;
}

void net_add_output(Net *net, const char *name, int tensor) {
    add_port(net->outputs, &net->n_outputs, "output", name, tensor);
}

int net_param(Net *net, ParamLayout layout, int fan_in, int ndim, const int64_t *shape,
              const char *fmt, ...) {
    check_building(net);
    int cap = net->n_params;   /* capacity tracked through n_params powers of two */
    if ((cap & (cap - 1)) == 0) {
        net->params = realloc(net->params, (size_t)(cap ? 2 * cap : 1) * sizeof(ParamInfo));
        if (!net->params) die("out of memory building the network");
    }
    ParamInfo *p = &net->params[net->n_params];
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
    p->offset = net->num_parameters;
    net->num_parameters += p->numel;
    return net->n_params++;
}

ConvShape *net_conv_shapes(const Net *net, int *count) {
    ConvShape *shapes = xcalloc((size_t)net->n_nodes + 1, sizeof *shapes);
    *count = 0;
    for (int i = 0; i < net->n_nodes; i++)
        if (net->nodes[i].op == OP_CONV) shapes[(*count)++] = net->nodes[i].conv;
    return shapes;
}

int net_channels(const Net *net, int t) { return net->tensors[t].c; }
int net_height(const Net *net, int t) { return net->tensors[t].h; }
int net_width(const Net *net, int t) { return net->tensors[t].w; }

static int net_conv_general(Net *net, const char *prefix, int x, int oc, int kernel,
                            int stride, int pad_lo, int pad_hi, int compute_ic, int compute_oc,
                            int residual, int *deferred_bias);

int net_conv(Net *net, const char *prefix, int x, int oc, int kernel, int stride, int pad_lo,
             int pad_hi) {
    return net_conv_general(net, prefix, x, oc, kernel, stride, pad_lo, pad_hi,
                            net_channels(net, x), oc, -1, NULL);
}

int net_conv_fused(Net *net, const char *prefix, int x, int oc, int kernel, int stride,
                   int pad_lo, int pad_hi, int residual, int *deferred_bias) {
    return net_conv_general(net, prefix, x, oc, kernel, stride, pad_lo, pad_hi,
                            net_channels(net, x), oc, residual, deferred_bias);
}

int net_conv_padded(Net *net, const char *prefix, int x, int oc, int kernel, int stride,
                    int pad_lo, int pad_hi, int compute_ic, int compute_oc) {
    return net_conv_general(net, prefix, x, oc, kernel, stride, pad_lo, pad_hi, compute_ic,
                            compute_oc, -1, NULL);
}

/* Both: compute channels (padding), a residual added where the output is written, and a
 * bias registered but deferred (folded into a later add). Padding takes neither of those. */
static int net_conv_general(Net *net, const char *prefix, int x, int oc, int kernel,
                            int stride, int pad_lo, int pad_hi, int compute_ic, int compute_oc,
                            int residual, int *deferred_bias) {
    const Tensor in = net->tensors[x];   /* a copy: new_tensor may move the array */
    int ic = in.c, fan_in = ic * kernel * kernel;
    if (compute_ic < ic || compute_oc < oc)
        die("internal: %s: compute channels %d -> %d below the parameters' %d -> %d", prefix,
            compute_ic, compute_oc, ic, oc);
    if ((compute_ic > ic || compute_oc > oc) && (residual >= 0 || deferred_bias))
        die("internal: %s: a padded conv takes no residual and no deferred bias", prefix);
    Node *node = new_node(net, OP_CONV, x, residual, -1);
    node->param[0] = net_param(net, PARAM_CONV, fan_in, 4, (int64_t[]){oc, ic, kernel, kernel},
                               "%s.weight", prefix);
    int bias = net_param(net, PARAM_PLAIN, fan_in, 1, (int64_t[]){oc}, "%s.bias", prefix);
    node->param[1] = deferred_bias ? -1 : bias;
    if (deferred_bias) *deferred_bias = bias;
    node->param_ic = ic;
    node->param_oc = oc;
    node->conv = (ConvShape){.n = net->max_batch, .h = in.h, .w = in.w, .c = compute_ic,
                             .oc = compute_oc,
                             .kh = kernel, .kw = kernel, .stride = stride, .pad_top = pad_lo,
                             .pad_left = pad_lo, .pad_bottom = pad_hi, .pad_right = pad_hi};
    conv_shape_finish(&node->conv);
    net->be->conv2d_prepare(&node->conv);
    if (node->conv.workspace_bytes > net->workspace_bytes)
        net->workspace_bytes = node->conv.workspace_bytes;
    int out = new_tensor(net, node->conv.oh, node->conv.ow, oc);
    net->nodes[net->n_nodes - 1].out = out;
    if (residual >= 0 && net_per_sample(net, residual) != net_per_sample(net, out))
        die("internal: %s: a residual of %zu for an output of %zu", prefix,
            net_per_sample(net, residual), net_per_sample(net, out));
    return out;
}

/* Dropout streams are numbered by the dropouts before them, not by node index, so that
 * fusing nodes leaves every mask as it was. */
static uint32_t next_dropout_layer(const Net *net) {
    uint32_t layers = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *node = &net->nodes[i];
        layers += node->op == OP_DROPOUT || (node->op == OP_GROUPNORM && node->p > 0.0f);
    }
    return layers;
}

int net_groupnorm(Net *net, const char *prefix, int x, int groups, float eps, int fuse_silu) {
    return net_groupnorm_dropout(net, prefix, x, groups, eps, fuse_silu, 0.0f);
}

int net_groupnorm_dropout(Net *net, const char *prefix, int x, int groups, float eps,
                          int fuse_silu, float p) {
    int c = net_channels(net, x);
    uint32_t layer = next_dropout_layer(net);
    if (c % groups) die("internal: %s: %d groups do not divide %d channels", prefix, groups, c);
    int out = new_tensor(net, net->tensors[x].h, net->tensors[x].w, c);
    Node *node = new_node(net, OP_GROUPNORM, x, -1, out);
    node->groups = groups;
    node->eps = eps;
    node->fuse_silu = fuse_silu;
    node->p = p;
    node->layer = layer;
    int gamma = net_param(net, PARAM_PLAIN, 0, 1, (int64_t[]){c}, "%s.weight", prefix);
    net->params[gamma].is_norm_weight = 1;
    net->nodes[net->n_nodes - 1].param[0] = gamma;
    net->nodes[net->n_nodes - 1].param[1] =
        net_param(net, PARAM_PLAIN, 0, 1, (int64_t[]){c}, "%s.bias", prefix);
    return out;
}

static int unary(Net *net, OpKind op, int x) {
    const Tensor t = net->tensors[x];
    int out = new_tensor(net, t.h, t.w, t.c);
    new_node(net, op, x, -1, out);
    return out;
}

static int binary(Net *net, OpKind op, int a, int b, int out_c) {
    int out = new_tensor(net, net->tensors[a].h, net->tensors[a].w, out_c);
    new_node(net, op, a, b, out);
    return out;
}

int net_silu(Net *net, int x) { return unary(net, OP_SILU, x); }
int net_upsample2x(Net *net, int x) {
    const Tensor t = net->tensors[x];
    int up = new_tensor(net, 2 * t.h, 2 * t.w, t.c);
    new_node(net, OP_UPSAMPLE, x, -1, up);
    return up;
}

int net_add(Net *net, int a, int b) {
    if (net_per_sample(net, a) != net_per_sample(net, b)) die("internal: add of unequal shapes");
    return binary(net, OP_ADD, a, b, net_channels(net, a));
}

int net_add_bias(Net *net, int x, int bias) { return net_add_bias_with(net, x, bias, -1); }

int net_add_bias_with(Net *net, int x, int bias, int channel_bias) {
    if (net_per_sample(net, bias) != (size_t)net_channels(net, x))
        die("internal: a bias of %zu for %d channels", net_per_sample(net, bias),
            net_channels(net, x));
    if (channel_bias >= 0 && net->params[channel_bias].numel != (size_t)net_channels(net, x))
        die("internal: a channel bias of %zu for %d channels", net->params[channel_bias].numel,
            net_channels(net, x));
    int out = binary(net, OP_ADD_BIAS, x, bias, net_channels(net, x));
    net->nodes[net->n_nodes - 1].param[1] = channel_bias;
    return out;
}

int net_concat(Net *net, int a, int b) {
    return binary(net, OP_CONCAT, a, b, net_channels(net, a) + net_channels(net, b));
}

int net_dropout(Net *net, int x, float p) {
    uint32_t layer = next_dropout_layer(net);
    int out = unary(net, OP_DROPOUT, x);
    Node *node = &net->nodes[net->n_nodes - 1];
    node->p = p;
    node->layer = layer;
    return out;
}

int net_linear_with(Net *net, int x, int n_out, int weight, int bias) {
    const Tensor t = net->tensors[x];
    int out = new_tensor(net, t.h, t.w, n_out);
    Node *node = new_node(net, OP_LINEAR, x, -1, out);
    node->rows = t.h * t.w;
    node->k = t.c;
    node->n = n_out;
    node->param[0] = weight;
    node->param[1] = bias;
    return out;
}

int net_linear(Net *net, const char *prefix, int x, int n_out) {
    int k = net_channels(net, x);
    int w = net_param(net, PARAM_PLAIN, k, 2, (int64_t[]){n_out, k}, "%s.weight", prefix);
    int b = net_param(net, PARAM_PLAIN, k, 1, (int64_t[]){n_out}, "%s.bias", prefix);
    return net_linear_with(net, x, n_out, w, b);
}

int net_attention(Net *net, int qkv) {
    const Tensor t = net->tensors[qkv];
    if (t.c % 3) die("internal: attention needs [q | k | v] rows, got %d channels", t.c);
    int out = new_tensor(net, t.h, t.w, t.c / 3);
    new_node(net, OP_ATTENTION, qkv, -1, out);
    return out;
}

int net_embedding(Net *net, const char *prefix, int ids, int rows, int dim) {
    if (net->tensors[ids].dtype != NET_I32 || net_per_sample(net, ids) != 1)
        die("internal: %s: an embedding reads one int32 id per sample", prefix);
    int out = new_tensor(net, 1, 1, dim);
    new_node(net, OP_EMBEDDING, ids, -1, out);
    int table = net_param(net, PARAM_PLAIN, 0, 2, (int64_t[]){rows, dim}, "%s.weight", prefix);
    net->params[table].is_embedding = 1;
    net->nodes[net->n_nodes - 1].param[0] = table;
    net->nodes[net->n_nodes - 1].rows = rows;
    return out;
}

int net_mean_pool(Net *net, int x) {
    int out = new_tensor(net, 1, 1, net_channels(net, x));
    new_node(net, OP_MEAN_POOL, x, -1, out);
    return out;
}

int net_gaussian_sample(Net *net, int moments, int noise) {
    const Tensor m = net->tensors[moments], z = net->tensors[noise];
    if (m.c % 2 || m.h != z.h || m.w != z.w || z.c != m.c / 2)
        die("internal: a posterior sample needs moments (H, W, 2C) and noise (H, W, C)");
    return binary(net, OP_GAUSSIAN_SAMPLE, moments, noise, m.c / 2);
}

int net_timestep_embedding(Net *net, int t, int dim) {
    int out = new_tensor(net, 1, 1, dim);
    net->tensors[out].needs_grad = 0;
    new_node(net, OP_TIMESTEP_EMBEDDING, t, -1, out);
    return out;
}

/* ---------------- planning and memory ---------------- */

static size_t tensor_floats(const Net *net, const Tensor *t) {
    return (size_t)net->max_batch * (size_t)t->h * (size_t)t->w * (size_t)t->c;
}

static size_t reserve(size_t *cursor, size_t floats) {
    size_t at = *cursor;
    *cursor += (floats + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    return at;
}

static int conv_is_padded(const Node *node) {
    return node->conv.c > node->param_ic || node->conv.oc > node->param_oc;
}

/* The buffers of a padded conv, and how many zeros its padding reads (*zeros grows to
 * the largest need): the zero channels come from one region of the arena that nothing
 * writes, since the arena starts zeroed. */
static void plan_conv_padding(Net *net, Node *node, size_t *cursor, size_t *zeros) {
    for (int k = 0; k < PAD_BUFFERS; k++) node->pad_offset[k] = SIZE_MAX;
    if (!conv_is_padded(node)) return;
    const ConvShape *s = &node->conv;
    const Tensor *in = &net->tensors[node->in[0]];
    size_t in_pixels = (size_t)net->max_batch * s->h * s->w;
    size_t out_pixels = (size_t)net->max_batch * s->oh * s->ow;
    size_t taps = (size_t)s->kh * s->kw;
    if (s->c > node->param_ic) {
        node->pad_offset[PAD_X] = reserve(cursor, in_pixels * s->c);
        if (in->needs_grad) node->pad_offset[PAD_DX] = reserve(cursor, in_pixels * s->c);
        size_t need = (in_pixels > s->oc * taps ? in_pixels : s->oc * taps) *
                      (size_t)(s->c - node->param_ic);
        if (need > *zeros) *zeros = need;
    }
    if (s->oc > node->param_oc) {
        node->pad_offset[PAD_Y] = reserve(cursor, out_pixels * s->oc);
        node->pad_offset[PAD_DY] = reserve(cursor, out_pixels * s->oc);
        size_t need = out_pixels * (size_t)(s->oc - node->param_oc);
        if (need > *zeros) *zeros = need;
    }
    node->pad_offset[PAD_W] = reserve(cursor, (size_t)s->oc * taps * s->c);
    node->pad_offset[PAD_B] = reserve(cursor, (size_t)s->oc);
    node->pad_offset[PAD_DW] = reserve(cursor, (size_t)s->oc * taps * s->c);
    node->pad_offset[PAD_DB] = reserve(cursor, (size_t)s->oc);
}

/* Lays out every buffer in one arena; returns its size in floats. */
static size_t plan_arena(Net *net) {
    size_t cursor = 0, zeros = 0;
    for (int i = 0; i < net->n_tensors; i++) {
        Tensor *t = &net->tensors[i];
        t->offset = reserve(&cursor, tensor_floats(net, t));
        if (t->needs_grad) t->grad_offset = reserve(&cursor, tensor_floats(net, t));
    }
    for (int i = 0; i < net->n_nodes; i++) {
        Node *node = &net->nodes[i];
        if (node->op == OP_GROUPNORM)
            node->stats_offset = reserve(&cursor, 2 * (size_t)net->max_batch * node->groups);
        if (node->op == OP_ATTENTION) {
            size_t l = (size_t)net->tensors[node->out].h * net->tensors[node->out].w;
            node->probs_offset = reserve(&cursor, (size_t)net->max_batch * l * l);
            size_t ws = (size_t)net->max_batch * l * l * sizeof(float);
            if (ws > net->workspace_bytes) net->workspace_bytes = ws;
        }
        if (node->op == OP_CONV) plan_conv_padding(net, node, &cursor, &zeros);
    }
    net->zeros_offset = reserve(&cursor, zeros);
    return cursor;
}

static void bind_arena(Net *net) {
    float *base = net->arena;
    for (int i = 0; i < net->n_tensors; i++) {
        Tensor *t = &net->tensors[i];
        t->data = base + t->offset;
        t->grad = t->needs_grad ? base + t->grad_offset : NULL;
    }
    for (int i = 0; i < net->n_nodes; i++) {
        Node *node = &net->nodes[i];
        if (node->op == OP_GROUPNORM) {
            node->mean = base + node->stats_offset;
            node->rstd = node->mean + (size_t)net->max_batch * node->groups;
        }
        if (node->op == OP_ATTENTION) node->probs = base + node->probs_offset;
        if (node->op == OP_CONV)
            for (int k = 0; k < PAD_BUFFERS; k++)
                node->pad[k] = node->pad_offset[k] == SIZE_MAX ? NULL : base + node->pad_offset[k];
    }
    net->zeros = base + net->zeros_offset;
}

/* Decides, for each node input, whether backward overwrites or adds to its gradient. */
static void plan_gradient_sums(Net *net) {
    char *reached = xcalloc((size_t)net->n_tensors, 1);
    /* the caller writes the outputs' gradients before backward: a node that also reads an
     * output (the autoencoder's moments feed its KL and its sample) adds to it */
    for (int i = 0; i < net->n_outputs; i++) reached[net->outputs[i].tensor] = 1;
    for (int i = net->n_nodes - 1; i >= 0; i--) {
        Node *node = &net->nodes[i];
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
static size_t node_params_end(const Net *net, const Node *node) {
    size_t end = 0;
    for (int j = 0; j < 2; j++) {
        if (node->param[j] < 0) continue;
        const ParamInfo *p = &net->params[node->param[j]];
        /* a linear node may span several registered parameters (the fused qkv projection) */
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
static void plan_final_gradients(Net *net) {
    net->final_from = xmalloc((size_t)(net->n_nodes > 0 ? net->n_nodes : 1) * sizeof(size_t));
    size_t highest = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        net->final_from[i] = highest;
        size_t end = node_params_end(net, &net->nodes[i]);
        if (end > highest) highest = end;
    }
}

void net_finish(Net *net) {
    check_building(net);
    plan_gradient_sums(net);
    plan_final_gradients(net);
    const Backend *be = net->be;
    size_t floats = plan_arena(net);
    net->arena = be->alloc(floats * sizeof(float));
    bind_arena(net);
    net->workspace = net->workspace_bytes ? be->alloc(net->workspace_bytes) : NULL;
    net->weights = be->alloc(net->num_parameters * sizeof(float));
    net->grads = be->alloc(net->num_parameters * sizeof(float));
    net->finished = 1;
}

void net_free(Net *net) {
    if (!net) return;
    const Backend *be = net->be;
    if (net->finished) {
        be->release(net->arena);
        be->release(net->workspace);
        be->release(net->weights);
        be->release(net->grads);
        be->release(net->compute_weights);
        for (int i = 0; i < net->n_nodes; i++) be->release(net->nodes[i].bf16_input);
    }
    free(net->final_from);
    free(net->nodes);
    free(net->tensors);
    free(net->params);
    free(net);
}

/* ---------------- running ---------------- */

static size_t per_sample(const Tensor *t) { return (size_t)t->h * t->w * t->c; }

static const float *param_ptr(const Net *net, const float *base, int param) {
    return param < 0 ? NULL : base + net->params[param].offset;
}

/* What a node reads and writes, resolved for a batch of n. */
typedef struct {
    const Tensor *a, *b, *y;   /* inputs (NULL when unused) and output */
    const float *w, *bias;     /* parameters (NULL when unused) */
    size_t count;              /* output elements */
    RngKey dropout_key;        /* this layer's dropout stream */
} NodeIO;

static NodeIO node_io(const Net *net, const Node *node, int n, const float *weights,
                      RngKey dropout_key) {
    NodeIO io = {
        .a = node->in[0] >= 0 ? &net->tensors[node->in[0]] : NULL,
        .b = node->in[1] >= 0 ? &net->tensors[node->in[1]] : NULL,
        .y = &net->tensors[node->out],
        .w = param_ptr(net, weights, node->param[0]),
        .bias = param_ptr(net, weights, node->param[1]),
        .dropout_key = dropout_key,
    };
    io.count = (size_t)n * per_sample(io.y);
    io.dropout_key.stream = RNG_STREAM_DROPOUT + node->layer;
    return io;
}

/* Training: the mask applied into the output's own buffer. Evaluation: dropout is the
 * identity, so the output shares its input's memory and no op runs. */
static void dropout_forward_node(Net *net, const Node *node, int n, RngKey key) {
    Tensor *y = &net->tensors[node->out];
    const Tensor *a = &net->tensors[node->in[0]];
    if (!net->training) {
        y->data = a->data;
        return;
    }
    y->data = (float *)net->arena + y->offset;
    net->be->dropout_forward(y->data, a->data, n, per_sample(y), node->p, key);
}

/* What a conv or linear node reads as its input: the bf16 copy of a network input under
 * the bf16 emulation, else the tensor itself. */
static const float *gemm_input(const Node *node, const Tensor *a) {
    return node->bf16_input ? node->bf16_input : a->data;
}

/* A padded conv (net_conv_padded) runs on compute buffers: the input gets zero channels
 * appended, the weights zero input channels and zero output rows, the bias zero
 * entries; the output keeps the parameters' first channels. */
static void conv_forward_padded(Net *net, const Node *node, int n, const NodeIO *io) {
    const Backend *be = net->be;
    ConvShape s = node->conv;
    s.n = n;
    const int ic = node->param_ic, oc = node->param_oc;
    const size_t taps = (size_t)s.kh * s.kw, in_pixels = (size_t)n * s.h * s.w;
    const float *x = gemm_input(node, io->a);
    float *w = node->pad[PAD_W], *y = node->pad[PAD_Y] ? node->pad[PAD_Y] : io->y->data;
    if (s.c > ic) {
        be->concat_forward(node->pad[PAD_X], x, net->zeros, in_pixels, ic, s.c - ic);
        be->concat_forward(w, io->w, net->zeros, (size_t)oc * taps, ic, s.c - ic);
        x = node->pad[PAD_X];
    } else {
        be->copy(w, io->w, (size_t)oc * taps * s.c * sizeof(float));
    }
    /* rows oc.. of w and entries oc.. of the bias stay the arena's zeros */
    be->copy(node->pad[PAD_B], io->bias, (size_t)oc * sizeof(float));
    be->conv2d_forward(&s, y, x, w, node->pad[PAD_B], NULL, net->workspace);
    if (node->pad[PAD_Y])
        be->concat_backward(io->y->data, 0.0f, NULL, 0.0f, y, (size_t)n * s.oh * s.ow, oc,
                            s.oc - oc);
}

/* Its backward: the output gradient padded with zeros, then the padding's gradients
 * dropped (only the parameters' and the input's own channels are kept). */
static void conv_backward_padded(Net *net, const Node *node, int n, const NodeIO *io,
                                 float *da, float beta_a, float *dw, float *dbias) {
    const Backend *be = net->be;
    ConvShape s = node->conv;
    s.n = n;
    const int ic = node->param_ic, oc = node->param_oc;
    const size_t taps = (size_t)s.kh * s.kw, in_pixels = (size_t)n * s.h * s.w;
    const float *dy = io->y->grad, *x = s.c > ic ? node->pad[PAD_X] : gemm_input(node, io->a);
    if (node->pad[PAD_DY]) {
        be->concat_forward(node->pad[PAD_DY], dy, net->zeros, (size_t)n * s.oh * s.ow, oc,
                           s.oc - oc);
        dy = node->pad[PAD_DY];
    }
    float *dx = s.c > ic ? (da ? node->pad[PAD_DX] : NULL) : da;
    be->conv2d_backward(&s, dx, s.c > ic ? 0.0f : beta_a, node->pad[PAD_DW], node->pad[PAD_DB],
                        dy, x, node->pad[PAD_W], net->workspace);
    if (dx && s.c > ic) be->concat_backward(da, beta_a, NULL, 0.0f, dx, in_pixels, ic, s.c - ic);
    be->concat_backward(dw, 0.0f, NULL, 0.0f, node->pad[PAD_DW], (size_t)oc * taps, ic, s.c - ic);
    be->copy(dbias, node->pad[PAD_DB], (size_t)oc * sizeof(float));
}

static void forward_node(Net *net, const Node *node, int n, const float *weights,
                         RngKey dropout_key) {
    const Backend *be = net->be;
    NodeIO io = node_io(net, node, n, weights, dropout_key);
    const Tensor *a = io.a, *b = io.b, *y = io.y;
    const float *w = io.w, *bias = io.bias;
    size_t count = io.count;
    switch (node->op) {
    case OP_CONV: {
        if (conv_is_padded(node)) {
            conv_forward_padded(net, node, n, &io);
            break;
        }
        ConvShape s = node->conv;
        s.n = n;
        be->conv2d_forward(&s, y->data, gemm_input(node, a), w, bias, b ? b->data : NULL,
                           net->workspace);
        break;
    }
    case OP_GROUPNORM:
        be->groupnorm_forward(y->data, node->mean, node->rstd, a->data, w, bias, n, a->h * a->w,
                              a->c, node->groups, node->eps, node->fuse_silu,
                              net->training ? node->p : 0.0f, io.dropout_key);
        break;
    case OP_SILU: be->silu_forward(y->data, a->data, count); break;
    case OP_LINEAR:
        be->linear_forward(y->data, gemm_input(node, a), w, bias, n * node->rows, node->k,
                           node->n);
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
    case OP_ADD_BIAS:
        be->add_bias_forward(y->data, a->data, b->data, bias, n, a->h * a->w, a->c);
        break;
    case OP_DROPOUT: dropout_forward_node(net, node, n, io.dropout_key); break;
    case OP_TIMESTEP_EMBEDDING:
        be->timestep_embedding(y->data, a->data, n, y->c);
        break;
    case OP_MEAN_POOL: be->mean_pool_forward(y->data, a->data, n, a->h * a->w, a->c); break;
    case OP_EMBEDDING:
        be->embedding_forward(y->data, (const int32_t *)a->data, w, n, y->c);
        break;
    case OP_GAUSSIAN_SAMPLE:
        be->gaussian_sample_forward(y->data, a->data, b->data, n, a->h * a->w, y->c);
        break;
    }
}

/* The folded conv bias's gradient: the sum of dy over all N*HW rows, taken from the
 * per-sample sums dbias (N, C) when add_bias_backward has just overwritten them. */
static void channel_bias_backward(const Backend *be, float *dchannel, const float *dbias,
                                  float beta_bias, const float *dy, int n, int hw, int c) {
    if (dbias && beta_bias == 0.0f) be->add_bias_backward(dchannel, 0.0f, dbias, 1, n, c);
    else be->add_bias_backward(dchannel, 0.0f, dy, 1, n * hw, c);
}

static void backward_node(Net *net, const Node *node, int n, RngKey dropout_key) {
    const Backend *be = net->be;
    NodeIO io = node_io(net, node, n, net->compute_weights ? net->compute_weights : net->weights,
                        dropout_key);
    const Tensor *a = io.a, *b = io.b, *y = io.y;
    const float *w = io.w, *bias = io.bias;
    size_t count = io.count;
    float *dw = (float *)param_ptr(net, net->grads, node->param[0]);
    float *dbias = (float *)param_ptr(net, net->grads, node->param[1]);
    float *da = a ? a->grad : NULL, *db = b ? b->grad : NULL;
    float beta_a = node->in_beta[0], beta_b = node->in_beta[1];
    switch (node->op) {
    case OP_CONV: {
        if (conv_is_padded(node)) {
            conv_backward_padded(net, node, n, &io, da, beta_a, dw, dbias);
            break;
        }
        ConvShape s = node->conv;
        s.n = n;
        be->conv2d_backward(&s, da, beta_a, dw, dbias, y->grad, gemm_input(node, a), w,
                            net->workspace);
        if (db) be->accumulate(db, beta_b, y->grad, count);   /* the residual's gradient */
        break;
    }
    case OP_GROUPNORM:
        be->groupnorm_backward(da, beta_a, dw, dbias, y->grad, a->data, node->mean, node->rstd, w,
                               bias, n, a->h * a->w, a->c, node->groups, node->fuse_silu,
                               net->training ? node->p : 0.0f, io.dropout_key);
        break;
    case OP_SILU: be->silu_backward(da, beta_a, y->grad, a->data, count); break;
    case OP_LINEAR:
        be->linear_backward(da, beta_a, dw, dbias, y->grad, gemm_input(node, a), w,
                            n * node->rows, node->k, node->n);
        break;
    case OP_ATTENTION:
        /* the qkv projection output has no other reader, so its gradient is overwritten */
        be->attention_backward(da, y->grad, a->data, node->probs, n, y->h * y->w, y->c,
                               1.0f / sqrtf((float)y->c), net->workspace);
        break;
    case OP_UPSAMPLE: be->upsample2x_backward(da, beta_a, y->grad, n, a->h, a->w, a->c); break;
    case OP_CONCAT:
        be->concat_backward(da, beta_a, db, beta_b, y->grad, (size_t)n * y->h * y->w, a->c, b->c);
        break;
    case OP_ADD:
        if (da) be->accumulate(da, beta_a, y->grad, count);
        if (db) be->accumulate(db, beta_b, y->grad, count);
        break;
    case OP_ADD_BIAS:
        if (da) be->accumulate(da, beta_a, y->grad, count);
        if (db) be->add_bias_backward(db, beta_b, y->grad, n, a->h * a->w, a->c);
        if (dbias) channel_bias_backward(be, dbias, db, beta_b, y->grad, n, a->h * a->w, a->c);
        break;
    case OP_DROPOUT:
        if (da && net->training)
            be->dropout_backward(da, beta_a, y->grad, n, per_sample(y), node->p, io.dropout_key);
        else if (da)
            be->accumulate(da, beta_a, y->grad, count);
        break;
    case OP_TIMESTEP_EMBEDDING: break;
    case OP_MEAN_POOL:
        if (da) be->mean_pool_backward(da, beta_a, y->grad, n, a->h * a->w, a->c);
        break;
    case OP_EMBEDDING:
        be->embedding_backward(dw, y->grad, (const int32_t *)a->data, n, node->rows, y->c);
        break;
    case OP_GAUSSIAN_SAMPLE:
        be->gaussian_sample_backward(da, beta_a, y->grad, a->data, b->data, n, a->h * a->w, y->c);
        break;
    }
}

static void check_batch(const Net *net, int n) {
    if (!net->finished) die("internal: the network runs only after net_finish");
    if (n < 1 || n > net->max_batch) die("batch %d outside [1, %d]", n, net->max_batch);
}

/* ---------------- bf16 emulation ---------------- */

static int is_network_input(const Net *net, int tensor) {
    for (int i = 0; i < net->n_inputs; i++)
        if (net->inputs[i].tensor == tensor) return 1;
    return 0;
}

void net_use_bf16(Net *net) {
    if (!net->finished) die("internal: net_use_bf16 comes after net_finish");
    if (net->compute_weights) return;
    net->compute_weights = net->be->alloc(net->num_parameters * sizeof(float));
    net->compute_source = NULL;
    for (int i = 0; i < net->n_nodes; i++) {
        Node *node = &net->nodes[i];
        const Tensor *a = node->in[0] >= 0 ? &net->tensors[node->in[0]] : NULL;
        if ((node->op == OP_CONV || node->op == OP_LINEAR) && a && a->dtype == NET_F32 &&
            is_network_input(net, node->in[0]))
            node->bf16_input = net->be->alloc(tensor_floats(net, a) * sizeof(float));
    }
}

void net_weights_changed(Net *net) { net->compute_source = NULL; }

void net_compute_weights_match(Net *net, const float *source) { net->compute_source = source; }

/* The bf16 copy of `source`, rounded afresh unless it already mirrors it. */
static const float *bf16_weights(Net *net, const float *source) {
    if (net->compute_source != source) {
        net->be->copy(net->compute_weights, source, net->num_parameters * sizeof(float));
        net->be->round_bf16(net->compute_weights, net->num_parameters);
        net->compute_source = source;
    }
    return net->compute_weights;
}

static void round_tensor(const Net *net, const Tensor *t, float *data, int n) {
    if (data && t->dtype == NET_F32) net->be->round_bf16(data, (size_t)n * per_sample(t));
}

/* After a node's forward: its output is stored in bf16. */
static void round_node_output(const Net *net, const Node *node, int n) {
    const Tensor *y = &net->tensors[node->out];
    round_tensor(net, y, y->data, n);
}

/* After a node's backward: the activation gradients it wrote are stored in bf16. */
static void round_node_input_grads(const Net *net, const Node *node, int n) {
    for (int j = 0; j < 2; j++)
        if (node->in[j] >= 0) {
            const Tensor *t = &net->tensors[node->in[j]];
            round_tensor(net, t, t->grad, n);
        }
}

/* ---------------- profiling (profile.h) ---------------- */

static ProfileCategory node_category(const Node *node) {
    switch (node->op) {
    case OP_CONV: return PROF_CONV_FORWARD;
    case OP_GROUPNORM: return PROF_NORM;
    case OP_LINEAR:
    case OP_ATTENTION: return PROF_GEMM;
    default: return PROF_ELEMENTWISE;
    }
}

/* A convolution's weight gradient alone, for the profile's split by direction (a padded
 * conv's, which runs on its own buffers, is not split: its whole backward counts as data). */
static void conv_weight_gradient(Net *net, const Node *node, int n) {
    ConvShape s = node->conv;
    s.n = n;
    const float *weights = net->compute_weights ? net->compute_weights : net->weights;
    float *dw = (float *)param_ptr(net, net->grads, node->param[0]);
    net->be->conv2d_backward(&s, NULL, 0.0f, dw, NULL, net->tensors[node->out].grad,
                             gemm_input(node, &net->tensors[node->in[0]]),
                             param_ptr(net, weights, node->param[0]), net->workspace);
}

static void profiled_backward_node(Net *net, const Node *node, int n, RngKey dropout_key) {
    Profile *p = net->profile;
    double weights_ms = 0, start;
    if (node->op == OP_CONV && !conv_is_padded(node)) {
        start = profile_begin(p);
        conv_weight_gradient(net, node, n);
        weights_ms = profile_end(p, PROF_CONV_BACKWARD_WEIGHTS, start, 0);
    }
    start = profile_begin(p);
    backward_node(net, node, n, dropout_key);
    if (node->op != OP_CONV) {
        profile_end(p, node_category(node), start, 1);
        return;
    }
    const double whole_ms = profile_end(p, PROF_CONV_BACKWARD_DATA, start, 1);
    /* the whole backward formed the weight gradient again: take that time back out */
    p->ms[PROF_CONV_BACKWARD_DATA] -= whole_ms < weights_ms ? whole_ms : weights_ms;
}

double net_forward_flops(const Net *net) {
    double flops = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *node = &net->nodes[i];
        const Tensor *y = &net->tensors[node->out];
        if (node->op == OP_CONV)
            flops += 2.0 * node->conv.oh * node->conv.ow * node->conv.oc * node->conv.kh *
                     node->conv.kw * node->conv.c;
        else if (node->op == OP_LINEAR)
            flops += 2.0 * node->rows * node->k * node->n;
        else if (node->op == OP_ATTENTION)   /* q k^T and probs v */
            flops += 4.0 * (double)y->h * y->w * y->h * y->w * y->c;
    }
    return flops;
}

/* ---------------- running ---------------- */

void net_forward(Net *net, int n, const float *weights, RngKey dropout_key) {
    check_batch(net, n);
    const float *w = weights ? weights : net->weights;
    if (net->compute_weights) w = bf16_weights(net, w);
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *node = &net->nodes[i];
        const double start = profile_begin(net->profile);
        if (node->bf16_input) {   /* a GEMM reads bf16, as autocast casts its input */
            size_t count = (size_t)n * per_sample(&net->tensors[node->in[0]]);
            net->be->copy(node->bf16_input, net->tensors[node->in[0]].data, count * sizeof(float));
            net->be->round_bf16(node->bf16_input, count);
        }
        forward_node(net, node, n, w, dropout_key);
        if (net->compute_weights) round_node_output(net, node, n);
        profile_end(net->profile, node_category(node), start, 1);
    }
}

void net_backward(Net *net, int n, RngKey dropout_key) {
    check_batch(net, n);
    for (int i = 0; net->compute_weights && i < net->n_outputs; i++) {
        const Tensor *t = &net->tensors[net->outputs[i].tensor];
        round_tensor(net, t, t->grad, n);   /* the loss's gradient, stored in bf16 */
    }
    for (int i = net->n_nodes - 1; i >= 0; i--) {
        if (net->profile) profiled_backward_node(net, &net->nodes[i], n, dropout_key);
        else backward_node(net, &net->nodes[i], n, dropout_key);
        if (net->compute_weights) round_node_input_grads(net, &net->nodes[i], n);
        if (net->grads_ready) net->grads_ready(net->grads_ready_ctx, net->final_from[i]);
    }
}

static int find_port(const NetPort *ports, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (strcmp(ports[i].name, name) == 0) return ports[i].tensor;
    return -1;
}

int net_input(const Net *net, const char *name) {
    return find_port(net->inputs, net->n_inputs, name);
}

int net_output(const Net *net, const char *name) {
    return find_port(net->outputs, net->n_outputs, name);
}

void *net_data(const Net *net, int tensor) { return net->tensors[tensor].data; }
float *net_grad(const Net *net, int tensor) { return net->tensors[tensor].grad; }
size_t net_per_sample(const Net *net, int tensor) { return per_sample(&net->tensors[tensor]); }

static int need_port(int tensor, const char *kind, const char *name) {
    if (tensor < 0) die("internal: the network has no %s '%s'", kind, name);
    return tensor;
}

void *net_input_data(const Net *net, const char *name) {
    return net_data(net, need_port(net_input(net, name), "input", name));
}

float *net_input_grad(const Net *net, const char *name) {
    return net_grad(net, need_port(net_input(net, name), "input", name));
}

float *net_output_data(const Net *net, const char *name) {
    return net_data(net, need_port(net_output(net, name), "output", name));
}

float *net_output_grad(const Net *net, const char *name) {
    return net_grad(net, need_port(net_output(net, name), "output", name));
}

/* ---------------- parameters ---------------- */

const ParamInfo *net_find_param(const Net *net, const char *name) {
    for (int i = 0; i < net->n_params; i++)
        if (strcmp(net->params[i].name, name) == 0) return &net->params[i];
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

void net_init_weights(Net *net, uint64_t seed, float *host_weights) {
    float *host = host_weights ? host_weights : xmalloc(net->num_parameters * sizeof(float));
    float *torch_order = NULL;
    for (int i = 0; i < net->n_params; i++) {
        const ParamInfo *p = &net->params[i];
        torch_order = realloc(torch_order, p->numel * sizeof(float));
        if (!torch_order) die("out of memory initialising the weights");
        RngKey key = {seed, RNG_STREAM_INIT, (uint32_t)i, 0};
        float bound = p->fan_in ? 1.0f / sqrtf((float)p->fan_in) : 0.0f;
        for (size_t e = 0; e < p->numel; e++)
            torch_order[e] = p->is_embedding ? philox_normal(key, 0, e)
                             : p->fan_in   ? bound * (2.0f * philox_uniform(key, 0, e) - 1.0f)
                                           : (p->is_norm_weight ? 1.0f : 0.0f);
        param_from_torch(p, torch_order, host + p->offset);
    }
    free(torch_order);
    if (!host_weights) {
        net->be->to_device(net->weights, host, net->num_parameters * sizeof(float));
        net_weights_changed(net);
        free(host);
    }
}
