/* GroupNorm over NHWC activations, optionally followed by SiLU and dropout, forward and
 * backward.
 *
 * Forward: one block per (sample, group) reads the group's HW x C/G values three
 * times: the mean, then the squared deviations from it (two passes avoid the
 * cancellation of E[x^2] - E[x]^2), both summed in double with the fixed-order
 * block_sum, then the normalized, affine and optionally SiLU output. mean and rstd
 * are saved in float exactly as the CPU backend computes them.
 *
 * Backward recomputes the normalized value (and the pre-SiLU value when fused) from
 * x, mean and rstd, as the CPU backend does:
 *   dgamma, dshift: column sums over N*HW rows of dy_pre*xhat and dy_pre
 *                   (column_sums.cuh, deterministic), run first so that dx may alias dy;
 *   dx:             one block per (sample, group) forms the group means of gamma*dy_pre
 *                   and gamma*dy_pre*xhat, then
 *                   dx = beta*dx + rstd * (gamma*dy_pre - mean_g - xhat*mean_gx).
 *
 * The coalesced forward (the default where it applies: C a multiple of 4, and channel
 * spans of max(32, C/G) channels that hold whole groups) reads x twice instead of three
 * times, with 128-bit loads over the channels: one block per (span, sample) sums x - K
 * and (x - K)^2 per channel in double in one pass (K, a value of the group, keeps the
 * single pass free of cancellation), combines the threads' sums, then the channels of
 * each group, in a fixed order (no atomics), and saves mean and rstd; an elementwise
 * kernel then writes the output four channels at a time. The three-pass kernel reads a
 * group's C/G channels per row (at C = 128, G = 32: 16 of each 32-byte sector) and
 * stays for the other shapes; DDPM_GROUPNORM=three_pass forces it, for comparison.
 * The coalesced path has not yet run on a GPU: test_ops's CPU-vs-CUDA GroupNorm cases
 * (C = 32, 64, 128) are its check, the cases with C = 8, 12, 45 the three-pass one's.
 *
 * The fused dropout multiplies the output by dropout_apply's factor for the element (the
 * mask from Philox by sample and element within the sample), and the backward takes dy
 * times the same factor, redrawn: a ResBlock's norm -> SiLU -> dropout in one pass.
 */
#include <string.h>

#include "column_sums.cuh"
#include "cuda_ops.cuh"

/* Element i of group g of sample n: the group is an (HW, C/G) slice of (HW, C). */
struct GroupView {
    int hw, c, cg;
    __device__ size_t offset(int n, int g, int i) const {
        return ((size_t)n * hw + i / cg) * c + (size_t)g * cg + i % cg;
    }
    __device__ int channel(int g, int i) const { return g * cg + i % cg; }
    __device__ int count() const { return hw * cg; }
};

/* The fused dropout: p == 0 is none. */
struct DropoutSpec {
    float p, scale;   /* scale = 1/(1-p) */
    RngKey key;
    size_t per_sample;
};

/* v times element o's dropout factor, as pointwise.cu's dropout_apply forms it. */
__device__ __forceinline__ float dropped(float v, const DropoutSpec &d, size_t o) {
    if (d.p == 0.0f) return v;
    const uint32_t s = (uint32_t)(o / d.per_sample);
    const float mask = philox_uniform(d.key, s, o % d.per_sample) >= d.p ? d.scale : 0.0f;
    return v * mask;
}

static DropoutSpec dropout_spec(float p, RngKey key, int hw, int c) {
    return DropoutSpec{p, p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, key, (size_t)hw * c};
}

/* Forward and backward share this, so they agree exactly. */
__device__ __forceinline__ float normalized(float x, float mean, float rstd) {
    return (x - mean) * rstd;
}

/* The gradient at the affine output: dy itself, or dy through the fused SiLU. */
template <bool SILU>
__device__ __forceinline__ float grad_before_silu(float dy, float xhat, const float *gamma,
                                                  const float *shift, int ch) {
    if (!SILU) return dy;
    const float pre = xhat * gamma[ch] + shift[ch], sig = sigmoid(pre);
    return dy * sig * (1.0f + pre * (1.0f - sig));
}

template <bool SILU>
__global__ void groupnorm_forward_kernel(float *y, float *mean, float *rstd, const float *x,
                                         const float *gamma, const float *shift, GroupView v,
                                         int groups, float eps, DropoutSpec drop) {
    const int g = blockIdx.x, n = blockIdx.y, count = v.count();
    double sum = 0;
    for (int i = threadIdx.x; i < count; i += THREADS) sum += x[v.offset(n, g, i)];
    const double mu = block_sum(sum) / count;
    double squares = 0;
    for (int i = threadIdx.x; i < count; i += THREADS) {
        const double d = (double)x[v.offset(n, g, i)] - mu;
        squares += d * d;
    }
    const double var = block_sum(squares) / count;
    const float m = (float)mu, r = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0) {
        mean[n * groups + g] = m;
        rstd[n * groups + g] = r;
    }
    for (int i = threadIdx.x; i < count; i += THREADS) {
        const size_t o = v.offset(n, g, i);
        const int ch = v.channel(g, i);
        float out = normalized(x[o], m, r) * gamma[ch] + shift[ch];
        if (SILU) out = out * sigmoid(out);
        y[o] = dropped(out, drop, o);
    }
}

template <bool SILU>
__global__ void groupnorm_input_grad_kernel(float *dx, float beta, const float *dy, const float *x,
                                            const float *mean, const float *rstd,
                                            const float *gamma, const float *shift, GroupView v,
                                            int groups, DropoutSpec drop) {
    const int g = blockIdx.x, n = blockIdx.y, count = v.count();
    const float m = mean[n * groups + g], r = rstd[n * groups + g];
    double sum_g = 0, sum_gx = 0;
    for (int i = threadIdx.x; i < count; i += THREADS) {
        const size_t o = v.offset(n, g, i);
        const int ch = v.channel(g, i);
        const float xhat = normalized(x[o], m, r);
        const double gd = (double)gamma[ch] *
                          grad_before_silu<SILU>(dropped(dy[o], drop, o), xhat, gamma, shift, ch);
        sum_g += gd;
        sum_gx += gd * xhat;
    }
    const float mean_g = (float)(block_sum(sum_g) / count);
    const float mean_gx = (float)(block_sum(sum_gx) / count);
    for (int i = threadIdx.x; i < count; i += THREADS) {
        const size_t o = v.offset(n, g, i);
        const int ch = v.channel(g, i);
        const float xhat = normalized(x[o], m, r);
        const float gd =
            grad_before_silu<SILU>(dropped(dy[o], drop, o), xhat, gamma, shift, ch) * gamma[ch];
        dx[o] = blend(dx[o], beta, r * (gd - mean_g - xhat * mean_gx));
    }
}

/* Row r of the (N*HW, C) view, column ch: adds dy_pre*xhat (dgamma) and dy_pre (dshift). */
template <bool SILU>
struct ParamGradTerms {
    const float *dy, *x, *mean, *rstd, *gamma, *shift;
    int hw, c, cg, groups;
    DropoutSpec drop;
    __device__ void operator()(Sums<2> &acc, int, long long r, int ch) const {
        const size_t o = (size_t)r * c + ch, stat = (size_t)(r / hw) * groups + ch / cg;
        const float xhat = normalized(x[o], mean[stat], rstd[stat]);
        const float d = grad_before_silu<SILU>(dropped(dy[o], drop, o), xhat, gamma, shift, ch);
        acc.v[0] += (double)d * xhat;
        acc.v[1] += d;
    }
};

struct ParamGradStore {
    float *dgamma, *dshift;   /* either may be NULL */
    __device__ void operator()(int, int ch, const Sums<2> &s) const {
        if (dgamma) dgamma[ch] = (float)s.v[0];
        if (dshift) dshift[ch] = (float)s.v[1];
    }
};

/* ---- the coalesced forward ---- */

/* Channels per block of the statistics kernel, or 0 where the coalesced path does not
 * apply (then the three-pass kernel runs). */
static int coalesced_span(int c, int groups) {
    static int forced = -1;   /* DDPM_GROUPNORM, read once */
    if (forced < 0) {
        const char *env = getenv("DDPM_GROUPNORM");
        if (!env || !*env || strcmp(env, "coalesced") == 0) forced = 0;
        else if (strcmp(env, "three_pass") == 0) forced = 1;
        else die("DDPM_GROUPNORM=%s: expected coalesced or three_pass", env);
    }
    const int cg = c / groups, span = cg > 32 ? cg : 32;
    if (forced || c % 4 || span % 4 || span % cg || c % span || span / 4 > THREADS) return 0;
    return span;
}

/* Block (span b, sample n): mean and rstd of the span's groups. Thread t reads float4
 * column t % (span/4) of rows t / (span/4), + lanes, ...; dynamic shared memory holds
 * THREADS * 8 partial sums, then 2 * span channel sums. */
__global__ void groupnorm_stats_kernel(float *mean, float *rstd, const float *x, int hw, int c,
                                       int cg, int span, int groups, float eps) {
    extern __shared__ double shared[];
    double *partial = shared, *chan_sum = shared + THREADS * 8, *chan_sq = chan_sum + span;
    const int cols = span / 4, lanes = THREADS / cols;
    const int col = threadIdx.x % cols, lane = threadIdx.x / cols;
    const int c0 = blockIdx.x * span, n = blockIdx.y;
    const float *xs = x + (size_t)n * hw * c + c0;
    double sum[4] = {0, 0, 0, 0}, sq[4] = {0, 0, 0, 0}, k[4];
    for (int j = 0; j < 4; j++) k[j] = xs[(col * 4 + j) / cg * cg];   /* row 0 of the group */
    if (lane < lanes)
        for (int r = lane; r < hw; r += lanes) {
            const float4 v = *reinterpret_cast<const float4 *>(xs + (size_t)r * c + col * 4);
            const double d[4] = {v.x - k[0], v.y - k[1], v.z - k[2], v.w - k[3]};
            for (int j = 0; j < 4; j++) {
                sum[j] += d[j];
                sq[j] += d[j] * d[j];
            }
        }
    for (int j = 0; j < 4; j++) {
        partial[threadIdx.x * 8 + j] = sum[j];
        partial[threadIdx.x * 8 + 4 + j] = sq[j];
    }
    __syncthreads();
    if (threadIdx.x < span) {   /* channel t: its lanes in order */
        const int at = threadIdx.x / 4, j = threadIdx.x % 4;
        double a = 0, b = 0;
        for (int l = 0; l < lanes; l++) {
            a += partial[(l * cols + at) * 8 + j];
            b += partial[(l * cols + at) * 8 + 4 + j];
        }
        chan_sum[threadIdx.x] = a;
        chan_sq[threadIdx.x] = b;
    }
    __syncthreads();
    if (threadIdx.x < span / cg) {   /* group t of the span: its channels in order */
        const int first = threadIdx.x * cg;
        double a = 0, b = 0;
        for (int j = 0; j < cg; j++) {
            a += chan_sum[first + j];
            b += chan_sq[first + j];
        }
        const double count = (double)hw * cg, shifted_mean = a / count;
        double var = b / count - shifted_mean * shifted_mean;
        if (var < 0) var = 0;
        const int g = (c0 + first) / cg;
        mean[(size_t)n * groups + g] = (float)(xs[first] + shifted_mean);
        rstd[(size_t)n * groups + g] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

/* Four channels per thread: the same float operations as groupnorm_forward_kernel's. */
static void groupnorm_output_coalesced(float *y, const float *x, const float *mean,
                                       const float *rstd, const float *gamma, const float *shift,
                                       int n, int hw, int c, int groups, bool silu,
                                       DropoutSpec drop) {
    const size_t per_sample = (size_t)hw * c, quads = (size_t)n * per_sample / 4;
    const int cg = c / groups;
    launch_elementwise(quads, [=] __device__(size_t q) {
        const size_t o = 4 * q, s = o / per_sample, e0 = o % per_sample;
        const int ch0 = (int)(o % c);
        const float4 v = *reinterpret_cast<const float4 *>(x + o);
        float out[4] = {v.x, v.y, v.z, v.w};
        Philox4 r = {};
        if (drop.p > 0.0f) r = philox_block(drop.key, (uint32_t)s, e0);   /* e0 % 4 == 0 */
        for (int j = 0; j < 4; j++) {
            const int ch = ch0 + j;
            const size_t stat = s * groups + ch / cg;
            float value = normalized(out[j], mean[stat], rstd[stat]) * gamma[ch] + shift[ch];
            if (silu) value = value * sigmoid(value);
            if (drop.p > 0.0f) value *= philox_u01(r.v[j]) >= drop.p ? drop.scale : 0.0f;
            out[j] = value;
        }
        *reinterpret_cast<float4 *>(y + o) = make_float4(out[0], out[1], out[2], out[3]);
    });
}

template <bool SILU>
static void groupnorm_forward(float *y, float *mean, float *rstd, const float *x,
                              const float *gamma, const float *shift, int n, int hw, int c,
                              int groups, float eps, DropoutSpec drop) {
    const int span = coalesced_span(c, groups);
    if (span) {
        const size_t shared = (size_t)(THREADS * 8 + 2 * span) * sizeof(double);
        groupnorm_stats_kernel<<<dim3(c / span, n), THREADS, shared, cuda.stream>>>(
            mean, rstd, x, hw, c, c / groups, span, groups, eps);
        cudaCheckLaunch();
        groupnorm_output_coalesced(y, x, mean, rstd, gamma, shift, n, hw, c, groups, SILU, drop);
        return;
    }
    const GroupView v = {hw, c, c / groups};
    groupnorm_forward_kernel<SILU><<<dim3(groups, n), THREADS, 0, cuda.stream>>>(
        y, mean, rstd, x, gamma, shift, v, groups, eps, drop);
    cudaCheckLaunch();
}

template <bool SILU>
static void groupnorm_backward(float *dx, float beta, float *dgamma, float *dshift,
                               const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *gamma, const float *shift, int n,
                               int hw, int c, int groups, DropoutSpec drop) {
    const int cg = c / groups;
    if (dgamma || dshift)
        column_sums<2>(ParamGradTerms<SILU>{dy, x, mean, rstd, gamma, shift, hw, c, cg, groups,
                                            drop},
                       ParamGradStore{dgamma, dshift}, 1, (long long)n * hw, c);
    if (!dx) return;
    groupnorm_input_grad_kernel<SILU><<<dim3(groups, n), THREADS, 0, cuda.stream>>>(
        dx, beta, dy, x, mean, rstd, gamma, shift, GroupView{hw, c, cg}, groups, drop);
    cudaCheckLaunch();
}

void cuda_groupnorm_forward(float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *shift, int n, int hw, int c,
                            int groups, float eps, int fuse_silu, float dropout,
                            RngKey dropout_key) {
    const DropoutSpec drop = dropout_spec(dropout, dropout_key, hw, c);
    if (fuse_silu)
        groupnorm_forward<true>(y, mean, rstd, x, gamma, shift, n, hw, c, groups, eps, drop);
    else groupnorm_forward<false>(y, mean, rstd, x, gamma, shift, n, hw, c, groups, eps, drop);
}

void cuda_groupnorm_backward(float *dx, float beta, float *dgamma, float *dshift,
                             const float *dy, const float *x, const float *mean,
                             const float *rstd, const float *gamma, const float *shift, int n,
                             int hw, int c, int groups, int fuse_silu, float dropout,
                             RngKey dropout_key) {
    const DropoutSpec drop = dropout_spec(dropout, dropout_key, hw, c);
    if (fuse_silu)
        groupnorm_backward<true>(dx, beta, dgamma, dshift, dy, x, mean, rstd, gamma, shift, n, hw,
                                 c, groups, drop);
    else
        groupnorm_backward<false>(dx, beta, dgamma, dshift, dy, x, mean, rstd, gamma, shift, n,
                                  hw, c, groups, drop);
}
