/* 2-D convolution on the CPU through oneDNN, NHWC, in every direction.
 *
 * Why: the im2col path (cpu_conv.c) copies each 3x3 convolution's input nine times in
 * each direction before its GEMM, and the copies cost about as much as the GEMMs do on a
 * 2-core machine. oneDNN (the library under PyTorch's CPU convolutions) has direct
 * kernels, JIT-compiled for the machine's vector ISA, that read NHWC activations in
 * place. The im2col path stays: it is the oracle the tests compare this one with, and
 * the path of builds without oneDNN.
 *
 * One entry per shape, batch included: the forward (plain, and one that sums onto y for a
 * residual: copied into y, then a sum post-op), backward-data and backward-weights
 * primitives, the reorders between our (OC, KH, KW, IC) weights and the blocked layout
 * each primitive chose, and memory objects whose data handles are set on every call.
 * conv2d_prepare makes the entry of the largest batch; a smaller batch (the last chunk of
 * a sampling run) gets its own entry the first time it runs, a one-time host allocation
 * like cpu_scratch's. Scratchpads are in user mode: oneDNN's temporaries are carved out of
 * the caller's workspace, so running a primitive allocates nothing.
 *
 * Workspace of an entry, each part 64-byte aligned:
 *   [scratchpad | weights in the layout of the primitive running | weight gradient in the
 *    backward-weights layout | dx (N,H,W,C) when beta != 0]. */
#include "cpu_conv_paths.h"

#ifdef DDPM_ONEDNN
#include <stdio.h>
#include <string.h>

#include "cpu_onednn.h"


/* A primitive with its scratchpad need; reorder is NULL when our layout is its layout. */
typedef struct {
    dnnl_primitive_t prim;
    size_t scratch_bytes;
} Prim;

typedef struct {
    Prim prim;                     /* ours -> theirs (weights) or theirs -> ours (gradient) */
    dnnl_memory_t theirs;          /* handle set to the workspace part */
    size_t bytes;                  /* of the blocked copy */
} WeightReorder;

typedef struct ConvEntry {
    ConvShape key;                 /* workspace_bytes and algo zeroed */
    Prim fwd, fwd_sum, bwd_data, bwd_weights;   /* fwd_sum: y += conv(x) + b */
    WeightReorder w_fwd, w_fwd_sum, w_bwd_data, dw;   /* dw.prim: theirs -> ours */
    dnnl_memory_t src, dst, weights, bias, diff_src, diff_dst, diff_weights, scratch;
    float *zero_bias;              /* (OC) zeros: a bias-free call runs the same primitive */
    size_t dx_bytes;
    size_t offset_weights, offset_dw, offset_dx, total_bytes;
    struct ConvEntry *next;
} ConvEntry;

static ConvEntry *entries;

static size_t align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static ConvShape shape_key(const ConvShape *s) {
    ConvShape k = *s;
    k.workspace_bytes = 0;
    memset(k.algo, 0, sizeof k.algo);
    return k;
}

static int same_shape(const ConvShape *a, const ConvShape *b) {
    return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c && a->oc == b->oc &&
           a->kh == b->kh && a->kw == b->kw && a->stride == b->stride &&
           a->pad_top == b->pad_top && a->pad_left == b->pad_left &&
           a->pad_bottom == b->pad_bottom && a->pad_right == b->pad_right;
}

/* ---- descriptors ---- */

typedef struct {
    dnnl_memory_desc_t src, dst, weights_ours, weights_any, bias;
    dnnl_dims_t strides, pad_l, pad_r;
} ConvDescs;

static ConvDescs conv_descs(const ConvShape *s) {
    ConvDescs d;
    dnnl_dims_t src = {s->n, s->c, s->h, s->w}, dst = {s->n, s->oc, s->oh, s->ow};
    dnnl_dims_t weights = {s->oc, s->c, s->kh, s->kw}, bias = {s->oc};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&d.src, 4, src, dnnl_f32, dnnl_nhwc));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&d.dst, 4, dst, dnnl_f32, dnnl_nhwc));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&d.weights_ours, 4, weights, dnnl_f32, dnnl_ohwi));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&d.weights_any, 4, weights, dnnl_f32,
                                            dnnl_format_tag_any));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&d.bias, 1, bias, dnnl_f32, dnnl_x));
    d.strides[0] = d.strides[1] = s->stride;
    d.pad_l[0] = s->pad_top;
    d.pad_l[1] = s->pad_left;
    d.pad_r[0] = s->pad_bottom;
    d.pad_r[1] = s->pad_right;
    return d;
}

static dnnl_primitive_attr_t user_scratchpad_attr(void) {
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    return attr;
}

static size_t scratch_size(const_dnnl_primitive_desc_t pd) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return md ? dnnl_memory_desc_get_size(md) : 0;
}

/* Makes the primitive of pd (then destroys pd) and records its scratchpad size. */
static Prim make_prim(dnnl_primitive_desc_t pd) {
    Prim p = {.scratch_bytes = scratch_size(pd)};
    DNNL_CHECK(dnnl_primitive_create(&p.prim, pd));
    return p;
}

/* The reorder between our weight layout and `theirs`, or none when they are the same. */
static WeightReorder weight_reorder(const dnnl_memory_desc_t *ours,
                                    const dnnl_memory_desc_t *theirs, int to_ours) {
    WeightReorder r = {0};
    if (dnnl_memory_desc_equal(ours, theirs)) return r;
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd;
    const dnnl_memory_desc_t *from = to_ours ? theirs : ours, *to = to_ours ? ours : theirs;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, cpu_onednn_engine(), to,
                                                  cpu_onednn_engine(), attr));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    r.prim = make_prim(pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
    r.bytes = dnnl_memory_desc_get_size(theirs);
    DNNL_CHECK(dnnl_memory_create(&r.theirs, theirs, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    return r;
}

static const dnnl_memory_desc_t *chosen_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

/* The forward's descriptor; with add_to_dst a sum post-op makes it y += conv(x) + b. */
static dnnl_primitive_desc_t forward_pd(const ConvDescs *d, int add_to_dst) {
    dnnl_convolution_desc_t desc;
    DNNL_CHECK(dnnl_convolution_forward_desc_init(
        &desc, dnnl_forward_training, dnnl_convolution_direct, &d->src, &d->weights_any, &d->bias,
        &d->dst, d->strides, d->pad_l, d->pad_r));
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_post_ops_t post_ops = NULL;
    if (add_to_dst) {
        DNNL_CHECK(dnnl_post_ops_create(&post_ops));
        DNNL_CHECK(dnnl_post_ops_append_sum(post_ops, 1.0f));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    }
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, cpu_onednn_engine(), NULL));
    if (post_ops) DNNL_CHECK(dnnl_post_ops_destroy(post_ops));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    return pd;
}

static void make_forward(ConvEntry *e, const ConvDescs *d, dnnl_primitive_desc_t *fwd_pd) {
    *fwd_pd = forward_pd(d, 0);
    DNNL_CHECK(dnnl_primitive_create(&e->fwd.prim, *fwd_pd));
    e->fwd.scratch_bytes = scratch_size(*fwd_pd);
    e->w_fwd = weight_reorder(&d->weights_ours, chosen_md(*fwd_pd, dnnl_query_weights_md), 0);
    dnnl_primitive_desc_t sum_pd = forward_pd(d, 1);
    e->w_fwd_sum = weight_reorder(&d->weights_ours, chosen_md(sum_pd, dnnl_query_weights_md), 0);
    e->fwd_sum = make_prim(sum_pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy(sum_pd));
}

static void make_backward_data(ConvEntry *e, const ConvDescs *d,
                               const_dnnl_primitive_desc_t fwd_pd) {
    dnnl_convolution_desc_t desc;
    DNNL_CHECK(dnnl_convolution_backward_data_desc_init(
        &desc, dnnl_convolution_direct, &d->src, &d->weights_any, &d->dst, d->strides, d->pad_l,
        d->pad_r));
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, cpu_onednn_engine(), fwd_pd));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    e->w_bwd_data = weight_reorder(&d->weights_ours, chosen_md(pd, dnnl_query_weights_md), 0);
    e->bwd_data = make_prim(pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
}

/* Without a bias gradient: cpu_column_sums forms it in double, as the im2col path does. */
static void make_backward_weights(ConvEntry *e, const ConvDescs *d,
                                  const_dnnl_primitive_desc_t fwd_pd) {
    dnnl_convolution_desc_t desc;
    DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(
        &desc, dnnl_convolution_direct, &d->src, &d->weights_any, NULL, &d->dst, d->strides,
        d->pad_l, d->pad_r));
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, cpu_onednn_engine(), fwd_pd));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    e->dw = weight_reorder(&d->weights_ours, chosen_md(pd, dnnl_query_diff_weights_md), 1);
    e->bwd_weights = make_prim(pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
}

static size_t max_scratch(const ConvEntry *e) {
    const size_t all[] = {e->fwd.scratch_bytes,         e->fwd_sum.scratch_bytes,
                          e->bwd_data.scratch_bytes,    e->bwd_weights.scratch_bytes,
                          e->w_fwd.prim.scratch_bytes,  e->w_fwd_sum.prim.scratch_bytes,
                          e->w_bwd_data.prim.scratch_bytes, e->dw.prim.scratch_bytes};
    size_t most = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) most = all[i] > most ? all[i] : most;
    return most;
}

/* One weights part serves whichever primitive runs: a call uses one layout at a time. */
static void plan_workspace(ConvEntry *e, const ConvShape *s) {
    size_t weights = e->w_fwd.bytes;
    if (e->w_fwd_sum.bytes > weights) weights = e->w_fwd_sum.bytes;
    if (e->w_bwd_data.bytes > weights) weights = e->w_bwd_data.bytes;
    e->dx_bytes = (size_t)s->n * s->h * s->w * s->c * sizeof(float);
    e->offset_weights = align64(max_scratch(e));
    e->offset_dw = e->offset_weights + align64(weights);
    e->offset_dx = e->offset_dw + align64(e->dw.bytes);
    e->total_bytes = e->offset_dx + align64(e->dx_bytes);
}

static void make_memories(ConvEntry *e, const ConvDescs *d) {
    dnnl_memory_desc_t scratch;
    dnnl_dims_t bytes = {(dnnl_dim_t)(max_scratch(e) ? max_scratch(e) : 1)};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&scratch, 1, bytes, dnnl_u8, dnnl_x));
    DNNL_CHECK(dnnl_memory_create(&e->scratch, &scratch, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->src, &d->src, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->diff_src, &d->src, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->dst, &d->dst, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->diff_dst, &d->dst, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->weights, &d->weights_ours, cpu_onednn_engine(), DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->diff_weights, &d->weights_ours, cpu_onednn_engine(),
                                  DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->bias, &d->bias, cpu_onednn_engine(), DNNL_MEMORY_NONE));
}

static ConvEntry *make_entry(const ConvShape *s) {
    ConvEntry *e = xcalloc(1, sizeof *e);
    e->key = shape_key(s);
    ConvDescs d = conv_descs(s);
    dnnl_primitive_desc_t fwd_pd;
    make_forward(e, &d, &fwd_pd);
    make_backward_data(e, &d, fwd_pd);
    make_backward_weights(e, &d, fwd_pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy(fwd_pd));
    plan_workspace(e, s);
    make_memories(e, &d);
    e->zero_bias = xcalloc((size_t)s->oc, sizeof(float));
    e->next = entries;
    entries = e;
    return e;
}

static ConvEntry *entry_for(const ConvShape *s) {
    for (ConvEntry *e = entries; e; e = e->next)
        if (same_shape(&e->key, s)) return e;
    return make_entry(s);
}

/* ---- running ---- */

static void set_handle(dnnl_memory_t m, const void *p) {
    DNNL_CHECK(dnnl_memory_set_data_handle(m, (void *)p));
}

static void execute(const Prim *p, dnnl_memory_t scratch, int nargs, dnnl_exec_arg_t *args) {
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, scratch};
    DNNL_CHECK(dnnl_primitive_execute(p->prim, cpu_onednn_stream(), nargs, args));
    DNNL_CHECK(dnnl_stream_wait(cpu_onednn_stream()));
}

/* Our weights w, in the layout of the primitive that r reorders for (w itself if none). */
static dnnl_memory_t weights_for(ConvEntry *e, WeightReorder *r, const float *w, char *ws,
                                 size_t offset) {
    set_handle(e->weights, w);
    if (!r->prim.prim) return e->weights;
    set_handle(r->theirs, ws + offset);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, e->weights}, {DNNL_ARG_TO, r->theirs}};
    execute(&r->prim, e->scratch, 2, args);
    return r->theirs;
}

size_t onednn_conv_workspace(const ConvShape *s) { return entry_for(s)->total_bytes; }

/* y = conv(x) + b (+ residual, a buffer other than y: copied into y, then summed onto). */
void onednn_conv_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, const float *residual, void *workspace) {
    ConvEntry *e = entry_for(s);
    char *ws = workspace;
    set_handle(e->scratch, ws);
    dnnl_memory_t weights =
        weights_for(e, residual ? &e->w_fwd_sum : &e->w_fwd, w, ws, e->offset_weights);
    if (residual) cpu_copy(y, residual, (size_t)s->n * s->oh * s->ow * s->oc * sizeof(float));
    set_handle(e->src, x);
    set_handle(e->dst, y);
    set_handle(e->bias, b ? b : e->zero_bias);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, weights},
                               {DNNL_ARG_BIAS, e->bias}, {DNNL_ARG_DST, e->dst}};
    execute(residual ? &e->fwd_sum : &e->fwd, e->scratch, 4, args);
}

/* dx = beta*dx + the input gradient; beta = 0 writes it straight into dx. */
void onednn_conv_backward_data(const ConvShape *s, float *dx, float beta, const float *dy,
                               const float *w, void *workspace) {
    ConvEntry *e = entry_for(s);
    char *ws = workspace;
    set_handle(e->scratch, ws);
    dnnl_memory_t weights = weights_for(e, &e->w_bwd_data, w, ws, e->offset_weights);
    float *out = beta == 0.0f ? dx : (float *)(ws + e->offset_dx);
    set_handle(e->diff_dst, dy);
    set_handle(e->diff_src, out);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_DIFF_DST, e->diff_dst}, {DNNL_ARG_WEIGHTS, weights},
                               {DNNL_ARG_DIFF_SRC, e->diff_src}};
    execute(&e->bwd_data, e->scratch, 3, args);
    if (out != dx) cpu_accumulate(dx, beta, out, e->dx_bytes / sizeof(float));
}

/* dw (OC, KH, KW, C), overwritten. */
void onednn_conv_backward_weights(const ConvShape *s, float *dw, const float *dy,
                                  const float *x, void *workspace) {
    ConvEntry *e = entry_for(s);
    char *ws = workspace;
    set_handle(e->scratch, ws);
    set_handle(e->src, x);
    set_handle(e->diff_dst, dy);
    set_handle(e->diff_weights, dw);
    dnnl_memory_t out = e->diff_weights;
    if (e->dw.prim.prim) {
        set_handle(e->dw.theirs, ws + e->offset_dw);
        out = e->dw.theirs;
    }
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_DIFF_DST, e->diff_dst},
                               {DNNL_ARG_DIFF_WEIGHTS, out}};
    execute(&e->bwd_weights, e->scratch, 3, args);
    if (!e->dw.prim.prim) return;
    dnnl_exec_arg_t back[3] = {{DNNL_ARG_FROM, e->dw.theirs}, {DNNL_ARG_TO, e->diff_weights}};
    execute(&e->dw.prim, e->scratch, 2, back);
}

const char *onednn_version(void) {
    static char text[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(text, sizeof text, "%d.%d.%d", v->major, v->minor, v->patch);
    return text;
}

#endif
