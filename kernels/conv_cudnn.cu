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
 * Backward data has two methods, measured against each other where both apply: cuDNN's
 * backward data, and "the transposed method" (stride 1, symmetric padding): a forward
 * convolution of dy with W', the weight transposed and rotated, written into the
 * workspace first (conv_algo_cache.h). In strict fp32 cuDNN sometimes offers only a
 * slow, non-deterministic backward data where its forward is fast and deterministic.
 * DDPM_CONV_BWD_DATA=transposed|cudnn forces one where both apply (for tests).
 *
 * A call at a smaller batch than prepared keeps the prepared algorithms where they fit
 * the prepared workspace, and otherwise switches that direction to one that does
 * (cuDNN's heuristics, deterministic first); it never allocates.
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
#include <stdint.h>
#include <string.h>

#include "column_sums.cuh"
#include "conv_algo_cache.h"
#include "cuda_ops.cuh"

/* Find's own workspace: algorithms that need more are not considered. At the paper
 * model's 32x32x256 layers (batch 128), cuDNN's fast deterministic fp32 algorithms need
 * about the bytes of x + y (~270 MB); under a 256 MiB cap only slow ones were left
 * (H100: 298 ms against 6.4 ms for a backward data). Only the chosen algorithm's own
 * need is allocated afterwards. */
#define FIND_WORKSPACE_LIMIT ((size_t)1 << 30)

/* algo_bytes of a direction whose algorithm cuDNN cannot run at a derived batch */
#define UNUSABLE SIZE_MAX

typedef struct {
    cudnnTensorDescriptor_t x;          /* (N, C, H', W') NHWC: the input as cuDNN reads it */
    cudnnTensorDescriptor_t y;          /* (N, OC, OH, OW) NHWC */
    cudnnFilterDescriptor_t w;          /* (OC, C, KH, KW) NHWC: stored (OC, KH, KW, C) */
    cudnnConvolutionDescriptor_t conv;  /* symmetric padding (or 0), stride, cross-correlation */
} ConvDescriptors;

/* What the backend keeps beside each plan-cache entry. */
typedef struct {
    ConvDescriptors direct;       /* the convolution as asked */
    ConvDescriptors transposed;   /* dy -> dx as a forward conv with W' (if has_transposed) */
    bool has_transposed;          /* conv_transposed_applies */
    bool derived;                 /* made by plan_for for a smaller batch, not prepared */
    int prepared_n;               /* the batch its workspace was prepared at */
} EntryState;

static ConvAlgoCache plans;
static EntryState states[CONV_ALGO_CACHE_CAPACITY];   /* of plans.entries[i] */

static EntryState *state_of(const ConvAlgoEntry *e) { return &states[e - plans.entries]; }

static unsigned direction_bit(int direction) { return 1u << direction; }

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

static bool verbose(void) { return getenv("DDPM_CONV_VERBOSE") != NULL; }

/* ---- the transposed method's weight ---- */

/* wt (C, KH, KW, OC) = w (OC, KH, KW, C) transposed and rotated by 180 degrees: a copy,
 * so it is exact and deterministic. */
static void transpose_weight(float *wt, const float *w, const ConvShape *s) {
    const int c = s->c, kh = s->kh, kw = s->kw, oc = s->oc;
    launch_elementwise((size_t)oc * kh * kw * c, [=] __device__(size_t i) {
        wt[i] = w[conv_transposed_weight_source(i, c, kh, kw, oc)];
    });
}

/* ---- candidates: the ways to run one direction, as Find or the heuristics list them ---- */

typedef struct {
    int algo;                /* as in ConvAlgoEntry.algo: for backward data maybe transposed */
    cudnnMathType_t math;    /* the math type it runs with */
    float time;              /* ms (Find; for the transposed method W' included) */
    size_t memory;           /* cuDNN workspace bytes */
    bool deterministic;
} Candidate;

enum {
    MAX_CANDIDATES = CUDNN_CONVOLUTION_FWD_ALGO_COUNT + CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT +
                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
};

typedef struct {
    Candidate at[MAX_CANDIDATES];
    int count;
} Candidates;

/* Which candidates a search considers. */
typedef enum { EITHER_METHOD, CUDNN_METHOD, TRANSPOSED_METHOD } Method;

static Method method_of(int algo) {
    return conv_bwd_data_is_transposed(algo) ? TRANSPOSED_METHOD : CUDNN_METHOD;
}

/* Appends the successful results this run may use, in the order given; algo_base is
 * CONV_BWD_DATA_TRANSPOSED for the transposed method's forward results, else 0. */
template <class Perf>
static void add_candidates(Candidates *list, const Perf *perf, int count, int algo_base,
                           float extra_ms) {
    for (int i = 0; i < count && list->count < MAX_CANDIDATES; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !math_allowed(perf[i].mathType)) continue;
        Candidate c = {algo_base + (int)perf[i].algo,
                       cuda.tf32 ? perf[i].mathType : CUDNN_FMA_MATH, perf[i].time + extra_ms,
                       perf[i].memory, perf[i].determinism == CUDNN_DETERMINISTIC};
        list->at[list->count++] = c;
    }
}

/* The fastest candidate of the method, deterministic ones only if asked; -1 if none. */
static int fastest(const Candidates *list, bool deterministic_only, Method method) {
    int best = -1;
    for (int i = 0; i < list->count; i++) {
        const Candidate *c = &list->at[i];
        if (deterministic_only && !c->deterministic) continue;
        if (method != EITHER_METHOD && method_of(c->algo) != method) continue;
        if (best < 0 || c->time < list->at[best].time) best = i;
    }
    return best;
}

/* A deterministic candidate always beats a non-deterministic one. */
static int fastest_preferring_determinism(const Candidates *list, Method method) {
    const int best = fastest(list, true, method);
    return best >= 0 ? best : fastest(list, false, method);
}

static void describe_candidate(char *text, size_t size, const Candidate *c) {
    char algo[64];
    if (conv_bwd_data_is_transposed(c->algo))
        snprintf(algo, sizeof algo, "transposed forward, algo %d",
                 conv_transposed_forward_algo(c->algo));
    else
        snprintf(algo, sizeof algo, "algo %d", c->algo);
    snprintf(text, size, "%s, math %d, %.3f ms, %zu bytes%s", algo, (int)c->math, c->time,
             c->memory, c->deterministic ? "" : ", non-deterministic");
}

/* For backward data with both methods measured, the best of the one not chosen. */
static void print_other_method(const Candidates *list, const Candidate *chosen) {
    const Method other =
        method_of(chosen->algo) == TRANSPOSED_METHOD ? CUDNN_METHOD : TRANSPOSED_METHOD;
    const int i = fastest_preferring_determinism(list, other);
    if (i < 0) return;
    char text[160];
    describe_candidate(text, sizeof text, &list->at[i]);
    fprintf(stderr, "cuda:     (the best %s: %s)\n",
            other == TRANSPOSED_METHOD ? "transposed method" : "cuDNN backward data", text);
}

static void set_direction(ConvAlgoEntry *e, int direction, const Candidate *c) {
    e->algo[direction] = c->algo;
    e->math[direction] = (int)c->math;
    e->algo_bytes[direction] = c->memory;
}

/* The fastest measured candidate, deterministic if any is; fills the entry. */
static void choose(ConvAlgoEntry *e, int direction, const Candidates *list, const ConvShape *s) {
    char shape[160];
    describe_shape(shape, sizeof shape, s);
    const int best = fastest_preferring_determinism(list, EITHER_METHOD);
    if (best < 0)
        die("cuda: cuDNN has no usable %s algorithm for %s", direction_name(direction), shape);
    const Candidate *c = &list->at[best];
    if (!c->deterministic)
        warn("cuda: no deterministic cuDNN %s algorithm for %s; using a non-deterministic one",
             direction_name(direction), shape);
    set_direction(e, direction, c);
    if (!verbose()) return;
    char text[160];
    describe_candidate(text, sizeof text, c);
    fprintf(stderr, "cuda: conv %s: %s: %s\n", direction_name(direction), shape, text);
    if (direction == CONV_BACKWARD_DATA) print_other_method(list, c);
}

/* ---- workspace queries ---- */

static void use_math(const ConvDescriptors *d, const ConvAlgoEntry *e, int direction) {
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)e->math[direction]));
}

/* The workspace one direction needs with this algorithm and math at the entry's batch,
 * as cuDNN reports it. A failure (an algorithm cuDNN cannot run here, or a transposed
 * method the shape does not allow) is returned, not fatal: the caller decides. */
static cudnnStatus_t direction_workspace(const ConvAlgoEntry *e, int direction, int algo,
                                         int math, size_t *bytes) {
    const EntryState *st = state_of(e);
    const ConvDescriptors *d = &st->direct;
    if (direction == CONV_BACKWARD_DATA && conv_bwd_data_is_transposed(algo)) {
        if (!st->has_transposed) return CUDNN_STATUS_BAD_PARAM;
        d = &st->transposed;
        direction = CONV_FORWARD;
        algo = conv_transposed_forward_algo(algo);
    }
    const cudnnStatus_t status = cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)math);
    if (status != CUDNN_STATUS_SUCCESS) return status;
    if (direction == CONV_FORWARD)
        return cudnnGetConvolutionForwardWorkspaceSize(cuda.cudnn, d->x, d->w, d->conv, d->y,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    if (direction == CONV_BACKWARD_DATA)
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            cuda.cudnn, d->w, d->y, d->conv, d->x, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(
        cuda.cudnn, d->x, d->y, d->conv, d->w, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
}

/* The workspace each chosen algorithm needs at this entry's batch (as cuDNN reports it
 * for the math type it runs with), never less than what Find reported. */
static cudnnStatus_t query_workspace(ConvAlgoEntry *e) {
    size_t bytes[3] = {0, 0, 0};
    for (int dir = 0; dir < 3; dir++) {
        const cudnnStatus_t status =
            direction_workspace(e, dir, e->algo[dir], e->math[dir], &bytes[dir]);
        if (status != CUDNN_STATUS_SUCCESS) return status;
    }
    for (int dir = 0; dir < 3; dir++)
        if (bytes[dir] > e->algo_bytes[dir]) e->algo_bytes[dir] = bytes[dir];
    return CUDNN_STATUS_SUCCESS;
}

static ConvAlgoEntry *new_entry(const ConvShape *s) {
    ConvAlgoEntry *e = conv_algo_cache_add(&plans, s);
    if (!e) die("cuda: more than %d distinct convolution shapes", CONV_ALGO_CACHE_CAPACITY);
    EntryState *st = state_of(e);
    memset(st, 0, sizeof *st);
    describe(&st->direct, s);
    st->has_transposed = conv_transposed_applies(s);
    if (st->has_transposed) {
        const ConvShape t = conv_transposed_shape(s);
        describe(&st->transposed, &t);
    }
    st->prepared_n = s->n;
    return e;
}

/* ---- which backward-data method (DDPM_CONV_BWD_DATA) ---- */

static Method forced_bwd_data_method(void) {
    const char *env = getenv("DDPM_CONV_BWD_DATA");
    if (!env || !*env) return EITHER_METHOD;
    if (strcmp(env, "transposed") == 0) return TRANSPOSED_METHOD;
    if (strcmp(env, "cudnn") == 0) return CUDNN_METHOD;
    die("DDPM_CONV_BWD_DATA=%s: expected transposed or cudnn", env);
}

/* The method the search must use for this entry: forced only where both apply. */
static Method bwd_data_method(const ConvAlgoEntry *e) {
    return state_of(e)->has_transposed ? forced_bwd_data_method() : EITHER_METHOD;
}

/* ---- measuring ---- */

static void *device_zeros(size_t bytes) {
    void *p = NULL;
    cudaCheck(cudaMalloc(&p, bytes));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, cuda.stream));
    return p;
}

/* Scratch tensors of the shape for Find, and its search workspace. */
typedef struct {
    void *x, *y, *w, *wt;   /* wt: W' for the transposed method, or NULL */
    void *ws;
    size_t ws_bytes;
} FindBuffers;

static FindBuffers find_buffers(const ConvShape *s, bool with_transposed) {
    const size_t x_bytes = (size_t)s->n * conv_input_h(s) * conv_input_w(s) * s->c * sizeof(float);
    const size_t y_bytes = (size_t)s->n * s->oh * s->ow * s->oc * sizeof(float);
    const size_t w_bytes = (size_t)s->oc * s->kh * s->kw * s->c * sizeof(float);
    size_t free_bytes, total_bytes;
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    FindBuffers b;
    b.ws_bytes = free_bytes / 4 < FIND_WORKSPACE_LIMIT ? free_bytes / 4 : FIND_WORKSPACE_LIMIT;
    b.x = device_zeros(x_bytes);
    b.y = device_zeros(y_bytes);
    b.w = device_zeros(w_bytes);
    b.wt = with_transposed ? device_zeros(w_bytes) : NULL;
    b.ws = device_zeros(b.ws_bytes);
    cudaCheck(cudaStreamSynchronize(cuda.stream));
    return b;
}

static void free_find_buffers(FindBuffers *b) {
    cudaCheck(cudaStreamSynchronize(cuda.stream));
    cudaCheck(cudaFree(b->x));
    cudaCheck(cudaFree(b->y));
    cudaCheck(cudaFree(b->w));
    if (b->wt) cudaCheck(cudaFree(b->wt));
    cudaCheck(cudaFree(b->ws));
}

/* Milliseconds one transpose_weight takes: part of the transposed method's cost. */
static float time_transpose_weight(float *wt, const float *w, const ConvShape *s) {
    transpose_weight(wt, w, s);   /* the first launch may load the kernel: not timed */
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    cudaCheck(cudaEventRecord(start, cuda.stream));
    transpose_weight(wt, w, s);
    cudaCheck(cudaEventRecord(stop, cuda.stream));
    cudaCheck(cudaEventSynchronize(stop));
    float ms = 0.0f;
    cudaCheck(cudaEventElapsedTime(&ms, start, stop));
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    return ms;
}

/* Times the forward algorithms of d: x (input) and w to y (output). */
static void find_forward(Candidates *list, const ConvDescriptors *d, const void *x,
                         const void *w, void *y, const FindBuffers *b, int algo_base,
                         float extra_ms) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnFindConvolutionForwardAlgorithmEx(cuda.cudnn, d->x, x, d->w, w, d->conv, d->y,
                                                      y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                      &count, perf, b->ws, b->ws_bytes));
    add_candidates(list, perf, count, algo_base, extra_ms);
}

static void find_backward_data(Candidates *list, const ConvDescriptors *d, const FindBuffers *b) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnFindConvolutionBackwardDataAlgorithmEx(
        cuda.cudnn, d->w, b->w, d->y, b->y, d->conv, d->x, b->x,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf, b->ws, b->ws_bytes));
    add_candidates(list, perf, count, 0, 0.0f);
}

/* The transposed method: dy (the y scratch) and W' to dx (the x scratch), plus W'. */
static void find_transposed(Candidates *list, const ConvDescriptors *t, const ConvShape *s,
                            const FindBuffers *b) {
    const float weight_ms = time_transpose_weight((float *)b->wt, (const float *)b->w, s);
    find_forward(list, t, b->y, b->wt, b->x, b, CONV_BWD_DATA_TRANSPOSED, weight_ms);
}

static void find_backward_filter(Candidates *list, const ConvDescriptors *d,
                                 const FindBuffers *b) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        cuda.cudnn, d->x, b->x, d->y, b->y, d->conv, d->w, b->w,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf, b->ws, b->ws_bytes));
    add_candidates(list, perf, count, 0, 0.0f);
}

/* Times every algorithm of the three directions (and the transposed method, where it
 * applies and is not ruled out) on scratch buffers of the shape. */
static void measure(ConvAlgoEntry *e, const ConvShape *s) {
    const EntryState *st = state_of(e);
    const Method method = bwd_data_method(e);
    const bool try_transposed = st->has_transposed && method != CUDNN_METHOD;
    const bool try_cudnn = method != TRANSPOSED_METHOD;
    FindBuffers b = find_buffers(s, try_transposed);

    Candidates forward = {}, data = {}, filter = {};
    find_forward(&forward, &st->direct, b.x, b.w, b.y, &b, 0, 0.0f);
    choose(e, CONV_FORWARD, &forward, s);
    if (try_cudnn) find_backward_data(&data, &st->direct, &b);
    if (try_transposed) find_transposed(&data, &st->transposed, s, &b);
    choose(e, CONV_BACKWARD_DATA, &data, s);
    find_backward_filter(&filter, &st->direct, &b);
    choose(e, CONV_BACKWARD_FILTER, &filter, s);

    free_find_buffers(&b);
    cudnnCheck(query_workspace(e));
}

/* ---- the choices of earlier runs (conv_algo_cache.h, "the choices on disk") ---- */

static ConvAlgoCache remembered;     /* as read from choices_path */
static char choices_path[1024];      /* "" when choices are not kept */

/* DDPM_CONV_CACHE names the directory ("" or 0: keep nothing); by default
 * $XDG_CACHE_HOME/ddpm or ~/.cache/ddpm. One file per format version, GPU model,
 * cuDNN, math mode. */
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
    snprintf(choices_path, sizeof choices_path, "%s/conv-v%d-%s-sm%d%d-cudnn%zu-%s.txt", dir,
             (int)CONV_CHOICES_VERSION, gpu, prop.major, prop.minor, cudnnGetVersion(),
             cuda.tf32 ? "tf32" : "fp32");
    conv_algo_cache_load(&remembered, choices_path);   /* none yet is fine */
}

/* A choice made under DDPM_CONV_BWD_DATA is not the measured one: not kept on disk. */
static bool bwd_data_forced(const ConvAlgoEntry *e) { return bwd_data_method(e) != EITHER_METHOD; }

/* An earlier run's choice for this shape, if it still works here and agrees with a
 * forced backward-data method. */
static bool reuse_choice(ConvAlgoEntry *e) {
    const ConvAlgoEntry *known = conv_algo_cache_find_key(&remembered, &e->key);
    if (!known) return false;
    const Method method = bwd_data_method(e);
    if (method != EITHER_METHOD && method_of(known->algo[CONV_BACKWARD_DATA]) != method)
        return false;
    for (int dir = 0; dir < 3; dir++) {
        e->algo[dir] = known->algo[dir];
        e->math[dir] = known->math[dir];
        e->algo_bytes[dir] = 0;
    }
    return query_workspace(e) == CUDNN_STATUS_SUCCESS;
}

static void remember_choice(const ConvAlgoEntry *e) {
    if (bwd_data_forced(e)) return;
    if (choices_path[0] && conv_algo_cache_append(choices_path, e) != 0) {
        warn("cuda: cannot write %s: conv algorithm choices not kept", choices_path);
        choices_path[0] = '\0';
    }
}

/* An entry of conv2d_prepare's: an earlier run's choice, or measured now. */
static void prepare_entry(ConvAlgoEntry *e, const ConvShape *s) {
    if (!reuse_choice(e)) {
        measure(e, s);
        remember_choice(e);
    }
    EntryState *st = state_of(e);
    st->derived = false;
    st->prepared_n = s->n;
}

void cuda_conv2d_prepare(ConvShape *s) {
    open_choices();
    ConvAlgoEntry *e = conv_algo_cache_find(&plans, s);
    /* an entry derived for a smaller batch is chosen afresh, as a new process would */
    if (!e || state_of(e)->derived) {
        if (!e) e = new_entry(s);
        prepare_entry(e, s);
    }
    for (int i = 0; i < 3; i++) s->algo[i] = e->algo[i];
    s->workspace_bytes = conv_entry_workspace_bytes(e, s);
}

/* ---- running at a smaller batch than prepared ---- */

/* cuDNN's heuristic ranking of an algorithm family, best first (no timing, no device
 * memory). algo_base as for add_candidates. */
static void rank_forward(Candidates *list, const ConvDescriptors *d, int algo_base) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnGetConvolutionForwardAlgorithm_v7(
        cuda.cudnn, d->x, d->w, d->conv, d->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
    add_candidates(list, perf, count, algo_base, 0.0f);
}

static void rank_backward_data(Candidates *list, const ConvDescriptors *d) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        cuda.cudnn, d->w, d->y, d->conv, d->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count,
        perf));
    add_candidates(list, perf, count, 0, 0.0f);
}

static void rank_backward_filter(Candidates *list, const ConvDescriptors *d) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int count;
    cudnnCheck(cudnnSetConvolutionMathType(d->conv, search_math()));
    cudnnCheck(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        cuda.cudnn, d->x, d->y, d->conv, d->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count,
        perf));
    add_candidates(list, perf, count, 0, 0.0f);
}

/* The ranking for one direction of the entry; backward data keeps its method (the
 * workspace was prepared with or without room for W'). */
static void heuristic_candidates(Candidates *list, const ConvAlgoEntry *e, int direction) {
    const EntryState *st = state_of(e);
    if (direction == CONV_FORWARD)
        rank_forward(list, &st->direct, 0);
    else if (direction == CONV_BACKWARD_FILTER)
        rank_backward_filter(list, &st->direct);
    else if (conv_bwd_data_is_transposed(e->algo[direction]))
        rank_forward(list, &st->transposed, CONV_BWD_DATA_TRANSPOSED);
    else
        rank_backward_data(list, &st->direct);
}

/* Switches a direction of a derived entry to the best-ranked algorithm whose workspace
 * fits the budget, deterministic ones first; false when none fits. Nothing is
 * allocated: only cuDNN's heuristics and workspace queries run. */
static bool switch_to_fitting(ConvAlgoEntry *e, int direction, size_t budget,
                              const ConvShape *s) {
    Candidates list = {};
    heuristic_candidates(&list, e, direction);
    for (int pass = 0; pass < 2; pass++) {
        const bool deterministic_only = pass == 0;
        for (int i = 0; i < list.count; i++) {
            Candidate c = list.at[i];
            if (deterministic_only && !c.deterministic) continue;
            if (direction_workspace(e, direction, c.algo, (int)c.math, &c.memory) !=
                    CUDNN_STATUS_SUCCESS ||
                c.memory > budget)
                continue;
            char shape[160], text[160];
            describe_shape(shape, sizeof shape, s);
            if (!c.deterministic)
                warn("cuda: no deterministic cuDNN %s algorithm for %s fits its workspace; "
                     "using a non-deterministic one",
                     direction_name(direction), shape);
            set_direction(e, direction, &c);
            if (verbose()) {
                c.time = 0.0f;   /* the heuristics do not time */
                describe_candidate(text, sizeof text, &c);
                fprintf(stderr, "cuda: conv %s: %s: %s (the prepared one does not fit)\n",
                        direction_name(direction), shape, text);
            }
            return true;
        }
    }
    return false;
}

/* A new entry for this smaller batch with the prepared entry's algorithms; a direction
 * cuDNN cannot run at this batch is marked UNUSABLE, for fit_direction to replace. */
static ConvAlgoEntry *derive_entry(const ConvShape *s) {
    const ConvAlgoEntry *prepared = conv_algo_cache_find_prepared(&plans, s);
    if (!prepared) {
        char shape[160];
        describe_shape(shape, sizeof shape, s);
        die("cuda: conv2d on a shape conv2d_prepare has not seen: %s", shape);
    }
    const int prepared_n = prepared->key.n;
    ConvAlgoEntry *e = new_entry(s);
    EntryState *st = state_of(e);
    st->derived = true;
    st->prepared_n = prepared_n;
    for (int dir = 0; dir < 3; dir++) {
        e->algo[dir] = prepared->algo[dir];
        e->math[dir] = prepared->math[dir];
        if (direction_workspace(e, dir, e->algo[dir], e->math[dir], &e->algo_bytes[dir]) !=
            CUDNN_STATUS_SUCCESS)
            e->algo_bytes[dir] = UNUSABLE;
    }
    return e;
}

/* Makes sure a direction's algorithm fits the caller's workspace after the fixed part
 * (padded input, W'); a derived entry may switch to another algorithm, else this dies. */
static void fit_direction(ConvAlgoEntry *e, int direction, const ConvShape *s) {
    const size_t fixed = conv_entry_fixed_bytes(e, s);
    const bool fixed_fits = fixed <= s->workspace_bytes;
    const size_t budget = fixed_fits ? s->workspace_bytes - fixed : 0;
    if (fixed_fits && e->algo_bytes[direction] <= budget) return;
    const EntryState *st = state_of(e);
    if (fixed_fits && st->derived && switch_to_fitting(e, direction, budget, s)) return;
    char shape[160];
    describe_shape(shape, sizeof shape, s);
    if (e->algo_bytes[direction] == UNUSABLE)
        die("cuda: conv2d %s: cuDNN cannot run the prepared %s algorithm at this batch, and no "
            "other fits the %zu bytes of workspace prepared at batch %d",
            shape, direction_name(direction), s->workspace_bytes, st->prepared_n);
    die("cuda: conv2d %s needs %zu bytes of workspace for %s, more than the %zu prepared at "
        "batch %d%s",
        shape, fixed + e->algo_bytes[direction], direction_name(direction), s->workspace_bytes,
        st->prepared_n, st->derived ? ", and no other algorithm fits" : "");
}

/* The entry for this call's batch, with an algorithm fitting the caller's workspace for
 * each direction asked for (a bit per direction): the prepared one, or one derived
 * from it for a smaller batch. */
static const ConvAlgoEntry *plan_for(const ConvShape *s, unsigned directions) {
    ConvAlgoEntry *e = conv_algo_cache_find(&plans, s);
    if (!e) e = derive_entry(s);
    for (int dir = 0; dir < 3; dir++)
        if (directions & direction_bit(dir)) fit_direction(e, dir, s);
    return e;
}

/* ---- running ---- */

/* The caller's workspace split as conv_algo_cache.h lays it out. */
typedef struct {
    float *padded;              /* (N, H', W', C) explicit padding buffer, or NULL */
    float *transposed_weight;   /* W' (C, KH, KW, OC) for the transposed method, or NULL */
    void *algo;                 /* cuDNN's share */
    size_t algo_bytes;
} ConvWorkspace;

static ConvWorkspace split_workspace(const ConvAlgoEntry *e, const ConvShape *s,
                                     void *workspace) {
    const size_t padded_bytes = conv_padded_input_bytes(s);
    const size_t fixed = conv_entry_fixed_bytes(e, s);
    if (fixed > s->workspace_bytes)
        die("cuda: conv2d workspace of %zu bytes is smaller than the %zu its padded input and "
            "transposed weight need",
            s->workspace_bytes, fixed);
    if (s->workspace_bytes && !workspace) die("cuda: conv2d needs a workspace and was given none");
    char *base = (char *)workspace;
    ConvWorkspace ws = {padded_bytes ? (float *)base : NULL,
                        fixed > padded_bytes ? (float *)(base + padded_bytes) : NULL,
                        base + fixed, s->workspace_bytes - fixed};
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

/* The bias, and the residual, seed y, and cuDNN accumulates onto it (beta 1). */
static void seed_output(float *y, const float *b, const float *residual, const ConvShape *s) {
    const size_t rows = (size_t)s->n * s->oh * s->ow;
    if (residual && b) cuda_add_bias_forward(y, residual, b, NULL, 1, (int)rows, s->oc);
    else if (residual)
        cudaCheck(cudaMemcpyAsync(y, residual, rows * s->oc * sizeof(float),
                                  cudaMemcpyDeviceToDevice, cuda.stream));
    else if (b) cuda_broadcast_rows(y, b, rows, s->oc);
}

void cuda_conv2d_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, const float *residual, void *workspace) {
    const ConvAlgoEntry *e = plan_for(s, direction_bit(CONV_FORWARD));
    const ConvDescriptors *d = &state_of(e)->direct;
    const ConvWorkspace ws = split_workspace(e, s, workspace);
    const float *input = x;
    if (ws.padded) {
        pad_input(ws.padded, x, s);
        input = ws.padded;
    }
    seed_output(y, b, residual, s);
    const float one = 1.0f, zero = 0.0f;
    use_math(d, e, CONV_FORWARD);
    cudnnCheck(cudnnConvolutionForward(cuda.cudnn, &one, d->x, input, d->w, w, d->conv,
                                       (cudnnConvolutionFwdAlgo_t)e->algo[CONV_FORWARD], ws.algo,
                                       ws.algo_bytes, b || residual ? &one : &zero, d->y, y));
}

/* dx = beta*dx + the input gradient, by cuDNN's backward data. */
static void backward_data_cudnn(const ConvAlgoEntry *e, const ConvShape *s, float *dx,
                                float beta, const float *dy, const float *w,
                                const ConvWorkspace *ws) {
    const ConvDescriptors *d = &state_of(e)->direct;
    const float one = 1.0f, zero = 0.0f;
    use_math(d, e, CONV_BACKWARD_DATA);
    const cudnnConvolutionBwdDataAlgo_t algo =
        (cudnnConvolutionBwdDataAlgo_t)e->algo[CONV_BACKWARD_DATA];
    if (ws->padded) {
        /* the padded input is no longer needed: its buffer takes the padded gradient */
        cudnnCheck(cudnnConvolutionBackwardData(cuda.cudnn, &one, d->w, w, d->y, dy, d->conv, algo,
                                                ws->algo, ws->algo_bytes, &zero, d->x,
                                                ws->padded));
        crop_gradient(dx, beta, ws->padded, s);
    } else {
        cudnnCheck(cudnnConvolutionBackwardData(cuda.cudnn, &one, d->w, w, d->y, dy, d->conv, algo,
                                                ws->algo, ws->algo_bytes, &beta, d->x, dx));
    }
}

/* dx = beta*dx + the input gradient, as the forward convolution of dy with W'
 * (conv_algo_cache.h); cuDNN's beta accumulates as backward data's does. */
static void backward_data_transposed(const ConvAlgoEntry *e, const ConvShape *s, float *dx,
                                     float beta, const float *dy, const float *w,
                                     const ConvWorkspace *ws) {
    const ConvDescriptors *t = &state_of(e)->transposed;
    transpose_weight(ws->transposed_weight, w, s);
    const float one = 1.0f;
    use_math(t, e, CONV_BACKWARD_DATA);
    const cudnnConvolutionFwdAlgo_t algo =
        (cudnnConvolutionFwdAlgo_t)conv_transposed_forward_algo(e->algo[CONV_BACKWARD_DATA]);
    cudnnCheck(cudnnConvolutionForward(cuda.cudnn, &one, t->x, dy, t->w, ws->transposed_weight,
                                       t->conv, algo, ws->algo, ws->algo_bytes, &beta, t->y, dx));
}

void cuda_conv2d_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                          const float *dy, const float *x, const float *w, void *workspace) {
    const unsigned directions =
        direction_bit(CONV_BACKWARD_FILTER) | (dx ? direction_bit(CONV_BACKWARD_DATA) : 0);
    const ConvAlgoEntry *e = plan_for(s, directions);
    const ConvDescriptors *d = &state_of(e)->direct;
    const ConvWorkspace ws = split_workspace(e, s, workspace);
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
    if (conv_bwd_data_is_transposed(e->algo[CONV_BACKWARD_DATA]))
        backward_data_transposed(e, s, dx, beta, dy, w, &ws);
    else
        backward_data_cudnn(e, s, dx, beta, dy, w, &ws);
}
