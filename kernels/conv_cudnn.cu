/* 2-D convolution on cuDNN, NHWC: x (N, H, W, C), w (OC, KH, KW, C) (cuDNN's NHWC
 * filter format, the same bytes), y (N, OH, OW, OC), cross-correlation as in PyTorch.
 *
 * conv2d_prepare runs cudnnFind*AlgorithmEx (measured, not heuristics) for the
 * forward, backward-data and backward-filter directions once per shape, keeps the
 * fastest deterministic algorithm of each in the plan cache (conv_algo_cache.h) with
 * its tensor descriptors, and sizes the workspace from them. The choices are also
 * written to a file that later runs read instead of measuring again, so that every
 * run on a machine computes with the same algorithms (open_choices below).
 * Math: strict fp32 (CUDNN_FMA_MATH; CUDNN_DEFAULT_MATH would allow TF32 on Ampere
 * and later) unless DDPM_TF32=1, which lets Find choose TF32 tensor-core kernels too.
 *
 * Bias: y is seeded with the bias and the convolution accumulates onto it (beta 1),
 * as the CPU backend seeds its GEMM. cudnnConvolutionBiasActivationForward is not
 * used: with an identity activation it only runs IMPLICIT_PRECOMP_GEMM, and its z
 * input (alpha2 = 0) is not documented as unread, so a stale NaN in y could leak.
 * The bias gradient is a deterministic column sum of dy (N*OH*OW, OC).
 *
 * Asymmetric padding (DDPM's downsampling pads only bottom/right) goes through a
 * padded copy of the input in the workspace: see conv_algo_cache.h. */
#include <ctype.h>
#include <string.h>

#include "column_sums.cuh"
#include "conv_algo_cache.h"
#include "cuda_ops.cuh"

/* Find's own workspace: algorithms that need more are not considered. */
#define FIND_WORKSPACE_LIMIT ((size_t)256 << 20)

typedef struct {
    cudnnTensorDescriptor_t x;          /* (N, C, H', W') NHWC: the input as cuDNN reads it */
    cudnnTensorDescriptor_t y;          /* (N, OC, OH, OW) NHWC */
    cudnnFilterDescriptor_t w;          /* (OC, C, KH, KW) NHWC: stored (OC, KH, KW, C) */
    cudnnConvolutionDescriptor_t conv;  /* symmetric padding (or 0), stride, cross-correlation */
} ConvDescriptors;

static ConvAlgoCache plans;
static ConvDescriptors descriptors[CONV_ALGO_CACHE_CAPACITY];   /* of plans.entries[i] */

static ConvDescriptors *descriptors_of(const ConvAlgoEntry *e) {
    return &descriptors[e - plans.entries];
}

static void describe(ConvDescriptors *d, const ConvShape *s) {
    cudnnCheck(cudnnCreateTensorDescriptor(&d->x));
    cudnnCheck(cudnnCreateTensorDescriptor(&d->y));
    cudnnCheck(cudnnCreateFilterDescriptor(&d->w));
    cudnnCheck(cudnnCreateConvolutionDescriptor(&d->conv));
    cudnnCheck(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s->n, s->c,
                                          conv_input_h(s), conv_input_w(s)));
    cudnnCheck(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s->n, s->oc,
                                          s->oh, s->ow));
    cudnnCheck(cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s->oc, s->c,
                                          s->kh, s->kw));
    cudnnCheck(cudnnSetConvolution2dDescriptor(d->conv, conv_cudnn_pad_h(s), conv_cudnn_pad_w(s),
                                               s->stride, s->stride, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    int n, c, h, w;
    cudnnCheck(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w));
    if (n != s->n || c != s->oc || h != s->oh || w != s->ow)
        die("cuda: cuDNN's conv output (%d, %d, %d, %d) is not the expected (%d, %d, %d, %d)", n,
            h, w, c, s->n, s->oh, s->ow, s->oc);
}

/* Math types allowed in this run: strict fp32 keeps tensor-core results out. */
static bool math_allowed(cudnnMathType_t math) {
    return cuda.tf32 ||
           (math != CUDNN_TENSOR_OP_MATH && math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

static cudnnMathType_t search_math(void) { return cuda.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

static const char *direction_name(int direction) {
    return direction == CONV_FORWARD ? "forward"
           : direction == CONV_BACKWARD_DATA ? "backward data" : "backward filter";
}

static void describe_shape(char *text, size_t size, const ConvShape *s) {
    snprintf(text, size, "x (%d, %d, %d, %d) w (%d, %d, %d, %d) stride %d pad (%d, %d, %d, %d)",
             s->n, s->h, s->w, s->c, s->oc, s->kh, s->kw, s->c, s->stride, s->pad_top,
             s->pad_left, s->pad_bottom, s->pad_right);
}

/* The fastest successful result of a Find, deterministic if any is; fills the entry. */
template <class Perf>
static void choose(ConvAlgoEntry *e, int direction, const Perf *perf, int count,
                   const ConvShape *s) {
    int best = -1, best_any = -1;
    for (int i = 0; i < count; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !math_allowed(perf[i].mathType)) continue;
        if (best_any < 0 || perf[i].time < perf[best_any].time) best_any = i;
        if (perf[i].determinism == CUDNN_DETERMINISTIC &&
            (best < 0 || perf[i].time < perf[best].time))
            best = i;
    }
    char shape[160];
    describe_shape(shape, sizeof shape, s);
    if (best_any < 0)
        die("cuda: cuDNN has no usable %s algorithm for %s", direction_name(direction), shape);
    if (best < 0) {
        warn("cuda: no deterministic cuDNN %s algorithm for %s; using a non-deterministic one",
             direction_name(direction), shape);
        best = best_any;
    }
    e->algo[direction] = (int)perf[best].algo;
    e->math[direction] = cuda.tf32 ? (int)perf[best].mathType : (int)CUDNN_FMA_MATH;
    e->algo_bytes[direction] = perf[best].memory;
    if (getenv("DDPM_CONV_VERBOSE"))
        fprintf(stderr, "cuda: conv %s: %s: algo %d, math %d, %.3f ms, %zu bytes%s\n",
                direction_name(direction), shape, e->algo[direction], e->math[direction],
                perf[best].time, perf[best].memory,
                perf[best].determinism == CUDNN_DETERMINISTIC ? "" : ", non-deterministic");
}

static void use_math(const ConvDescriptors *d, const ConvAlgoEntry *e, int direction) {
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)e->math[direction]));
}

/* The workspace each chosen algorithm needs at this entry's batch (as cuDNN reports it
 * for the math type it runs with), never less than what Find reported. A failure (an
 * algorithm this cuDNN cannot run here) is returned, not fatal: the caller decides. */
static cudnnStatus_t query_workspace(ConvAlgoEntry *e) {
    const ConvDescriptors *d = descriptors_of(e);
    size_t bytes[3] = {0, 0, 0};
    cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
    for (int dir = 0; dir < 3 && status == CUDNN_STATUS_SUCCESS; dir++) {
        status = cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)e->math[dir]);
        if (status != CUDNN_STATUS_SUCCESS) break;
        if (dir == CONV_FORWARD)
            status = cudnnGetConvolutionForwardWorkspaceSize(
                cuda.cudnn, d->x, d->w, d->conv, d->y, (cudnnConvolutionFwdAlgo_t)e->algo[dir],
                &bytes[dir]);
        else if (dir == CONV_BACKWARD_DATA)
            status = cudnnGetConvolutionBackwardDataWorkspaceSize(
                cuda.cudnn, d->w, d->y, d->conv, d->x, (cudnnConvolutionBwdDataAlgo_t)e->algo[dir],
                &bytes[dir]);
        else
            status = cudnnGetConvolutionBackwardFilterWorkspaceSize(
                cuda.cudnn, d->x, d->y, d->conv, d->w,
                (cudnnConvolutionBwdFilterAlgo_t)e->algo[dir], &bytes[dir]);
    }
    if (status != CUDNN_STATUS_SUCCESS) return status;
    for (int dir = 0; dir < 3; dir++)
        if (bytes[dir] > e->algo_bytes[dir]) e->algo_bytes[dir] = bytes[dir];
    return status;
}

static ConvAlgoEntry *new_entry(const ConvShape *s) {
    ConvAlgoEntry *e = conv_algo_cache_add(&plans, s);
    if (!e) die("cuda: more than %d distinct convolution shapes", CONV_ALGO_CACHE_CAPACITY);
    describe(descriptors_of(e), s);
    return e;
}

static void *device_zeros(size_t bytes) {
    void *p = NULL;
    cudaCheck(cudaMalloc(&p, bytes));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, cuda.stream));
    return p;
}

/* Times every algorithm of the three directions on scratch buffers of the shape. */
static void measure(ConvAlgoEntry *e, const ConvShape *s) {
    const ConvDescriptors *d = descriptors_of(e);
    const size_t x_bytes = (size_t)s->n * conv_input_h(s) * conv_input_w(s) * s->c * sizeof(float);
    const size_t y_bytes = (size_t)s->n * s->oh * s->ow * s->oc * sizeof(float);
    const size_t w_bytes = (size_t)s->oc * s->kh * s->kw * s->c * sizeof(float);
    size_t free_bytes, total_bytes;
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    size_t ws_bytes = free_bytes / 4 < FIND_WORKSPACE_LIMIT ? free_bytes / 4 : FIND_WORKSPACE_LIMIT;
    void *x = device_zeros(x_bytes), *y = device_zeros(y_bytes), *w = device_zeros(w_bytes);
    void *ws = device_zeros(ws_bytes);
    cudaCheck(cudaStreamSynchronize(cuda.stream));
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    int count;

    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnCheck(cudnnFindConvolutionForwardAlgorithmEx(cuda.cudnn, d->x, x, d->w, w, d->conv, d->y,
                                                      y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                      &count, fwd, ws, ws_bytes));
    choose(e, CONV_FORWARD, fwd, count, s);

    cudnnConvolutionBwdDataAlgoPerf_t data[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnCheck(cudnnFindConvolutionBackwardDataAlgorithmEx(
        cuda.cudnn, d->w, w, d->y, y, d->conv, d->x, x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
        &count, data, ws, ws_bytes));
    choose(e, CONV_BACKWARD_DATA, data, count, s);

    cudnnConvolutionBwdFilterAlgoPerf_t filter[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    cudnnCheck(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        cuda.cudnn, d->x, x, d->y, y, d->conv, d->w, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
        &count, filter, ws, ws_bytes));
    choose(e, CONV_BACKWARD_FILTER, filter, count, s);

    cudaCheck(cudaStreamSynchronize(cuda.stream));
    cudaCheck(cudaFree(x));
    cudaCheck(cudaFree(y));
    cudaCheck(cudaFree(w));
    cudaCheck(cudaFree(ws));
    cudnnCheck(query_workspace(e));
}

/* ---- the choices of earlier runs (conv_algo_cache.h, "the choices on disk") ---- */

static ConvAlgoCache remembered;     /* as read from choices_path */
static char choices_path[1024];      /* "" when choices are not kept */

/* DDPM_CONV_CACHE names the directory ("" or 0: keep nothing); by default
 * $XDG_CACHE_HOME/ddpm or ~/.cache/ddpm. One file per GPU model, cuDNN, math mode. */
static void open_choices(void) {
    static bool opened;
    if (opened) return;
    opened = true;
    const char *env = getenv("DDPM_CONV_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char dir[512];
    if (env) {
        if (!*env || strcmp(env, "0") == 0) return;
        snprintf(dir, sizeof dir, "%s", env);
    } else if (xdg && *xdg) {
        snprintf(dir, sizeof dir, "%s/ddpm", xdg);
    } else if (home && *home) {
        snprintf(dir, sizeof dir, "%s/.cache/ddpm", home);
    } else {
        return;
    }
    char err[256];
    if (make_dirs(dir, err, sizeof err) != 0) {
        warn("cuda: conv algorithm choices not kept: %s", err);
        return;
    }
    int device;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    char gpu[sizeof prop.name];   /* the name, for a file name */
    const size_t len = strnlen(prop.name, sizeof gpu - 1);
    for (size_t i = 0; i < len; i++)
        gpu[i] = isalnum((unsigned char)prop.name[i]) ? prop.name[i] : '-';
    gpu[len] = '\0';
    snprintf(choices_path, sizeof choices_path, "%s/conv-%s-sm%d%d-cudnn%zu-%s.txt", dir, gpu,
             prop.major, prop.minor, cudnnGetVersion(), cuda.tf32 ? "tf32" : "fp32");
    conv_algo_cache_load(&remembered, choices_path);   /* none yet is fine */
}

/* An earlier run's choice for this shape, if it still works here. */
static bool reuse_choice(ConvAlgoEntry *e) {
    const ConvAlgoEntry *known = conv_algo_cache_find_key(&remembered, &e->key);
    if (!known) return false;
    for (int dir = 0; dir < 3; dir++) {
        e->algo[dir] = known->algo[dir];
        e->math[dir] = known->math[dir];
        e->algo_bytes[dir] = 0;
    }
    return query_workspace(e) == CUDNN_STATUS_SUCCESS;
}

static void remember_choice(const ConvAlgoEntry *e) {
    if (choices_path[0] && conv_algo_cache_append(choices_path, e) != 0) {
        warn("cuda: cannot write %s: conv algorithm choices not kept", choices_path);
        choices_path[0] = '\0';
    }
}

void cuda_conv2d_prepare(ConvShape *s) {
    open_choices();
    ConvAlgoEntry *e = conv_algo_cache_find(&plans, s);
    if (!e) {
        e = new_entry(s);
        if (!reuse_choice(e)) {
            measure(e, s);
            remember_choice(e);
        }
    }
    for (int i = 0; i < 3; i++) s->algo[i] = e->algo[i];
    s->workspace_bytes = conv_entry_workspace_bytes(e, s);
}

/* The entry for this call's batch: the prepared one, or one derived from it for a
 * smaller batch with the same algorithms, whose workspace must fit what was prepared. */
static const ConvAlgoEntry *plan_for(const ConvShape *s) {
    ConvAlgoEntry *e = conv_algo_cache_find(&plans, s);
    if (e) return e;
    const ConvAlgoEntry *prepared = conv_algo_cache_find_prepared(&plans, s);
    char shape[160];
    describe_shape(shape, sizeof shape, s);
    if (!prepared) die("cuda: conv2d on a shape conv2d_prepare has not seen: %s", shape);
    e = new_entry(s);
    for (int i = 0; i < 3; i++) {
        e->algo[i] = prepared->algo[i];
        e->math[i] = prepared->math[i];
    }
    cudnnCheck(query_workspace(e));
    if (conv_entry_workspace_bytes(e, s) > s->workspace_bytes)
        die("cuda: conv2d %s needs %zu bytes of workspace, more than the %zu prepared at batch %d",
            shape, conv_entry_workspace_bytes(e, s), s->workspace_bytes, prepared->key.n);
    return e;
}

/* The caller's workspace split as conv_algo_cache.h lays it out. */
typedef struct {
    float *padded;        /* (N, H', W', C) explicit padding buffer, or NULL */
    void *algo;           /* cuDNN's share */
    size_t algo_bytes;
} ConvWorkspace;

static ConvWorkspace split_workspace(const ConvShape *s, void *workspace) {
    const size_t padded_bytes = conv_padded_input_bytes(s);
    if (padded_bytes > s->workspace_bytes)
        die("cuda: conv2d workspace of %zu bytes is smaller than the %zu its padded input needs",
            s->workspace_bytes, padded_bytes);
    if (s->workspace_bytes && !workspace) die("cuda: conv2d needs a workspace and was given none");
    ConvWorkspace ws = {padded_bytes ? (float *)workspace : NULL,
                        (char *)workspace + padded_bytes, s->workspace_bytes - padded_bytes};
    return ws;
}

/* padded (N, H', W', C) = x (N, H, W, C) placed at (pad_top, pad_left), zeros around */
static void pad_input(float *padded, const float *x, const ConvShape *s) {
    const int hp = conv_input_h(s), wp = conv_input_w(s), h = s->h, w = s->w, c = s->c;
    const int top = s->pad_top, left = s->pad_left;
    launch_elementwise((size_t)s->n * hp * wp * c, [=] __device__(size_t i) {
        const int ch = (int)(i % c), px = (int)(i / c % wp), py = (int)(i / c / wp % hp);
        const size_t b = i / c / wp / hp;
        const int iy = py - top, ix = px - left;
        padded[i] = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[((b * h + iy) * w + ix) * c + ch]
                                                           : 0.0f;
    });
}

/* dx (N, H, W, C) = beta*dx + the interior of dpadded (N, H', W', C) */
static void crop_gradient(float *dx, float beta, const float *dpadded, const ConvShape *s) {
    const int hp = conv_input_h(s), wp = conv_input_w(s), h = s->h, w = s->w, c = s->c;
    const int top = s->pad_top, left = s->pad_left;
    launch_elementwise((size_t)s->n * h * w * c, [=] __device__(size_t i) {
        const int ch = (int)(i % c), ix = (int)(i / c % w), iy = (int)(i / c / w % h);
        const size_t b = i / c / w / h;
        dx[i] = blend(dx[i], beta, dpadded[((b * hp + iy + top) * wp + ix + left) * c + ch]);
    });
}

void cuda_conv2d_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, void *workspace) {
    const ConvAlgoEntry *e = plan_for(s);
    const ConvDescriptors *d = descriptors_of(e);
    const ConvWorkspace ws = split_workspace(s, workspace);
    const float *input = x;
    if (ws.padded) {
        pad_input(ws.padded, x, s);
        input = ws.padded;
    }
    if (b) cuda_broadcast_rows(y, b, (size_t)s->n * s->oh * s->ow, s->oc);
    const float one = 1.0f, zero = 0.0f;
    use_math(d, e, CONV_FORWARD);
    cudnnCheck(cudnnConvolutionForward(cuda.cudnn, &one, d->x, input, d->w, w, d->conv,
                                       (cudnnConvolutionFwdAlgo_t)e->algo[CONV_FORWARD], ws.algo,
                                       ws.algo_bytes, b ? &one : &zero, d->y, y));
}

void cuda_conv2d_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                          const float *dy, const float *x, const float *w, void *workspace) {
    const ConvAlgoEntry *e = plan_for(s);
    const ConvDescriptors *d = descriptors_of(e);
    const ConvWorkspace ws = split_workspace(s, workspace);
    const float one = 1.0f, zero = 0.0f;
    if (db) column_sums_into(db, 0.0f, dy, 1, (long long)s->n * s->oh * s->ow, s->oc);
    const float *input = x;
    if (ws.padded) {
        pad_input(ws.padded, x, s);
        input = ws.padded;
    }
    use_math(d, e, CONV_BACKWARD_FILTER);
    cudnnCheck(cudnnConvolutionBackwardFilter(
        cuda.cudnn, &one, d->x, input, d->y, dy, d->conv,
        (cudnnConvolutionBwdFilterAlgo_t)e->algo[CONV_BACKWARD_FILTER], ws.algo, ws.algo_bytes,
        &zero, d->w, dw));
    if (!dx) return;
    use_math(d, e, CONV_BACKWARD_DATA);
    const cudnnConvolutionBwdDataAlgo_t algo =
        (cudnnConvolutionBwdDataAlgo_t)e->algo[CONV_BACKWARD_DATA];
    if (ws.padded) {
        /* the padded input is no longer needed: its buffer takes the padded gradient */
        cudnnCheck(cudnnConvolutionBackwardData(cuda.cudnn, &one, d->w, w, d->y, dy, d->conv, algo,
                                                ws.algo, ws.algo_bytes, &zero, d->x, ws.padded));
        crop_gradient(dx, beta, ws.padded, s);
    } else {
        cudnnCheck(cudnnConvolutionBackwardData(cuda.cudnn, &one, d->w, w, d->y, dy, d->conv, algo,
                                                ws.algo, ws.algo_bytes, &beta, d->x, dx));
    }
}
